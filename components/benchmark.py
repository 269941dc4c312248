"""Latency, throughput, memory and energy of a run's models (ONNX files through ONNX Runtime, `.pte` programs
through ExecuTorch), with the run's timing resolution.

Latency comes from components.timing: every model timed interleaved over rounds in one child process pinned to
its cores, each percentile a median over rounds with its bootstrap 95% interval. Beside the models, the same
child times an Identity graph fed the same batch: the per-call floor of the runtime on this host, which no model
can go below. The resolution of a measurement is that floor and the spread between models that share a graph
(same operators, shapes and attributes, different weights), which measure the same model twice.

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
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from pydantic import BaseModel, ConfigDict

from components import energy, timing
from components.config import BenchmarkConfig
from components.export import file_sha256, graph_signature
from components.timing import Interval, Round

ROOT = Path(__file__).resolve().parent.parent
PERCENTILES = ("p50", "p95", "p99")


class Latency(BaseModel):
    """A model's timing under the device profile: p50/p95/p99 (ms, medians over rounds) with the bounds of their
    95% intervals, mean and throughput (samples/s), the peak memory it adds (MiB), its file size, the energy per
    inference (nJ) and where that figure comes from, and the profile it was measured under."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # NaN memory stays NaN

    p50_ms: float
    p50_lo_ms: float
    p50_hi_ms: float
    p95_ms: float
    p95_lo_ms: float
    p95_hi_ms: float
    p99_ms: float
    p99_lo_ms: float
    p99_hi_ms: float
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

    def interval(self, p: str) -> Interval:
        """Percentile `p` ("p50", "p95", "p99") with its interval."""
        d = self.model_dump()
        return Interval(value=d[f"{p}_ms"], lo=d[f"{p}_lo_ms"], hi=d[f"{p}_hi_ms"])

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
    rounds: int
    cpus: list[int] | None

    def line(self) -> str:
        """The resolution in one sentence (table footer, model card)."""
        pinned = f"pinned to CPU {','.join(map(str, self.cpus))}" if self.cpus else "not pinned"
        out = (
            f"Timing resolution: medians of {self.rounds} interleaved rounds with bootstrap 95% intervals, "
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


def _latency(path: Path, rounds: list[Round], b: BenchmarkConfig, peak: float) -> Latency:
    ps = {p: timing.median_interval([getattr(r, f"{p}_ms") for r in rounds]) for p in PERCENTILES}
    mean = float(np.median([r.mean_ms for r in rounds]))
    uj = [r.energy_uj for r in rounds]
    if all(u is not None for u in uj):
        nj, source = sum(uj) * 1e3 / (len(uj) * b.timed_runs), "measured: RAPL package counter over the timed runs"
    elif timing.format_of(path) != "onnx":
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
        rounds=b.rounds,
    )


def resolution(latency: dict[str, Latency], paths: dict[str, Path], floor: Latency, b: BenchmarkConfig, cpus):
    """The floor, the groups of models sharing a graph, and the largest relative p50 spread within one."""
    groups: dict[str, list[str]] = {}
    for name, path in paths.items():  # only ONNX graphs are compared; another format's file is its own group
        sig = graph_signature(path) if timing.format_of(path) == "onnx" else file_sha256(path)
        groups.setdefault(sig, []).append(name)
    same = [g for g in groups.values() if len(g) > 1]
    spreads = [max(latency[n].p50_ms for n in g) / min(latency[n].p50_ms for n in g) - 1 for g in same]
    return Resolution(
        floor_p50=floor.interval("p50"),
        floor_p95=floor.interval("p95"),
        same_graph=same,
        spread=max(spreads) if spreads else None,
        rounds=b.rounds,
        cpus=list(cpus) if cpus else None,
    )


def measure(models: dict[str, str | Path], samples: np.ndarray, b: BenchmarkConfig, runner=None) -> Measured:
    """Latency of every model in `models` (name: ONNX file) under the profile `b`, timed interleaved with the
    per-call floor, for batches of `b.batch_size` real samples from `samples`; peak memory per model, each in a
    fresh child. `runner` (default timing.run, on this host) is what times them: a device agent's client takes
    the same arguments."""
    if len(samples) < b.batch_size:
        raise ValueError(f"benchmark batch_size {b.batch_size} exceeds the {len(samples)} samples available")
    if not models:
        raise ValueError("no models to measure")
    paths = {n: Path(p) for n, p in models.items()}
    cpus = pinned_cpus(b)
    settings = timing.Settings(b.intra_op_threads, b.warmup_runs, b.timed_runs, b.rounds, cpus)
    with tempfile.TemporaryDirectory() as tmp:
        batch, floor = Path(tmp) / "batch.npy", Path(tmp) / "floor.onnx"
        np.save(batch, np.ascontiguousarray(samples[: b.batch_size]))
        identity_model(np.load(batch), floor)
        order = [str(p) for p in paths.values()] + [str(floor)]
        budget = 120 + 10 * len(order) * b.rounds
        if runner is None:
            raw = timing.run(order, str(batch), settings, str(floor), timeout=budget, cwd=ROOT)
        else:
            raw = runner(order, str(batch), settings, str(floor), timeout=budget)
        return assemble(raw, paths, floor, b)


def assemble(raw: timing.Raw, paths: dict[str, Path], floor: Path, b: BenchmarkConfig) -> Measured:
    """The latencies and the resolution of a measurement from what its children returned (the floor last)."""
    latency = {
        n: _latency(p, r, b, peak) for (n, p), r, peak in zip(paths.items(), raw.rounds, raw.peak_mem_mb, strict=False)
    }
    floor_latency = _latency(floor, raw.rounds[-1], b, float("nan"))
    return Measured(
        latency=latency, resolution=resolution(latency, paths, floor_latency, b, raw.cpus), device=raw.device
    )
