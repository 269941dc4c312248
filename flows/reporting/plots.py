"""The plots of a run and of the KD bench, as PNG files (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

from components.candidate import Measurement
from components.config import BenchmarkConfig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tradeoff_plot(
    results: dict[str, Measurement], path: Path, profile: BenchmarkConfig, metric: str = "accuracy"
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in results.items():
        x, y = m.latency.p95_ms * 1000, m.val.get(metric) * 100
        ax.scatter(x, y, s=40 + m.latency.size_bytes / 4096)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"p95 latency (µs), ORT CPU, {profile.intra_op_threads} thread(s), batch {profile.batch_size}")
    ax.set_ylabel(f"validation {metric} (%), through ONNX Runtime")
    ax.set_title("Validation score vs latency of every candidate (marker area ~ file size)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_plot(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
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
