"""A pipeline process killed (SIGKILL) during distillation, then run again: nothing it started is left running,
finished stages come from the cache, the run completes, exactly one version is registered, and the killed MLflow
runs are not left RUNNING."""

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


def edgekd_run(root, log, repo):
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--project-dir", str(root), "run"],
        cwd=repo,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_killed_during_distillation_resumes_from_cache_and_registers_once(project, repo, kill_and_check):
    from mlflow import MlflowClient

    log = project / "killed.log"
    with open(log, "w") as out:
        proc = edgekd_run(project, out, repo)
        deadline = time.monotonic() + 300
        while "[student dkd" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        # The flow process alone: its watchdog must end the temporary Prefect server it started.
        kill_and_check(proc)
    c = MlflowClient()
    exp = c.get_experiment_by_name("digits").experiment_id
    killed = {r.data.tags["stage"]: r for r in c.search_runs([exp])}
    assert killed["pipeline"].info.status == "RUNNING" and killed["student_kd"].info.status == "RUNNING"
    assert killed["teacher"].info.status == killed["teacher_member"].info.status == "FINISHED"

    with open(project / "rerun.log", "w") as out:
        rerun = edgekd_run(project, out, repo)
        assert rerun.wait(timeout=600) == 0, (project / "rerun.log").read_text()[-3000:]

    runs = c.search_runs([exp])
    for r in runs:
        if r.info.run_id in {k.info.run_id for k in killed.values()}:
            assert r.info.status != "RUNNING", r.data.tags["stage"]
    assert c.get_run(killed["pipeline"].info.run_id).info.status == "FAILED"
    assert "killed or crashed" in c.get_run(killed["pipeline"].info.run_id).data.tags["failure"]
    parent = next(r for r in runs if r.data.tags["stage"] == "pipeline" and r.info.status == "FINISHED")
    again = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert again["teacher_member"].data.tags["cached"] == "True"  # not retrained
    assert again["student_plain"].data.tags["cached"] == "True"
    assert again["student_kd"].data.tags["cached"] == "False"  # it was killed before it finished
    assert [str(v.version) for v in c.search_model_versions("name='digits'")] == ["1"]
