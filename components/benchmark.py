"""Latency, throughput, memory and energy of a run's models (ONNX files through ONNX Runtime, `.pte` programs
through ExecuTorch), with the run's timing resolution.

Latency comes from components.timing: every model timed interleaved over rounds in one child process pinned to
its cores, each percentile a median over rounds with its exact order-statistic 95% interval (components.rounds;
none below 6 rounds), and each model's per-round p95 kept (`p95_series`) so that decisions compare two models
paired by round. Where the caller names the comparisons to settle (`pairs`: a compressed model and its source),
a measurement whose paired interval of one of them still holds 1 adds `rounds` more rounds of every model, up to
`benchmark.max_extra_looks` times within `benchmark.max_extra_seconds`, on the plan that keeps false calls at 5%.
Beside the models, the same child times an Identity graph fed the same batch: the per-call floor of the runtime
on this host, which no model can go below. The resolution of a measurement is that floor and the spread between
models that share a graph (same operators, shapes and attributes, different weights), which measure the same
model twice.

Peak memory (`peak_mem_mb`, MiB) is what the model itself adds to a fresh child process at its peak: the kernel's
resident-set high-water mark (Linux `VmHWM`) over session creation and warm-up, minus the resident set just
before the session is created. The child imports no torch; the high-water mark its imports left is reset first
(writing 5 to /proc/self/clear_refs), and ONNX Runtime's one-time set-up (the same for every model) is done
beforehand with the Identity graph, so it is not charged to the model. Where the kernel offers no reset (not
Linux), peak memory is NaN rather than a wrong number.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from pydantic import BaseModel, ConfigDict

from components import energy, rounds, timing
from components.config import BenchmarkConfig
from components.formats import runtime
from components.formats.base import file_sha256
from components.formats.onnx_rt import graph_signature
from components.rounds import Interval, Plan, Series
from components.timing import Round

ROOT = Path(__file__).resolve().parent.parent
PERCENTILES = ("p50", "p95", "p99")


class Latency(BaseModel):
    """A model's timing under the device profile: p50/p95/p99 (ms, medians over rounds) with the bounds of their
    exact 95% intervals (None below 6 rounds), mean and throughput (samples/s), the peak memory it adds (MiB), its
    file size, the energy per inference (nJ) and where that figure comes from, the profile it was measured under
    (`rounds`: the rounds taken, extra ones included), and its per-round p95 for paired comparisons."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # NaN memory stays NaN

    p50_ms: float
    p50_lo_ms: float | None
    p50_hi_ms: float | None
    p95_ms: float
    p95_lo_ms: float | None
    p95_hi_ms: float | None
    p99_ms: float
    p99_lo_ms: float | None
    p99_hi_ms: float | None
    mean_ms: float
    throughput_sps: float
    peak_mem_mb: float
    size_bytes: int
    energy_nj: float
    energy_source: str
    threads: int
    batch_size: int
    warmup_runs: int
    timed_runs: int
    rounds: int
    p95_series: Series | None = None  # None: figures without their rounds (no paired comparison)

    def interval(self, p: str) -> Interval:
        """Percentile `p` ("p50", "p95", "p99") with its interval."""
        d = self.model_dump()
        cov = rounds.coverage(self.rounds, rounds.critical(self.rounds)) if d[f"{p}_lo_ms"] is not None else None
        return Interval(value=d[f"{p}_ms"], lo=d[f"{p}_lo_ms"], hi=d[f"{p}_hi_ms"], rounds=self.rounds, coverage=cov)

    def numbers(self) -> dict[str, float]:
        """The figures as metrics to log and tag: every number but the batch size (which is the profile's)."""
        return {
            k: v
            for k, v in self.model_dump().items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "batch_size"
        }


