"""A SIGKILL of `edgekd serve` or `deploy` leaves no process behind: each command's watchdog (flows/infra/watchdog.py)
ends the `prefect server`, the worker and its flow runs. Checked on the real process table: every process carrying
the command's token, whatever its session, must be gone. (`edgekd run`, killed mid-distillation, is checked the
same way in test_crash_resume.)"""

import subprocess
import sys

import psutil
import pytest

pytestmark = pytest.mark.integration

FLOW = "edgekd-pipeline"


def descendants(proc: subprocess.Popen) -> list[str]:
    return [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]


def test_sigkill_of_serve_stops_its_server(served, free_port, edgekd, wait_for, kill_and_check):
    root, environ = served
    port = free_port()
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "serve")}
    log = root / "serve.log"
    with edgekd(root, environ, log, "serve", "--port", str(port)) as proc:
        wait_for("serving", lambda: "serving deployment" in log.read_text(), proc, log, timeout=240, every=0.5)
        ended = kill_and_check(proc, f"http://127.0.0.1:{port}/api")
    assert any("prefect" in c and "server" in c for c in ended), ended  # the server was among what it ended


def test_sigkill_of_deploy_mid_flow_run_stops_server_worker_and_run(
    served, free_port, edgekd, wait_for, kill_and_check
):
    root, environ = served
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "deploy"), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = root / "deploy.log"
    with edgekd(root, environ, log, "deploy", "--port", str(port)) as proc:
        wait_for("worker", lambda: "run it with" in log.read_text(), proc, log, timeout=240, every=0.5)
        before = len(descendants(proc))
        subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", f"{FLOW}/edgekd-pool"],
            env=environ | {"PREFECT_API_URL": url},
            cwd=root,
            capture_output=True,
            check=True,
        )
        # The worker starts the flow run in a process of its own session: wait until it is there.
        wait_for("flow run process", lambda: len(descendants(proc)) > before, proc, log, timeout=60, every=0.5)
        ended = kill_and_check(proc, url)
    assert any("worker" in c for c in ended), ended  # the worker was among what it ended
