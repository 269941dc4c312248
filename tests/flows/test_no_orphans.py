"""A SIGKILL of `edgekd serve` or `deploy` leaves no process behind: each command's watchdog (flows/reaper.py)
ends the `prefect server`, the worker and its flow runs. Checked on the real process table: every process carrying
the command's token, whatever its session, must be gone. (`edgekd run`, killed mid-distillation, is checked the
same way in test_crash_resume.)"""
import signal
import subprocess
import sys
import time

import psutil
import pytest

from flows.reaper import TOKEN_VAR, marked
from flows.server import healthy
from tests.flows.projects import free_port, served_project, small_params
from tests.flows.test_schedule import FLOW, edgekd, wait_for


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("orphans")
    return root, served_project(root, small_params())


def descendants(proc: subprocess.Popen) -> list[str]:
    return [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]


def kill_and_check(proc: subprocess.Popen, url: str | None = None) -> None:
    # /proc/PID/environ shows a process's environment as it was at exec: the token is read off a child.
    token = psutil.Process(proc.pid).children()[0].environ()[TOKEN_VAR]
    started = marked(token)
    assert len(started) >= 2, "expected the watchdog and at least one process the command started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 40
    while (left := [p for p in marked(token) if p.is_running()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"left running after SIGKILL: {[' '.join(p.cmdline()) for p in left]}"
    if url:
        assert not healthy(url)


def test_sigkill_of_serve_stops_its_server(project):
    root, environ = project
    port = free_port()
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "serve")}
    log = root / "serve.log"
    with edgekd(root, environ, log, "serve", "--port", str(port)) as proc:
        wait_for("serving", lambda: "serving deployment" in log.read_text(), proc, log, timeout=240, every=0.5)
        kill_and_check(proc, f"http://127.0.0.1:{port}/api")


def test_sigkill_of_deploy_mid_flow_run_stops_server_worker_and_run(project):
    root, environ = project
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "deploy"), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = root / "deploy.log"
    with edgekd(root, environ, log, "deploy", "--port", str(port)) as proc:
        wait_for("worker", lambda: "run it with" in log.read_text(), proc, log, timeout=240, every=0.5)
        before = len(descendants(proc))
        subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", f"{FLOW}/edgekd-pool"],
                       env=environ | {"PREFECT_API_URL": url}, cwd=root, capture_output=True, check=True)
        # The worker starts the flow run in a process of its own session: wait until it is there.
        wait_for("flow run process", lambda: len(descendants(proc)) > before, proc, log, timeout=60, every=0.5)
        kill_and_check(proc, url)
