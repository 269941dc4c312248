"""Latency as a distribution, measured so that two models with the same graph come out the same.

Every model of a measurement is timed in one child process pinned to its cores, interleaved: R rounds, each
round timing every model once (warm-up, then N timed runs), in an order that rotates from round to round, so a
slow spell of the machine or a position in the order falls on all of them alike. What each round gives (a model's
p50, p95, p99 and mean over its timed runs) is returned per round; components.rounds reads them: a model's figure
is the median over rounds with its exact order-statistic interval (none below 6 rounds), and two models are
compared paired by round (the sign test's interval of their median per-round ratio), never by whether two
separate intervals overlap. A measurement that must settle a comparison asks for more rounds (`Settings.memory`
False: the timing child again, without re-measuring peak memory) and concatenates them.

The harness imports numpy and onnxruntime only (no torch, no onnx), so the device agent runs it as the host does;
a `.pte` program (ExecuTorch, which brings torch) or a `.tflite` file (LiteRT) is timed the same way where its
runtime is installed, each opened through components.formats.runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.formats import runtime

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@dataclass(frozen=True)
class Settings:
    """How a measurement runs: ONNX Runtime intra-op threads, warm-up and timed runs per model per round, rounds,
    the CPUs the timing process is pinned to (None: not pinned), and whether each model's peak memory is taken
    (rounds added to an earlier measurement have it already)."""

    threads: int
    warmup_runs: int
    timed_runs: int
    rounds: int
    cpus: tuple[int, ...] | None = None
    memory: bool = True


class Round(BaseModel):
    """One model in one round: its percentiles and mean over the timed runs (ms), and the RAPL energy counter's
    increase over them (µJ, None where the counter cannot be read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    energy_uj: float | None


def _rapl_uj() -> int | None:
    try:
        return int(RAPL.read_text())
    except (OSError, ValueError):
        return None


def _time_one(sess, feed: dict, warmup: int, runs: int) -> Round:
    out = [sess.get_outputs()[0].name]
    for _ in range(warmup):
        sess.run(out, feed)
    ns = np.empty(runs)
    uj0 = _rapl_uj()
    for i in range(runs):
        t0 = time.perf_counter_ns()
        sess.run(out, feed)
        ns[i] = time.perf_counter_ns() - t0
    uj1 = _rapl_uj()
    ms = ns / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    energy = float(uj1 - uj0) if uj0 is not None and uj1 is not None and uj1 > uj0 else None
    return Round(p50_ms=p50, p95_ms=p95, p99_ms=p99, mean_ms=float(ms.mean()), energy_uj=energy)


def time_models(paths: list[str], batch: np.ndarray, s: Settings) -> list[list[Round]]:
    """In this process: pin it to `s.cpus`, open every model once, then time them interleaved over `s.rounds`
    rounds. Returns each model's rounds, in the order of `paths`. Each model is fed `batch` under its own input
    name."""
    if s.cpus:
        os.sched_setaffinity(0, s.cpus)
    sessions = [runtime.session(p, s.threads) for p in paths]
    feeds = [{sess.get_inputs()[0].name: batch} for sess in sessions]
    rounds: list[list[Round]] = [[] for _ in paths]
    for r in range(s.rounds):
        for k in range(len(paths)):
            i = (k + r) % len(paths)  # each round starts one model later
            rounds[i].append(_time_one(sessions[i], feeds[i], s.warmup_runs, s.timed_runs))
    return rounds


class DeviceFacts(BaseModel):
    """What a device agent states of the machine it measured on and how it measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str
    cores: int | None
    machine: str
    os: str
    python: str
    onnxruntime: str
    numpy: str
    formats: list[str]
    threads: int | None  # None: as the host asks
    cpus: list[int] | None  # None: not pinned
    max_bytes: int
    queue: int
    timeout_s: float
    emulation: str
    rapl: bool


class Raw(BaseModel):
    """What a measurement's children return: each model's rounds and the peak memory it adds (MiB, NaN where the
    kernel cannot tell), in the order of the models."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    rounds: list[list[Round]]
    peak_mem_mb: list[float]
    cpus: list[int] | None = None  # what the timing child was pinned to
    device: DeviceFacts | None = None  # the device agent that measured; None: this host


class MeasurementTimeout(RuntimeError):
    """A measurement child that outlived its time limit."""


def run(
    paths: list[str],
    batch_file: str,
    s: Settings,
    start: str,
    timeout: float,
    cwd: str | Path,
    deadline: float | None = None,
) -> Raw:
    """Time `paths` interleaved in one child pinned to `s.cpus`, then (where `s.memory`) take each model's peak
    memory in a fresh child of its own (NaN where not taken); `start` is a one-node model that opens the runtime
    before the peak is reset. A child that fails raises RuntimeError naming the models, one that outlives `timeout`
    seconds, or `deadline` (time.monotonic(): one limit for all the children, as the device agent bounds a whole
    request), MeasurementTimeout. The children's temporary files (ONNX Runtime leaves a `.ses` file in TMPDIR) go
    to the batch file's folder."""
    env = dict(os.environ, OMP_NUM_THREADS=str(s.threads), TMPDIR=str(Path(batch_file).parent))

    def child(job: list, what: str) -> str:
        left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        if left <= 0:
            raise MeasurementTimeout(f"benchmark of {what} had no time left")
        return _child(job, env, left, cwd, what)

    rounds = json.loads(child(["time", paths, batch_file, asdict(s)], ", ".join(paths)))
    memory = [["memory", p, batch_file, s.threads, s.warmup_runs, start] for p in paths] if s.memory else []
    peaks = [float(child(job, job[1])) for job in memory] or [float("nan")] * len(paths)
    return Raw(rounds=rounds, peak_mem_mb=peaks, cpus=list(s.cpus) if s.cpus else None)


def _child(job: list, env: dict[str, str], timeout: float, cwd, what: str) -> str:
    cmd = [sys.executable, "-m", "components.timing", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise MeasurementTimeout(f"benchmark of {what} took over {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {what} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


# --- in the children: python -m components.timing '["time", ...]' or '["memory", ...]' ---


def _kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak() -> int | None:
    """Reset the resident-set high-water mark to the current resident set and return that (KiB), or None
    where the kernel cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _kib("VmRSS")


def peak_memory(path: str, batch_file: str, threads: int, warmup: int, start: str) -> float:
    """MiB the model adds at its peak over session creation and `warmup` (at least one) runs, after the runtime's
    one-time set-up (a session of `start`), which is charged to no model."""
    batch = np.load(batch_file, allow_pickle=False)
    runtime.session(start, threads)
    runtime.start(path)  # what the format loads once per process (ExecuTorch's runtime and torch): charged to no model
    base = _reset_peak()
    sess = runtime.session(path, threads)
    feed = {sess.get_inputs()[0].name: batch}
    for _ in range(max(1, warmup)):
        sess.run(None, feed)
    return (_kib("VmHWM") - base) / 1024.0 if base is not None else float("nan")


def main() -> None:
    mode, *args = json.loads(sys.argv[1])
    if mode == "memory":
        print(peak_memory(*args))
        return
    paths, batch_file, s = args
    settings = Settings(**{**s, "cpus": tuple(s["cpus"]) if s["cpus"] else None})
    result = time_models(paths, np.load(batch_file, allow_pickle=False), settings)
    print(json.dumps([[r.model_dump() for r in rs] for rs in result]))


if __name__ == "__main__":
    main()
