"""What every data kind shares: raw data as the device sees it, its on-disk form, and the leak-free split."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from components.data.options import KindOptions

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

Expectation = tuple[str, dict]  # (GX expectation class name, its keyword arguments)
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset that cannot be used: the message names the file or line and what is wrong."""


@dataclass
class RawData:
    """Samples before any fitted preprocessing, with labels as the source spells them."""

    samples: Any  # kind-specific: an array, or a list of arrays / strings
    labels: np.ndarray  # str
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample columns (file, speaker, ...)
    info: dict = field(default_factory=dict)  # JSON-able dataset-level facts (scale, sample rate, ...)
    # The split the source puts each sample in ("train", "val", "test"; "" for none), which prepare keeps (see
    # `split_indices`); None when the source has no splits of its own.
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "RawData":
        s = self.samples[idx] if isinstance(self.samples, np.ndarray) else [self.samples[i] for i in idx]
        return RawData(s, self.labels[idx], {k: v[idx] for k, v in self.meta.items()}, dict(self.info),
                       None if self.split is None else self.split[idx])


@dataclass(frozen=True)
class Dataset:
    """Model-ready arrays of one split: x with a leading sample axis, y int64 class indices."""

    x: np.ndarray
    y: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


Split = dict[str, Dataset]  # "train" / "val" / "test"


def content_hashes(samples) -> list[str]:
    """One hash per sample over its content: equal content means equal hash."""
    def one(s) -> str:
        b = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else np.ascontiguousarray(s).tobytes()
        return hashlib.sha256(b).hexdigest()[:16]
    return [one(s) for s in samples]


class DataKind(Protocol):
    name: str
    Options: type[KindOptions]  # its options (`datasets.NAME.options`), components.data.options
    augment: Callable | None  # (x batch tensor, torch.Generator) -> x batch, for training only

    def load(self, source: str, options: KindOptions) -> RawData:
        """Read the dataset named by `source` (a built-in name or a resolved path)."""

    def load_unlabelled(self, source: str, options: KindOptions, like: RawData | None = None) -> RawData:
        """Read an unlabelled pool (a resolved path) through the same code as `load`: labels all "", samples,
        meta and info as `load` gives them (info["unlabelled"] is true). `like`, the dataset's labelled data,
        brings the pool to its units and schema (image scale, tabular feature columns) and must share its shape."""

    def pack(self, samples) -> dict[str, np.ndarray]:
        """Samples as plain arrays for an .npz (no pickles)."""

    def unpack(self, arrays: dict[str, np.ndarray]):
        """Inverse of `pack`."""

    def describe(self, raw: RawData, options: KindOptions) -> pd.DataFrame:
        """One row per raw sample with the columns `expectations` checks, plus `label`."""

    def expectations(self, raw: RawData, options: KindOptions) -> list[Expectation]:
        """Kind-specific checks of the raw samples (the label set and class counts are checked for every kind)."""

    def fit(self, train: RawData, options: KindOptions) -> dict:
        """Fit preprocessing on the train split only; return its JSON-able spec (see components.preprocess)."""

    # Optional hooks: `dedupe_keys(samples, options) -> list` (what makes two samples the same to the model, for
    # dropping duplicates before the split; default: the raw content), `split_checks(spec, split_name, dataset)`
    # (extra expectations per prepared split) and `infer_options(source, options, classes) -> (options, note)`
    # (`data add`: the reading options the user left out, found in the file, and a sentence saying what was found).


# --- on-disk form of raw data: data/raw/<name>/raw.npz + info.json -------------------------------------------


def raw_arrays(kind: DataKind, raw: RawData) -> dict[str, np.ndarray]:
    """Raw data as plain arrays: `s_*` the kind's packed samples, `m_*` the meta columns, `labels`, and `split`
    when the source has splits."""
    arrays = {f"s_{k}": v for k, v in kind.pack(raw.samples).items()}
    arrays |= {f"m_{k}": np.asarray(v) for k, v in raw.meta.items()}
    arrays |= {} if raw.split is None else {"split": np.asarray(raw.split, dtype=str)}
    return dict(arrays, labels=np.asarray(raw.labels, dtype=str))


def raw_from_arrays(kind: DataKind, arrays: dict[str, np.ndarray], info: dict) -> RawData:
    """Inverse of `raw_arrays`."""
    samples = kind.unpack({k[2:]: v for k, v in arrays.items() if k.startswith("s_")})
    meta = {k[2:]: v for k, v in arrays.items() if k.startswith("m_")}
    return RawData(samples, arrays["labels"], meta, info, arrays.get("split"))


