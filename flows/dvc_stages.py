"""Commands of the DVC data stages (`dvc.yaml`, one pair per dataset): ingest the raw data, prepare the splits.

Files (all .npz/.json, no pickles), per dataset NAME:
  data/raw/NAME/raw.npz, info.json       raw samples as the source holds them, labels as spelled there
  data/prepared/NAME/{split}.npz         x: model inputs, y: int64 class indices, hash: raw-content hash
  data/prepared/NAME/preprocess.json     the preprocessing spec fitted on train (travels with the model)
  data/prepared/NAME/summary.json        counts per split, duplicates dropped, classes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from components.config import PipelineConfig, load_config
from components.data import DataError, Dataset, get_kind
from components.data.base import load_raw, prepare_splits, save_raw, write_text
from components.export import atomic_path

SPLITS = ("train", "val", "test")


def raw_dir(root: Path, cfg: PipelineConfig) -> Path:
    return root / "data" / "raw" / cfg.data.name


def prepared_dir(root: Path, cfg: PipelineConfig) -> Path:
    return root / "data" / "prepared" / cfg.data.name


def save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def resolve_source(root: Path, cfg: PipelineConfig) -> str:
    """Built-in sources pass through; a path must resolve inside the dataset's data root."""
    if cfg.data.source.startswith("sklearn:"):
        return cfg.data.source
    data_root = (root / cfg.data.root).resolve()
    path = (data_root / cfg.data.source).resolve()
    if not path.is_relative_to(data_root):
        raise DataError(f"data.source {cfg.data.source!r} resolves to {path}, outside the data root {data_root}")
    if not path.exists():
        raise DataError(f"data.source {cfg.data.source!r}: {path} does not exist")
    return str(path)


def load_splits(root: Path, cfg: PipelineConfig) -> dict[str, Dataset]:
    out = {}
    for s in SPLITS:
        with np.load(prepared_dir(root, cfg) / f"{s}.npz", allow_pickle=False) as f:
            out[s] = Dataset(f["x"], f["y"], {"hash": f["hash"]})
    return out


def load_spec(root: Path, cfg: PipelineConfig) -> dict:
    return json.loads((prepared_dir(root, cfg) / "preprocess.json").read_text())


def ingest(root: Path, cfg: PipelineConfig) -> None:
    kind = get_kind(cfg.data.kind)
    raw = kind.load(resolve_source(root, cfg), cfg.data.options)
    save_raw(kind, raw, raw_dir(root, cfg), save_npz)
    print(f"ingest {cfg.data.name}: {len(raw)} samples of {cfg.data.source} -> {raw_dir(root, cfg)}")


def load_raw_data(root: Path, cfg: PipelineConfig):
    return load_raw(get_kind(cfg.data.kind), raw_dir(root, cfg))


def prepare(root: Path, cfg: PipelineConfig) -> None:
    splits, spec, dropped = prepare_splits(get_kind(cfg.data.kind), load_raw_data(root, cfg), cfg.data)
    out = prepared_dir(root, cfg)
    for name, ds in splits.items():
        save_npz(out / f"{name}.npz", {"x": ds.x, "y": ds.y, "hash": ds.meta["hash"]})
    write_text(out / "preprocess.json", json.dumps(spec, indent=2))
    summary = {"counts": {n: len(d) for n, d in splits.items()}, "duplicates_dropped": dropped,
               "classes": list(cfg.data.classes)}
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
