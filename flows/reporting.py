"""Human-facing output of a run: the candidate table, the accuracy/latency plot, the terminal summary."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from components.config import BenchmarkConfig
from components.gate import Decision


def candidate_table(results: dict[str, dict], decisions: dict[str, Decision], teacher: dict,
                    metric: str = "accuracy") -> pd.DataFrame:
    rows = []
    for name, m in results.items():
        rows.append({
            "candidate": name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "metric": metric,
            "score": m.get(metric, float("nan")), "sensitivity": m.get("sensitivity", float("nan")),
            "specificity": m.get("specificity", float("nan")), "size_kb": m["size_bytes"] / 1024,
            "p50_ms": m["p50_ms"], "p95_ms": m["p95_ms"], "p99_ms": m["p99_ms"],
            "throughput_sps": m["throughput_sps"], "peak_mem_mb": m["peak_mem_mb"],
            "size_ratio": teacher["size_bytes"] / m["size_bytes"], "p50_speedup": teacher["p50_ms"] / m["p50_ms"],
            "accuracy_retention": m["accuracy"] / teacher["accuracy"], "gate": "pass" if decisions[name].passed else "fail",
        })
    return pd.DataFrame(rows)


def tradeoff_plot(results: dict[str, dict], path: Path, profile: BenchmarkConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in results.items():
        ax.scatter(m["p95_ms"] * 1000, m["accuracy"] * 100, s=40 + m["size_bytes"] / 4096)
        ax.annotate(name, (m["p95_ms"] * 1000, m["accuracy"] * 100), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel(f"p95 latency (µs), ORT CPU, {profile.intra_op_threads} thread(s), batch {profile.batch_size}")
    ax.set_ylabel("test accuracy (%), through ONNX Runtime")
    ax.set_title("Accuracy vs latency of every candidate (marker area ~ file size)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_plot(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1.0 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, matrix[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(n), classes, rotation=45, fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (test split, ORT)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_summary(table: pd.DataFrame, kd_gain: float, plain_acc: float, profile: BenchmarkConfig,
                   best: str | None, version: str | None, decisions: dict[str, Decision], model_name: str,
                   metric: str = "accuracy") -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Candidates (ORT CPU, {profile.intra_op_threads} thread(s), batch {profile.batch_size}, "
                    f"{profile.timed_runs} timed runs after {profile.warmup_runs} warm-up)")
    cols = ["candidate", "accuracy", *([metric] if metric != "accuracy" else []), "macro F1", "size KiB", "p50 ms", "p95 ms", "size ×", "speed ×", "acc. retention", "gate"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("candidate", "gate") else "right")
    for r in table.itertuples():
        score = [f"{r.score:.4f}"] if metric != "accuracy" else []
        t.add_row(r.candidate, f"{r.accuracy:.4f}", *score, f"{r.macro_f1:.4f}", f"{r.size_kb:.1f}", f"{r.p50_ms:.4f}", f"{r.p95_ms:.4f}",
                  f"{r.size_ratio:.1f}", f"{r.p50_speedup:.2f}", f"{r.accuracy_retention:.4f}", r.gate)
    buf = io.StringIO()
    con = Console(file=buf, width=120, force_terminal=False)
    con.print(t)
    con.print(f"KD gain: {kd_gain * 100:+.2f} points (KD student vs the same student trained without KD, "
              f"{plain_acc:.4f})")
    if best:
        con.print(f"Registered {model_name} version {version} ({best}) with alias 'staging'.")
    else:
        con.print("No candidate passed the gate; nothing was registered.")
    for name, d in decisions.items():
        if not d.passed:
            con.print(f"  {name} failed: " + "; ".join(d.reasons))
    return buf.getvalue()


def model_card(*, cfg, candidate: str, table: pd.DataFrame, decisions: dict[str, Decision], gate_report: dict,
               validation: dict, data_summary: dict, lineage: dict, kd_gain: float, plain_acc: float,
               sha256: str, run_id: str) -> str:
    """The Markdown card of a registered version: what it is for, its data and validation, every model's
    metrics, the benchmark under its device profile, and the gate's verdict against production at the time."""
    import platform

    import onnxruntime

    d, b, metric = cfg.data, cfg.benchmark, cfg.gate.metric
    champion = gate_report["champion_version"]
    roles = {"teacher_fp32": "teacher", "student_fp32": "student (KD)"}

    def row(cells) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    extra = [metric] if metric != "accuracy" else []
    binary = [c for c in ("sensitivity", "specificity") if len(d.classes) == 2 and c != metric]
    quality = [row(["model", "role", "accuracy", "macro F1", *extra, *binary, "gate"]),
               row(["---"] * (5 + len(extra) + len(binary)))]
    bench = [row(["model", "size KiB", "p50 ms", "p95 ms", "p99 ms", "throughput /s", "peak MiB"]), row(["---"] * 7)]
    for r in table.itertuples():
        role = "**registered**" if r.candidate == candidate else roles.get(r.candidate, "candidate")
        quality.append(row([r.candidate, role, f"{r.accuracy:.4f}", f"{r.macro_f1:.4f}",
                            *[f"{r.score:.4f}" for _ in extra], *[f"{getattr(r, c):.4f}" for c in binary], r.gate]))
        bench.append(row([r.candidate, f"{r.size_kb:.1f}", f"{r.p50_ms:.4f}", f"{r.p95_ms:.4f}", f"{r.p99_ms:.4f}",
                          f"{r.throughput_sps:.0f}", f"{r.peak_mem_mb:.1f}"]))
    reasons = [f"- {n}: " + ("pass" if dec.passed else "fail: " + "; ".join(dec.reasons))
               for n, dec in decisions.items()]
    if champion:
        prod = gate_report["champion"] or {}
        production = (f"Production at the time: version {champion} ({metric} {prod.get(metric, float('nan')):.4f}); "
                      f"a candidate may lose at most {cfg.gate.regression_tolerance} of {metric} against it.")
    else:
        production = "Production at the time: none (no version held `production`)."
    counts = data_summary.get("counts", {})
    intended = d.intended_use or (f"Classifies {d.kind} inputs into {', '.join(d.classes)}, on inputs like those "
                                  f"of the `{d.name}` dataset; not validated for anything else.")
    lines = [
        f"# Model card: {d.name} / {candidate}", "",
        "## Intended use", "", intended, "",
        "Input: raw " + {"image": "image files", "audio": "WAV files", "text": "text lines",
                         "tabular": "rows of feature values"}.get(d.kind, "samples")
        + " through `extra_files/preprocess.json` (`edgekd predict`). Output: one of "
        + ", ".join(f"`{c}`" for c in d.classes) + ".", "",
        "## Data", "",
        f"- Dataset `{d.name}` (kind `{d.kind}`), source `{d.source}` under `{d.root}`",
        f"- Data version (DVC hash of the prepared splits): `{lineage['dataset_hash']}`",
        f"- Splits: train {counts.get('train')}, val {counts.get('val')}, test {counts.get('test')}; "
        f"duplicates dropped: {data_summary.get('duplicates_dropped')}",
        f"- Validation (Great Expectations): {'passed' if validation['success'] else 'FAILED'}, "
        f"{validation['evaluated']} expectations evaluated, {validation['failed']} failed", "",
        "## Metrics (test split, measured through ONNX Runtime)", "", *quality, "",
        f"KD gain: {kd_gain * 100:+.2f} points (the KD student vs the same student trained without KD, "
        f"{plain_acc:.4f}).", "",
        "## Benchmark", "",
        f"Device profile: ONNX Runtime {onnxruntime.__version__} CPU execution provider, {b.intra_op_threads} "
        f"intra-op thread(s), batch {b.batch_size}, {b.timed_runs} timed runs after {b.warmup_runs} warm-up, "
        f"on {platform.machine()} ({os.cpu_count()} logical CPUs, {platform.system()}).", "", *bench, "",
        "## Gate", "",
        f"Policy: {', '.join(f'{k}={v}' for k, v in gate_report['policy'].items())}.", "",
        production, "", *reasons, "",
        "## Lineage", "",
        f"- Pipeline run (MLflow): `{run_id}`; Prefect flow run: `{lineage.get('prefect_flow_run_id')}`",
        f"- Git commit: `{lineage.get('git_commit')}`; params hash: `{lineage.get('params_hash')}`",
        f"- `model.onnx` sha256: `{sha256}`",
    ]
    return "\n".join(lines) + "\n"