class Resolution(BaseModel):
    """What a measurement can tell apart: the per-call floor (p50 and p95 of an Identity graph fed the same batch),
    the models that share a graph, and the largest relative p50 spread among them (None: no two share one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    floor_p50: Interval
    floor_p95: Interval
    same_graph: list[list[str]]
    spread: float | None
    rounds: int  # taken, the added ones included
    cpus: list[int] | None
    added: int = 0  # rounds added to settle a paired comparison

    def line(self) -> str:
        """The resolution in one sentence (table footer, model card)."""
        pinned = f"pinned to CPU {','.join(map(str, self.cpus))}" if self.cpus else "not pinned"
        cov = rounds.coverage(self.rounds, rounds.critical(self.rounds))
        added = f" ({self.added} added to settle a paired comparison)" if self.added else ""
        stats = (
            f"exact 95% intervals ({cov:.1%} coverage), comparisons paired by round"
            if cov
            else "no 95% interval (fewer than 6 rounds) and no measurable difference"
        )
        out = (
            f"Timing resolution: medians of {self.rounds} interleaved rounds{added} with {stats}, "
            f"{pinned}; per-call floor (Identity graph, same batch) p50 {self.floor_p50} ms, p95 {self.floor_p95} ms"
        )
        if self.spread is None:
            return out + "; no two models share a graph, so no same-graph spread."
        groups = "; ".join(" = ".join(g) for g in self.same_graph)
        return out + f"; same-graph p50 spread {self.spread * 100:.1f}% ({groups})."


class Measured(BaseModel):
    """Every model of one measurement by name, and the measurement's resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: dict[str, Latency]
    resolution: Resolution
    device: timing.DeviceFacts | None = None  # the device agent that measured; None: this host


def pinned_cpus(b: BenchmarkConfig) -> tuple[int, ...] | None:
    """The CPUs the timing child is pinned to: `benchmark.cpus`, else the last `intra_op_threads` CPUs this process
    may run on; None when `benchmark.pin` is off or the OS cannot pin."""
    if not b.pin or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if b.cpus:
        if missing := sorted(set(b.cpus) - set(allowed)):
            raise ValueError(f"benchmark.cpus {b.cpus}: CPU(s) {missing} are not available to this process {allowed}")
        return tuple(b.cpus)
    return tuple(allowed[-b.intra_op_threads :])


