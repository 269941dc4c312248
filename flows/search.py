"""`edgekd search`: a multi-objective Optuna study over recipes, its trials run on Dask through Prefect.

validate (as `edgekd run`) -> references (the default recipe, as `edgekd run` would register it, and the naive path:
the plain student + ORT dynamic INT8) -> trials (each a Prefect task on a Dask worker: train, prune, quantize,
measure; the flow asks and tells the study) -> the front measured again side by side with both references ->
the pick, registered like any run's candidate -> plot, artifacts, JSON.

The study lives in an Optuna RDB storage (SQLite under mlruns/ by default): the same command resumes it, finished
trials are not rerun, and the trials a killed search left running are run again. Trials read the project's
prepared data and the teacher's cached logits from the project folder, so a worker on another machine needs the
project at the same path (a shared file system) and PREFECT_API_URL of a Prefect server.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect_dask import DaskTaskRunner

from components import benchmark as bench
from components import gate, kd
from components import search as S
from components.config import PipelineConfig, load_config
from components.energy import rapl_readable
from flows import pipeline as P, reporting, tracking
from flows.stages import (DataRef, PruneSpec, QuantizeSpec, TeacherRef, load_data, measure_candidate, prune_student,
                          quantize_int8, train_student)

NAIVE = "naive_int8_dynamic"
GATE_FAILURES = "gate_failures"  # the study's one constraint: how many gate conditions a trial's model failed
MAX_REPEATS = 25  # finished recipes proposed in a row before the search stops starting trials


def storage_url(root: Path, cfg: PipelineConfig) -> str:
    return cfg.search.storage or f"sqlite:///{root / 'mlruns' / 'search.db'}"


def task_runner(cfg: PipelineConfig, address: str | None) -> DaskTaskRunner:
    """An existing Dask scheduler, or a LocalCluster of one single-threaded worker process per core."""
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines (nannies, comms) drown the trials
    address = address or cfg.search.dask_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.search.workers or os.cpu_count() or 1,
                                          "threads_per_worker": 1, "processes": True, "dashboard_address": None})


# --- one trial, on a worker -------------------------------------------------------------------------------------


def trial(number: int, data: dict, teacher: dict, cfg: dict, recipe: dict) -> dict:
    """Train the recipe's student (cached by its spec: trials that share it share it), prune it, change its
    precision, and measure every model of the chain through ORT (val, test, latency)."""
    import torch

    torch.set_num_threads(1)  # one core per worker: trials side by side do not fight over threads
    c = PipelineConfig.model_validate(cfg)
    ref = DataRef.model_validate(data)
    variant = kd.Variant(recipe["method"], recipe["options"])
    spec = P.student_spec(c, ref, variant, TeacherRef.model_validate(teacher), width=recipe["width"])
    spec = spec.model_copy(update={"depth": recipe["depth"]})
    student, _ = P.cached(train_student, spec.model_dump(mode="json"))
    models = {"student": student["onnx"]}
    plain = None
    if variant.method != "plain":  # KD is judged against this very student trained alone on the same budget
        pspec = spec.model_copy(update={"variant": {"method": "plain", "options": {}}, "teacher": None})
        plain = {"val": P.cached(train_student, pspec.model_dump(mode="json"))[0]["val"]}
    source = student
    if recipe["prune_ratio"]:
        pspec = PruneSpec(source=spec, weights=student["weights"], prune=c.prune.model_dump()
                          | {"ratio": recipe["prune_ratio"]})
        source, _ = P.cached(prune_student, pspec.model_dump(mode="json"))
        models["pruned"] = source["onnx"]
    precision = S.PRECISIONS[recipe["precision"]]
    if precision:
        qspec = QuantizeSpec(data=ref, fp32=source["onnx"], mode=precision["mode"],
                             quantize=c.quantize.model_dump() | {k: v for k, v in precision.items() if k != "mode"})
        models["final"] = P.cached(quantize_int8, qspec.model_dump(mode="json"))[0]["onnx"]
    else:
        models["final"] = source["onnx"]
    b = c.benchmark.model_dump()
    measured = {name: measure_candidate.fn(data, m["path"], b) | {"sha256": m["sha256"], "path": m["path"]}
                for name, m in models.items()}
    return measured | ({"plain": plain} if plain else {})


# Not a decorator: Dask pickles the task's function by reference, which needs it under its own name here.
run_trial = task(trial, name="run_trial", retries=1, retry_delay_seconds=2, task_run_name="trial-{number}")


# --- the study --------------------------------------------------------------------------------------------------


@dataclass
class Refs:
    """What every trial is judged against: teacher and plain student (gate), and the two reference points."""

    teacher: dict
    plain: dict
    default_name: str
    default: dict
    naive: dict
    kd_variant: str | None
    teacher_strong: bool
    teacher_ref: TeacherRef
    champion_version: str | None
    champion: dict | None  # the val metrics of the version holding production


def references(run: P.Run, data: DataRef) -> Refs:
    """The default recipe's candidates, trained and judged exactly as `edgekd run` does (cached when it ran), and
    the naive path: the plain student of the default width, ORT dynamic INT8, nothing else."""
    trained = P.train(run, data, kd.resolve(run.cfg.distill, run.cfg.teacher))
    results = P.measure(run, data, P.compress(run, data, trained))
    verdict = P.judge(run, results)
    default = verdict.best or max(results, key=lambda n: results[n]["val"][run.cfg.gate.metric])
    q = P.tracked(run, "quantize", quantize_int8, QuantizeSpec(data=data, fp32=trained.plain["onnx"], mode="dynamic",
                                                               quantize=run.section("quantize")), {"candidate": NAIVE})
    naive = P.measure(run, data, {NAIVE: q})[NAIVE]
    run.log.info(f"reference points: default recipe -> {default}"
                 + ("" if verdict.best else " (no candidate passed the gate: the best on val)")
                 + f"; naive -> {NAIVE} (plain student + ORT dynamic INT8)")
    return Refs(results["teacher_fp32"], results["plain_fp32"], default, results[default], naive,
                trained.kd and trained.kd["variant"], trained.teacher_strong, trained.teacher["ref"],
                verdict.champion_version, verdict.champion)


def study_name(cfg: PipelineConfig, data: DataRef, sp: S.Space, objectives: list[str]) -> str:
    """The dataset and a hash of everything a trial's outcome depends on: the same command resumes the study."""
    key = {"data": data.dataset_hash, "space": sp.describe(), "objectives": objectives,
           "sections": cfg.model_dump(mode="json", include={"train", "teacher", "student", "distill", "prune",
                                                             "quantize", "benchmark", "gate"}),
           "default_tolerance": cfg.search.default_tolerance}
    return f"{cfg.data.name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"


