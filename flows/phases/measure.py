"""Phase 4, measure: each candidate's scores through its runtime on val and test, and the latency of all of them
under the device profile, timed interleaved, with the run's timing resolution."""

from __future__ import annotations

from components.benchmark import pinned_cpus
from components.candidate import Candidates, OnMcu
from components.gate import must_pay_in_speed
from components.recipes import recipes
from flows.phases.compress import Made
from flows.phases.context import Run, prefetch, tracked
from flows.tasks.measure import measure_candidates, tflm_candidate
from flows.tasks.specs import DataRef, TflmSpec


def measure(run: Run, data: DataRef, made: dict[str, Made]) -> Candidates:
    b = run.cfg.benchmark
    cpus = pinned_cpus(b)
    run.log.info(
        f"measuring {len(made)} candidate(s): metrics through each runtime on val and test, then latency at "
        f"{b.intra_op_threads} thread(s), batch {b.batch_size}, {b.rounds} interleaved rounds of {b.warmup_runs} "
        f"warm-up + {b.timed_runs} timed runs each (up to {b.max_extra_looks} x {b.rounds} more within "
        f"{b.max_extra_seconds:g} s while a speed rule is undecided), "
        + (f"pinned to CPU {','.join(map(str, cpus))}" if cpus else "not pinned")
        + (f"; then on {', '.join(b.agents())}" if b.agents() else "")
        + f"; the gate uses {run.cfg.gate.target}'s"
    )
    # The speed rules the gate will check (a compressed candidate against its source): rounds are added while one
    # of them is undecided.
    table = recipes(formats=tuple(run.cfg.export.formats))
    pairs = [
        (r.name, r.source) for r in table if must_pay_in_speed(r.transform) and r.name in made and r.source in made
    ]
    mcu = on_mcu(run, data, {r.name: made[r.name] for r in table if r.transform == "tflite_int8" and r.name in made})
    measured = measure_candidates(data, {n: m.artifact for n, m in made.items()}, b, run.cfg.gate.target, pairs)
    return measured.with_mcu(mcu)


def on_mcu(run: Run, data: DataRef, int8: dict[str, Made]) -> dict[str, OnMcu]:
    """Each full-integer LiteRT candidate under TensorFlow Lite Micro (side by side on the flow's workers, and
    before the timing, which needs a quiet machine): its fit and its val and test scores there."""
    specs = {n: TflmSpec(data=data, model=m.artifact) for n, m in int8.items()}
    if specs:
        run.log.info(f"TensorFlow Lite Micro: arena, flash and val/test scores of {', '.join(specs)}")
    for spec in specs.values():
        prefetch(run, tflm_candidate, spec)
    return {n: tracked(run, "tflm", tflm_candidate, spec, {"candidate": n}) for n, spec in specs.items()}
