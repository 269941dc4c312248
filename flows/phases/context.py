"""A tracked run of a command (`run`, `search`, `bench kd`): its config, its MLflow parent run and lineage, opened
after marking the runs of killed processes FAILED, and closed FAILED when the flow raises; and a cached stage task
run inside its own nested MLflow run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from prefect import get_run_logger
from prefect.runtime import flow_run

from components.config import PipelineConfig
from flows.infra.environment import tracking_uri
from flows.tasks.caching import cached
from flows.tasks.specs import TrainedModel
from flows.tracking.registry import drop_partial_versions
from flows.tracking.tracker import Tracker, flatten


@dataclass
class Lineage:
    """Where a run's models come from: the code's commit, a hash of the effective config, the Prefect flow run and
    (once validated) DVC's hash of the prepared data. Tagged on the parent run and on every registered version."""

    git_commit: str
    params_hash: str
    prefect_flow_run_id: str
    dataset_hash: str | None = None

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ValidationSummary:
    success: bool
    evaluated: int
    failed: int


@dataclass(frozen=True)
class StageTime:
    """A training this run ran: its stage, what it was, when it began (Unix time) and how long it took."""

    stage: str
    what: str
    started: float
    seconds: float
    epochs: int  # epochs trained, and the median wall time of one epoch's training pass
    epoch_s: float


@dataclass(frozen=True)
class TrainingTimes:
    """The trainings' own times, their sum, and the wall time during which at least one of them ran (the union of
    their intervals): with every core busy the wall is close to the longest chain, one after another it is the
    sum."""

    trainings: list[StageTime]
    sum_s: float
    wall_s: float

    @classmethod
    def of(cls, times: list[StageTime]) -> TrainingTimes:
        wall, end = 0.0, float("-inf")
        for a, b in sorted((t.started, t.started + t.seconds) for t in times):
            wall += max(0.0, b - max(a, end))
            end = max(end, b)
        return cls(list(times), sum(t.seconds for t in times), wall)

    def as_json(self) -> dict:
        return {
            "trainings": [vars(t) for t in self.trainings],
            "sum_s": round(self.sum_s, 3),
            "wall_s": round(self.wall_s, 3),
            "wall_over_sum": round(self.wall_s / self.sum_s, 4) if self.sum_s else None,
        }


@dataclass
class Run:
    """One tracked run: its project, config, MLflow tracker and parent run, lineage, and what validation found."""

    root: Path
    cfg: PipelineConfig
    tracker: Tracker
    parent: str
    lineage: Lineage
    validation: ValidationSummary | None = None
    pending: dict = field(default_factory=dict)  # (task name, spec key) -> future of a stage started early
    times: list[StageTime] = field(default_factory=list)  # the trainings this run ran (not cached), in order
    summary: dict = field(default_factory=dict)  # more for the run's JSON summary (e.g. the teacher views' pool)

    @property
    def log(self):
        return get_run_logger()


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flow_run_name(prefix: str = ""):
    """Prefect's flow_run_name of a flow with a `dataset` parameter: PREFIX + the dataset (params.yaml's default
    when none is given) + the start time, e.g. 'search-fsdd-20261123-140509'."""

    def name() -> str:
        params = flow_run.parameters
        dataset = params.get("dataset")
        if not dataset:
            try:
                dataset = yaml.safe_load((Path(params.get("project_dir", ".")) / "params.yaml").read_text())["dataset"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):  # the flow itself reports a bad params.yaml
                dataset = "default-dataset"
        return f"{prefix}{dataset}-{datetime.now():%Y%m%d-%H%M%S}"

    return name


