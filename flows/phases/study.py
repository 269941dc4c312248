"""The search's Optuna study: where it lives (an RDB storage, SQLite under mlruns/ by default), its name (the
dataset and a hash of everything a trial's outcome depends on, so the same command resumes it), and its trials
as the search reads them: finished, feasible, orphaned by a killed search, or already run with the same recipe."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import datetime
from pathlib import Path

import optuna

from components import search as S
from components.config import PipelineConfig
from flows.infra.processes import alive
from flows.tasks.specs import DataRef

GATE_FAILURES = "gate_failures"  # the study's one constraint: how many gate conditions a trial's model failed
RECORDS = 2  # the format of what a trial keeps in the study (its point and measurements); part of the study name


def storage_url(root: Path, cfg: PipelineConfig) -> str:
    return cfg.search.storage or f"sqlite:///{root / 'mlruns' / 'search.db'}"


def study_name(cfg: PipelineConfig, data: DataRef, sp: S.Space, objectives: list[str]) -> str:
    """The dataset and a hash of everything a trial's outcome depends on: the same command resumes the study."""
    key = {
        "data": data.dataset_hash,
        "space": sp.describe(),
        "objectives": objectives,
        "sections": cfg.model_dump(
            mode="json", include={"train", "teacher", "student", "distill", "prune", "quantize", "benchmark", "gate"}
        ),
        "default_tolerance": cfg.search.default_tolerance,
        "records": RECORDS,
    }
    return f"{cfg.data.name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"


def open_study(root: Path, cfg: PipelineConfig, name: str, objectives: list[str]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage_url(root, cfg),
        study_name=name,
        load_if_exists=True,
        directions=[S.OBJECTIVES[o] for o in objectives],
    )
    # Seeded by the trials so far: a resumed study must not replay the proposals of its first session.
    # Constraints come from each trial (set_constraint).
    study.sampler = optuna.samplers.TPESampler(seed=cfg.search.seed + len(study.trials))
    return study


def owner() -> str:
    """Who runs a trial: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(who: str) -> bool:
    host, _, pid = who.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's search: it may be running
    return pid.isdigit() and alive(int(pid))


def requeue_orphans(study: optuna.Study) -> int:
    """Trials left RUNNING by a search process that is gone (killed): failed, and their recipes queued again. A
    trial with no owner was killed between `ask` and its first attribute (milliseconds): failed, nothing to queue;
    nor for one killed while its recipe was being suggested (no `recipe` yet): its params are only part of one."""
    n, now = 0, datetime.now()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        who = t.user_attrs.get("owner")
        if who and not _owner_alive(who):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if "recipe" in t.user_attrs:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            n += 1
        elif who is None and t.datetime_start and (now - t.datetime_start).total_seconds() > 5:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            n += 1
    return n


def finished(study: optuna.Study) -> int:
    """Trials that count against a budget of N: completed, or failed by their own error (not by a kill)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE
        or (t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs)
    )


def done_before(study: optuna.Study, params: dict) -> optuna.trial.FrozenTrial | None:
    """A completed trial of the same recipe (its own, not a copy of another's), if there is one."""
    return next(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.params == params and "point" in t.user_attrs and "same_as" not in t.user_attrs
        ),
        None,
    )


def feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials whose final model passed the gate."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "point" in t.user_attrs and not t.user_attrs.get("reasons")
    ]


def point(t: optuna.trial.FrozenTrial, metric: str) -> S.SearchPoint:
    """A trial's final model as a point of the plane."""
    return S.SearchPoint.from_json(t.user_attrs["point"], metric)
