"""Commands of the DVC data stages (`dvc.yaml`, one pair per dataset): ingest the raw data, prepare the splits.
Their files are described in flows/data/layout.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.config import PipelineConfig, load_config
from components.data import DataError, get_kind
from components.data.base import POOL_FILE, prepare_splits, prepare_unlabelled, save_raw, save_unlabelled, \
    splits_from_source, write_text
from flows.data.layout import (load_raw_data, load_raw_pool, prepared_dir, raw_dir, resolve_source,
                               resolve_unlabelled, save_npz)


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
