"""What a search shows: the front and both references as a table (terminal, Prefect artifact, model card), the
verdict on the pick, and the plot of every trial on the val-metric / p95 plane."""

from __future__ import annotations

import io
from pathlib import Path

from components import search as S
from components.config import PipelineConfig
from flows.reporting.plots import _pyplot


def score_key(metric: str) -> str:
    """A POINT's key of the val gate metric."""
    return "val_accuracy" if metric == "accuracy" else f"val_{metric}"


def front_rows(settled, metric: str) -> list[dict]:
    """One row a point (both references, then the front), rounded, for a table."""
    refs = [(f"{name} ({p.candidate})", p) for name, p in (("default", settled.default), ("naive", settled.naive))]
    points = [
        (f"{'chosen: ' if p is settled.chosen else ''}trial {p.trial}: {p.recipe.label()}", p) for p in settled.front
    ]
    return [
        {
            "point": label,
            f"val_{metric}": round(p.val_score, 4),
            "test_accuracy": round(p.test_accuracy, 4),
            "p95_ms": round(p.p95_ms, 4),
            "size_kib": round(p.size_bytes / 1024, 4),
            "energy_nj": None if p.energy_nj is None else round(p.energy_nj, 4),
        }
        for label, p in refs + points
    ]


def verdict_lines(settled, metric: str) -> list[str]:
    c = settled.chosen
    if c is None:
        return [
            "No searched point passes the gate and matches the default recipe on val: nothing registered; "
            "the default recipe stays the answer."
        ]
    out = [
        f"Chosen: trial {c.trial}, {c.recipe.label()}: val {metric} {c.val_score:.4f}, test accuracy "
        f"{c.test_accuracy:.4f}, p95 {c.p95_ms:.4f} ms, {c.size_bytes / 1024:.1f} KiB, "
        f"energy {c.energy_nj:.1f} nJ ({c.energy_source.split(':')[0]})."
    ]
    for name, r in (("default", settled.default), ("naive", settled.naive)):
        q = settled.ratios[name]
        energy = q.energy_nj if q.energy_nj is not None else float("nan")
        out.append(
            f"  vs {name} ({r.candidate}: val {r.val_score:.4f}, p95 {r.p95_ms:.4f} ms, "
            f"{r.size_bytes / 1024:.1f} KiB): val {q.score_diff * 100:+.2f} points, p95 {q.p95_ms:.2f}x ({q.speed}"
            f"{_paired(q)}), size {q.size_bytes:.2f}x, energy {energy:.2f}x"
        )
    out.append(settled.resolution.line())
    return out


def _paired(q) -> str:
    """The paired per-round ratio behind a verdict, where there is one."""
    if q.paired_p95 is None:
        return ""
    if q.paired_p95_lo is None:
        return f"; paired per round {q.paired_p95:.2f}x, too few rounds for a 95% interval"
    return f"; paired per round {q.paired_p95:.2f}x [{q.paired_p95_lo:.2f}, {q.paired_p95_hi:.2f}]"


def render(settled, metric: str, cfg: PipelineConfig) -> str:
    from rich.console import Console
    from rich.table import Table

    b = cfg.benchmark
    t = Table(
        title=f"Search front and references: val {metric} (chosen on), test accuracy (reported), latency "
        f"measured again side by side ({settled.resolution.rounds} rounds, median), ORT CPU, "
        f"{b.intra_op_threads} thread(s), batch {b.batch_size}"
    )
    rows = front_rows(settled, metric)
    for col in rows[0]:
        t.add_column(col, justify="left" if col == "point" else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    console.print(t)
    for line in verdict_lines(settled, metric):
        console.print(line, highlight=False)
    return buf.getvalue()


def card_section(study, settled, metric: str, pick: str) -> str:
    """The registered point's model card section: the study, the verdict, the front beside both references."""
    rows = [
        f"| {r['point']} | {list(r.values())[1]:.4f} | {r['test_accuracy']:.4f} | {r['p95_ms']:.4f} "
        f"| {r['size_kib']:.1f} | {r['energy_nj']:.1f} |"
        for r in front_rows(settled, metric)
    ]
    lines = [
        "## Search",
        "",
        f"Study `{study.study_name}`, {len(study.trials)} trials; picked by `{pick}` on the front.",
        "",
        *[f"- {line.strip()}" for line in verdict_lines(settled, metric)],
        "",
        "| point | val | test acc | p95 ms | KiB | energy nJ |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Energy: {settled.chosen.energy_source}.",
        "",
        "![front](pareto_front.png)",
    ]
    return "\n".join(lines) + "\n"


def pareto_plot(done: list[S.SearchPoint], settled, metric: str, path: Path) -> None:
    """Val metric vs p95 of every trial (`done`, grey: as measured during the search), the front, both references
    and the pick; marker area grows with the model's size."""
    plt = _pyplot()

    def area(p):
        return 20 + p.size_bytes / 1024 * 6

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter(
        [p.p95_ms for p in done],
        [p.val_score for p in done],
        s=[area(p) for p in done],
        c="lightgrey",
        edgecolors="grey",
        label="trials (search-time latency)",
    )
    front = sorted(settled.front, key=lambda p: p.p95_ms)
    ax.plot(
        [p.p95_ms for p in front],
        [p.val_score for p in front],
        "o-",
        color="tab:blue",
        label="front (measured again)",
        markersize=6,
    )
    for name, ref, marker, color in (
        ("default", settled.default, "s", "tab:orange"),
        ("naive", settled.naive, "^", "tab:red"),
    ):
        ax.scatter(
            [ref.p95_ms], [ref.val_score], s=area(ref), marker=marker, color=color, label=f"{name}: {ref.candidate}"
        )
    if c := settled.chosen:
        ax.scatter(
            [c.p95_ms],
            [c.val_score],
            s=area(c) * 2,
            facecolors="none",
            edgecolors="green",
            linewidths=2,
            label=f"chosen: trial {c.trial}",
        )
    ax.set_xlabel("p95 latency (ms, ORT CPU)")
    ax.set_ylabel(f"val {metric}")
    ax.set_title("Search: val metric vs p95 (marker area ~ size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
