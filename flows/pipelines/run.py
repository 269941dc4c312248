"""The pipeline flow: validate (DVC + GX) -> train (teacher, plain student, KD variants, the best KD variant on
val; the classical baseline) -> compress (the recipe table) -> measure (ORT on val and test, latency) -> judge (the
gate, on val, against the equal-budget plain student) -> publish (report, model card, registry, JSON summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from components import kd
from components.config import load_config
from flows.phases.compress import compress
from flows.phases.compress import start as start_compress
from flows.phases.context import flow_run_name, tracked_run
from flows.phases.judge import judge
from flows.phases.measure import measure
from flows.phases.publish import RunOutcome, publish
from flows.phases.train import train
from flows.phases.validate import validate


@flow(name="edgekd-pipeline", flow_run_name=flow_run_name())
def pipeline(project_dir: str = ".", dataset: str | None = None, overrides: dict[str, Any] | None = None) -> RunOutcome:
    """Run every stage on `dataset` (default: params.yaml's `dataset`) as configured in the project's params.yaml,
    which DVC's stages read too, with `overrides` of stage keys on top ({"distill.hinton.temperature": 4});
    register the best passing candidate with alias 'staging'."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    variants = kd.resolve(cfg.distill, cfg.teacher)  # a bad distill.* setting fails before anything runs
    with tracked_run(root, cfg, "pipeline", overrides) as run:
        data = validate(run)
        trained = train(run, data, variants, on_student=start_compress(run))
        measured = measure(run, data, compress(run, data, trained))
        return publish(run, trained, measured, judge(run, measured.measured))