def resolved(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with `train.precision: auto` made concrete for this machine (components.train.resolve_precision):
    what the run's params, its model card and every stage's cache key hold."""
    from components.train import resolve_precision

    precision = resolve_precision(cfg.train.precision, cfg.train.device)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": precision})})


def open_run(root: Path, cfg: PipelineConfig, stage: str, overrides: dict | None) -> Run:
    """The tracker and parent run of a command's run, after marking runs of killed processes FAILED; its config
    `resolved` for this machine (its params hash is the config's as written: what `reproduce` reads back)."""
    written = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    cfg = resolved(cfg)
    cfg_dict = cfg.model_dump(mode="json")
    local_store = os.environ["MLFLOW_TRACKING_URI"] == tracking_uri(root)
    tracker = Tracker(cfg.data.name, root / "mlruns" if local_store else None)
    dead = tracker.close_dead_runs()
    if dead:
        dropped = drop_partial_versions(cfg.data.name, dead)
        get_run_logger().warning(
            f"{len(dead)} MLflow run(s) left RUNNING by a killed process marked FAILED"
            + (f"; partly registered version(s) {dropped} deleted" if dropped else "")
        )
    lineage = Lineage(
        git_commit(root),
        written,
        flow_run.get_id() or "none",
    )
    parent = tracker.start(
        stage, lineage.tags() | {"overrides": json.dumps(overrides or {}, sort_keys=True)}, parent=True
    )
    tracker.params(parent, flatten(cfg_dict))
    tracker.json(parent, cfg_dict, "effective_config.json")
    return Run(root, cfg, tracker, parent, lineage)


@contextmanager
def tracked_run(root: Path, cfg: PipelineConfig, stage: str, overrides: dict | None):
    """A command's run for the block: opened, FINISHED when the block completes, its open runs FAILED when it
    raises (unless the tracking server stopped answering: the next run closes them)."""
    run = open_run(root, cfg, stage, overrides)
    try:
        yield run
    except BaseException as e:
        run.tracker.fail_open_runs(e)
        raise
    run.tracker.end(run.parent)


def parallel() -> bool:
    """Whether the running flow's tasks run on Dask workers, side by side, rather than one after another here."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    ctx = FlowRunContext.get()
    return ctx is not None and isinstance(ctx.task_runner, DaskTaskRunner)


def prefetch(run: Run, task_fn, spec) -> None:
    """Start a cached stage task now on the flow's Dask workers, beside the others started; `tracked` on the same
    task and spec then waits for it instead of running it. Without workers nothing starts (`tracked` runs it)."""
    key = (task_fn.name, spec.key())
    if parallel() and key not in run.pending:
        run.pending[key] = task_fn.submit(spec)


def tracked(run: Run, stage: str, task_fn, spec, tags: dict | None = None):
    """A cached stage task inside its own nested MLflow run (waiting for it where `prefetch` started it): cache hit,
    per-epoch history, val metrics, and a pruning's report. Returns the task's output."""
    with run.tracker.stage(stage, {"dataset_hash": run.lineage.dataset_hash, **(tags or {})}) as rid:
        out, was_cached = cached(task_fn, spec, run.pending.pop((task_fn.name, spec.key()), None))
        run.tracker.tags(rid, {"cached": was_cached})
        if isinstance(out, TrainedModel) and not was_cached:
            epoch_s = sorted(h.seconds for h in out.history)
            run.times.append(
                StageTime(
                    stage,
                    json.dumps(tags or {}, sort_keys=True),
                    out.started,
                    out.seconds,
                    len(epoch_s),
                    epoch_s[len(epoch_s) // 2] if epoch_s else 0.0,
                )
            )
        if isinstance(out, TrainedModel):  # a quantized model is its artifact alone
            run.tracker.history(rid, out.history)
            run.tracker.metrics(rid, {"params": out.params} | {f"val.{k}": v for k, v in out.val.scalars().items()})
            if out.prune is not None:
                run.tracker.metrics(rid, out.prune.numbers())
                run.tracker.json(rid, out.prune.model_dump(), "prune_report.json")
    run.log.info(f"{stage}{' ' + str(tags) if tags else ''}: {'reused from cache' if was_cached else 'done'}")
    return out