def open_study(root: Path, cfg: PipelineConfig, name: str, objectives: list[str]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage_url(root, cfg), study_name=name, load_if_exists=True,
                                directions=[S.OBJECTIVES[o] for o in objectives])
    # Seeded by the trials so far: a resumed study must not replay the proposals of its first session.
    # Constraints come from each trial (set_constraint).
    study.sampler = optuna.samplers.TPESampler(seed=cfg.search.seed + len(study.trials))
    return study


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's search: it may be running
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError):
        return False


def requeue_orphans(study: optuna.Study) -> int:
    """Trials left RUNNING by a search process that is gone (killed): failed, and their recipes queued again. A
    trial with no owner was killed between `ask` and its first attribute (milliseconds): failed, nothing to queue;
    nor for one killed while its recipe was being suggested (no `recipe` yet): its params are only part of one."""
    n, now = 0, datetime.now()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if owner and not _alive(owner):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if "recipe" in t.user_attrs:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            n += 1
        elif owner is None and t.datetime_start and (now - t.datetime_start).total_seconds() > 5:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            n += 1
    return n


def finished(study: optuna.Study) -> int:
    """Trials that count against a budget of N: completed, or failed by their own error (not by a kill)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE or (t.state == optuna.trial.TrialState.FAIL
                                                                    and "error" in t.user_attrs))


def views(measured: dict) -> dict:
    return {k: gate.gate_view(m) | {"energy_nj": m.get("energy_nj")} for k, m in measured.items()}


def judge(cfg: PipelineConfig, refs: Refs, measured: dict, recipe: dict) -> list[str]:
    v = views(measured)
    chain = {"student": v["student"], "pruned": v.get("pruned"), "final": v["final"], "precision": recipe["precision"],
             "plain": v.get("plain")}
    return S.reasons(chain, gate.gate_view(refs.teacher), gate.gate_view(refs.plain), cfg.gate,
                     gate.gate_view(refs.default), cfg.search.default_tolerance, refs.champion)


def point(recipe: dict, m: dict, metric: str) -> dict:
    """The JSON POINT: recipe, val and test accuracy (and the gate metric), p95, size, energy."""
    out = {"recipe": recipe, "val_accuracy": m["val"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
           "p95_ms": m["p95_ms"], "size_bytes": m["size_bytes"], "energy_nj": m.get("energy_nj"),
           "energy_source": m.get("energy_source")}
    if metric != "accuracy":
        out |= {f"val_{metric}": m["val"][metric], f"test_{metric}": m["test"][metric]}
    return out


def run_trials(run: P.Run, study: optuna.Study, sp: S.Space, refs: Refs, data: DataRef, objectives: list[str],
               seconds: float | None, trials: int | None, workers: int) -> None:
    """Ask, submit to the task runner, tell, until the budget is spent: a wall time (trials start while it lasts,
    counted over every invocation of this study) or a number of finished trials."""
    log, cfg = run.log, run.cfg
    spent = float(study.user_attrs.get("elapsed_s", 0.0))
    start = time.monotonic()
    in_flight: dict[int, tuple[optuna.Trial, Any, float]] = {}
    cfg_json, data_json, teacher_json = cfg.model_dump(mode="json"), data.model_dump(mode="json"), \
        refs.teacher_ref.model_dump(mode="json")

    def elapsed() -> float:
        return spent + time.monotonic() - start

    repeats = 0  # finished recipes proposed again in a row

    def may_start() -> bool:
        if repeats >= MAX_REPEATS:
            return False
        if seconds is not None:
            return elapsed() < seconds
        return finished(study) + len(in_flight) < trials

    budget = f"{seconds / 60:g} min" if seconds is not None else f"{trials} trials"
    log.info(f"search: {budget} on {workers} worker(s); space {sp.describe()}; objectives {objectives}")
    while True:
        while may_start() and len(in_flight) < workers:
            t = study.ask()
            t.set_user_attr("owner", _owner())
            recipe = S.suggest(t, sp)
            t.set_user_attr("recipe", recipe)
            if same := done_before(study, t.params):  # TPE proposes a finished recipe again: its result stands
                for key in ("point", "measured", "reasons"):
                    t.set_user_attr(key, same.user_attrs[key])
                t.set_constraint(GATE_FAILURES, float(len(same.user_attrs["reasons"])))
                t.set_user_attr("same_as", same.number)
                study.tell(t, same.values)
                log.info(f"trial {t.number}: the recipe of trial {same.number} ({S.label(recipe)}): its result "
                         "stands, nothing rerun")
                repeats += 1
                if repeats == MAX_REPEATS:
                    log.info(f"the sampler proposed {MAX_REPEATS} finished recipes in a row: it has converged, no "
                             "new trials start")
                continue
            repeats = 0
            future = run_trial.submit(t.number, data_json, teacher_json, cfg_json, recipe)
            in_flight[t.number] = (t, future, time.monotonic())
            log.info(f"trial {t.number} started: {S.label(recipe)}")
        if not in_flight:
            break
        time.sleep(0.5)
        for number, (t, future, t0) in list(in_flight.items()):
            if not future.wrapped_future.done():
                continue
            del in_flight[number]
            record(run, study, t, future, refs, objectives, time.monotonic() - t0)
            study.set_user_attr("elapsed_s", elapsed())
            done = finished(study)
            progress = f"{elapsed() / 60:.1f}/{seconds / 60:g} min" if seconds is not None else f"{done}/{trials}"
            feasible = len(feasible_points(study))
            log.info(f"[{progress}] trial {number} done; {done} finished, {feasible} pass the gate")


def done_before(study: optuna.Study, params: dict) -> optuna.trial.FrozenTrial | None:
    return next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if t.params == params and "point" in t.user_attrs and "same_as" not in t.user_attrs), None)


def record(run: P.Run, study: optuna.Study, trial: optuna.Trial, future, refs: Refs, objectives: list[str],
           seconds: float) -> None:
    """Tell the study a trial's outcome, and log it as a nested MLflow run of the search."""
    cfg, metric, recipe = run.cfg, run.cfg.gate.metric, trial.user_attrs["recipe"]
    with run.tracker.stage(f"trial:{trial.number}", {"trial": trial.number, "recipe": S.label(recipe)}) as rid:
        run.tracker.params(rid, tracking.flatten({"recipe": recipe}))
        try:
            measured = future.result()
        except Exception as e:  # the trial's own error (e.g. an unsupported precision): recorded, the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            run.tracker.tags(rid, {"error": str(e)[:5000]})
            run.log.warning(f"trial {trial.number} ({S.label(recipe)}) failed: {e}")
            return
        why = judge(cfg, refs, measured, recipe)
        final = measured["final"]
        trial.set_user_attr("point", point(recipe, final, metric))
        trial.set_user_attr("measured", measured)
        trial.set_user_attr("reasons", why)
        trial.set_constraint(GATE_FAILURES, float(len(why)))  # Optuna: feasible when <= 0
        trial.set_user_attr("seconds", round(seconds, 1))
        study.tell(trial, S.objective_values(views(measured)["final"], objectives, metric))
        run.tracker.metrics(rid, reporting.flat_metrics(final))
        run.tracker.tags(rid, {"gate_passed": not why, "gate_reasons": "; ".join(why) or "none"})
    run.log.info(f"trial {trial.number} {S.label(recipe)}: val {metric} {final['val'][metric]:.4f}, p95 "
                 f"{final['p95_ms']:.4f} ms, {final['size_bytes'] / 1024:.1f} KiB"
                 + (f" - refused: {why[0]}" + (f" (+{len(why) - 1} more)" if len(why) > 1 else "") if why else ""))


