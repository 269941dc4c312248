"""Nothing left behind: a watchdog that ends every process a command started once the command is gone, even when
it was SIGKILLed and had no chance to stop them (Prefect's temporary server, a `prefect server`, a worker and its
flow runs).

`guard()` marks this process's environment with a fresh token, which every descendant inherits whatever session
or process group it runs in, and starts `python -m flows.reaper TOKEN PID` in a session of its own. The watchdog
polls PID; when PID is gone it terminates (then kills) every process carrying the token, and exits.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

TOKEN_VAR = "EDGEKD_REAPER_TOKEN"
POLL_S = 0.5


def guard() -> None:
    """Start the watchdog of this process (once; descendants that run edgekd again are already covered)."""
    if os.environ.get(TOKEN_VAR):
        return
    os.environ[TOKEN_VAR] = token = uuid.uuid4().hex
    subprocess.Popen([sys.executable, "-m", "flows.reaper", token, str(os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def marked(token: str) -> list:
    """The processes (psutil.Process) whose environment carries `token`, this one aside."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TOKEN_VAR) == token:
                found.append(p)
        except (psutil.Error, OSError):  # gone meanwhile, or another user's
            continue
    return found


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch(token: str, pid: int) -> None:
    from flows.server import reap

    while alive(pid):
        time.sleep(POLL_S)
    for _ in range(3):  # a process being stopped may still start one (a server's worker): look again
        left = marked(token)
        if not left:
            return
        reap(left)


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]))
