"""Processes that `serve` and `deploy` run beside the flow: a local `prefect server start` (Prefect's temporary
server runs flows but schedules nothing), a process worker, the `prefect` CLI; each stopped with all it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _log(name: str):
    return open(Path(os.environ.get("PREFECT_HOME", ".")) / name, "ab")


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


def reap(processes) -> None:
    """Terminate, then kill, those of `processes` (psutil.Process) still alive."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def reap_children() -> None:
    """End every process this one started that is still running (e.g. a flow run left by an interrupted runner).
    multiprocessing's resource tracker is left alone: it ignores SIGTERM and exits as soon as this process does."""
    import psutil

    def tracker(p) -> bool:
        try:
            return "multiprocessing.resource_tracker" in " ".join(p.cmdline())
        except psutil.Error:
            return False

    reap([p for p in psutil.Process().children(recursive=True) if not tracker(p)])


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM and SIGINT raise KeyboardInterrupt in the block, so `finally` clauses stop the server before the
    process ends (Python's default on SIGTERM is to die on the spot). Prefect's runner may install its own handler
    inside."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    # A shell starts a background command with SIGINT ignored, and Python keeps that: Ctrl-C, `kill -INT` and
    # the runner's SIGTERM path (which raises SIGINT) would then do nothing. Stopping must work however started.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextmanager
def prefect_server(port: int, startup_timeout: float = 180.0):
    """Use PREFECT_API_URL if set; otherwise start a local server (database in PREFECT_HOME) for the block."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    url = f"http://127.0.0.1:{port}/api"
    log = _log("server.log")
    # Its own session: a Ctrl-C in the terminal must not stop the server before the runner or worker has used it
    # to shut down (the runner pauses its schedules through the API); the `finally` below stops it last.
    # The UI asks PREFECT_UI_API_URL for its API, which --port does not change.
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PREFECT_UI_API_URL=url))
    try:
        deadline = time.monotonic() + startup_timeout
        while not healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server not healthy on {url} after {startup_timeout:.0f} s; see {log.name}")
            time.sleep(1)
        os.environ["PREFECT_API_URL"] = url
        print(f"Prefect server and UI on {url.removesuffix('/api')} (log: {log.name})", flush=True)
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop_tree(proc, signal.SIGTERM, grace=20)
        log.close()


@contextmanager
def shared_api():
    """PREFECT_API_URL for the block, so that processes started in it (Dask workers) report to the same server:
    the one set, or Prefect's temporary server started now (the one this process then uses too)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # Prefect's own singleton: this process's flow runs find it running
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def prefect(*args: str, cwd: str | Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`prefect ARGS...` with this environment (PREFECT_API_URL included), output captured."""
    res = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(args)}` exited with {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


@contextmanager
def process_worker(pool: str, cwd: str | Path):
    """`prefect worker start --pool POOL` for the block; on exit it gets SIGTERM (Prefect turns it into a graceful
    stop that lets running flow runs finish), is killed after 60 s, and any flow run it left is ended."""
    log = _log("worker.log")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                            cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(1)
        if proc.poll() is not None:
            raise RuntimeError(f"prefect worker exited with {proc.returncode}; see {log.name}")
        print(f"process worker polling work pool {pool!r} (log: {log.name})", flush=True)
        yield proc
    finally:
        stop_tree(proc, signal.SIGTERM, grace=60)
        log.close()
