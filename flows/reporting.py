"""Human-facing output of a run: the candidate table, the accuracy/latency plot, the terminal summary."""
from __future__ import annotations

import io
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
            "score": m.get(metric, float("nan")), "size_kb": m["size_bytes"] / 1024,
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
