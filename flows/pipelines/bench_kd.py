"""`edgekd bench kd`: KD methods against the equal-budget plain student, over student widths, seeds and splits.

The same stages as the pipeline (DVC + GX data preparation, the teacher, `train_student` for every student, so
their caches are shared), then a table of mean ± std test accuracy per width and method, the method chosen on
validation, and each method's paired difference against plain (same seed, same split) with the split as the unit
and the test items' sampling variance in its 95% interval, its recovery of the teacher - plain gap and a verdict
Holm-adjusted over the width's methods. `splits` > 1 draws train and val again (test fixed), with a teacher trained
on each; with one split there is no interval and no verdict. A benchmark, not a test: it trains width x method x
seed x split students, side by side on Dask workers when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from components import kd
from components.bench import Accuracy, Conditions, summarize
from components.config import load_config
from components.formats import runtime
from flows.phases.bench import runnable, students, track
from flows.phases.context import Run, flow_run_name, git_commit, tracked_run
from flows.phases.train import train_teachers
from flows.phases.validate import validate
from flows.reporting.bench import BenchResult, render
from flows.tasks.data import load_data


@flow(name="edgekd-bench-kd", flow_run_name=flow_run_name("bench-kd-"))
def bench_kd(
    project_dir: str = ".",
    dataset: str | None = None,
    widths: list[int] | None = None,
    seeds: int = 5,
    methods: list[str] | None = None,
    labelled_fraction: float = 1.0,
    overrides: dict[str, Any] | None = None,
    workers: int = 1,
    splits: int = 1,
) -> tuple[str, BenchResult]:
    """The bench's text table and result. With `workers` > 1 the students run on the flow's task runner (Dask)."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    unknown = sorted(set(methods or []) - set(kd.METHODS) - {"plain"})
    if unknown:
        raise kd.KDConfigError(f"--methods: unknown {unknown}; expected some of {sorted(kd.METHODS)}")
    names = [m for m in (methods or list(kd.METHODS)) if m != "plain"]
    with tracked_run(root, cfg, "bench_kd", overrides) as run:
        grid = Grid(widths or [cfg.student.width], seeds, splits, labelled_fraction, workers)
        return _bench(run, grid, names)


@dataclass(frozen=True)
class Grid:
    widths: list[int]
    seeds: int
    splits: int
    fraction: float
    workers: int


def _bench(run: Run, grid: Grid, methods: list[str]) -> tuple[str, BenchResult]:
    cfg, log = run.cfg, run.log
    base = validate(run).model_copy(update={"labelled_fraction": grid.fraction, "subset_seed": cfg.data.seed})
    per_split, teachers = {}, {}
    for k in range(grid.splits):
        data = base.model_copy(update={"split": k})
        prepared = load_data(data)
        test, pool = prepared.splits["test"], prepared.pool
        teacher = train_teachers(run, data)
        teachers[k] = Accuracy(
            val_accuracy=teacher.val.accuracy, test_accuracy=runtime.accuracy(teacher.onnx.path, test.x, test.y)
        )
        per_split[k] = (data, teacher.ref)
        log.info(f"split {k}: teacher val {teachers[k].val_accuracy:.4f} test {teachers[k].test_accuracy:.4f}")
    names, skipped = runnable(methods, pool is not None and len(pool) > 0, len(teacher.ref.members) == 1)
    for name, why in skipped.items():
        log.warning(f"method {name} skipped: {why}")
    log.info(
        f"bench kd on {cfg.data.name}: {len(prepared.splits['train'])} labelled train rows, pool "
        f"{0 if pool is None else len(pool)}; widths {grid.widths}, {grid.seeds} seed(s) x {grid.splits} split(s), "
        f"methods {['plain', *names]}, {cfg.train.threads} training thread(s)"
    )
    rows = students(run, per_split, grid.widths, grid.seeds, names, grid.workers)
    result = BenchResult(
        cfg.data.name, grid.fraction, teachers, rows, summarize(rows, teachers), skipped, conditions(run, grid)
    )
    text = render(result, cfg.teacher.min_margin)
    track(run, result.table, result, text)
    log.info(  # the table itself is the command's output and the MLflow run's artifact, not repeated here
        "bench kd done: "
        + "; ".join(f"width {c.width} {c.method}: {c.verdict}" for c in result.table if c.verdict is not None)
    )
    return text, result


def conditions(run: Run, grid: Grid) -> Conditions:
    """What the bench's numbers depend on besides the data, for its JSON and its table's heading."""
    import datetime

    import torch

    t = run.cfg.train
    return Conditions(
        threads=t.threads,
        deterministic=t.deterministic,
        device=t.device,
        seeds=grid.seeds,
        splits=grid.splits,
        widths=grid.widths,
        labelled_fraction=grid.fraction,
        torch=torch.__version__,
        cpu=torch.backends.cpu.get_cpu_capability(),
        commit=git_commit(run.root),
        date=datetime.date.today().isoformat(),
    )
