"""Image kind: built-in digits, an .npz of arrays (`x`/`y`, or MedMNIST's with its splits), or a folder of class
sub-folders of PNG/JPEG files (optionally inside train/, val/ and test/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import SPLITS, DataError, Expectation, RawData, has_split_folders, unlabelled
from components.data.options import ImageOptions

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MEDMNIST = [f"{s}_{a}" for s in SPLITS for a in ("images", "labels")]  # MedMNIST's .npz, its splits kept


class ImageKind:
    """Options: components.data.options.ImageOptions."""

    name = "image"
    Options = ImageOptions

    @property
    def augment(self):
        from components.augment import ShiftFlip

        return ShiftFlip()

    def augment_with(self, train):
        """The augmentation as a TrainConfig sets it: shifts up to `train.shift` pixels, mirroring with `flip`."""
        from components.augment import ShiftFlip

        return ShiftFlip(train.shift, train.flip)

    @staticmethod
    def dedupe_keys(samples, options: ImageOptions) -> np.ndarray:
        """The intensities as float32, so that an 8-bit image file and the same image in an .npz are one sample."""
        return np.asarray(samples, dtype=np.float32)

    def load(self, source: str, options: ImageOptions) -> RawData:
        if source == "sklearn:digits":
            from sklearn.datasets import load_digits

            d = load_digits()
            return RawData(d.images.astype(np.float32), d.target.astype(str), {}, {"scale": 16.0})
        path = Path(source)
        if path.is_dir():
            return self._load_folder(path, options.mode, options.train_per_class)
        if path.suffix == ".npz":
            return self._load_npz(path)
        raise DataError(f"image source {source}: expected 'sklearn:digits', an .npz file or a folder of class folders")

    def load_unlabelled(self, source: str, options: ImageOptions, like: RawData | None = None) -> RawData:
        """An .npz with `x` (a `y` is ignored; `scale` optional) or a folder of PNG/JPEG files, flat or in
        sub-folders whose names are ignored. With `like`, the pool is rescaled to its `scale` (an .npz without
        `scale` is taken to be in it already) and must have its image shape."""
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{path}: no PNG/JPEG files in the folder or its sub-folders")
            x, rel = self._read_images(path, files, options.mode)
            meta, scale = {"file": rel}, 255.0
        elif path.suffix == ".npz":
            x, _, scale, _ = self._read_npz(path, labelled=False)
            scale = scale if scale is not None else float(like.info["scale"]) if like is not None else 255.0
            meta = {}
        else:
            raise DataError(f"unlabelled image pool {source}: expected an .npz file or a folder of PNG/JPEG files")
        if like is not None:
            want = np.asarray(like.samples).shape[1:]
            if x.shape[1:] != want:
                raise DataError(f"{path}: unlabelled images of shape {x.shape[1:]} differ from the labelled "
                                f"images' {want}")
            if scale != float(like.info["scale"]):  # the preprocessing fitted on train divides by its scale
                x = x * np.float32(float(like.info["scale"]) / scale)
                scale = float(like.info["scale"])
        return unlabelled(x, meta, {"scale": scale}, path)

    def _load_npz(self, path: Path) -> RawData:
        x, y, scale, split = self._read_npz(path, labelled=True)
        return RawData(x, y.astype(str), {}, {"scale": 255.0 if scale is None else scale}, split)

    @staticmethod
    def _read_npz(path: Path, labelled: bool
                  ) -> tuple[np.ndarray, np.ndarray | None, float | None, np.ndarray | None]:
        """x as float32, y (None unless `labelled`), the file's `scale` (None when absent) and, for MedMNIST's
        layout, each image's split."""
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as f:
                if labelled and "x" not in f.files and set(MEDMNIST) & set(f.files):
                    return _read_medmnist(path, f)
                missing = ({"x", "y"} if labelled else {"x"}) - set(f.files)
                if missing:
                    raise DataError(f"{path}: missing arrays {sorted(missing)} (has {sorted(f.files)})")
                x, y = f["x"], _one_label_each(path, "y", f["y"]) if labelled else None
                scale = float(f["scale"]) if "scale" in f.files else None
        except DataError:
            raise
        except Exception as e:  # np.load raises OSError, ValueError, zipfile.BadZipFile, EOFError...
            raise DataError(f"{path}: not a readable .npz: {e}") from e
        if x.ndim not in (3, 4):
            raise DataError(f"{path}: x must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
        if labelled and len(x) != len(y):
            raise DataError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
        return x.astype(np.float32), y, scale, None

    def _load_folder(self, root: Path, mode: str, train_per_class: int | None = None) -> RawData:
        splits = has_split_folders(root)
        files = sorted(p for p in root.glob("*/*/*" if splits else "*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{root}: no PNG/JPEG files in class sub-folders"
                            + (" of the split folders" if splits else ""))
        if train_per_class is not None:
            files = _first_per_class(root, files, splits, train_per_class)
        images, rel = self._read_images(root, files, mode)
        split = np.array([p.relative_to(root).parts[0] for p in files]) if splits else None
        return RawData(images, np.array([p.parent.name for p in files]), {"file": rel}, {"scale": 255.0}, split)

    @staticmethod
    def _read_images(root: Path, files: list[Path], mode: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) or (N, C, H, W) 8-bit images of one size, as the files hold them, and the files relative to
        `root`."""
        from PIL import Image, UnidentifiedImageError

        images, size = [], None
        for p in files:
            try:
                with Image.open(p) as im:
                    a = np.asarray(im.convert(mode), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{p}: unreadable or corrupt image ({e})") from e
            if size is None:
                size = a.shape
            elif a.shape != size:
                raise DataError(f"{p}: image size {a.shape[:2]} differs from {size[:2]} of {files[0]}; "
                                "all images must have one size")
            images.append(a if a.ndim == 2 else a.transpose(2, 0, 1))
        return np.stack(images), np.array([str(p.relative_to(root)) for p in files])

    def pack(self, samples) -> dict[str, np.ndarray]:
        return {"x": np.asarray(samples)}

    def unpack(self, arrays: dict[str, np.ndarray]):
        return arrays["x"]

    def describe(self, raw: RawData, options: ImageOptions) -> pd.DataFrame:
        flat = np.asarray(raw.samples).reshape(len(raw), -1)
        finite = np.where(np.isfinite(flat), flat, np.nan)
        with np.errstate(all="ignore"):
            lo, hi = np.nanmin(finite, axis=1), np.nanmax(finite, axis=1)
        return pd.DataFrame({"shape": ["x".join(map(str, s.shape)) for s in raw.samples], "min_value": lo,
                             "max_value": hi, "non_finite": (~np.isfinite(flat)).sum(axis=1), "label": raw.labels})

    def expectations(self, raw: RawData, options: ImageOptions) -> list[Expectation]:
        shape = "x".join(map(str, np.asarray(raw.samples).shape[1:]))
        scale = raw.info["scale"]
        return [
            ("ExpectColumnValuesToBeInSet", {"column": "shape", "value_set": [shape]}),
            ("ExpectColumnValuesToBeInSet", {"column": "non_finite", "value_set": [0]}),
            ("ExpectColumnValuesToBeBetween", {"column": "min_value", "min_value": 0.0, "max_value": scale}),
            ("ExpectColumnValuesToBeBetween", {"column": "max_value", "min_value": 0.0, "max_value": scale}),
        ]

    def fit(self, train: RawData, options: ImageOptions) -> dict:
        shape = list(np.asarray(train.samples).shape[1:])
        return {"kind": "image", "scale": float(train.info["scale"]), "input_dtype": "float32",
                "input_shape": [1, *shape] if len(shape) == 2 else shape, "value_range": [0.0, 1.0]}


def _first_per_class(root: Path, files: list[Path], splits: bool, n: int) -> list[Path]:
    """`files` (sorted) with at most the first `n` of each class outside val/ and test/."""
    kept, seen = [], {}
    for p in files:
        parts = p.relative_to(root).parts
        if splits and parts[0] != "train":
            kept.append(p)
            continue
        seen[parts[-2]] = seen.get(parts[-2], 0) + 1
        if seen[parts[-2]] <= n:
            kept.append(p)
    return kept


def _read_medmnist(path: Path, f) -> tuple[np.ndarray, np.ndarray, None, np.ndarray]:
    """MedMNIST's layout of an open .npz `f`: {train,val,test}_images, (N, H, W) or channels last (N, H, W, C) as
    MedMNIST stores colour, and {train,val,test}_labels, (N,) or (N, 1); intensities 0-255."""
    missing = [k for k in MEDMNIST if k not in f.files]
    if missing:
        raise DataError(f"{path}: MedMNIST's layout without {missing}")
    xs = [f[f"{s}_images"] for s in SPLITS]
    ys = [_one_label_each(path, f"{s}_labels", f[f"{s}_labels"]) for s in SPLITS]
    for s, x, y in zip(SPLITS, xs, ys):
        if x.ndim not in (3, 4) or x.ndim == 4 and x.shape[-1] not in (1, 3, 4) or x.shape[1:] != xs[0].shape[1:] \
                or len(x) != len(y):
            raise DataError(f"{path}: {s}_images of shape {x.shape} with {len(y)} labels; expected (N, H, W) or "
                            f"(N, H, W, C) images of train_images' size {xs[0].shape[1:]}, one label each")
    x = np.concatenate(xs)
    x = x if x.ndim == 3 else np.moveaxis(x, -1, 1)  # the kind's images are channels first
    return x.astype(np.float32), np.concatenate(ys), None, np.repeat(np.array(SPLITS), [len(y) for y in ys])


def _one_label_each(path: Path, name: str, y: np.ndarray) -> np.ndarray:
    """Labels of shape (N,) or (N, 1) as (N,); several labels per image (multi-label) are refused."""
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {name} of shape {y.shape}; expected one label per image, (N,) or (N, 1)")
    return y
