"""Nothing left behind: a watchdog that ends every process a command started once the command is gone, even when
it was SIGKILLed and had no chance to stop them (Prefect's temporary server, a `prefect server`, a worker and its
flow runs).

`guard()` marks this process's environment with a fresh token (EDGEKD_REAPER_TOKEN), which every descendant
inherits whatever session or process group it runs in, and starts `python -m flows.infra.watchdog TOKEN PID` in a
session of its own. The watchdog polls PID; when PID is gone it terminates (then kills) every process carrying the
token, and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from flows.infra.environment import REAPER_TOKEN
from flows.infra.processes import alive, marked, reap

POLL_S = 0.5


def guard() -> None:
    """Start the watchdog of this process (once; descendants that run edgekd again are already covered)."""
    if os.environ.get(REAPER_TOKEN.name):
        return
    os.environ[REAPER_TOKEN.name] = token = uuid.uuid4().hex
    subprocess.Popen(
        [sys.executable, "-m", "flows.infra.watchdog", token, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def watch(token: str, pid: int) -> None:
    while alive(pid):
        time.sleep(POLL_S)
    for _ in range(3):  # a process being stopped may still start one (a server's worker): look again
        left = marked(REAPER_TOKEN.name, token)
        if not left:
            return
        reap(left)


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]))
