"""Throwaway projects for end-to-end tests: the pipeline's code and dvc.yaml, their own DVC repo, MLflow store
(SQLite) and Prefect test server, so a test runs the real flow without touching this checkout."""
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@contextmanager
def pipeline_project(root: Path, params: dict, **environ: str):
    """`root` as a project with `params` as its params.yaml and an empty data/external; `environ` is set too."""
    from prefect.testing.utilities import prefect_test_harness

    for d in ("components", "flows"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    (root / "data" / "external").mkdir(parents=True)
    (root / "mlruns").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
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
