"""Process-wide settings that must be in place before prefect, mlflow, GX or DVC are imported."""
from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}


def configure(project_dir: str | Path) -> Path:
    """Telemetry off; Prefect's home, results and MLflow's store inside the project unless the user set them."""
    root = Path(project_dir).resolve()
    os.environ.update(TELEMETRY_OFF)
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(root / ".prefect" / "results"))
    # A cold temporary server runs its DB migrations first; the 20 s default fails on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri(root))
    os.environ.setdefault("EDGEKD_LOCK_DIR", str(root / ".edgekd" / "locks"))  # serializes promotions
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps `predict` output to its rows
    return root


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
