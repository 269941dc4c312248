"""Stopping a command politely: the first SIGTERM or SIGINT raises KeyboardInterrupt, so the flow run is marked
crashed, open MLflow runs are closed and a version being registered is undone on the way out; if the command is
still alive STOP_WITHIN_S seconds later (Prefect delivering logs to a server that is gone, a Dask cluster slow to
close), or at a second signal, it ends at once with whatever it started.

Supervisors (`timeout`, systemd, Kubernetes) send SIGTERM and Ctrl-C sends SIGINT, often to the whole process
group: the servers a command starts run in sessions of their own (prefect_server.py) so that they outlive the
signal long enough to record the end, and the watchdog (watchdog.py) ends them if this process is killed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

STOP_WITHIN_S = 8.0  # the promise is 10 s; the rest is the hard exit's own reaping
EXIT_OFFSET = 128  # a shell's exit status for "killed by signal N"


class Interrupted(KeyboardInterrupt):
    """The first SIGTERM or SIGINT, raised where the main thread was."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_OFFSET + self.signum


_first: list[int] = []  # the first signal's number, once received
_actions: list = []  # what the first signal does instead of raising Interrupted (innermost last)
_installed: list[bool] = []  # whether install() ran in this process (the command line, not a test's main())


def install() -> None:
    """Handle SIGTERM and SIGINT in this process (the main thread) as described above."""
    _installed.append(True)
    signal.signal(signal.SIGTERM, received)
    # A shell starts a background command with SIGINT ignored, and Python keeps that: stopping must work however
    # the command was started.
    signal.signal(signal.SIGINT, received)


def received(signum: int, frame=None) -> None:
    """The handler: the first signal starts the deadline and raises Interrupted (or calls the action set by
    `on_first_signal`); a second one ends the process at once."""
    if _first:
        hard_exit(signum, "a second signal")
    _first.append(signum)
    print(
        f"\n{signal.Signals(signum).name} received: stopping (the flow run is marked crashed or cancelled, open "
        f"MLflow runs are closed); a second signal, or {STOP_WITHIN_S:.0f} s, ends it at once",
        file=sys.stderr,
        flush=True,
    )
    threading.Thread(target=_deadline, args=(signum, STOP_WITHIN_S), daemon=True, name="edgekd-stop").start()
    if _actions:
        _actions[-1](signum)
        return
    raise Interrupted(signum)


@contextmanager
def on_first_signal(action):
    """In the block, the first signal calls action(signum) instead of raising Interrupted: for an event loop
    that has its own way to stop (Prefect's runner cancels its flow runs, then returns)."""
    _actions.append(action)
    try:
        yield
    finally:
        _actions.remove(action)


def _deadline(signum: int, stop_within_s: float) -> None:
    time.sleep(stop_within_s)
    hard_exit(signum, f"still running {stop_within_s:.0f} s after the signal")


def hard_exit(signum: int, why: str) -> None:
    """End this process now with everything it started (children terminated, then killed after 1 s)."""
    print(f"{why}: ending now", file=sys.stderr, flush=True)
    _exit_now(EXIT_OFFSET + signum, grace_s=1.0)


def finish(code: int) -> None:
    """After a stopped command has unwound (its flow run marked, its MLflow runs closed): end the process now with
    `code` and whatever it started, rather than through the interpreter's shutdown, where a Dask client or a log
    worker can wait forever on a thread that shutdown has already frozen. Only where install() ran."""
    if _installed:
        _exit_now(code, grace_s=2.0)


def _exit_now(code: int, grace_s: float) -> None:
    from flows.infra.processes import reap_children

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        reap_children(grace_s=grace_s)
    finally:
        os._exit(code)
