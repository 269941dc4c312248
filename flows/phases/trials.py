"""The search's trials: the two reference points every trial is judged against, and the loop that asks the study
for recipes, runs them on the Dask workers through Prefect, and tells the study how each one did."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna

from components import gate, kd
from components import search as S
from components.candidate import Measurement
from flows.phases import study as st
from flows.phases.compress import Made, compress
from flows.phases.context import Run, tracked
from flows.phases.judge import judge
from flows.phases.measure import measure
from flows.phases.train import train
from flows.reporting.report import flat_metrics
from flows.tasks.compress import quantize_int8
from flows.tasks.specs import DataRef, QuantizeSpec, TeacherRef
from flows.tasks.trial import TrialResult, run_trial
from flows.tracking.tracker import flatten

NAIVE = "naive_int8_dynamic"
MAX_REPEATS = 25  # finished recipes proposed in a row before the search stops starting trials


@dataclass(frozen=True)
class Refs:
    """What every trial is judged against: teacher and plain student (gate), the version holding production, and
    the two reference points: the default recipe's pick (`default_name`) and the naive path."""

    teacher: Measurement
    plain: Measurement
    default_name: str
    default: Measurement
    naive: Measurement
    kd_variant: str | None
    teacher_strong: bool
    teacher_ref: TeacherRef
    champion_version: str | None
    champion: gate.GateView | None


def references(run: Run, data: DataRef) -> Refs:
    """The default recipe's candidates, trained and judged exactly as `edgekd run` does (cached when it ran), and
    the naive path: the plain student of the default width, ORT dynamic INT8, nothing else."""
    trained = train(run, data, kd.resolve(run.cfg.distill, run.cfg.teacher))
    results = measure(run, data, compress(run, data, trained)).measured
    verdict = judge(run, results)
    default = verdict.best or max(results, key=lambda n: results[n].val.get(run.cfg.gate.metric))
    spec = QuantizeSpec(data=data, fp32=trained.plain.model.onnx, mode="dynamic", quantize=run.cfg.quantize)
    naive = measure(
        run, data, {NAIVE: Made(tracked(run, "quantize", quantize_int8, spec, {"candidate": NAIVE}))}
    ).measured
    run.log.info(
        f"reference points: default recipe -> {default}"
        + ("" if verdict.best else " (no candidate passed the gate: the best on val)")
        + f"; naive -> {NAIVE} (plain student + ORT dynamic INT8)"
    )
    return Refs(
        results["teacher_fp32"],
        results["plain_fp32"],
        default,
        results[default],
        naive[NAIVE],
        trained.kd_variant,
        trained.teacher_strong,
        trained.teacher.ref,
        verdict.champion_version,
        verdict.champion,
    )


def trial_reasons(run: Run, refs: Refs, measured: TrialResult, recipe: S.SearchRecipe) -> list[str]:
    """Why a trial's final model fails (the gate, its own steps, the same student alone, the default recipe)."""
    cfg = run.cfg
    chain = S.Chain(
        student=measured.student.view(),
        pruned=measured.pruned.view() if measured.pruned else None,
        final=measured.final.view(),
        precision=recipe.precision,
        plain=gate.GateView(metrics=measured.plain_val.scalars()) if measured.plain_val else None,
    )
    return S.reasons(
        chain,
        refs.teacher.view(),
        refs.plain.view(),
        cfg.gate,
        refs.default.view(),
        cfg.search.default_tolerance,
        refs.champion,
    )


def search_point(recipe: S.SearchRecipe | None, m: Measurement, metric: str, **extra: Any) -> S.SearchPoint:
    """A model on the plane: a trial's `recipe`, or a reference (extra `candidate=NAME`)."""
    lat = m.latency
    return S.SearchPoint(
        recipe=recipe,
        val_accuracy=m.val.accuracy,
        test_accuracy=m.test.accuracy,
        val_score=m.val.get(metric),
        test_score=m.test.get(metric),
        p95_ms=lat.p95_ms,
        p95_lo_ms=lat.p95_lo_ms,
        p95_hi_ms=lat.p95_hi_ms,
        p95_series=lat.p95_series,
        size_bytes=lat.size_bytes,
        energy_nj=lat.energy_nj,
        energy_source=lat.energy_source,
        **extra,
    )


@dataclass
class Budget:
    """A search's budget: a wall time (trials start while it lasts, counted over every invocation of the study)
    or a number of finished trials."""

    seconds: float | None
    trials: int | None
    spent: float  # wall time of earlier invocations
    start: float

    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.start

    def allows(self, study: optuna.Study, in_flight: int) -> bool:
        if self.seconds is not None:
            return self.elapsed() < self.seconds
        return st.finished(study) + in_flight < self.trials

    def progress(self, study: optuna.Study) -> str:
        if self.seconds is not None:
            return f"{self.elapsed() / 60:.1f}/{self.seconds / 60:g} min"
        return f"{st.finished(study)}/{self.trials}"

    def describe(self) -> str:
        return f"{self.seconds / 60:g} min" if self.seconds is not None else f"{self.trials} trials"


