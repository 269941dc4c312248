"""The Dask cluster a flow's tasks run on side by side (the search's trials, the KD bench's students): a running
scheduler, or a LocalCluster of single-threaded worker processes on this machine."""

from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner

# Two of Dask's worker defaults slow a training loop of small tensors down markedly: the statistical profiler
# samples every thread's stack every few milliseconds, holding the GIL, and the nanny sets MALLOC_TRIM_THRESHOLD_
# so low that glibc hands memory back to the OS after nearly every step. Workers started elsewhere (`dask worker`)
# want the same: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False and
# DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None in their environment.
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def task_runner(workers: int, address: str | None) -> DaskTaskRunner:
    """An existing Dask scheduler at `address`, or a LocalCluster of `workers` single-threaded worker processes (0:
    one per core)."""
    import logging

    import dask

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines (nannies, comms) drown the tasks
    dask.config.set(WORKER_CONFIG)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or os.cpu_count() or 1,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def cluster_workers() -> int:
    """Worker threads of the running flow's Dask cluster: how many tasks run at once."""
    from prefect.context import FlowRunContext

    info = FlowRunContext.get().task_runner.client.scheduler_info(n_workers=-1)
    return max(1, sum(w.get("nthreads", 1) for w in info["workers"].values()))
