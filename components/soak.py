"""`edgekd bench soak` arithmetic: what grows run over run. Pure: one sample per run in, growth and verdicts out.

A sample is what the long-lived processes hold after a run (RSS, open files, threads, children, database
connections) and the bytes of the stores. After WARMUP runs (caches, pools and lazy imports fill up), growth is
the least-squares slope per run over at least MIN_FIT runs (a slope through two points is no fit). Each long-lived
process's RSS fails above RSS_MIB_PER_RUN, so the verdict names the process that grows (their sum is reported;
where samples do not say which process holds what, the sum is judged); a count fails when it ends above everything
it reached in the warm-up and its slope is positive (a count that only wobbles does not). Bytes of the stores are
artifact storage: reported, never failed.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

WARMUP = 3
MIN_FIT = 5  # runs after the warm-up that the slope is fitted to
RSS_MIB_PER_RUN = 1.0
COUNTS = ("open_files", "threads", "children", "db_connections")
STORAGE_PREFIX = "bytes."


class Sample(BaseModel):
    """What the long-lived processes held after one run (summed over them), and the stores' sizes."""

    model_config = ConfigDict(frozen=True)

    run: int
    rss_mib: float
    open_files: int
    threads: int
    children: int
    db_connections: int
    storage: dict[str, int]  # bytes under each store, by name
    rss_by_process: dict[str, float] = {}  # MiB, by long-lived process (to find which one grows)


class Growth(BaseModel):
    model_config = ConfigDict(frozen=True)

    quantity: str
    first: float
    last: float
    per_run: float  # least-squares slope over the runs after the warm-up
    limit: str
    grows: bool


def slope(values: list[float]) -> float:
    """Least-squares slope per run; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values), dtype=float), np.asarray(values, dtype=float), 1)[0])


def growth(samples: list[Sample]) -> list[Growth]:
    """Each quantity's growth per run after the warm-up, and whether it counts as growing."""
    if len(samples) < WARMUP + MIN_FIT:
        raise ValueError(
            f"a soak needs at least {WARMUP + MIN_FIT} runs: {WARMUP} warm-up runs, then {MIN_FIT} to fit a slope to"
        )
    warm, rest = samples[:WARMUP], samples[WARMUP:]
    by_process = bool(samples[0].rss_by_process)
    rss = slope([s.rss_mib for s in rest])
    out = [
        Growth(
            quantity="rss_mib",
            first=samples[0].rss_mib,
            last=samples[-1].rss_mib,
            per_run=rss,
            limit="the sum of the processes below: reported" if by_process else f"<= {RSS_MIB_PER_RUN} MiB per run",
            grows=not by_process and rss > RSS_MIB_PER_RUN,
        )
    ]
    for q in COUNTS:
        values = [getattr(s, q) for s in rest]
        per_run = slope(values)
        ceiling = max(getattr(s, q) for s in warm)
        out.append(
            Growth(
                quantity=q,
                first=getattr(samples[0], q),
                last=values[-1],
                per_run=per_run,
                limit=f"not above the warm-up's {ceiling}",
                grows=values[-1] > ceiling and per_run > 0,
            )
        )
    for name in samples[0].rss_by_process:
        values = [s.rss_by_process.get(name, 0.0) for s in rest]
        out.append(
            Growth(
                quantity=f"rss_mib.{name}",
                first=samples[0].rss_by_process[name],
                last=values[-1],
                per_run=slope(values),
                limit=f"<= {RSS_MIB_PER_RUN} MiB per run",
                grows=slope(values) > RSS_MIB_PER_RUN,
            )
        )
    for name in samples[0].storage:
        values = [s.storage.get(name, 0) for s in rest]
        out.append(
            Growth(
                quantity=STORAGE_PREFIX + name,
                first=samples[0].storage[name],
                last=values[-1],
                per_run=slope(values),
                limit="artifact storage: reported",
                grows=False,
            )
        )
    return out


def table(samples: list[Sample]) -> str:
    """The per-run samples as a Markdown table."""
    stores = list(samples[0].storage) if samples else []
    head = ["run", "RSS MiB", "open files", "threads", "children", "DB conns", *(f"{s} MiB" for s in stores)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in samples:
        cells = [s.run, f"{s.rss_mib:.1f}", s.open_files, s.threads, s.children, s.db_connections]
        cells += [f"{s.storage.get(n, 0) / 2**20:.2f}" for n in stores]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def growth_table(rows: list[Growth]) -> str:
    lines = [
        "| quantity | run 1 | last run | per run after the warm-up | limit | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for g in rows:
        verdict = "GROWS" if g.grows else "ok"
        lines.append(f"| {g.quantity} | {g.first:g} | {g.last:g} | {g.per_run:+.3f} | {g.limit} | {verdict} |")
    return "\n".join(lines)