def run_trials(
    run: Run,
    study: optuna.Study,
    sp: S.Space,
    refs: Refs,
    data: DataRef,
    objectives: list[str],
    seconds: float | None,
    trials: int | None,
    workers: int,
) -> None:
    """Ask, submit to the task runner, tell, until the budget is spent."""
    budget = Budget(seconds, trials, float(study.user_attrs.get("elapsed_s", 0.0)), time.monotonic())
    in_flight: dict[int, tuple[optuna.Trial, Any, float]] = {}
    repeats = 0  # finished recipes proposed again in a row
    run.log.info(f"search: {budget.describe()} on {workers} worker(s); space {sp.describe()}; objectives {objectives}")
    while True:
        while repeats < MAX_REPEATS and budget.allows(study, len(in_flight)) and len(in_flight) < workers:
            t = study.ask()
            t.set_user_attr("owner", st.owner())
            recipe = S.suggest(t, sp)
            t.set_user_attr("recipe", recipe.model_dump())
            if _repeat(run, study, t, recipe):
                repeats += 1
                if repeats == MAX_REPEATS:
                    run.log.info(
                        f"the sampler proposed {MAX_REPEATS} finished recipes in a row: it has converged, "
                        "no new trials start"
                    )
                continue
            repeats = 0
            future = run_trial.submit(t.number, data, refs.teacher_ref, run.cfg, recipe)
            in_flight[t.number] = (t, future, time.monotonic())
            run.log.info(f"trial {t.number} started: {recipe.label()}")
        if not in_flight:
            break
        time.sleep(0.5)
        _collect(run, study, in_flight, refs, objectives, budget)


def _repeat(run: Run, study: optuna.Study, t: optuna.Trial, recipe: S.SearchRecipe) -> bool:
    """When TPE proposes a finished recipe again, its result stands: told at once, nothing rerun."""
    same = st.done_before(study, t.params)
    if same is None:
        return False
    for key in ("point", "measured", "reasons"):
        t.set_user_attr(key, same.user_attrs[key])
    t.set_constraint(st.GATE_FAILURES, float(len(same.user_attrs["reasons"])))
    t.set_user_attr("same_as", same.number)
    study.tell(t, same.values)
    run.log.info(
        f"trial {t.number}: the recipe of trial {same.number} ({recipe.label()}): its result stands, nothing rerun"
    )
    return True


def _collect(run: Run, study: optuna.Study, in_flight: dict, refs: Refs, objectives: list[str], budget: Budget) -> None:
    """Record the trials that finished, with the search's progress."""
    for number, (t, future, t0) in list(in_flight.items()):
        if not future.wrapped_future.done():
            continue
        del in_flight[number]
        record(run, study, t, future, refs, objectives, time.monotonic() - t0)
        study.set_user_attr("elapsed_s", budget.elapsed())
        run.log.info(
            f"[{budget.progress(study)}] trial {number} done; {st.finished(study)} finished, "
            f"{len(st.feasible(study))} pass the gate"
        )


def record(
    run: Run, study: optuna.Study, trial: optuna.Trial, future, refs: Refs, objectives: list[str], seconds: float
) -> None:
    """Tell the study a trial's outcome, and log it as a nested MLflow run of the search."""
    metric = run.cfg.gate.metric
    recipe = S.SearchRecipe.model_validate(trial.user_attrs["recipe"])
    with run.tracker.stage(f"trial:{trial.number}", {"trial": trial.number, "recipe": recipe.label()}) as rid:
        run.tracker.params(rid, flatten({"recipe": recipe.model_dump()}))
        try:
            measured: TrialResult = future.result()
        except Exception as e:  # the trial's own error (e.g. an unsupported precision): recorded, the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            run.tracker.tags(rid, {"error": str(e)[:5000]})
            run.log.warning(f"trial {trial.number} ({recipe.label()}) failed: {e}")
            return
        why = trial_reasons(run, refs, measured, recipe)
        final = search_point(recipe, measured.final, metric)
        trial.set_user_attr("point", final.as_json(metric))
        trial.set_user_attr("measured", measured.model_dump())
        trial.set_user_attr("reasons", why)
        trial.set_constraint(st.GATE_FAILURES, float(len(why)))  # Optuna: feasible when <= 0
        trial.set_user_attr("seconds", round(seconds, 1))
        study.tell(trial, final.objectives(objectives))
        run.tracker.metrics(rid, flat_metrics(measured.final))
        run.tracker.tags(rid, {"gate_passed": not why, "gate_reasons": "; ".join(why) or "none"})
    refused = f" - refused: {why[0]}" + (f" (+{len(why) - 1} more)" if len(why) > 1 else "") if why else ""
    run.log.info(
        f"trial {trial.number} {recipe.label()}: val {metric} {final.val_score:.4f}, p95 "
        f"{final.p95_ms:.4f} ms, {final.size_bytes / 1024:.1f} KiB{refused}"
    )
