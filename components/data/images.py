"""Image kind: grayscale images as (N, 1, H, W) float32 in [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import Dataset, content_hashes


class ImageKind:
    name = "image"

    def load_source(self, source: str) -> Dataset:
        """`sklearn:digits`, or an .npz with `x` (N, H, W) or (N, 1, H, W), `y` (N,) and optional scalar `scale`
        (the maximum raw intensity; defaults to 255)."""
        if source == "sklearn:digits":
            from sklearn.datasets import load_digits

            d = load_digits()
            return Dataset(d.images.astype(np.float32), d.target.astype(np.int64), {"scale": 16.0})
        path = Path(source)
        if path.suffix != ".npz":
            raise ValueError(f"image source {source!r}: expected 'sklearn:digits' or a .npz file")
        if not path.is_file():
            raise FileNotFoundError(f"image source {source!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = {"x", "y"} - set(f.files)
                if missing:
                    raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(f.files)})")
                x, y = f["x"], f["y"]
                scale = float(f["scale"]) if "scale" in f.files else 255.0
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read image arrays: {e}") from e
        if x.ndim not in (3, 4):
            raise ValueError(f"{path}: x must be (N, H, W) or (N, 1, H, W), got shape {x.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y must hold integer labels, got dtype {y.dtype}")
        return Dataset(x.astype(np.float32), y.astype(np.int64), {"scale": scale})

    def preprocess(self, raw: Dataset) -> Dataset:
        x = raw.x[:, None] if raw.x.ndim == 3 else raw.x
        return Dataset((x / np.float32(raw.meta["scale"])).astype(np.float32), raw.y, dict(raw.meta))

    def describe(self, data: Dataset) -> pd.DataFrame:
        flat = data.x.reshape(len(data.x), -1)
        finite = np.where(np.isfinite(flat), flat, np.nan)
        with np.errstate(all="ignore"):
            lo, hi = np.nanmin(finite, axis=1), np.nanmax(finite, axis=1)
        return pd.DataFrame(
            {
                "shape": ["x".join(map(str, s.shape)) for s in data.x],
                "dtype": [str(data.x.dtype)] * len(data.x),
                "min_value": lo,
                "max_value": hi,
                "non_finite": (~np.isfinite(flat)).sum(axis=1),
                "label": data.y,
                "content_hash": content_hashes(data.x),
            }
        )
