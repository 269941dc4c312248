"""The pipeline's retry policy on real Prefect tasks: I/O failures are retried with back-off, other failures
(a NaN loss, bad data, a missing file) fail at once."""

import errno

import pytest
from prefect import flow, task

from flows.tasks.caching import IO_RETRIES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def harness(prefect_harness):
    """The session's Prefect test server (tests/flows/conftest.py)."""


@pytest.mark.parametrize(
    "error,attempts",
    [
        (OSError(errno.ENOSPC, "No space left on device"), 2),
        (TimeoutError("the DVC repository is locked by another process"), 2),
        (FloatingPointError("loss is nan at epoch 3, batch 7"), 1),
        (FileNotFoundError(errno.ENOENT, "no such file"), 1),
    ],
)
def test_io_failures_are_retried_others_fail_at_once(error, attempts):
    calls = []

    @task(**IO_RETRIES | {"retry_delay_seconds": 0})
    def stage():
        calls.append(1)
        if len(calls) == 1:
            raise error
        return "done"

    @flow
    def run():
        return stage(return_state=True)

    state = run(return_state=True)
    assert len(calls) == attempts
    assert state.is_completed() == (attempts == 2)
