"""`edgekd search`: a multi-objective Optuna study of recipes, its trials run on Dask through Prefect.

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

from pathlib import Path
from typing import Any

from prefect import flow
from prefect_dask import DaskTaskRunner

from components import search as S
from components.config import PipelineConfig, load_config
from components.energy import rapl_readable
from flows.infra.cluster import cluster_workers, task_runner
from flows.phases import study as st
from flows.phases.context import flow_run_name, tracked_run
from flows.phases.front import SearchOutcome, publish, settle
from flows.phases.trials import references, run_trials
from flows.phases.validate import validate


def search_runner(cfg: PipelineConfig, address: str | None) -> DaskTaskRunner:
    """The search's cluster: --dask-address, else search.dask_address, else a LocalCluster of search.workers."""
    return task_runner(cfg.search.workers, address or cfg.search.dask_address)


@flow(name="edgekd-search", flow_run_name=flow_run_name("search-"))
def search(
    project_dir: str = ".",
    dataset: str | None = None,
    budget: str = "15m",
    objectives: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> SearchOutcome:
    """Search recipes of `dataset` under `budget` (a wall time like 15m, or N trials) for the `objectives`; measure
    the front again beside the default recipe and the naive path; register `search.pick` of the front (default:
    the fastest point that passes the gate and matches the default recipe on val)."""
    root = Path(project_dir).resolve()
    cfg = load_config(root / "params.yaml", dataset, overrides)
    seconds, trials = S.parse_budget(budget)
    names = S.parse_objectives(objectives, rapl_readable())
    sp = S.space(
        cfg.search,
        cfg.data.kind,
        cfg.student.width,
        cfg.distill,
        feature_teacher=not cfg.teacher.source and cfg.teacher.ensemble == 1,
        arch=cfg.student.arch,
    )
    with tracked_run(root, cfg, "search", overrides) as run:
        data = validate(run)
        refs = references(run, data)
        study = st.open_study(root, cfg, st.study_name(cfg, data, sp, names), names)
        run.tracker.tags(run.parent, {"optuna_study": study.study_name, "optuna_storage": st.storage_url(root, cfg)})
        if n := st.requeue_orphans(study):
            run.log.warning(f"{n} trial(s) left running by a killed search: queued again")
        if done := st.finished(study):
            run.log.info(f"resuming study {study.study_name}: {done} finished trial(s) kept, not rerun")
        run_trials(run, study, sp, refs, data, names, seconds, trials, cluster_workers())
        settled, refs = settle(run, study, refs, data, names, cfg.search.pick)
        return publish(run, study, refs, settled, names)
