"""`edgekd search` on a real Dask cluster (`dask scheduler` + two `dask worker` processes) and a real Prefect
server, as a team would scale out: a worker killed mid-search, then the whole search killed mid-study and run
again. The study (Optuna, SQLite) must end with every trial done once, none lost, none duplicated."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.flows.projects import free_port, served_project, shipped_params

TINY = {"teacher": {"epochs": 2, "patience": 2}, "student": {"width": 4, "epochs": 12, "patience": 12},
        "distill": {"method": "hinton"}, "prune": {"finetune_epochs": 1}, "quantize": {"calibration_samples": 32},
        "benchmark": {"warmup_runs": 2, "timed_runs": 20},
        "gate": {"min_accuracy": 0.3, "max_accuracy_drop": 0.9, "max_p95_ms": 50.0, "max_size_kb": 200.0,
                 "plain_tolerance": 1.0},
        "search": {"widths": [2, 4], "methods": ["plain", "hinton"], "prune_ratios": [0.0, 0.5],
                   "precisions": ["fp32", "int8_dynamic"], "default_tolerance": 1.0, "remeasure_rounds": 1}}


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
def cluster(tmp_path):
    """A project, a Prefect server, a Dask scheduler and two named single-thread workers, all on this machine."""
    from flows.server import healthy

    params = shipped_params()
    for section, values in TINY.items():
        params[section] = params.get(section, {}) | values
    env = served_project(tmp_path, params)
    api, sched = free_port(), free_port()
    env["PREFECT_API_URL"] = url = f"http://127.0.0.1:{api}/api"
    procs = {}
    try:
        with open(tmp_path / "services.log", "w") as log:
            procs["server"] = _start([sys.executable, "-m", "prefect", "server", "start", "--port", str(api)], env,
                                     tmp_path, log)
            procs["scheduler"] = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port",
                                         str(sched), "--dashboard-address", ":0"], env, tmp_path, log)
            for name in ("w1", "w2"):
                procs[name] = _start([sys.executable, "-m", "distributed.cli.dask_worker",
                                      f"tcp://127.0.0.1:{sched}", "--name", name, "--nthreads", "1",
                                      "--dashboard-address", ":0"], env, tmp_path, log)
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert time.monotonic() < deadline, (tmp_path / "services.log").read_text()[-3000:]
            time.sleep(1)
        yield tmp_path, env, f"tcp://127.0.0.1:{sched}", procs
    finally:
        for p in procs.values():
            _stop(p)


def _search(root, env, address, budget, log):
    return _start([sys.executable, "-m", "flows.cli", "search", "--budget", str(budget), "--dask-address", address,
                   "--json", str(root / f"search-{budget}.json")], env, root, log)


def _study_name(root):
    import json

    return json.loads(next(root.glob("search-*.json")).read_text())["study"]


def test_search_survives_a_lost_worker_and_a_killed_search(cluster):
    import httpx
    import optuna
    from distributed import Client
    from mlflow import MlflowClient

    root, env, address, procs = cluster
    complete, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL

    # 1. A worker dies while both run a trial: its trial is run again on the other; none is lost or doubled.
    log = root / "search1.log"
    with open(log, "w") as out:
        search = _search(root, env, address, 4, out)
        _wait_for(log, "started:", search, count=2)
        with Client(address, timeout=30) as client:
            deadline = time.monotonic() + 60
            while not (busy := [w for w, keys in client.processing().items() if keys]):
                assert time.monotonic() < deadline and search.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            names = {w: info["name"] for w, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        victim = names[busy[0]]
        _stop(procs[victim])
        assert search.wait(timeout=600) == 0, log.read_text()[-4000:]
    study = optuna.load_study(study_name=_study_name(root), storage=f"sqlite:///{root}/mlruns/search.db")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == complete and "point" in t.user_attrs for t in study.trials)
    with Client(address, timeout=30) as client:
        assert [i["name"] for i in client.scheduler_info(n_workers=-1)["workers"].values()] == \
            [n for n in ("w1", "w2") if n != victim]  # the trial of the killed one ran on the survivor
    c = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent = next(r for r in c.search_runs([c.get_experiment_by_name("digits").experiment_id])
                  if r.data.tags.get("stage") == "search")
    assert {"pareto_front.png", "search.json"} <= {a.path for a in c.list_artifacts(parent.info.run_id)}
    arts = httpx.post(f"{env['PREFECT_API_URL']}/artifacts/filter", json={"artifacts": {"flow_run_id": {
        "any_": [parent.data.tags["prefect_flow_run_id"]]}}}).json()
    assert {(a["key"], a["type"]) for a in arts} == {("search-digits", "markdown"), ("search-front-digits", "table")}
    versions_before = len(c.search_model_versions("name='digits'"))
    trial_runs = [r for r in c.search_runs([c.get_experiment_by_name("digits").experiment_id])
                  if r.data.tags.get("stage", "").startswith("trial:")]
    assert sorted(r.data.tags["stage"] for r in trial_runs) == [f"trial:{i}" for i in range(4)]

    # 2. The whole search is killed mid-study; the same command again resumes: finished trials are kept, not rerun.
    log = root / "search2.log"
    with open(log, "w") as out:
        search = _search(root, env, address, 7, out)
        _wait_for(log, "started:", search, count=2)  # both workers busy: the kill leaves trials running
        _stop(search)
    study = optuna.load_study(study_name=_study_name(root), storage=f"sqlite:///{root}/mlruns/search.db")
    kept = {t.number: t.datetime_complete for t in study.trials if t.state == complete}
    orphans = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(kept) >= 4 and orphans, [t.state for t in study.trials]
    log = root / "search3.log"
    with open(log, "w") as out:
        search = _search(root, env, address, 7, out)
        assert search.wait(timeout=600) == 0, log.read_text()[-4000:]
    assert f"resuming study {_study_name(root)}: {len(kept)} finished trial(s) kept" in log.read_text()
    study = optuna.load_study(study_name=_study_name(root), storage=f"sqlite:///{root}/mlruns/search.db")
    done = [t for t in study.trials if t.state == complete]
    assert len(done) == 7 and all(t.datetime_complete == kept[t.number] for t in done if t.number in kept)
    failed = [t for t in study.trials if t.state == fail]
    assert sorted(t.number for t in failed) == sorted(orphans)  # only the killed search's running trials
    retried = sorted(t.user_attrs["retry_of"] for t in done if "retry_of" in t.user_attrs)
    assert retried == sorted(orphans)  # each run again exactly once, with its own recipe
    assert all(t.params == study.trials[t.user_attrs["retry_of"]].params for t in done if "retry_of" in t.user_attrs)
    assert len(c.search_model_versions("name='digits'")) - versions_before <= 1