def identity_model(batch: np.ndarray, path: Path) -> None:
    """An Identity graph taking `batch`'s dtype and rank: what one runtime call costs with no model in it."""
    dtype = helper.np_dtype_to_tensor_dtype(batch.dtype)
    shape = [f"d{i}" for i in range(batch.ndim)]
    x, y = (helper.make_tensor_value_info(n, dtype, shape) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "floor", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _latency(path: Path, taken: list[Round], b: BenchmarkConfig, peak: float, series: Series) -> Latency:
    ps = {p: rounds.median_interval([getattr(r, f"{p}_ms") for r in taken]) for p in PERCENTILES}
    mean = float(np.median([r.mean_ms for r in taken]))
    uj = [r.energy_uj for r in taken]
    if all(u is not None for u in uj):
        nj, source = sum(uj) * 1e3 / (len(uj) * b.timed_runs), "measured: RAPL package counter over the timed runs"
    elif runtime.format_of(path) != "onnx":
        nj, source = float("nan"), "not estimated: the estimate counts an ONNX graph, and RAPL is not readable here"
    elif not energy.countable(path):
        nj = float("nan")
        source = "not estimated: ONNX-ML operators, which the estimate does not model, and RAPL is not readable here"
    else:
        nj, source = energy.estimate_nj(energy.count(path, b.batch_size)), energy.SOURCE
    return Latency(
        **{f"{p}_ms": i.value for p, i in ps.items()},
        **{f"{p}_lo_ms": i.lo for p, i in ps.items()},
        **{f"{p}_hi_ms": i.hi for p, i in ps.items()},
        mean_ms=mean,
        throughput_sps=b.batch_size * 1e3 / mean,
        peak_mem_mb=peak,
        size_bytes=os.path.getsize(path),
        energy_nj=nj,
        energy_source=source,
        threads=b.intra_op_threads,
        batch_size=b.batch_size,
        warmup_runs=b.warmup_runs,
        timed_runs=b.timed_runs,
        rounds=len(taken),
        p95_series=series,
    )


def resolution(latency: dict[str, Latency], paths: dict[str, Path], floor: Latency, b: BenchmarkConfig, cpus):
    """The floor, the groups of models sharing a graph, the largest relative p50 spread within one, and the rounds
    taken."""
    groups: dict[str, list[str]] = {}
    for name, path in paths.items():  # only ONNX graphs are compared; another format's file is its own group
        sig = graph_signature(path) if runtime.format_of(path) == "onnx" else file_sha256(path)
        groups.setdefault(sig, []).append(name)
    same = [g for g in groups.values() if len(g) > 1]
    spreads = [max(latency[n].p50_ms for n in g) / min(latency[n].p50_ms for n in g) - 1 for g in same]
    return Resolution(
        floor_p50=floor.interval("p50"),
        floor_p95=floor.interval("p95"),
        same_graph=same,
        spread=max(spreads) if spreads else None,
        rounds=floor.rounds,
        cpus=list(cpus) if cpus else None,
        added=max(0, floor.rounds - b.rounds),
    )


def plan(b: BenchmarkConfig) -> Plan:
    """The looks a measurement under `b` may take: after `rounds`, then after every `rounds` more while rounds may
    be added (`max_extra_seconds` above 0)."""
    return Plan(first=b.rounds, step=b.rounds, looks=1 + (b.max_extra_looks if b.max_extra_seconds > 0 else 0))


def measure(models: dict[str, str | Path], samples: np.ndarray, b: BenchmarkConfig, runner=None, pairs=()) -> Measured:
    """Latency of every model in `models` (name: ONNX file) under the profile `b`, timed interleaved with the
    per-call floor, for batches of `b.batch_size` real samples from `samples`; peak memory per model, each in a
    fresh child. `runner` (default timing.run, on this host) is what times them: a device agent's client takes
    the same arguments. `pairs` ((name, name) of `models`) are the comparisons the caller decides on: while the
    paired interval of one holds 1, rounds are added as `b.max_extra_looks` and `b.max_extra_seconds` allow."""
    if len(samples) < b.batch_size:
        raise ValueError(f"benchmark batch_size {b.batch_size} exceeds the {len(samples)} samples available")
    if not models:
        raise ValueError("no models to measure")
    if unknown := sorted({n for pair in pairs for n in pair} - set(models)):
        raise ValueError(f"pairs name {unknown}, which are not among the models measured {sorted(models)}")
    paths = {n: Path(p) for n, p in models.items()}
    cpus = pinned_cpus(b)
    settings = timing.Settings(b.intra_op_threads, b.warmup_runs, b.timed_runs, b.rounds, cpus)
    with tempfile.TemporaryDirectory() as tmp:
        batch, floor = Path(tmp) / "batch.npy", Path(tmp) / "floor.onnx"
        np.save(batch, np.ascontiguousarray(samples[: b.batch_size]))
        identity_model(np.load(batch), floor)
        order = [str(p) for p in paths.values()] + [str(floor)]
        budget = 120 + 10 * len(order) * b.rounds

        def timed(s: timing.Settings) -> timing.Raw:
            if runner is None:
                return timing.run(order, str(batch), s, str(floor), timeout=budget, cwd=ROOT)
            return runner(order, str(batch), s, str(floor), timeout=budget)

        raw = until_settled(timed, settings, list(paths), [tuple(p) for p in pairs], b)
        return assemble(raw, paths, floor, b)


def until_settled(
    timed, settings: timing.Settings, names: list[str], pairs: list[tuple], b: BenchmarkConfig
) -> timing.Raw:
    """What `timed` (Settings -> timing.Raw, the models in the order of `names`, the floor last) gives for
    `b.rounds` rounds, then `b.rounds` more of every model (without peak memory) while a pair of `names` is
    undecided, the plan has a look left and the last batch of rounds fits in what is left of the time budget."""
    start = time.monotonic()
    raw = timed(settings)
    last, spent = time.monotonic() - start, 0.0  # the first batch, memory included: an upper bound of the next
    p = plan(b)
    for _ in range(p.looks - 1):
        series = {n: Series(measurement="", plan=p, values=[r.p95_ms for r in rs]) for n, rs in zip(names, raw.rounds)}
        if all(rounds.compare(series[x], series[y]).verdict for x, y in pairs) or spent + last > b.max_extra_seconds:
            break
        start = time.monotonic()
        more = timed(replace(settings, memory=False))
        last = time.monotonic() - start
        spent += last
        raw = raw.model_copy(update={"rounds": [a + m for a, m in zip(raw.rounds, more.rounds, strict=True)]})
    return raw


def assemble(raw: timing.Raw, paths: dict[str, Path], floor: Path, b: BenchmarkConfig) -> Measured:
    """The latencies and the resolution of a measurement from what its children returned (the floor last); every
    model's per-round p95 carries one new measurement id, so that only these models pair with each other."""
    p, measurement = plan(b), uuid.uuid4().hex

    def series(taken: list[Round]) -> Series:
        return Series(measurement=measurement, plan=p, values=[r.p95_ms for r in taken])

    latency = {
        n: _latency(path, r, b, peak, series(r))
        for (n, path), r, peak in zip(paths.items(), raw.rounds, raw.peak_mem_mb, strict=False)
    }
    floor_latency = _latency(floor, raw.rounds[-1], b, float("nan"), series(raw.rounds[-1]))
    return Measured(
        latency=latency, resolution=resolution(latency, paths, floor_latency, b, raw.cpus), device=raw.device
    )
