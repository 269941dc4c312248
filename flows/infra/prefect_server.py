"""The Prefect API a command's flows report to: a local `prefect server start` for `serve` and `deploy` (Prefect's
temporary server runs flows but schedules nothing), Prefect's temporary server shared with Dask workers, a process
worker, and the `prefect` CLI; each stopped with all it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from flows.infra.processes import ServerStartError, stop_tree, wait_healthy


def _log(name: str):
    return open(Path(os.environ.get("PREFECT_HOME", ".")) / name, "ab")


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ, PREFECT_UI_API_URL=url),
    )
    try:
        wait_healthy({"prefect server": (proc, Path(log.name), url)}, startup_timeout, poll_s=1.0)
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
    the one set, or Prefect's temporary server started now (the one this process then uses too), in a session of
    its own: a signal to the command's process group (Ctrl-C, `timeout`) must not stop it before the flow run has
    reported how it ended. Prefect stops it at exit; the watchdog if this process is killed."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    server = _detached_server()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _detached_server():
    """Prefect's own singleton temporary server (this process's flow runs find it running), started in a new
    session."""
    from prefect.server.api.server import SubprocessASGIServer

    class Detached(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            popen = subprocess.Popen

            def in_own_session(*args, **kwargs):
                return popen(*args, **kwargs, start_new_session=True)

            subprocess.Popen = in_own_session  # Prefect builds the command line and environment; only this differs
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = popen

    return Detached()


def prefect(*args: str, cwd: str | Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`prefect ARGS...` with this environment (PREFECT_API_URL included), output captured."""
    res = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(args)}` exited with {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


@contextmanager
def process_worker(pool: str, cwd: str | Path):
    """`prefect worker start --pool POOL` for the block; on exit (a signal to `deploy`) it gets SIGTERM, is killed
    after 5 s, and any flow run it left is ended: a stop must take seconds (signals.py)."""
    log = _log("worker.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(1)
        if proc.poll() is not None:
            raise ServerStartError(f"prefect worker exited with {proc.returncode}; see {log.name}")
        print(f"process worker polling work pool {pool!r} (log: {log.name})", flush=True)
        yield proc
    finally:
        stop_tree(proc, signal.SIGTERM, grace=5)
        log.close()
