"""Where a dataset's files are and how to read them back (all .npz/.json, no pickles), per dataset NAME:

  data/raw/NAME/raw.npz, info.json       raw samples as the source holds them, labels as spelled there
  data/raw/NAME/unlabelled.npz           the unlabelled pool (`datasets.NAME.unlabelled`), raw, info inside
  data/prepared/NAME/{split}.npz         x: model inputs, y: int64 class indices, hash: raw-content hash
  data/prepared/NAME/preprocess.json     the preprocessing spec fitted on train (travels with the model)
  data/prepared/NAME/unlabelled.npz      x: the pool's model inputs without labelled samples, hash: their key
  data/prepared/NAME/summary.json        counts per split, duplicates dropped, classes, the splits taken from the
                                         source (as it split its samples), pool rows kept/dropped
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.config import PipelineConfig
from components.data import DataError, Dataset, get_kind
from components.data.base import POOL_FILE, SPLITS, RawData, load_raw, load_unlabelled
from components.formats.base import atomic_path


def raw_dir(root: Path, name: str) -> Path:
    return root / "data" / "raw" / name


def prepared_dir(root: Path, name: str) -> Path:
    return root / "data" / "prepared" / name


def split_files(root: Path, name: str) -> dict[str, Path]:
    return {s: prepared_dir(root, name) / f"{s}.npz" for s in SPLITS}


def save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_splits(root: Path, name: str) -> dict[str, Dataset]:
    out = {}
    for s, path in split_files(root, name).items():
        with np.load(path, allow_pickle=False) as f:
            out[s] = Dataset(f["x"], f["y"], {"hash": f["hash"]})
    return out


def load_spec(root: Path, name: str) -> dict:
    return json.loads((prepared_dir(root, name) / "preprocess.json").read_text())


def load_summary(root: Path, name: str) -> dict:
    return json.loads((prepared_dir(root, name) / "summary.json").read_text())


def _pool_array(root: Path, name: str, key: str) -> np.ndarray | None:
    path = prepared_dir(root, name) / POOL_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return f[key]


def load_pool(root: Path, name: str) -> np.ndarray | None:
    """Model inputs of the dataset's unlabelled pool (`datasets.NAME.unlabelled`), or None when it has none."""
    return _pool_array(root, name, "x")


def load_pool_hashes(root: Path, name: str) -> np.ndarray | None:
    """Duplicate key of each sample of the prepared pool (what `describe_pool` checks), or None without a pool."""
    return _pool_array(root, name, "hash")


def load_raw_data(root: Path, cfg: PipelineConfig) -> RawData:
    return load_raw(get_kind(cfg.data.kind), raw_dir(root, cfg.data.name))


def load_raw_pool(root: Path, cfg: PipelineConfig) -> RawData | None:
    """The ingested unlabelled pool (labels all ""), or None when the dataset has none."""
    return load_unlabelled(get_kind(cfg.data.kind), raw_dir(root, cfg.data.name))


def resolve_source(root: Path, cfg: PipelineConfig) -> str:
    """Built-in sources pass through; a path must resolve inside the dataset's data root."""
    if cfg.data.source.startswith("sklearn:"):
        return cfg.data.source
    return str(resolve_in_root(root, cfg.data.root, cfg.data.source, "data.source"))


def resolve_unlabelled(root: Path, cfg: PipelineConfig) -> str | None:
    """The pool's path, inside the data root like the source and apart from it (not in it, not holding it), or
    None when the dataset has no pool."""
    if cfg.data.unlabelled is None:
        return None
    path = resolve_in_root(root, cfg.data.root, cfg.data.unlabelled, "data.unlabelled")
    if not cfg.data.source.startswith("sklearn:"):
        check_apart(path, Path(resolve_source(root, cfg)))
    return str(path)


def resolve_in_root(root: Path, data_root: str, value: str, key: str) -> Path:
    """`value` resolved inside `root / data_root`; DataError naming `key` when it leaves it or does not exist."""
    base = (root / data_root).resolve()
    path = (base / value).resolve()
    if not path.is_relative_to(base):
        raise DataError(f"{key} {value!r} resolves to {path}, outside the data root {base}")
    if not path.exists():
        raise DataError(f"{key} {value!r}: {path} does not exist")
    return path


def check_apart(pool: Path, source: Path) -> None:
    """A pool inside the labelled source (or holding it) would be read as labelled data, or hold all of it."""
    if pool.is_relative_to(source) or source.is_relative_to(pool):
        raise DataError(f"unlabelled pool {pool} overlaps the labelled source {source}; keep them apart")
