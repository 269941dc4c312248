"""Commands of the DVC data stages (`dvc.yaml`, one pair per dataset): ingest the raw data, prepare the splits.

Files (all .npz/.json, no pickles), per dataset NAME:
  data/raw/NAME/raw.npz, info.json       raw samples as the source holds them, labels as spelled there
  data/raw/NAME/unlabelled.npz           the unlabelled pool (`datasets.NAME.unlabelled`), raw, info inside
  data/prepared/NAME/{split}.npz         x: model inputs, y: int64 class indices, hash: raw-content hash
  data/prepared/NAME/preprocess.json     the preprocessing spec fitted on train (travels with the model)
  data/prepared/NAME/unlabelled.npz      x: the pool's model inputs without labelled samples, hash: their key
  data/prepared/NAME/summary.json        counts per split, duplicates dropped, classes, the splits taken from the
                                         source (as it split its samples), pool rows kept/dropped
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from components.config import PipelineConfig, load_config
from components.data import DataError, Dataset, get_kind
from components.data.base import (POOL_FILE, SPLITS, RawData, load_raw, load_unlabelled, prepare_splits,
                                   prepare_unlabelled, save_raw, save_unlabelled, splits_from_source, write_text)
from components.export import atomic_path


def raw_dir(root: Path, name: str) -> Path:
    return root / "data" / "raw" / name


def prepared_dir(root: Path, name: str) -> Path:
    return root / "data" / "prepared" / name


def save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


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


def load_splits(root: Path, name: str) -> dict[str, Dataset]:
    out = {}
    for s in SPLITS:
        with np.load(prepared_dir(root, name) / f"{s}.npz", allow_pickle=False) as f:
            out[s] = Dataset(f["x"], f["y"], {"hash": f["hash"]})
    return out


def load_spec(root: Path, name: str) -> dict:
    return json.loads((prepared_dir(root, name) / "preprocess.json").read_text())


def load_pool(root: Path, name: str) -> np.ndarray | None:
    """Model inputs of the dataset's unlabelled pool (`datasets.NAME.unlabelled`), or None when it has none."""
    path = prepared_dir(root, name) / "unlabelled.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["x"]


def load_pool_hashes(root: Path, name: str) -> np.ndarray | None:
    """Duplicate key of each sample of the prepared pool (what `describe_pool` checks), or None without a pool."""
    path = prepared_dir(root, name) / POOL_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["hash"]


def ingest(root: Path, cfg: PipelineConfig) -> None:
    kind = get_kind(cfg.data.kind)
    source, pool_path = resolve_source(root, cfg), resolve_unlabelled(root, cfg)  # both before anything is read
    raw = kind.load(source, cfg.data.options)
    pool = kind.load_unlabelled(pool_path, cfg.data.options, like=raw) if pool_path else None
    out = raw_dir(root, cfg.data.name)
    save_raw(kind, raw, out, save_npz)
    if pool is not None:
        save_unlabelled(kind, pool, out, save_npz)
    else:  # a pool removed from params.yaml must not live on in a folder written before
        (out / POOL_FILE).unlink(missing_ok=True)
    extra = f" and {len(pool)} unlabelled of {cfg.data.unlabelled}" if pool is not None else ""
    print(f"ingest {cfg.data.name}: {len(raw)} samples of {cfg.data.source}{extra} -> {out}")


def load_raw_data(root: Path, cfg: PipelineConfig):
    return load_raw(get_kind(cfg.data.kind), raw_dir(root, cfg.data.name))


def load_raw_pool(root: Path, cfg: PipelineConfig) -> RawData | None:
    """The ingested unlabelled pool (labels all ""), or None when the dataset has none."""
    return load_unlabelled(get_kind(cfg.data.kind), raw_dir(root, cfg.data.name))


def prepare(root: Path, cfg: PipelineConfig) -> None:
    kind = get_kind(cfg.data.kind)
    raw = load_raw_data(root, cfg)
    splits, spec, dropped = prepare_splits(kind, raw, cfg.data)
    out = prepared_dir(root, cfg.data.name)
    for name, ds in splits.items():
        save_npz(out / f"{name}.npz", {"x": ds.x, "y": ds.y, "hash": ds.meta["hash"]})
    write_text(out / "preprocess.json", json.dumps(spec, indent=2))
    summary = {"counts": {n: len(d) for n, d in splits.items()}, "duplicates_dropped": dropped,
               "classes": list(cfg.data.classes), "splits_from_source": splits_from_source(raw)}
    pool = load_raw_pool(root, cfg)
    if pool is not None:
        x, hashes, pool_dropped = prepare_unlabelled(kind, pool, spec, splits, cfg.data.options)
        save_npz(out / POOL_FILE, {"x": x, "hash": hashes})
        summary |= {"unlabelled": len(x), "unlabelled_dropped": pool_dropped}
    else:
        (out / POOL_FILE).unlink(missing_ok=True)
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"prepare {cfg.data.name}: {summary}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["ingest", "prepare"])
    p.add_argument("dataset", help="a key of `datasets` in params.yaml")
    a = p.parse_args(argv)
    root = Path.cwd()
    cfg = load_config(root / "params.yaml", a.dataset)
    try:
        {"ingest": ingest, "prepare": prepare}[a.stage](root, cfg)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