def feasible_points(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if "point" in t.user_attrs and not t.user_attrs.get("reasons")]


# --- the front, measured again, and the pick --------------------------------------------------------------------


def remeasure(paths: list[str], x, cfg: PipelineConfig, rounds: int) -> dict[str, dict]:
    """Latency of every model again, one after another in this process with the workers idle, `rounds` times
    round-robin (so a slow spell of the machine hits all of them); the median of each percentile."""
    b = cfg.benchmark
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            runs[p].append(bench.benchmark(p, x, threads=b.intra_op_threads, batch_size=b.batch_size,
                                           warmup_runs=b.warmup_runs, timed_runs=b.timed_runs))
    return {p: r[0] | {k: statistics.median(one[k] for one in r) for k in ("p50_ms", "p95_ms", "p99_ms",
                                                                            "mean_ms", "throughput_sps")}
            for p, r in runs.items()}


def score_key(metric: str) -> str:
    """A POINT's key of the val gate metric."""
    return "val_accuracy" if metric == "accuracy" else f"val_{metric}"


def settle(run: P.Run, study: optuna.Study, refs: Refs, data: DataRef, objectives: list[str], how: str) -> dict:
    """The front of the passing trials and both references measured again side by side; the front recomputed and
    judged on those numbers; the pick."""
    cfg, metric = run.cfg, run.cfg.gate.metric
    key = score_key(metric)
    trials = {t.number: t for t in feasible_points(study)}
    first = S.front([t.user_attrs["point"] | {"trial": n} for n, t in trials.items()], objectives, key)
    measured = {p["trial"]: trials[p["trial"]].user_attrs["measured"] for p in first}
    paths = sorted({m["path"] for ms in measured.values() for m in ms.values() if "path" in m}
                   | {refs.default["path"], refs.naive["path"]})
    run.log.info(f"measuring the front ({len(first)} point(s)) and both references again, side by side: "
                 f"{len(paths)} models x {cfg.search.remeasure_rounds} rounds")
    lat = remeasure(paths, load_data(data)[0]["test"].x, cfg, cfg.search.remeasure_rounds)

    def again(m: dict) -> dict:
        return m | {k: lat[m["path"]][k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_sps",
                                                    "peak_mem_mb")}

    refs.default, refs.naive = again(refs.default), again(refs.naive)
    points, finals = [], {}
    for number, ms in measured.items():
        ms = {k: again(m) if "path" in m else m for k, m in ms.items()}
        recipe = trials[number].user_attrs["recipe"]
        points.append(point(recipe, ms["final"], metric) | {"trial": number, "gate_reasons": judge(cfg, refs, ms,
                                                                                                    recipe)})
        finals[number] = ms["final"]
    passing = S.front([p for p in points if not p["gate_reasons"]], objectives, key)
    chosen = S.pick(passing, how, key)
    return {"front": passing, "refused_on_remeasure": [p for p in points if p["gate_reasons"]], "chosen": chosen,
            "reference": {"default": point({"candidate": refs.default_name}, refs.default, metric),
                          "naive": point({"candidate": NAIVE}, refs.naive, metric)},
            "chosen_measured": finals.get(chosen["trial"]) if chosen else None}


