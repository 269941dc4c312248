"""Schedules and deployments against a real `prefect server start` (the test harness's server schedules nothing):
`edgekd deploy` (prefect.yaml, a work pool of type process, a process worker) and `edgekd serve --interval`, each
in a subprocess, each stopped by a signal, then checked for exit status 0 and no process left behind.

Both tests share one project (its data, DVC stages and cached stages), each with its own Prefect home (server
database, logs): the worker test pays for the cold run, so the scheduled runs of the serve test are quick."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from components.soak import MIN_FIT, WARMUP
from flows.infra.processes import healthy

pytestmark = pytest.mark.e2e

FLOW = "edgekd-pipeline"
TERMINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}


def flow_runs(url: str, deployment: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


def read_deployment(url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def completed(url: str, deployment: str, log: Path) -> list:
    runs = flow_runs(url, deployment)
    if bad := [r for r in runs if r.state_type and r.state_type.value in TERMINAL_BAD]:
        pytest.fail(f"flow run {bad[0].name} ended {bad[0].state_type.value}:\n{log.read_text()[-6000:]}")
    return [r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]


def running(url: str, deployment: str) -> list:
    return [r for r in flow_runs(url, deployment) if r.state_type and r.state_type.value == "RUNNING"]


def at_least(n: int, items: list) -> list | None:
    return items if len(items) >= n else None


def stop(proc: subprocess.Popen, sig: int, url: str, timeout: float = 120) -> float:
    """Send `sig`, wait for the exit; check exit status 0, the server down, nothing it started still running."""
    started = psutil.Process(proc.pid).children(recursive=True)
    assert started, "edgekd should have started the server (and a worker) as child processes"
    t0 = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=timeout) == 0
    took = time.monotonic() - t0
    # multiprocessing's resource tracker exits on its own right after its parent: allow it a moment.
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
    assert not healthy(url)
    return took


def test_deploy_runs_the_flow_from_a_work_pool_through_a_process_worker(served, free_port, edgekd, wait_for):
    root, environ = served
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "deploy"), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    log = root / "deploy.log"
    t0 = time.monotonic()
    with edgekd(root, environ, log, "deploy", "--port", str(port)) as proc:
        wait_for("worker", lambda: "run it with" in log.read_text(), proc, log, timeout=240)
        ready = time.monotonic() - t0
        dep = read_deployment(url, f"{FLOW}/edgekd-pool")
        assert dep.work_pool_name == "edgekd" and dep.entrypoint == "flows/pipelines/deploy.py:pipeline"
        # prefect.yaml holds no absolute path: its build step recorded the project's, for the pull step.
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}]

        # Act: the documented trigger, the `prefect` CLI against the server `deploy` started.
        trigger = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", f"{FLOW}/edgekd-pool", "-p", "dataset=digits"],
            env=environ | {"PREFECT_API_URL": url},
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr
        t1 = time.monotonic()
        [run] = wait_for("completed flow run", lambda: completed(url, "edgekd-pool", log), proc, log, timeout=420)
        ran = time.monotonic() - t1

        assert run.parameters == {"project_dir": ".", "dataset": "digits", "overrides": None}
        stopped = stop(proc, signal.SIGINT, url)
    print(f"\ndeploy: worker ready {ready:.0f} s, run completed {ran:.0f} s after trigger, stopped in {stopped:.0f} s")


def test_serve_on_an_interval_completes_a_scheduled_run_and_stops_mid_run(
    served, free_port, edgekd, wait_for, stop_and_check, flow_run_states
):
    root, environ = served
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "serve")}
    log = root / "serve.log"
    t0 = time.monotonic()
    with edgekd(
        root,
        environ,
        log,
        "serve",
        "--interval",
        "25",
        "--set",
        "gate.max_p95_ms=45",
        "--name",
        "edgekd-test",
        "--port",
        str(port),
    ) as proc:
        wait_for("serving", lambda: "serving deployment" in log.read_text(), proc, log, timeout=240)
        runs = wait_for(
            "a completed scheduled run",
            lambda: at_least(1, completed(url, "edgekd-test", log)),
            proc,
            log,
            timeout=300,
            every=3,
        )
        first = time.monotonic() - t0
        scheduled = flow_runs(url, "edgekd-test")  # the scheduler creates the next runs ahead of time
        assert all(r.auto_scheduled for r in scheduled)  # created by the server's scheduler, not triggered
        starts = sorted(r.expected_start_time for r in scheduled)
        assert len(starts) >= 2 and (starts[1] - starts[0]).total_seconds() == 25
        assert all(
            r.parameters == {"project_dir": str(root), "dataset": None, "overrides": {"gate.max_p95_ms": 45}}
            for r in runs + scheduled
        )
        # SIGTERM while the next scheduled run runs: it is cancelled and `serve` ends within 10 s (the soak below
        # completes five scheduled runs in a row).
        wait_for("a second run in progress", lambda: running(url, "edgekd-test"), proc, log, timeout=120, every=0.5)
        taken = stop_and_check(proc, signal.SIGTERM, group=False)
        assert not healthy(url)
    states = [s for s in flow_run_states(root / ".prefect" / "serve") if s != "SCHEDULED"]
    assert states.count("COMPLETED") >= 1 and states.count("CANCELLED") + states.count("CRASHED") == 1, states
    assert "RUNNING" not in states and "PENDING" not in states, states
    print(f"\nserve: a scheduled run completed {first:.0f} s after start; SIGTERM mid-run: exited in {taken:.1f} s")


RUNS = WARMUP + MIN_FIT  # three warm-up runs, then five to fit each slope to


def test_a_short_soak_fits_a_slope_to_every_process_and_serve_does_not_grow(served, free_port, edgekd):
    import json

    root, environ = served
    environ = environ | {"PREFECT_HOME": str(root / ".prefect" / "soak")}
    log = root / "soak.log"
    port = str(free_port())
    with edgekd(
        root,
        environ,
        log,
        "bench",
        "soak",
        "--runs",
        str(RUNS),
        "--schedule",
        "15",
        "--port",
        port,
        "--json",
        str(root / "soak.json"),
    ) as proc:
        code = proc.wait(timeout=600)
    text = log.read_text()
    assert code in (0, 1) and (root / "soak.json").exists(), text[-5000:]
    out = json.loads((root / "soak.json").read_text())
    assert [s["run"] for s in out["samples"]] == list(range(1, RUNS + 1))
    assert all(s["rss_mib"] > 50 and s["threads"] > 1 and s["children"] == 0 for s in out["samples"])
    assert all(s["storage"]["mlruns"] > 0 for s in out["samples"])
    verdicts = {g["quantity"]: g["grows"] for g in out["growth"]}
    assert {"rss_mib", "open_files", "threads", "children", "db_connections", "rss_mib.serve"} <= set(verdicts)
    # Files, children and database connections are counted exactly at rest: none may grow; nor may `serve`'s RSS,
    # fitted over the runs after the warm-up (it held 468.3 -> 468.5 MiB over 20 runs). Prefect's own server grew
    # about 1 MiB a run in the 20-run soaks: it may be flagged, and then the exit code and message must say so.
    assert not verdicts["rss_mib.serve"], [g for g in out["growth"] if g["quantity"] == "rss_mib.serve"]
    assert not verdicts["open_files"] and not verdicts["children"] and not verdicts["db_connections"], verdicts
    grew = [q for q, g in verdicts.items() if g]
    assert "| run | RSS MiB | open files |" in text
    if grew:
        assert code == 1 and f"error: grows run over run: {', '.join(grew)}" in text, text[-3000:]
    else:
        assert code == 0 and f"nothing but artifact storage grew over {RUNS} runs" in text, text[-3000:]
    assert not healthy(f"http://127.0.0.1:{port}/api")  # the soak's serve and its server are gone