def save_raw(kind: DataKind, raw: RawData, folder: Path, write) -> None:
    """`write(path, arrays)` writes an .npz atomically; info.json carries the dataset-level facts."""
    write(folder / "raw.npz", raw_arrays(kind, raw))
    write_text(folder / "info.json", json.dumps(raw.info, indent=2))


def load_raw(kind: DataKind, folder: Path) -> RawData:
    with np.load(folder / "raw.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return raw_from_arrays(kind, arrays, json.loads((folder / "info.json").read_text()))


# --- the unlabelled pool: data/raw/<name>/unlabelled.npz, its info as a JSON string inside -------------------

POOL_FILE = "unlabelled.npz"


def unlabelled(samples, meta: dict, info: dict, source) -> RawData:
    """A pool read by a kind's `load_unlabelled`: every label "" and info["unlabelled"] set."""
    if len(samples) == 0:
        raise DataError(f"{source}: no samples in the unlabelled pool")
    return RawData(samples, np.full(len(samples), "", dtype=str), meta, info | {"unlabelled": True})


def save_unlabelled(kind: DataKind, pool: RawData, folder: Path, write) -> None:
    write(folder / POOL_FILE, raw_arrays(kind, pool) | {"info": np.array(json.dumps(pool.info))})


def load_unlabelled(kind: DataKind, folder: Path) -> RawData | None:
    """The pool `save_unlabelled` wrote to `folder`, or None when there is none."""
    if not (folder / POOL_FILE).is_file():
        return None
    with np.load(folder / POOL_FILE, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return raw_from_arrays(kind, arrays, json.loads(str(arrays.pop("info"))))


def write_text(path: Path, text: str) -> None:
    from components.formats.base import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --- split ----------------------------------------------------------------------------------------------------


def split_indices(raw: RawData, classes: list[str], val_fraction: float, test_fraction: float, seed: int,
                  hashes: list[str] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Train/val/test indices after dropping duplicates (equal `hashes`, default the raw content's, so no sample
    sits in two splits; the first in source order stays). Samples the source puts in a split (`raw.split`) stay
    there; a split the source leaves empty is drawn from the samples it puts nowhere, stratified by label: test
    first (`test_fraction` of them), then val (`val_fraction` of them before test was drawn); the rest is train. A
source that fixes train and test but not val (CIFAR-10's folders) gives `val_fraction` of its train to val.

    Returns the indices and the number of duplicates dropped.
    """
    hashes = content_hashes(raw.samples) if hashes is None else hashes
    _, first = np.unique(np.array(hashes), return_index=True)
    keep = np.sort(first)
    given = raw.split[keep] if raw.split is not None else np.full(len(keep), "")
    idx = {s: keep[given == s] for s in SPLITS}
    free, left = keep[given == ""], 1.0
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if len(free) and not len(idx[name]):
            free, idx[name] = train_test_split(free, test_size=fraction / left, stratify=raw.labels[free],
                                               random_state=seed)
            left -= fraction
    idx["train"] = np.concatenate([idx["train"], free])
    if len(idx["train"]) and len(idx["test"]) and not len(idx["val"]):  # train/ and test/ only: val from train
        idx["train"], idx["val"] = train_test_split(idx["train"], test_size=val_fraction,
                                                    stratify=raw.labels[idx["train"]], random_state=seed)
    empty = [s for s in SPLITS if not len(idx[s])]
    if empty:
        raise DataError(f"the source's own splits leave {' and '.join(empty)} without a sample")
    return {s: np.sort(i) for s, i in idx.items()}, len(raw) - len(keep)


def has_split_folders(root: Path) -> bool:
    """Whether the folder `root` brings its own splits as sub-folders train/, val/ and test/ (or train/ and test/,
    val then drawn from train), each laid out as `root` would be without them. Other sets of them, or other
    folders beside them, are refused."""
    names = {p.name for p in root.iterdir() if p.is_dir()}
    if not names & set(SPLITS):
        return False
    if names not in (set(SPLITS), {"train", "test"}):
        raise DataError(f"{root}: sub-folders {sorted(names)}; expected exactly train/, val/ and test/, or train/ "
                        "and test/ (the source's own splits), or none of them")
    return True


def splits_from_source(raw: RawData) -> list[str]:
    """The splits the source fixes (see `split_indices`), in train/val/test order."""
    return [] if raw.split is None else [s for s in SPLITS if (raw.split == s).any()]


def duplicate_hashes(kind: DataKind, samples, options: KindOptions) -> list[str]:
    """One hash per sample; equal hashes are duplicates to the model (the kind's `dedupe_keys`, else content)."""
    return content_hashes(kind.dedupe_keys(samples, options) if hasattr(kind, "dedupe_keys") else samples)


# --- which column holds the labels --------------------------------------------------------------------------

MAX_CLASSES = 100  # more distinct values than this is not a label column, unless the classes are listed


def label_problem(values, classes: list[str] | None = None) -> str | None:
    """Why `values` (one per row) cannot be class labels, or None when they can: at least two distinct values, all
    among `classes` when those are given; else few (at most MAX_CLASSES) and repeated (each used twice on average;
    free text or ids have about one value per row)."""
    distinct = sorted({str(v) for v in values})
    if len(distinct) < 2:
        return f"its only values are {distinct}, not 2 or more classes"
    if classes is not None:
        outside = [v for v in distinct if v not in classes]
        return f"its values {outside[:3]} are not among the classes {classes}" if outside else None
    if len(distinct) > MAX_CLASSES or 2 * len(distinct) > len(values):
        return (f"it holds {len(distinct)} distinct values in {len(values)} rows, too many for class labels (at most "
                f"{MAX_CLASSES}, each on 2 rows or more on average)")
    return None


def infer_label_column(columns: dict, classes: list[str] | None, source) -> tuple[object, str]:
    """The one column (a key of `columns`, which maps each column to the labels it would give) that can hold the
    labels (see `label_problem`), and a note saying so. No such column, or several, is a DataError naming
    `label_column`, the option that settles it."""
    fits = [k for k, v in columns.items() if label_problem(v, classes) is None]
    if len(fits) == 1:
        return fits[0], f"label column {fits[0]!r} inferred ({len(set(columns[fits[0]]))} distinct values)"
    if fits:
        raise DataError(f"{source}: columns {fits} could each hold the labels; pick one with --option "
                        "label_column=COLUMN (or give --classes, which only the label column's values match)")
    why = "; ".join(f"column {k!r}: {label_problem(v, classes)}" for k, v in list(columns.items())[:3])
    raise DataError(f"{source}: no column can hold the labels ({why}{'; ...' * (len(columns) > 3)}); set "
                    "--option label_column=COLUMN")


def encode_labels(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not in the configured classes {classes}")
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def prepare_splits(kind: DataKind, raw: RawData, data_cfg) -> tuple[dict[str, Dataset], dict, int]:
    """Split `raw`, fit the kind's preprocessing on train only, and turn every split into model inputs.

    Returns the splits (x, y as class indices, meta["hash"]: each sample's duplicate key), the preprocessing spec
    and the number of duplicates dropped.
    """
    from components import preprocess

    d = data_cfg
    hashes = np.array(duplicate_hashes(kind, raw.samples, d.options))
    idx, dropped = split_indices(raw, d.classes, d.val_fraction, d.test_fraction, d.seed, list(hashes))
    parts = {n: raw.subset(i) for n, i in idx.items()}
    spec = kind.fit(parts["train"], d.options) | {"classes": list(d.classes)}
    splits = {n: Dataset(preprocess.transform(spec, p.samples), encode_labels(p.labels, d.classes),
                         {"hash": hashes[idx[n]]}) for n, p in parts.items()}
    return splits, spec, dropped


def prepare_unlabelled(kind: DataKind, pool: RawData, spec: dict, splits: dict[str, Dataset], options: KindOptions
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """Model inputs of the pool (`spec` fitted on train) without the samples whose duplicate key (the split's,
    see `duplicate_hashes`) equals a labelled sample's in any split, since a pool holding test samples would leak
    the test split into training, nor an earlier pool sample's.

    Returns x, the duplicate key of each kept sample, and the number of pool samples dropped.
    """
    from components import preprocess

    hashes = np.array(duplicate_hashes(kind, pool.samples, options), dtype=str)
    labelled = set().union(*(set(map(str, d.meta["hash"])) for d in splits.values()))
    _, first = np.unique(hashes, return_index=True)
    keep = np.array(sorted(i for i in first if hashes[i] not in labelled), dtype=np.int64)
    if len(keep):
        x = preprocess.transform(spec, pool.subset(keep).samples)
    else:  # every pool sample was a duplicate: an empty pool of the model's input shape
        x = np.zeros((0, *spec["input_shape"]), dtype=spec["input_dtype"])
    return x, hashes[keep], len(pool) - len(keep)
