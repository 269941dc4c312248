"""Commands of the DVC data stages (`dvc.yaml`): ingest the raw dataset, prepare the splits.

File formats (all .npz, no pickles):
  data/external/...             users' own source files (data.source), e.g. an .npz with x, y and scale
  data/raw/dataset.npz          x: raw samples, y: int64 labels, scale: max raw intensity
  data/prepared/{split}.npz     x: float32 model inputs (N, *input_shape), y: int64 labels
  data/prepared/summary.json    sample counts per split and duplicates dropped
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from components.config import PipelineConfig, load_config
from components.data import Dataset, get_kind, split_dataset
from components.export import atomic_path

EXTERNAL = Path("data/external")  # users' own files; a dependency of the ingest stage
RAW = Path("data/raw/dataset.npz")
PREPARED = Path("data/prepared")
SPLITS = ("train", "val", "test")


def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        meta = {"scale": float(f["scale"])} if "scale" in f.files else {}
        return Dataset(f["x"], f["y"], meta)


def load_raw(root: Path, cfg: PipelineConfig) -> Dataset:
    """The raw dataset as model inputs, for validation before the split."""
    return get_kind(cfg.data.kind).preprocess(load_npz(root / RAW))


def load_splits(root: Path) -> dict[str, Dataset]:
    return {s: load_npz(root / PREPARED / f"{s}.npz") for s in SPLITS}


def resolve_source(root: Path, source: str) -> str:
    """Built-in sources pass through; a file must lie under data/external/, the folder DVC watches for ingest."""
    if source.startswith("sklearn:"):
        return source
    path = (root / source).resolve()
    if not path.is_relative_to((root / EXTERNAL).resolve()):
        raise ValueError(f"data.source {source!r} lies outside {EXTERNAL}/; put the file there so that DVC "
                         "tracks it as an input of the ingest stage")
    return str(path)


def ingest(root: Path, cfg: PipelineConfig) -> None:
    raw = get_kind(cfg.data.kind).load_source(resolve_source(root, cfg.data.source))
    save_npz(root / RAW, x=raw.x, y=raw.y, scale=np.float32(raw.meta.get("scale", 1.0)))
    print(f"ingest: {len(raw)} samples of {cfg.data.source} -> {RAW}")


def prepare(root: Path, cfg: PipelineConfig) -> None:
    data = load_raw(root, cfg)
    splits, dropped = split_dataset(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
    out = root / PREPARED
    for name, ds in splits.items():
        save_npz(out / f"{name}.npz", x=ds.x, y=ds.y)
    summary = {"counts": {n: len(d) for n, d in splits.items()}, "duplicates_dropped": dropped}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(f"prepare: {summary}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["ingest", "prepare"])
    p.add_argument("--params", default="params.yaml")
    a = p.parse_args(argv)
    root = Path.cwd()
    {"ingest": ingest, "prepare": prepare}[a.stage](root, load_config(root / a.params))


if __name__ == "__main__":
    main()
