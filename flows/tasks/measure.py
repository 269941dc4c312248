"""Measuring candidates: each one's scores through ONNX Runtime on val and test, then the latency of all of them,
timed interleaved under the device profile on this host and on every device agent of `benchmark.targets`, with
the resolution of each timing."""

from __future__ import annotations

from prefect import task

from components import benchmark as bench
from components.candidate import Candidates, Measurement
from components.config import BenchmarkConfig
from components.export import Artifact
from flows.infra.device import client
from flows.tasks.caching import IO_RETRIES
from flows.tasks.data import load_data
from flows.tasks.specs import DataRef
from flows.tasks.train import ort_metrics

HOST = "host"


def time_on(target: str, paths: dict[str, str], x, b: BenchmarkConfig) -> bench.Measured:
    """The models timed side by side on `target`: this host, or a device agent of `b.targets`, which raises
    client.DeviceFailed naming it when it refuses or stops answering."""
    if target == HOST:
        return bench.measure(paths, x, b)
    return bench.measure(paths, x, b, runner=client.runner(client.device(target, b.targets[target])))


def time_on_targets(paths: dict[str, str], x, b: BenchmarkConfig) -> dict[str, bench.Measured]:
    """The models timed on this host, then on each device agent of `b.targets`, by target name."""
    return {t: time_on(t, paths, x, b) for t in (HOST, *b.targets)}


def measure(data: DataRef, models: dict[str, Artifact], b: BenchmarkConfig, gate_target: str = HOST) -> Candidates:
    """Scores through ONNX Runtime on the validation split (what the gate chooses on) and the test split (what is
    reported) of every model, then their latency on every target, timed side by side; each model's `latency` is
    its latency on `gate_target`."""
    splits = load_data(data).splits
    scores = {n: [ort_metrics(a.path, splits[s], data.classes) for s in ("val", "test")] for n, a in models.items()}
    timed = time_on_targets({n: a.path for n, a in models.items()}, splits["test"].x, b)
    on = timed[gate_target]
    return Candidates(
        measured={
            n: Measurement(
                val=val,
                test=test,
                latency=on.latency[n],
                artifact=models[n],
                targets={t: m.latency[n] for t, m in timed.items()},
            )
            for n, (val, test) in scores.items()
        },
        resolution=on.resolution,
        resolutions={t: m.resolution for t, m in timed.items()},
        devices={t: m.device for t, m in timed.items() if m.device},
    )


measure_candidates = task(measure, name="measure_candidates", **IO_RETRIES)
