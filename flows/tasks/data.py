"""The data's tasks: DVC's stages of a dataset, its Great Expectations suites, and the prepared data a training
stage reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from components.config import PipelineConfig
from components.data import Dataset, get_kind
from components.formats.base import atomic_path
from components.validation import ValidationReport, describe_features, describe_pool, raw_plan, split_plan, validate
from flows.data import dvc, layout
from flows.tasks.caching import IO_RETRIES
from flows.tasks.specs import DataRef


@task(**IO_RETRIES)
def dvc_repro(root: str, stage: str) -> list[str]:
    """`dvc repro STAGE` (with its upstream stages) in the project; returns the stages that actually ran."""
    return dvc.repro(Path(root), stage, log=get_run_logger().info)


@dataclass(frozen=True)
class PhaseReport:
    """The GX suites of one phase ("raw": the ingested data; "splits": the prepared splits) and where their data
    docs are."""

    phase: str
    docs_dir: str
    report: ValidationReport

    def as_json(self) -> dict:
        return self.report.as_json() | {"phase": self.phase, "docs_dir": self.docs_dir}


@task(**IO_RETRIES)
def validate_data(root: str, cfg: PipelineConfig, phase: str) -> PhaseReport:
    """GX suites over the raw dataset (phase 'raw') or the prepared splits (phase 'splits')."""
    rootp, name, kind = Path(root), cfg.data.name, get_kind(cfg.data.kind)
    if phase == "raw":
        plan = raw_plan(kind, layout.load_raw_data(rootp, cfg), cfg, pool=layout.load_raw_pool(rootp, cfg))
    else:
        splits, spec = layout.load_splits(rootp, name), layout.load_spec(rootp, name)
        pool = layout.load_pool(rootp, name)
        pool_table = describe_pool(pool, layout.load_pool_hashes(rootp, name)) if pool is not None else None
        plan = split_plan(
            {n: describe_features(d.x, d.y, list(d.meta["hash"])) for n, d in splits.items()},
            spec,
            cfg,
            pool=pool_table,
        )
        if hasattr(kind, "split_checks"):  # optional hook: checks a kind adds per prepared split
            plan += [c for n, d in splits.items() for c in kind.split_checks(spec, n, d)]
    docs = rootp / ".edgekd" / "validation" / name / phase
    out = PhaseReport(phase, str(docs), validate(plan, docs_dir=docs))
    with atomic_path(docs / "result.json") as tmp:
        tmp.write_text(json.dumps(out.as_json(), indent=2, default=str))
    return out


@dataclass(frozen=True)
class Prepared:
    """What a stage reads of a dataset: the splits (train restricted to its labelled part), the preprocessing
    spec, and the unlabelled pool (the dataset's own, plus the train rows that lost their labels), or None."""

    splits: dict[str, Dataset]
    spec: dict
    pool: np.ndarray | None


def load_data(ref: DataRef) -> Prepared:
    root = Path(ref.root)
    splits, spec = layout.load_splits(root, ref.name), layout.load_spec(root, ref.name)
    pool = layout.load_pool(root, ref.name)
    if ref.split:
        from components.bench import resplit

        splits["train"], splits["val"] = resplit(splits["train"], splits["val"], ref.split)
    if ref.labelled_fraction < 1:
        from components.bench import labelled_subset

        train, rest = labelled_subset(splits["train"], ref.labelled_fraction, ref.subset_seed)
        splits["train"] = train
        pool = rest if pool is None else np.concatenate([rest, pool])
    return Prepared(splits, spec, pool)
