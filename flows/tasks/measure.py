"""Measuring candidates: each one's scores through its runtime (ONNX Runtime, or ExecuTorch for a `.pte`) on val
and test, then the latency of all of them, timed interleaved under the device profile on this host and on every
device agent of `benchmark.targets` (each timing the formats it runs), with the resolution of each timing."""

from __future__ import annotations

from prefect import task

from components import benchmark as bench
from components.candidate import Candidates, Measurement, OnMcu
from components.config import BenchmarkConfig
from components.formats import runtime, tflm
from components.formats.base import Artifact
from components.metrics import classification_metrics
from flows.infra.device import client
from flows.tasks.caching import CACHED, IO_RETRIES
from flows.tasks.data import load_data
from flows.tasks.specs import DataRef, TflmSpec
from flows.tasks.train import runtime_metrics

HOST = "host"


def time_on(
    target: str, paths: dict[str, str], x, b: BenchmarkConfig, required: bool = True, pairs=()
) -> bench.Measured:
    """The models timed side by side on `target`: this host, or a device agent of `b.targets`, which raises
    client.DeviceFailed naming it when it refuses or stops answering. An agent times the models in the formats it
    runs; where it lacks one, a `required` target (the gate's) fails, another skips those models. `pairs` are the
    comparisons to settle, with more rounds where needed (bench.measure)."""
    if target == HOST:
        return bench.measure(paths, x, b, pairs=pairs)
    device = client.device(target, b.targets[target])
    runs = client.info(device).formats
    lacking = sorted({runtime.format_of(p) for p in paths.values()} - set(runs))
    if lacking and required:
        raise client.DeviceFailed(
            device,
            f"it cannot run {', '.join(lacking)} (it runs {', '.join(runs)}), and gate.target needs every "
            "candidate's numbers: install executorch beside the agent, or gate on another target",
            refused=True,
        )
    paths = {n: p for n, p in paths.items() if runtime.format_of(p) in runs}
    pairs = [p for p in pairs if p[0] in paths and p[1] in paths]
    return bench.measure(paths, x, b, runner=client.runner(device), pairs=pairs)


def time_on_targets(
    paths: dict[str, str], x, b: BenchmarkConfig, gate_target: str = HOST, pairs=()
) -> dict[str, bench.Measured]:
    """The models timed on this host, then on each device agent of `b.targets` (an MCU budget is not timed), by
    target name."""
    return {t: time_on(t, paths, x, b, required=t == gate_target, pairs=pairs) for t in (HOST, *b.agents())}


def measure(
    data: DataRef, models: dict[str, Artifact], b: BenchmarkConfig, gate_target: str = HOST, pairs=()
) -> Candidates:
    """Scores through each model's runtime on the validation split (what the gate chooses on) and the test split
    (what is reported), then their latency on every target, timed side by side; each model's `latency` is its
    latency on `gate_target`, `targets` its latency on each target that runs its format. `pairs` ((candidate,
    source) names) are the speed rules to settle, with more rounds where needed."""
    splits = load_data(data).splits
    scores = {n: [runtime_metrics(a.path, splits[s], data.classes) for s in ("val", "test")] for n, a in models.items()}
    timed = time_on_targets({n: a.path for n, a in models.items()}, splits["test"].x, b, gate_target, pairs)
    on = timed[gate_target]
    return Candidates(
        measured={
            n: Measurement(
                val=val,
                test=test,
                latency=on.latency[n],
                artifact=models[n],
                targets={t: m.latency[n] for t, m in timed.items() if n in m.latency},
            )
            for n, (val, test) in scores.items()
        },
        resolution=on.resolution,
        resolutions={t: m.resolution for t, m in timed.items()},
        devices={t: m.device for t, m in timed.items() if m.device},
    )


measure_candidates = task(measure, name="measure_candidates", **IO_RETRIES)


@task(**CACHED)
def tflm_candidate(p: TflmSpec) -> OnMcu:
    """A full-integer LiteRT file under TensorFlow Lite Micro: its fit (the smallest arena it allocates in, its
    flash, its operators), then its val and test scores computed by TFLM's interpreter one sample at a time."""
    fit = tflm.fit(p.model.path)
    if not fit.runs:
        return OnMcu(fit=fit)
    splits = load_data(p.data).splits
    val, test = (
        classification_metrics(tflm.predict(p.model.path, splits[s].x, fit.arena_bytes), splits[s].y, p.data.classes)
        for s in ("val", "test")
    )
    return OnMcu(fit=fit, val=val, test=test)
