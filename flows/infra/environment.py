"""Process-wide settings that must be in place before prefect, mlflow, GX or DVC are imported, and every `EDGEKD_*`
environment variable edgekd reads, declared in one place (the configuration reference lists them)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}

# A tracking server that stops answering: each request is retried 4 times, about 30 s in all (MLflow's default, 7
# times with factor 2, waits several minutes), then the command stops with a clear error (exit 6).
SERVER_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}


@dataclass(frozen=True)
class Variable:
    """An environment variable edgekd reads: its name, its default (None: unset) and what it does."""

    name: str
    default: str | None
    description: str
    internal: bool = False  # set by edgekd for its own processes, not by users

    def get(self) -> str | None:
        return os.environ.get(self.name, self.default)


USER = Variable(
    "EDGEKD_USER",
    None,
    "Who a registration, promotion or rollback is recorded as in the registry's audit trail, without a team "
    "server (default: the operating-system user); a team server records the user it authenticated.",
)
DATABASE_URL = Variable(
    "EDGEKD_DATABASE_URL",
    None,
    "The team's PostgreSQL (`postgresql://USER@HOST:5432/edgekd`, password from PGPASSWORD or "
    "~/.pgpass): promotions take its advisory lock, which every machine sees. Set from "
    "`team.database_url` when that is set; unset: a file lock that guards this machine only.",
)
LOCK_TIMEOUT = Variable(
    "EDGEKD_LOCK_TIMEOUT",
    "60",
    "Seconds a promotion or rollback waits for another one of the same model to finish before it is refused (exit 4).",
)
LOCK_DIR = Variable(
    "EDGEKD_LOCK_DIR",
    None,
    "Folder of the file locks that serialize promotions without a database (default: PROJECT/.edgekd/locks).",
)
REAPER_TOKEN = Variable(
    "EDGEKD_REAPER_TOKEN",
    None,
    "Marks every process one command started, so that its watchdog ends them if the command is killed.",
    internal=True,
)
TEAM_SERVER = Variable(
    "EDGEKD_TEAM_SERVER",
    None,
    "Marks the processes of one team server (`TEAM_DIR#NAME`), so that `team down` finds them all.",
    internal=True,
)
DEVICE_TOKEN = Variable(
    "EDGEKD_DEVICE_TOKEN",
    None,
    "The token `edgekd device check` sends to a device agent when no --token-file is given.",
)
VARIABLES = (USER, DATABASE_URL, LOCK_TIMEOUT, LOCK_DIR, DEVICE_TOKEN, REAPER_TOKEN, TEAM_SERVER)


def configure(project_dir: str | Path) -> Path:
    """Telemetry off; the team's servers when params.yaml's `team` section or the tools' own variables name them;
    otherwise Prefect's home, results and MLflow's store inside the project. Variables the user set win."""
    root = Path(project_dir).resolve()
    os.environ.update(TELEMETRY_OFF)
    for var, value in team_settings(root).items():
        os.environ.setdefault(var, value)
    for var, value in SERVER_RETRIES.items():
        os.environ.setdefault(var, value)
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(root / ".prefect" / "results"))
    # A cold temporary server runs its DB migrations first; the 20 s default fails on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri(root))
    os.environ.setdefault(LOCK_DIR.name, str(root / ".edgekd" / "locks"))
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps `predict` output to its rows
    importable(root)
    return root


def importable(root: Path) -> None:
    """The project's own modules importable here and in the Dask workers this process spawns (they start with its
    sys.path): where `student.arch: MODULE:FUNCTION` finds the user's factory. Last on the path, so a project
    module never shadows an installed package."""
    if str(root) not in sys.path:
        sys.path.append(str(root))


TEAM_VARIABLES = {
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "prefect_api_url": "PREFECT_API_URL",
    "database_url": DATABASE_URL.name,
}


def team_settings(root: Path) -> dict[str, str]:
    """The `team` section of params.yaml as the environment variables it stands for. A params file that cannot be
    read gives none here: the command that loads it reports the problem."""
    import yaml

    from components.config import ConfigError, read_params, team_config

    try:
        team = team_config(read_params(root / "params.yaml"))
    except (ConfigError, OSError, ValueError, yaml.YAMLError):
        return {}
    return {var: getattr(team, key) for key, var in TEAM_VARIABLES.items() if getattr(team, key)}


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
