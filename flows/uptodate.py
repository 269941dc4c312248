"""A re-run with nothing changed answers the way `dvc repro` does: in seconds, from a record of the last run,
without starting Prefect, training or registering anything.

After each `edgekd run`, its outcome is recorded in `.edgekd/runs/NAME.json` under a fingerprint of what decides
it: the effective config (overrides included), the pipeline's code, the tracking store and the dataset's DVC lock
entries. A later run is up to date when the fingerprint matches, `dvc status` finds the dataset's stages clean,
the version it registered still holds the same sha256 and `production` (the gate's champion) has not moved.
Neither Prefect nor torch is imported for that answer; MLflow's client only once everything else matched.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from components.config import PipelineConfig

PACKAGES = ("components", "flows")


def record_path(root: Path, name: str) -> Path:
    return root / ".edgekd" / "runs" / f"{name}.json"


def code_hash() -> str:
    """sha256 of the pipeline's source as imported (components/ and flows/), by relative path and content."""
    h = hashlib.sha256()
    for pkg in PACKAGES:
        base = Path(__import__(pkg).__file__).parent
        for f in sorted(base.rglob("*.py")):
            h.update(str(f.relative_to(base.parent)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def fingerprint(root: Path, cfg: PipelineConfig) -> str:
    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    name = cfg.data.name
    facts = {"config": cfg.model_dump(mode="json"), "code": code_hash(),
             "store": os.environ.get("MLFLOW_TRACKING_URI"), "dvc.yaml": (root / "dvc.yaml").read_text(),
             "dvc.lock": {s: stages.get(s) for s in (f"ingest@{name}", f"prepare@{name}")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def save(root: Path, cfg: PipelineConfig, outcome: dict, exit_code: int) -> None:
    """Record a finished run (after its flow returned) for the next run's up-to-date check."""
    from components.data.base import write_text

    record = {"fingerprint": fingerprint(root, cfg), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "exit_code": exit_code, "summary": outcome["summary"], "json": outcome["json"],
              "parent_run_id": outcome["parent_run_id"], "version": outcome["version"],
              "sha256": outcome["candidates"][outcome["selected"]]["sha256"] if outcome["selected"] else None,
              "production": outcome["champion_version"]}
    write_text(record_path(root, cfg.data.name), json.dumps(record, indent=1, default=float) + "\n")


def up_to_date(root: Path, cfg: PipelineConfig) -> dict | None:
    """The last run's record if nothing that decides its outcome has changed since; None otherwise."""
    path = record_path(root, cfg.data.name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint(root, cfg) or not _dvc_clean(root, cfg.data.name):
        return None
    return record if _registry_unchanged(cfg.data.name, record) else None


def _dvc_clean(root: Path, name: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", f"ingest@{name}", f"prepare@{name}"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    try:
        return proc.returncode == 0 and json.loads(proc.stdout or "null") == {}
    except ValueError:
        return False


def _registry_unchanged(name: str, record: dict) -> bool:
    from flows import tracking

    production = tracking.version_by_alias(tracking.client(), name, tracking.PRODUCTION)
    if (str(production.version) if production else None) != record["production"]:
        return False
    return record["version"] is None or tracking.version_with_sha256(name, record["sha256"]) == record["version"]
