"""`edgekd bench kd`: KD methods against the equal-budget plain student, over student widths and seeds.

The same stages as the pipeline (DVC + GX data preparation, the teacher, `train_student` for every student, so
their caches are shared), then a table of mean ± std test accuracy per width and method, the method chosen on
validation and its recovery of the teacher - plain gap. A benchmark, not a test: it trains width x method x seed
students.
"""
from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow

from components import kd
from components.bench import chosen, summarize
from components.config import load_config
from components.export import ort_accuracy
from flows.pipeline import Run, cached, open_run, student_spec, train_teachers, validate
from flows.stages import load_data, train_student


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"bench-kd-{flow_run.parameters.get('dataset') or 'default-dataset'}-{datetime.now():%Y%m%d-%H%M%S}"


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


@flow(name="edgekd-bench-kd", flow_run_name=_run_name)
def bench_kd(project_dir: str = ".", dataset: str | None = None, widths: list[int] | None = None, seeds: int = 3,
             methods: list[str] | None = None, labelled_fraction: float = 1.0,
             overrides: dict[str, Any] | None = None) -> dict:
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    unknown = sorted(set(methods or []) - set(kd.METHODS) - {"plain"})
    if unknown:
        raise kd.KDConfigError(f"--methods: unknown {unknown}; expected some of {sorted(kd.METHODS)}")
    run = open_run(root, cfg, "bench_kd", overrides)
    try:
        outcome = _bench(run, widths or [cfg.student.width], seeds,
                         [m for m in (methods or list(kd.METHODS)) if m != "plain"], labelled_fraction)
    except BaseException as e:
        run.tracker.fail_open_runs(e)
        raise
    run.tracker.end(run.parent)
    return outcome


def _bench(run: Run, widths: list[int], seeds: int, methods: list[str], fraction: float) -> dict:
    cfg, log = run.cfg, run.log
    data = validate(run).model_copy(update={"labelled_fraction": fraction, "subset_seed": cfg.data.seed})
    splits, _, pool = load_data(data)
    teacher = train_teachers(run, data)
    t_acc = {"val_accuracy": teacher["val"]["accuracy"],
             "test_accuracy": ort_accuracy(teacher["onnx"]["path"], splits["test"].x, splits["test"].y)}
    names, skipped = runnable(methods, pool is not None and len(pool) > 0, len(teacher["ref"].members) == 1)
    for name, why in skipped.items():
        log.warning(f"method {name} skipped: {why}")
    log.info(f"bench kd on {cfg.data.name}: {len(splits['train'])} labelled train rows, pool "
             f"{0 if pool is None else len(pool)}, teacher val {t_acc['val_accuracy']:.4f} test "
             f"{t_acc['test_accuracy']:.4f}; widths {widths}, {seeds} seed(s), methods {['plain', *names]}")

    rows = _students(run, data, teacher["ref"], splits["test"], widths, seeds, names)
    table = summarize(rows, t_acc)
    text = render(cfg.data.name, fraction, t_acc, table, skipped, cfg.teacher.min_margin)
    result = {"dataset": cfg.data.name, "labelled_fraction": fraction, "teacher": t_acc,
              "rows": [{k: r[k] for k in ("width", "method", "seed", "val_accuracy", "test_accuracy", "variant")}
                       for r in rows],
              "table": table, "chosen": {str(w): r["method"] for w, r in chosen(table).items()}, "skipped": skipped}
    _track(run, table, result, text)
    log.info("bench kd\n" + text)
    return {"text": text, "json": result}


def _students(run: Run, data, teacher_ref, test, widths: list[int], seeds: int, names: list[str]) -> list[dict]:
    """Per width and seed: the plain student, then each method's student (a sweep keeps its best on val)."""
    cfg, log = run.cfg, run.log

    def student(variant: kd.Variant, width: int, seed: int) -> dict:
        spec = student_spec(cfg, data, variant, teacher_ref, seed=seed, width=width)
        out, _ = cached(train_student, spec.model_dump(mode="json"))
        return out | {"test_accuracy": ort_accuracy(out["onnx"]["path"], test.x, test.y)}

    rows = []
    for width in widths:
        for seed in range(seeds):
            plain = student(kd.PLAIN, width, seed)
            rows.append(base := _row(width, "plain", seed, plain, "plain"))
            for name in names:
                outs = {v.label: plain if v.method == "plain" else student(v, width, seed)
                        for v in kd.make(name, cfg.distill.options(name)).variants()}
                best = max(outs, key=lambda label: outs[label]["val"]["accuracy"])  # a sweep picks on val
                rows.append(_row(width, name, seed, outs[best], best))
                log.info(f"width {width} seed {seed} {name}: val {rows[-1]['val_accuracy']:.4f} test "
                         f"{rows[-1]['test_accuracy']:.4f} (plain: val {base['val_accuracy']:.4f} test "
                         f"{base['test_accuracy']:.4f})")
    return rows


