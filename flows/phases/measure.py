"""Phase 4, measure: each candidate's scores through ONNX Runtime on val and test, and its latency under the
device profile."""

from __future__ import annotations

from components.candidate import Measurement
from flows.phases.compress import Made
from flows.phases.context import Run
from flows.tasks.measure import measure_candidate
from flows.tasks.specs import DataRef


def measure(run: Run, data: DataRef, made: dict[str, Made]) -> dict[str, Measurement]:
    b = run.cfg.benchmark
    results = {}
    for name, m in made.items():
        run.log.info(
            f"measuring {name} (ORT metrics on val and test, latency at {b.intra_op_threads} thread(s), "
            f"batch {b.batch_size})"
        )
        results[name] = measure_candidate(data, m.onnx, b)
    return results