def pareto_plot(study: optuna.Study, outcome: dict, metric: str, path: Path) -> None:
    """Val metric vs p95 of every trial (grey: refused by the gate), the front, both references and the pick;
    marker area grows with the model's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def area(p):
        return 20 + p["size_bytes"] / 1024 * 6

    fig, ax = plt.subplots(figsize=(8, 5.5))
    done = [t.user_attrs["point"] for t in study.get_trials(deepcopy=False) if "point" in t.user_attrs]
    key = score_key(metric)
    ax.scatter([p["p95_ms"] for p in done], [p[key] for p in done], s=[area(p) for p in done], c="lightgrey",
               edgecolors="grey", label="trials (search-time latency)")
    front = sorted(outcome["front"], key=lambda p: p["p95_ms"])
    ax.plot([p["p95_ms"] for p in front], [p[key] for p in front], "o-", color="tab:blue", label="front (measured "
            "again)", markersize=6)
    for name, marker, color in (("default", "s", "tab:orange"), ("naive", "^", "tab:red")):
        r = outcome["reference"][name]
        ax.scatter([r["p95_ms"]], [r[key]], s=area(r), marker=marker, color=color,
                   label=f"{name}: {r['recipe']['candidate']}")
    if outcome["chosen"]:
        c = outcome["chosen"]
        ax.scatter([c["p95_ms"]], [c[key]], s=area(c) * 2, facecolors="none", edgecolors="green", linewidths=2,
                   label=f"chosen: trial {c['trial']}")
    ax.set_xlabel("p95 latency (ms, ORT CPU)")
    ax.set_ylabel(f"val {metric}")
    ax.set_title("Search: val metric vs p95 (marker area ~ size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def front_rows(outcome: dict, metric: str) -> list[dict]:
    rows, key = [], score_key(metric)
    for name in ("default", "naive"):
        r = outcome["reference"][name]
        rows.append({"point": f"{name} ({r['recipe']['candidate']})", f"val_{metric}": r[key],
                     "test_accuracy": r["test_accuracy"], "p95_ms": r["p95_ms"], "size_kib": r["size_bytes"] / 1024,
                     "energy_nj": r["energy_nj"]})
    for p in outcome["front"]:
        rows.append({"point": f"{'chosen: ' if p is outcome['chosen'] else ''}trial {p['trial']}: "
                              f"{S.label(p['recipe'])}", f"val_{metric}": p[key],
                     "test_accuracy": p["test_accuracy"], "p95_ms": p["p95_ms"], "size_kib": p["size_bytes"] / 1024,
                     "energy_nj": p["energy_nj"]})
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def verdict_lines(outcome: dict, metric: str) -> list[str]:
    c, key = outcome["chosen"], score_key(metric)
    if c is None:
        return ["No searched point passes the gate and matches the default recipe on val: nothing registered; "
                "the default recipe stays the answer."]
    out = [f"Chosen: trial {c['trial']}, {S.label(c['recipe'])}: val {metric} {c[key]:.4f}, test accuracy "
           f"{c['test_accuracy']:.4f}, p95 {c['p95_ms']:.4f} ms, {c['size_bytes'] / 1024:.1f} KiB, "
           f"energy {c['energy_nj']:.1f} nJ ({c['energy_source'].split(':')[0]})."]
    for name in ("default", "naive"):
        r, q = outcome["reference"][name], outcome["ratios"][name]
        out.append(f"  vs {name} ({r['recipe']['candidate']}: val {r[key]:.4f}, p95 {r['p95_ms']:.4f} ms, "
                   f"{r['size_bytes'] / 1024:.1f} KiB): val {q[f'{key}_diff'] * 100:+.2f} points, p95 "
                   f"{q['p95_ms']:.2f}x, size {q['size_bytes']:.2f}x, energy {q.get('energy_nj', float('nan')):.2f}x")
    return out


def render(outcome: dict, metric: str, cfg: PipelineConfig) -> str:
    from rich.console import Console
    from rich.table import Table

    b = cfg.benchmark
    t = Table(title=f"Search front and references: val {metric} (chosen on), test accuracy (reported), latency "
                    f"measured again side by side ({cfg.search.remeasure_rounds} rounds, median), ORT CPU, "
                    f"{b.intra_op_threads} thread(s), batch {b.batch_size}")
    rows = front_rows(outcome, metric)
    for col in rows[0]:
        t.add_column(col, justify="left" if col == "point" else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    console.print(t)
    for line in verdict_lines(outcome, metric):
        console.print(line, highlight=False)
    return buf.getvalue()


def publish(run: P.Run, study: optuna.Study, refs: Refs, outcome: dict, objectives: list[str]) -> dict:
    """Plot and JSON on the search's MLflow run, Prefect artifacts of the front, and the chosen point registered
    like any run's candidate (same gate, card, sha256, 'staging')."""
    cfg, tr, metric = run.cfg, run.tracker, run.cfg.gate.metric
    c = outcome["chosen"]
    outcome["ratios"] = {n: S.ratios(c, r, score_key(metric)) for n, r in outcome["reference"].items()} if c else {}
    text = render(outcome, metric, cfg)
    version, new = None, False
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "pareto_front.png"
        pareto_plot(study, outcome, metric, plot)
        tr.file(run.parent, plot)
        summary = summary_json(cfg, outcome, study, objectives)
        tr.json(run.parent, summary, "search.json")
        tr.metrics(run.parent, {"trials": len(study.trials), "front_points": len(outcome["front"])}
                   | {f"chosen_vs_{n}.{k}": v for n, q in outcome["ratios"].items() for k, v in q.items()
                      if isinstance(v, float)})
        if c:
            name = f"search_trial_{c['trial']}"
            results = {"teacher_fp32": refs.teacher, "plain_fp32": refs.plain, refs.default_name: refs.default,
                       NAIVE: refs.naive, name: outcome["chosen_measured"]}
            decisions = {n: gate.Decision(True) if n == name else gate.Decision(False, ["reference"]) for n in results}
            report = reporting.Report(cfg, results, decisions, name, refs.kd_variant, refs.teacher_strong)
            gate_report = {"policy": run.section("gate"), "champion_version": refs.champion_version,
                           "champion": refs.champion, "selected": name, "decided_on": "val",
                           "search": {"study": study.study_name, "pick": cfg.search.pick, "reasons": c["gate_reasons"]},
                           "candidates": {name: {"passed": True, "reasons": []}}}
            report.write(Path(tmp), gate_report)
            card = ["## Search", "", f"Study `{study.study_name}`, {len(study.trials)} trials; picked by "
                    f"`{cfg.search.pick}` on the front.", "", *[f"- {line.strip()}" for line in
                                                               verdict_lines(outcome, metric)], "",
                    "| point | val | test acc | p95 ms | KiB | energy nJ |", "|---|---|---|---|---|---|",
                    *[f"| {r['point']} | {list(r.values())[1]:.4f} | {r['test_accuracy']:.4f} | {r['p95_ms']:.4f} "
                      f"| {r['size_kib']:.1f} | {r['energy_nj']:.1f} |" for r in front_rows(outcome, metric)], "",
                    f"Energy: {c['energy_source']}.", "", "![front](pareto_front.png)"]
            version, new = P.register(run, report, gate_report, Path(tmp), extra_card="\n".join(card) + "\n",
                                      extra_files=[str(plot)])
    summary["registered"] = {"candidate": f"search_trial_{c['trial']}", "version": version, "new_version": new} \
        if version else None
    key = P.artifact_key(cfg.data.name)
    create_table_artifact(front_rows(outcome, metric), key=f"search-front-{key}",
                          description=f"The search's Pareto front on {cfg.data.name} and both references")
    create_markdown_artifact("\n".join([f"# Search: {cfg.data.name}", "", *verdict_lines(outcome, metric), "",
                                        f"Registered: version {version}" if version else "Registered: nothing",
                                        "", f"MLflow: search run `{run.parent}` (pareto_front.png)."]) + "\n",
                             key=f"search-{key}", description=f"The search's pick on {cfg.data.name}")
    run.log.info(verdict_lines(outcome, metric)[0])
    return {"summary": text, "json": summary, "version": version, "chosen": c}


