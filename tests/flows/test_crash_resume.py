"""A pipeline process stopped politely (SIGTERM to its process group, as `timeout` and systemd send it) while
training its plain student, then killed (SIGKILL) during distillation, then run again. The SIGTERM ends it within
10 s with its flow run marked crashed and its MLflow runs KILLED; after the SIGKILL its watchdog ends what it
started. Each time nothing is left running, finished stages come from the cache, the last run completes, exactly
one version is registered, and no MLflow run is left RUNNING."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

FAST = {
    "teacher": {"epochs": 4, "patience": 30},
    "student": {"width": 8, "epochs": 12, "patience": 12},
    "prune": {"finetune_epochs": 1},
    "quantize": {"calibration_samples": 32},
    "benchmark": {"warmup_runs": 2, "timed_runs": 20},
    "gate": {"min_accuracy": 0.5, "max_accuracy_drop": 0.5, "max_p95_ms": 50.0, "max_size_kb": 200.0},
}


@pytest.fixture
def project(tmp_path, pipeline_project, shipped_params):
    params = shipped_params()
    for section, values in FAST.items():
        params[section] = params.get(section, {}) | values
    with pipeline_project(tmp_path, params) as root:
        yield root


def edgekd_run(root, log, repo, *args):
    # Its own Prefect home, so that the temporary server's database can be read once the command is gone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(root / ".pf")}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--project-dir", str(root), "run", *args],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def started(log, proc, text):
    deadline = time.monotonic() + 300
    while text not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def attempt(c, exp, parent_id) -> dict:
    """The runs of one `edgekd run` by stage: its parent run and the parent's children."""
    runs = c.search_runs([exp])
    return {
        r.data.tags["stage"]: r for r in runs if parent_id in (r.info.run_id, r.data.tags.get("mlflow.parentRunId"))
    }


def test_stopped_then_killed_resumes_from_cache_and_registers_once(
    project, repo, kill_and_check, stop_and_check, flow_run_states
):
    from mlflow import MlflowClient

    log = project / "stopped.log"
    with open(log, "w") as out:
        proc = edgekd_run(project, out, repo, "--workers", "1")  # one after another: the teacher, then plain
        started(log, proc, "[student plain")
        took = stop_and_check(proc, signal.SIGTERM)
    print(f"\nSIGTERM mid-training: exited in {took:.1f} s")
    assert "SIGTERM received: stopping" in log.read_text()
    assert flow_run_states(project / ".pf") == ["CRASHED"]
    c = MlflowClient()
    exp = c.get_experiment_by_name("digits").experiment_id
    [first] = c.search_runs([exp], "tags.stage = 'pipeline'")
    stopped = attempt(c, exp, first.info.run_id)
    assert stopped["pipeline"].info.status == stopped["student_plain"].info.status == "KILLED"
    assert stopped["teacher"].info.status == "FINISHED"
    assert not c.search_model_versions("name='digits'")

    log = project / "killed.log"
    with open(log, "w") as out:
        proc = edgekd_run(project, out, repo)  # on Dask workers: the KD student trains in a worker process
        started(log, proc, "[student dkd")
        # The flow process alone: its watchdog must end the temporary Prefect server and the Dask cluster it started.
        seen = kill_and_check(proc)
    assert any("multiprocessing" in cmd for cmd in seen), seen  # Dask's worker processes were among them
    [second] = [r for r in c.search_runs([exp], "tags.stage = 'pipeline'") if r.info.run_id != first.info.run_id]
    killed = attempt(c, exp, second.info.run_id)
    assert killed["pipeline"].info.status == "RUNNING" and killed["student_kd"].info.status == "RUNNING"
    assert killed["teacher_member"].data.tags["cached"] == "True"  # not retrained after the SIGTERM
    assert killed["student_plain"].data.tags["cached"] == "False"  # it was stopped before it finished

    with open(project / "rerun.log", "w") as out:
        rerun = edgekd_run(project, out, repo)
        assert rerun.wait(timeout=600) == 0, (project / "rerun.log").read_text()[-3000:]

    runs = c.search_runs([exp])
    assert not [r.data.tags["stage"] for r in runs if r.info.status == "RUNNING"]
    assert c.get_run(second.info.run_id).info.status == "FAILED"
    assert "killed or crashed" in c.get_run(second.info.run_id).data.tags["failure"]
    parent = next(r for r in runs if r.data.tags["stage"] == "pipeline" and r.info.status == "FINISHED")
    again = attempt(c, exp, parent.info.run_id)
    assert again["teacher_member"].data.tags["cached"] == "True"  # not retrained
    assert again["student_plain"].data.tags["cached"] == "True"
    assert again["student_kd"].data.tags["cached"] == "False"  # it was killed before it finished
    assert [str(v.version) for v in c.search_model_versions("name='digits'")] == ["1"]
    assert flow_run_states(project / ".pf") == ["CRASHED", "RUNNING", "COMPLETED"]  # SIGKILL leaves no chance to say so