def _row(width: int, method: str, seed: int, out: dict, variant: str) -> dict:
    return {"width": width, "method": method, "seed": seed, "val_accuracy": out["val"]["accuracy"],
            "test_accuracy": out["test_accuracy"], "variant": variant}


def render(dataset: str, fraction: float, teacher: dict, table: list[dict], skipped: dict[str, str],
           min_margin: float = 0.0) -> str:
    best = chosen(table)
    lines = [f"KD bench on {dataset} (labelled fraction {fraction:g}): accuracy through ONNX Runtime, mean ± std "
             f"over seeds; teacher val {teacher['val_accuracy']:.4f}, test {teacher['test_accuracy']:.4f}",
             f"{'width':>5}  {'method':<18} {'val':>15}  {'test':>15}  {'recovery':>8}"]
    for r in table:
        mark = " <- chosen on val" if best.get(r["width"]) is r else ""
        rec = "" if r["recovery"] is None else f"{r['recovery'] * 100:7.1f}%"
        lines.append(f"{r['width']:>5}  {r['method']:<18} {r['val']['mean']:.4f} ± {r['val']['std']:.4f}  "
                     f"{r['test']['mean']:.4f} ± {r['test']['std']:.4f}  {rec:>8}{mark}")
    lines.append("recovery = (method - plain) / (teacher - plain) on mean test accuracy; plain is the same student "
                 "trained without a teacher on the same budget")
    lines += [f"width {r['width']}: the teacher is not clearly stronger than the plain student (val "
              f"{teacher['val_accuracy']:.4f} vs {r['val']['mean']:.4f}, margin below teacher.min_margin "
              f"{min_margin}): KD cannot be expected to help"
              for r in table if r["method"] == "plain" and teacher["val_accuracy"] - r["val"]["mean"] < min_margin]
    lines += [f"skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines)


def _track(run: Run, table: list[dict], result: dict, text: str) -> None:
    tr = run.tracker
    metrics = {"teacher.val_accuracy": result["teacher"]["val_accuracy"],
               "teacher.test_accuracy": result["teacher"]["test_accuracy"]}
    for r in table:
        key = f"w{r['width']}.{r['method']}"
        metrics |= {f"{key}.val_mean": r["val"]["mean"], f"{key}.test_mean": r["test"]["mean"],
                    f"{key}.test_std": r["test"]["std"]}
        if r["recovery"] is not None:
            metrics[f"{key}.recovery"] = r["recovery"]
    tr.metrics(run.parent, metrics)
    tr.tags(run.parent, {"labelled_fraction": result["labelled_fraction"],
                         "chosen": ", ".join(f"w{w}: {m}" for w, m in result["chosen"].items())})
    tr.json(run.parent, result, "bench_kd.json")
    tr.text(run.parent, text, "bench_kd.txt")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accuracy_vs_width.png"
        width_plot(table, result["teacher"], path, result["dataset"], result["labelled_fraction"])
        tr.file(run.parent, path)


def width_plot(table: list[dict], teacher: dict, path: Path, dataset: str, fraction: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in table):
        rs = sorted((r for r in table if r["method"] == method), key=lambda r: r["width"])
        ax.errorbar([r["width"] for r in rs], [r["test"]["mean"] * 100 for r in rs],
                    yerr=[r["test"]["std"] * 100 for r in rs], marker="o", capsize=3, label=method,
                    linewidth=2.5 if method == "plain" else 1.2, color="black" if method == "plain" else None)
    ax.axhline(teacher["test_accuracy"] * 100, linestyle="--", color="grey", label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("student width")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds, ORT")
    ax.set_title(f"KD methods vs the plain student: {dataset}, labelled fraction {fraction:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
