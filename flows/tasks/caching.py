"""How a stage task retries and caches: retries on I/O only; a persisted JSON result keyed on its spec and its
source; recomputed when the files a cached result names were deleted since."""

from __future__ import annotations

from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel

from components.formats.base import Artifact


def _retry_on_io(task, task_run, state) -> bool:
    """Retry a task that failed on I/O (a full or busy disk, a lock held too long); a missing file, a permission
    problem or any other error (bad data, NaN loss) fails at once."""
    try:
        state.result()
    except (OSError, TimeoutError) as e:
        return not isinstance(e, (FileNotFoundError, PermissionError))
    except Exception:
        return False
    return False


IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_on_io)
# Cached stages persist a small JSON result (paths + metrics); the weights live in files, loaded safely.
CACHED = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_serializer="json", **IO_RETRIES)


def stage_task(fn, **options):
    """The Prefect task of a stage function `NAME_stage`, named NAME. Dask workers unpickle a task's function by
    reference, under its own module-level name, so the function keeps that name and the task gets another."""
    from prefect import task

    return task(fn, name=fn.__name__.removesuffix("_stage"), **options)


def artifacts(obj) -> list[Artifact]:
    """Every Artifact in a task's output (a model, or nested in one)."""
    if isinstance(obj, Artifact):
        return [obj]
    if isinstance(obj, BaseModel):
        return [a for name in type(obj).model_fields for a in artifacts(getattr(obj, name))]
    return []


def cached(task_fn, spec, future=None):
    """Run a cached task on `spec` (or wait for `future`, the same task on `spec` submitted earlier): (its output,
    whether it came from the cache). If files of a cached output were deleted since, it is recomputed instead of
    returning stale paths."""
    if future is not None:
        future.wait()
        state = future.state
    else:
        state = task_fn(spec, return_state=True)
    out = state.result()
    if not all(Path(a.path).is_file() for a in artifacts(out)):
        again = task_fn.with_options(refresh_cache=True)
        if future is not None:  # where the first one ran: on the flow's workers
            (retry := again.submit(spec)).wait()
            state = retry.state
        else:
            state = again(spec, return_state=True)
        out = state.result()
    return out, state.is_completed() and state.name == "Cached"
