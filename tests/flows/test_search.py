"""`edgekd search` on a real Dask cluster (`dask scheduler` + two `dask worker` processes) and a real Prefect
server, as a team would scale out: a worker killed mid-search, then the whole search stopped by SIGTERM mid-trial
(it must end within 10 s, its flow run crashed and its MLflow runs KILLED) and run again. The study (Optuna,
SQLite) must end with every trial done once, none lost, none duplicated."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

TINY = {
    "teacher": {"epochs": 2, "patience": 2},
    "student": {"width": 4, "epochs": 12, "patience": 12},
    "distill": {"method": "hinton"},
    "prune": {"finetune_epochs": 1},
    "quantize": {"calibration_samples": 32},
    "benchmark": {"warmup_runs": 2, "timed_runs": 20},
    "gate": {
        "min_accuracy": 0.3,
        "max_accuracy_drop": 0.9,
        "max_p95_ms": 50.0,
        "max_size_kb": 200.0,
        "plain_tolerance": 1.0,
    },
    "search": {
        "widths": [2, 4],
        "methods": ["plain", "hinton"],
        "prune_ratios": [0.0, 0.5],
        "precisions": ["fp32", "int8_dynamic"],
        "default_tolerance": 1.0,
        "remeasure_rounds": 1,
    },
}


def _start(args, env, cwd, log):
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(path, text, proc, timeout=300, count=1):
    deadline = time.monotonic() + timeout
    while path.read_text().count(text) < count:
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()[-4000:]
        time.sleep(0.3)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path, shipped_params, served_project, free_port):
    """A project, a Prefect server, a Dask scheduler and two named single-thread workers, all on this machine."""
    from flows.infra.processes import healthy

    params = shipped_params()
    for section, values in TINY.items():
        params[section] = params.get(section, {}) | values
    env = served_project(tmp_path, params)
    api, sched = free_port(), free_port()
    env["PREFECT_API_URL"] = url = f"http://127.0.0.1:{api}/api"
    procs = {}
    try:
        with open(tmp_path / "services.log", "w") as log:
            procs["server"] = _start(
                [sys.executable, "-m", "prefect", "server", "start", "--port", str(api)], env, tmp_path, log
            )
            procs["scheduler"] = _start(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--port",
                    str(sched),
                    "--dashboard-address",
                    ":0",
                ],
                env,
                tmp_path,
                log,
            )
            for name in ("w1", "w2"):
                procs[name] = _start(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        f"tcp://127.0.0.1:{sched}",
                        "--name",
                        name,
                        "--nthreads",
                        "1",
                        "--dashboard-address",
                        ":0",
                    ],
                    env,
                    tmp_path,
                    log,
                )
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert time.monotonic() < deadline, (tmp_path / "services.log").read_text()[-3000:]
            time.sleep(1)
        yield tmp_path, env, f"tcp://127.0.0.1:{sched}", procs
    finally:
        for p in procs.values():
            _stop(p)


def _search(root, env, address, budget, log):
    return _start(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "search",
            "--budget",
            str(budget),
            "--dask-address",
            address,
            "--json",
            str(root / f"search-{budget}.json"),
        ],
        env,
        root,
        log,
    )


def _study(root):
    import optuna

    storage = f"sqlite:///{root}/mlruns/search.db"
    (name,) = optuna.get_all_study_names(storage)  # one search command, one study
    return optuna.load_study(study_name=name, storage=storage)


def test_search_survives_a_lost_worker_and_a_stopped_search(cluster, stop_and_check):
    import httpx
    import optuna
    from distributed import Client
    from mlflow import MlflowClient

    root, env, address, procs = cluster
    complete, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL

    # A worker dies while both run a trial: Dask runs its trial again on the other one.
    log = root / "killed.log"
    with open(log, "w") as out:
        search = _search(root, env, address, 6, out)
        _wait_for(log, "started:", search, count=2)
        with Client(address, timeout=30) as client:
            deadline = time.monotonic() + 60
            while not (busy := [w for w, keys in client.processing().items() if keys]):
                assert time.monotonic() < deadline and search.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            names = {w: info["name"] for w, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        _stop(procs[names[busy[0]]])
        # Then the whole search is stopped mid-study, once both first trials are done and a third one runs.
        deadline = time.monotonic() + 300
        while not (
            "trial 0 done;" in (text := log.read_text())
            and "trial 1 done;" in text
            and text.count("started:") > text.count(" done;")
        ):
            assert search.poll() is None and time.monotonic() < deadline, text[-4000:]
            time.sleep(0.1)
        took = stop_and_check(search, signal.SIGTERM)
    print(f"\nSIGTERM mid-trial: the search exited in {took:.1f} s")
    [stopped] = httpx.post(
        f"{env['PREFECT_API_URL']}/flow_runs/filter", json={"flow_runs": {"name": {"like_": "search-"}}}
    ).json()
    assert stopped["state_type"] == "CRASHED", stopped["state"]
    c = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = c.get_experiment_by_name("digits").experiment_id
    assert {r.info.status for r in c.search_runs([exp], "tags.stage = 'search'")} == {"KILLED"}
    study = _study(root)
    kept = {t.number: t.datetime_complete for t in study.trials if t.state == complete}
    orphans = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert {0, 1} <= set(kept) and orphans, [t.state for t in study.trials]  # the lost worker's trial is done too
    assert not [t for t in study.trials if t.state == fail]

    # The same command again resumes the study: finished trials are kept, not rerun; the orphans run once more.
    log = root / "resumed.log"
    with open(log, "w") as out:
        search = _search(root, env, address, 6, out)
        assert search.wait(timeout=600) == 0, log.read_text()[-4000:]
    assert f"resuming study {study.study_name}: {len(kept)} finished trial(s) kept" in log.read_text()
    study = _study(root)
    done = [t for t in study.trials if t.state == complete]
    assert len(done) == 6 and all("point" in t.user_attrs for t in done)
    assert all(t.datetime_complete == kept[t.number] for t in done if t.number in kept)
    assert sorted(t.number for t in study.trials if t.state == fail) == sorted(orphans)
    retried = [t for t in done if "retry_of" in t.user_attrs]
    with_recipe = [n for n in orphans if "recipe" in study.trials[n].user_attrs]  # not killed before suggest ended
    assert sorted(t.user_attrs["retry_of"] for t in retried) == with_recipe and with_recipe  # each once
    assert all(t.params == study.trials[t.user_attrs["retry_of"]].params for t in retried)

    assert not [r.data.tags.get("stage") for r in c.search_runs([exp]) if r.info.status == "RUNNING"]
    assert len(c.search_model_versions("name='digits'")) <= 1
    parent = next(r for r in c.search_runs([exp], order_by=["start_time DESC"]) if r.data.tags.get("stage") == "search")
    assert {"pareto_front.png", "search.json"} <= {a.path for a in c.list_artifacts(parent.info.run_id)}
    arts = httpx.post(
        f"{env['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [parent.data.tags["prefect_flow_run_id"]]}}},
    ).json()
    assert {(a["key"], a["type"]) for a in arts} == {("search-digits", "markdown"), ("search-front-digits", "table")}
    trial_runs = [
        r.data.tags["stage"] for r in c.search_runs([exp]) if r.data.tags.get("stage", "").startswith("trial:")
    ]
    assert sorted(trial_runs) == sorted(f"trial:{t.number}" for t in done if "same_as" not in t.user_attrs)


@pytest.mark.unit
def test_an_orphan_killed_while_its_recipe_was_suggested_is_failed_but_not_queued_again():
    import socket

    import optuna

    from flows.phases.study import requeue_orphans

    study = optuna.create_study()
    dead = f"{socket.gethostname()}:{2**22 + 7}"  # above Linux's pid_max default: no such process
    whole, partial = study.ask(), study.ask()
    for t in (whole, partial):
        t.set_user_attr("owner", dead)
        t.suggest_int("width", 2, 8)
    whole.suggest_categorical("method", ["plain", "dkd"])
    whole.set_user_attr("recipe", {"width": whole.params["width"], "method": whole.params["method"]})

    assert requeue_orphans(study) == 2
    assert [t.state for t in study.trials[:2]] == [optuna.trial.TrialState.FAIL] * 2
    assert len(study.trials) == 3 and study.trials[2].state == optuna.trial.TrialState.WAITING
    assert study.trials[2].user_attrs["retry_of"] == whole.number
    assert study.trials[2].system_attrs["fixed_params"] == whole.params  # the whole recipe, as it was
