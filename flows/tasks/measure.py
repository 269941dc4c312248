"""Measuring a candidate: its scores through ONNX Runtime on val and test, and its latency under the device
profile."""

from __future__ import annotations

from prefect import task

from components import benchmark as bench
from components.candidate import Measurement
from components.config import BenchmarkConfig
from components.export import Artifact
from flows.tasks.caching import IO_RETRIES
from flows.tasks.data import load_data
from flows.tasks.specs import DataRef
from flows.tasks.train import ort_metrics


def measure(data: DataRef, onnx: Artifact, b: BenchmarkConfig) -> Measurement:
    """Scores through ONNX Runtime on the validation split (what the gate chooses on) and the test split (what is
    reported), then latency under the device profile."""
    splits = load_data(data).splits
    val, test = (ort_metrics(onnx.path, splits[s], data.classes) for s in ("val", "test"))
    latency = bench.benchmark(
        onnx.path,
        splits["test"].x,
        threads=b.intra_op_threads,
        batch_size=b.batch_size,
        warmup_runs=b.warmup_runs,
        timed_runs=b.timed_runs,
    )
    return Measurement(val=val, test=test, latency=latency, artifact=onnx)


measure_candidate = task(measure, name="measure_candidate", **IO_RETRIES)