def summary_json(cfg: PipelineConfig, outcome: dict, study: optuna.Study, objectives: list[str]) -> dict:
    return {"dataset": cfg.data.name, "study": study.study_name, "objectives": objectives, "pick": cfg.search.pick,
            "trials": len(study.trials), "reference": outcome["reference"], "chosen": outcome["chosen"],
            "ratios": outcome["ratios"], "front": outcome["front"],
            "refused_on_remeasure": outcome["refused_on_remeasure"]}


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return f"search-{flow_run.parameters.get('dataset') or 'default'}-{datetime.now():%Y%m%d-%H%M%S}"


@flow(name="edgekd-search", flow_run_name=_flow_run_name)
def search(project_dir: str = ".", dataset: str | None = None, budget: str = "15m", objectives: str | None = None,
           overrides: dict[str, Any] | None = None) -> dict:
    """Search recipes of `dataset` under `budget` (a wall time like 15m, or N trials) for the `objectives`; measure
    the front again beside the default recipe and the naive path; register `search.pick` of the front (default:
    the fastest point that passes the gate and matches the default recipe on val)."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    seconds, trials = S.parse_budget(budget)
    names = S.parse_objectives(objectives, rapl_readable())
    sp = S.space(cfg.search, cfg.data.kind, cfg.student.width, cfg.distill,
                 feature_teacher=not cfg.teacher.source and cfg.teacher.ensemble == 1)
    run = P.open_run(root, cfg, "search", overrides)
    try:
        data = P.validate(run)
        refs = references(run, data)
        study = open_study(root, cfg, study_name(cfg, data, sp, names), names)
        run.tracker.tags(run.parent, {"optuna_study": study.study_name, "optuna_storage": storage_url(root, cfg)})
        if n := requeue_orphans(study):
            run.log.warning(f"{n} trial(s) left running by a killed search: queued again")
        done = finished(study)
        if done:
            run.log.info(f"resuming study {study.study_name}: {done} finished trial(s) kept, not rerun")
        run_trials(run, study, sp, refs, data, names, seconds, trials, cluster_workers())
        outcome = publish(run, study, refs, settle(run, study, refs, data, names, cfg.search.pick), names)
    except BaseException as e:
        run.tracker.fail_open_runs(e)
        raise
    run.tracker.end(run.parent)
    return outcome


def cluster_workers() -> int:
    """Worker threads of the flow's Dask cluster: how many trials run at once."""
    from prefect.context import FlowRunContext

    info = FlowRunContext.get().task_runner.client.scheduler_info(n_workers=-1)
    return max(1, sum(w.get("nthreads", 1) for w in info["workers"].values()))
