"""ONNX Runtime latency, throughput and memory under a device profile.

Each artifact is measured in a fresh child process, so that its peak memory is its own and one
candidate's allocations cannot slow the next. Warm-up runs are excluded from the timings.

Peak memory (`peak_mem_mb`, MiB) is what the model itself adds to the process at its peak: the kernel's
resident-set high-water mark (Linux `VmHWM`) over session creation, warm-up and timed runs, minus the
resident set just before the session is created. The child imports no torch; the high-water mark its
imports left is reset first (writing 5 to /proc/self/clear_refs), and ONNX Runtime's one-time set-up
(the same for every model) is done beforehand with a one-node model, so it is not charged to the first model
measured. Where the kernel offers no reset (not Linux), peak memory is NaN rather than a wrong number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from components import energy


class Timing(BaseModel):
    """What the child process measures of one model: latency percentiles and mean (ms), throughput (samples/s), the
    peak memory it added (MiB), its file size, and the energy per inference (nJ) where RAPL can be read."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # NaN memory stays NaN

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_sps: float
    peak_mem_mb: float
    size_bytes: int
    energy_nj: float | None


class Latency(Timing):
    """A model's timing under the device profile, with its energy per inference always set (the RAPL reading, or
    the estimate of components.energy), where that figure comes from, and the profile it was measured under."""

    energy_nj: float
    energy_source: str
    threads: int
    batch_size: int
    warmup_runs: int
    timed_runs: int

    def numbers(self) -> dict[str, float]:
        """The figures as metrics to log and tag: every number but the batch size (which is the profile's)."""
        return {
            k: v
            for k, v in self.model_dump().items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "batch_size"
        }


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


def _start_runtime() -> None:
    """Create and drop a session of a one-node model, so that ONNX Runtime's one-time set-up is not charged to
    the model measured next."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "start", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _measure(path: str, example_file: str, threads: int, batch_size: int, warmup: int, runs: int) -> Timing:
    from components.export import INPUT_NAME, OUTPUT_NAME, ort_session

    feed = {INPUT_NAME: np.load(example_file, allow_pickle=False)}
    _start_runtime()
    base = _reset_peak()
    sess = ort_session(path, threads)
    for _ in range(warmup):
        sess.run([OUTPUT_NAME], feed)
    times = np.empty(runs)
    uj0 = _rapl_uj()
    for i in range(runs):
        t0 = time.perf_counter_ns()
        sess.run([OUTPUT_NAME], feed)
        times[i] = time.perf_counter_ns() - t0
    uj1 = _rapl_uj()
    peak_mib = (_kib("VmHWM") - base) / 1024.0 if base is not None else float("nan")
    ms = times / 1e6
    return Timing(
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        throughput_sps=float(batch_size * 1e3 / ms.mean()),
        peak_mem_mb=peak_mib,
        size_bytes=os.path.getsize(path),
        # the whole package's counter: it includes idle power and other processes over the timed runs
        energy_nj=(uj1 - uj0) * 1e3 / runs if uj0 is not None and uj1 is not None and uj1 > uj0 else None,
    )


def _rapl_uj() -> int | None:
    from components.energy import RAPL

    try:
        return int(RAPL.read_text())
    except (OSError, ValueError):
        return None


def benchmark(
    path: str | Path, samples: np.ndarray, *, threads: int, batch_size: int, warmup_runs: int, timed_runs: int
) -> Latency:
    """Latency percentiles (ms), throughput (samples/s), file size and the peak memory that loading and running
    the model adds (MiB, see the module's doc), for batches of `batch_size` real samples taken from `samples`."""
    if len(samples) < batch_size:
        raise ValueError(f"benchmark batch_size {batch_size} exceeds the {len(samples)} samples available")
    with tempfile.TemporaryDirectory() as tmp:
        example = Path(tmp) / "batch.npy"
        np.save(example, np.ascontiguousarray(samples[:batch_size]))
        args = json.dumps([str(path), str(example), threads, batch_size, warmup_runs, timed_runs])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run(
            [sys.executable, "-m", "components.benchmark", args],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {path} failed:\n{proc.stderr[-2000:]}")
    timing = Timing.model_validate_json(proc.stdout.strip().splitlines()[-1])
    if timing.energy_nj is None:
        nj, source = energy.estimate_nj(energy.count(path, batch_size)), energy.SOURCE
    else:
        nj, source = timing.energy_nj, "measured: RAPL package counter over the timed runs"
    return Latency(
        **timing.model_dump(exclude={"energy_nj"}),
        energy_nj=nj,
        energy_source=source,
        threads=threads,
        batch_size=batch_size,
        warmup_runs=warmup_runs,
        timed_runs=timed_runs,
    )


if __name__ == "__main__":
    print(_measure(*json.loads(sys.argv[1])).model_dump_json())
