"""Phase 4, measure: each candidate's scores through ONNX Runtime on val and test, and the latency of all of them
under the device profile, timed interleaved, with the run's timing resolution."""

from __future__ import annotations

from components.benchmark import pinned_cpus
from components.candidate import Candidates
from components.gate import must_pay_in_speed
from components.recipes import recipes
from flows.phases.compress import Made
from flows.phases.context import Run
from flows.tasks.measure import measure_candidates
from flows.tasks.specs import DataRef


def measure(run: Run, data: DataRef, made: dict[str, Made]) -> Candidates:
    b = run.cfg.benchmark
    cpus = pinned_cpus(b)
    run.log.info(
        f"measuring {len(made)} candidate(s): ORT metrics on val and test, then latency at {b.intra_op_threads} "
        f"thread(s), batch {b.batch_size}, {b.rounds} interleaved rounds of {b.warmup_runs} warm-up + "
        f"{b.timed_runs} timed runs each (up to {b.max_extra_looks} x {b.rounds} more within "
        f"{b.max_extra_seconds:g} s while a speed rule is undecided), "
        + (f"pinned to CPU {','.join(map(str, cpus))}" if cpus else "not pinned")
        + (f"; then on {', '.join(b.targets)}" if b.targets else "")
        + f"; the gate uses {run.cfg.gate.target}'s"
    )
    # The speed rules the gate will check (a compressed candidate against its source): rounds are added while one
    # of them is undecided.
    pairs = [
        (r.name, r.source)
        for r in recipes(formats=tuple(run.cfg.export.formats))
        if must_pay_in_speed(r.transform) and r.name in made and r.source in made
    ]
    return measure_candidates(data, {n: m.artifact for n, m in made.items()}, b, run.cfg.gate.target, pairs)
