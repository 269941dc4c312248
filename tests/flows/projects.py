"""Throwaway projects for end-to-end tests: the pipeline's code and dvc.yaml, their own DVC repo, MLflow store
(SQLite) and Prefect test server, so a test runs the real flow without touching this checkout."""
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


# Shrinks the shipped params.yaml for tests: few epochs, a short benchmark, a lenient gate.
SMALL = {
    "teacher": {"epochs": 4, "patience": 4},
    "student": {"epochs": 4},
    "prune": {"finetune_epochs": 2},
    "quantize": {"calibration_samples": 64},
    "benchmark": {"warmup_runs": 5, "timed_runs": 50},
    "gate": {"min_accuracy": 0.5, "max_accuracy_drop": 0.5, "max_p95_ms": 50.0, "max_size_kb": 200.0},
}


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def small_params() -> dict:
    """The shipped params.yaml shrunk by SMALL."""
    params = shipped_params()
    for name, values in SMALL.items():
        params[name] = params[name] | values
    return params


def _scaffold(root: Path, params: dict) -> None:
    """The pipeline's code, dvc.yaml and prefect.yaml in `root`, `params` as its params.yaml, an empty
    data/external and mlruns/, and its own DVC repo."""
    for d in ("components", "flows"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO / f, root)
    (root / "data" / "external").mkdir(parents=True)
    (root / "mlruns").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)


@contextmanager
def pipeline_project(root: Path, params: dict, **environ: str):
    """`root` as a project with `params` as its params.yaml and an empty data/external; `environ` is set too."""
    from prefect.testing.utilities import prefect_test_harness

    _scaffold(root, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        for k, v in environ.items():
            mp.setenv(k, v)
        with prefect_test_harness(server_startup_timeout=120):
            yield root


def data_state(root: Path) -> dict[str, bytes]:
    """Every file under data/ (the user's own files under data/external aside) and dvc.lock, by content."""
    files = [p for p in (root / "data").rglob("*") if p.is_file() and "external" not in p.relative_to(root).parts]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files + [root / "dvc.lock"])}


def served_project(root: Path, params: dict) -> dict[str, str]:
    """`root` as a project (code, dvc.yaml, prefect.yaml, `params`, its own DVC repo) for a *real* Prefect server
    run by subprocesses (`edgekd serve`, `edgekd deploy`): no test harness. Returns the environment to give them:
    this one without any PREFECT_* or MLFLOW_* setting, so they use no server, profile or store of this checkout,
    with the project's MLflow store and Prefect home (server database, logs, results) inside `root`."""
    import os

    _scaffold(root, params)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return environ | {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "results"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        # `python -m flows.cli` in `root` must import the project's copy, not this checkout's.
        "PYTHONPATH": str(root),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server():
    """A local S3-compatible server (moto's) on a free port for the block, with dummy credentials in the
    environment; yields its endpoint URL."""
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:  # any HTTP answer: it is up
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"moto server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server on {endpoint} did not answer within 60 s")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                         "AWS_DEFAULT_REGION": "us-east-1"}.items():
                mp.setenv(k, v)
            yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and nothing else
        proc.wait()
        proc.stderr.close()
