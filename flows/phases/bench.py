"""The KD bench's phases: which methods the data and teacher can serve, every width x seed x method student (one
after another in this process, or side by side on the flow's Dask workers: the same numbers either way), and the
table tracked on the bench's MLflow run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components import kd
from components.bench import BenchCell, BenchRow
from components.config import PipelineConfig
from flows.phases.context import Run
from flows.reporting.bench import BenchResult, width_plot
from flows.tasks.specs import DataRef, StudentSpec, TeacherRef
from flows.tasks.student import bench_student, run_bench_student


def runnable(names: list[str], has_pool: bool, teacher_is_module: bool) -> tuple[list[str], dict[str, str]]:
    """The methods that can run on this data and teacher, and why each other one is skipped."""
    keep, skipped = [], {}
    for name in names:
        cls = kd.METHODS[name]
        if cls.requires_pool and not has_pool:
            skipped[name] = "needs an unlabelled pool (--labelled-fraction F < 1, or datasets.NAME.unlabelled)"
        elif cls.uses_features and not teacher_is_module:
            skipped[name] = kd.FEATURES_NEED
        else:
            keep.append(name)
    return keep, skipped


def _specs(
    cfg: PipelineConfig, splits: dict[int, tuple[DataRef, TeacherRef]], widths: list[int], seeds: int, names: list[str]
) -> dict[tuple, list[StudentSpec]]:
    """Per (width, seed, split, method): the students it trains (a sweep several, its plain variant the plain
    student); `splits`: each split's data and the teacher trained on it."""
    out = {}
    for width in widths:
        for seed in range(seeds):
            for k, (data, teacher) in splits.items():
                out[(width, seed, k, "plain")] = [StudentSpec.of(cfg, data, kd.PLAIN, None, seed=seed, width=width)]
                for name in names:
                    out[(width, seed, k, name)] = [
                        StudentSpec.of(cfg, data, v, teacher, seed=seed, width=width)
                        for v in kd.make(name, cfg.distill.options(name)).variants()
                    ]
    return out


def students(
    run: Run,
    splits: dict[int, tuple[DataRef, TeacherRef]],
    widths: list[int],
    seeds: int,
    names: list[str],
    workers: int,
) -> list[BenchRow]:
    """Per width, seed and split: the plain student, then each method's student (a sweep keeps its best on val).
    With `workers` > 1 every distinct student is a task on the flow's Dask workers, all submitted at once."""
    jobs = _specs(run.cfg, splits, widths, seeds, names)
    unique = {s.key(): s for specs in jobs.values() for s in specs}
    run.log.info(
        f"{len(unique)} students to train or take from the cache, "
        + (f"{workers} at a time on Dask workers" if workers > 1 else "one after another")
    )
    if workers > 1:
        # Longest first (a KD student runs the teacher at every step, a wide one does more work): the students that
        # finish last are then short plain ones, and no worker idles long while another finishes a KD student.
        order = sorted(unique, key=lambda k: (unique[k].teacher is None, -unique[k].width))
        futures = {k: run_bench_student.submit(unique[k]) for k in order}
        done = {k: f.result() for k, f in futures.items()}
    else:
        done = {k: bench_student(s) for k, s in unique.items()}
    rows, plain = [], {}
    for (width, seed, k, method), specs in jobs.items():  # plain first for each width, seed and split
        outs = {s.variant.label: done[s.key()] for s in specs}
        best = max(outs, key=lambda label: outs[label].val_accuracy)  # a sweep picks on val
        acc = outs[best]
        row = BenchRow(
            width=width,
            method=method,
            seed=seed,
            split=k,
            val_accuracy=acc.val_accuracy,
            test_accuracy=acc.test_accuracy,
            variant=best,
            variants=len(specs),  # a sweep's val accuracy is its best of these: a selection, not a measurement
            test_correct=acc.test_correct,
        )
        rows.append(row)
        if method == "plain":
            plain[(width, seed, k)] = row
            continue
        base = plain[(width, seed, k)]
        run.log.info(
            f"width {width} seed {seed} split {k} {method}: val {row.val_accuracy:.4f} test {row.test_accuracy:.4f} "
            f"(plain: val {base.val_accuracy:.4f} test {base.test_accuracy:.4f})"
        )
    return rows


def track(run: Run, table: list[BenchCell], result: BenchResult, text: str) -> None:
    """The table's numbers as the bench run's metrics, with its JSON, text and accuracy-vs-width plot."""
    tr = run.tracker
    metrics = {
        "teacher.val_accuracy": result.teacher.val_accuracy,
        "teacher.test_accuracy": result.teacher.test_accuracy,
    }
    for r in table:
        key = f"w{r.width}.{r.method}"
        metrics |= {f"{key}.val_mean": r.val.mean, f"{key}.test_mean": r.test.mean, f"{key}.test_std": r.test.std}
        if r.recovery is not None:
            metrics[f"{key}.recovery"] = r.recovery
        if r.test_gain is not None:
            metrics[f"{key}.test_gain"] = r.test_gain.mean
            metrics |= {f"{key}.test_gain_{b}": v for b in ("lo", "hi") if (v := getattr(r.test_gain, b)) is not None}
        if r.holm_p is not None:
            metrics[f"{key}.test_gain_holm_p"] = r.holm_p
    tr.metrics(run.parent, metrics)
    tr.tags(
        run.parent,
        {
            "labelled_fraction": result.labelled_fraction,
            "chosen": ", ".join(f"w{w}: {m}" for w, m in result.chosen.items()),
            "verdicts": ", ".join(f"w{r.width} {r.method}: {r.verdict}" for r in table if r.verdict),
        },
    )
    tr.json(run.parent, result.as_json(), "bench_kd.json")
    tr.text(run.parent, text, "bench_kd.txt")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accuracy_vs_width.png"
        width_plot(table, result.teacher, path, result.dataset, result.labelled_fraction)
        tr.file(run.parent, path)
