"""`edgekd bench kd`: KD methods against the equal-budget plain student, over student widths and seeds.

The same stages as the pipeline (DVC + GX data preparation, the teacher, `train_student` for every student, so
their caches are shared), then a table of mean ± std test accuracy per width and method, the method chosen on
validation and its recovery of the teacher - plain gap. A benchmark, not a test: it trains width x method x seed
students, side by side on Dask workers when there are several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from components import kd
from components.bench import Accuracy, summarize
from components.config import load_config
from components.export import ort_accuracy
from flows.phases.bench import runnable, students, track
from flows.phases.context import Run, flow_run_name, tracked_run
from flows.phases.train import train_teachers
from flows.phases.validate import validate
from flows.reporting.bench import BenchResult, render
from flows.tasks.data import load_data


@flow(name="edgekd-bench-kd", flow_run_name=flow_run_name("bench-kd-"))
def bench_kd(
    project_dir: str = ".",
    dataset: str | None = None,
    widths: list[int] | None = None,
    seeds: int = 3,
    methods: list[str] | None = None,
    labelled_fraction: float = 1.0,
    overrides: dict[str, Any] | None = None,
    workers: int = 1,
) -> tuple[str, BenchResult]:
    """The bench's text table and result. With `workers` > 1 the students run on the flow's task runner (Dask)."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    unknown = sorted(set(methods or []) - set(kd.METHODS) - {"plain"})
    if unknown:
        raise kd.KDConfigError(f"--methods: unknown {unknown}; expected some of {sorted(kd.METHODS)}")
    names = [m for m in (methods or list(kd.METHODS)) if m != "plain"]
    with tracked_run(root, cfg, "bench_kd", overrides) as run:
        return _bench(run, widths or [cfg.student.width], seeds, names, labelled_fraction, workers)


def _bench(
    run: Run, widths: list[int], seeds: int, methods: list[str], fraction: float, workers: int
) -> tuple[str, BenchResult]:
    cfg, log = run.cfg, run.log
    data = validate(run).model_copy(update={"labelled_fraction": fraction, "subset_seed": cfg.data.seed})
    prepared = load_data(data)
    test, pool = prepared.splits["test"], prepared.pool
    teacher = train_teachers(run, data)
    t_acc = Accuracy(val_accuracy=teacher.val.accuracy, test_accuracy=ort_accuracy(teacher.onnx.path, test.x, test.y))
    names, skipped = runnable(methods, pool is not None and len(pool) > 0, len(teacher.ref.members) == 1)
    for name, why in skipped.items():
        log.warning(f"method {name} skipped: {why}")
    log.info(
        f"bench kd on {cfg.data.name}: {len(prepared.splits['train'])} labelled train rows, pool "
        f"{0 if pool is None else len(pool)}, teacher val {t_acc.val_accuracy:.4f} test "
        f"{t_acc.test_accuracy:.4f}; widths {widths}, {seeds} seed(s), methods {['plain', *names]}"
    )
    rows = students(run, data, teacher.ref, widths, seeds, names, workers)
    result = BenchResult(cfg.data.name, fraction, t_acc, rows, summarize(rows, t_acc), skipped)
    text = render(result, cfg.teacher.min_margin)
    track(run, result.table, result, text)
    log.info("bench kd\n" + text)
    return text, result
