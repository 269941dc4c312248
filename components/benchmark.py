"""ONNX Runtime latency, throughput and memory under a device profile.

Each artifact is measured in a fresh child process, so that its peak memory is its own and one
candidate's allocations cannot slow the next. Warm-up runs are excluded from the timings.
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


def _measure(path: str, example_file: str, threads: int, batch_size: int, warmup: int, runs: int) -> dict:
    import resource

    import onnxruntime  # noqa: F401  (imported before the baseline so its own footprint is not counted)

    from components.export import INPUT_NAME, OUTPUT_NAME, ort_session

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sess = ort_session(path, threads)
    feed = {INPUT_NAME: np.load(example_file, allow_pickle=False)}
    for _ in range(warmup):
        sess.run([OUTPUT_NAME], feed)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        sess.run([OUTPUT_NAME], feed)
        times[i] = time.perf_counter_ns() - t0
    ms = times / 1e6
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_sps": float(batch_size * 1e3 / ms.mean()),
        "peak_mem_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0,
        "size_bytes": os.path.getsize(path),
    }


def benchmark(path: str | Path, samples: np.ndarray, *, threads: int, batch_size: int,
              warmup_runs: int, timed_runs: int) -> dict:
    """Latency percentiles (ms), throughput (samples/s), file size and peak memory added by the session (MiB),
    for batches of `batch_size` real samples taken from `samples`."""
    if len(samples) < batch_size:
        raise ValueError(f"benchmark batch_size {batch_size} exceeds the {len(samples)} samples available")
    with tempfile.TemporaryDirectory() as tmp:
        example = Path(tmp) / "batch.npy"
        np.save(example, np.ascontiguousarray(samples[:batch_size]))
        args = json.dumps([str(path), str(example), threads, batch_size, warmup_runs, timed_runs])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run([sys.executable, "-m", "components.benchmark", args], capture_output=True, text=True,
                              env=env, cwd=Path(__file__).resolve().parent.parent, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {path} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result | {"threads": threads, "batch_size": batch_size, "warmup_runs": warmup_runs, "timed_runs": timed_runs}


if __name__ == "__main__":
    print(json.dumps(_measure(*json.loads(sys.argv[1]))))
