"""Processes: whether one is alive, finding the ones an environment variable marks, ending a process with all it
started, and waiting until a server answers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, finished but not yet reaped, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's: it exists
        return True


def marked(var: str, value: str) -> list:
    """The live processes (psutil.Process), this one aside, whose environment has `var` set to `value`: a marker
    that every descendant inherits, whatever session or process group it runs in."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(var) == value and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):  # gone meanwhile, or another user's
            continue
    return found


def reap(processes, grace_s: float = 10.0) -> None:
    """Terminate, then kill after `grace_s` seconds, those of `processes` (psutil.Process) still alive."""
    import psutil

    running = [p for p in processes if p.is_running()]
    for p in running:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, running = psutil.wait_procs(running, timeout=grace_s)
    for p in running:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(running, timeout=5)


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Send `sig` to `proc`, wait up to `grace` seconds, kill it if needed, then kill whatever it started and left
    behind (a worker's flow runs live in their own sessions, so a process group does not hold them)."""
    import psutil

    try:
        left = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        left = []
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reap(left)


def reap_children(grace_s: float = 10.0) -> None:
    """End every process this one started that is still running (e.g. a flow run left by an interrupted runner).
    multiprocessing's resource tracker is left alone: it ignores SIGTERM and exits as soon as this process does."""
    import psutil

    reap([p for p in psutil.Process().children(recursive=True) if not resource_tracker(p)], grace_s)


def resource_tracker(p) -> bool:
    """Whether psutil.Process `p` is multiprocessing's resource tracker (one per parent, started with its first
    child process, gone when the parent is)."""
    import psutil

    try:
        return "multiprocessing.resource_tracker" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def healthy(url: str, cafile: str | Path | None = None) -> bool:
    """Whether URL/health answers 200 (MLflow's and Prefect's health routes); an https URL's certificate verified
    against `cafile` (default: the system's CAs)."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2, context=ctx) as r:
            return r.status == 200
    except OSError:
        return False


class ServerStartError(RuntimeError):
    """A server exited, or did not answer its health URL in time; the message has the end of its log."""


def wait_healthy(
    started: dict[str, tuple[subprocess.Popen, Path, str]],
    timeout: float,
    poll_s: float = 0.5,
    cafile: str | Path | None = None,
) -> None:
    """Wait until every server of `started` ({label: (process, log file, URL)}) answers URL/health (https verified
    against `cafile`); raise ServerStartError naming the log of one that exits or stays silent past `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    pending = dict(started)
    while pending:
        for label, (proc, log, url) in list(pending.items()):
            if healthy(url, cafile):
                del pending[label]
            elif proc.poll() is not None:
                raise ServerStartError(
                    f"the {label} exited with {proc.returncode}; the last lines of {log}:\n{tail(log)}"
                )
        if pending and time.monotonic() > deadline:
            label, (_, log, url) = next(iter(pending.items()))
            raise ServerStartError(
                f"the {label} did not answer {url}/health within {timeout:.0f} s; the last lines of {log}:\n{tail(log)}"
            )
        if pending:
            time.sleep(poll_s)


def tail(path: Path, n: int = 20) -> str:
    """The last `n` lines of a log, indented, for an error message."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-n:]
    except OSError as e:
        return f"({path} unreadable: {e})"
    return "\n".join("  " + line for line in lines) or "  (empty)"
