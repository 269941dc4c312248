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
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from components.config import PipelineConfig
from flows.data import dvc

PACKAGES = ("components", "flows")


class RunRecord(BaseModel):
    """A finished run as the next run's up-to-date check reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str
    when: str
    exit_code: int
    summary: str
    json_summary: dict
    parent_run_id: str
    version: str | None
    sha256: str | None  # of the registered artifact
    production: str | None  # the version holding production when it ran


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
    facts = {
        "config": cfg.model_dump(mode="json"),
        "code": code_hash(),
        "store": os.environ.get("MLFLOW_TRACKING_URI"),
        "dvc.yaml": (root / "dvc.yaml").read_text(),
        "dvc.lock": dvc.stages(root, cfg.data.name),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def save(root: Path, cfg: PipelineConfig, outcome, exit_code: int) -> None:
    """Record a finished run (`outcome`: the pipeline's RunOutcome) for the next run's up-to-date check."""
    from components.data.base import write_text

    selected = outcome.candidates[outcome.selected].artifact.sha256 if outcome.selected else None
    record = RunRecord(
        fingerprint=fingerprint(root, cfg),
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        exit_code=exit_code,
        summary=outcome.summary,
        json_summary=outcome.json,
        parent_run_id=outcome.parent_run_id,
        version=outcome.version,
        sha256=selected,
        production=outcome.champion_version,
    )
    write_text(record_path(root, cfg.data.name), record.model_dump_json(indent=1) + "\n")


def up_to_date(root: Path, cfg: PipelineConfig) -> RunRecord | None:
    """The last run's record if nothing that decides its outcome has changed since; None otherwise."""
    try:
        record = RunRecord.model_validate_json(record_path(root, cfg.data.name).read_text())
    except (OSError, ValueError):
        return None
    if record.fingerprint != fingerprint(root, cfg) or not dvc.clean(root, cfg.data.name):
        return None
    return record if _registry_unchanged(cfg.data.name, record) else None


def _registry_unchanged(name: str, record: RunRecord) -> bool:
    from flows.tracking import registry
    from flows.tracking.tracker import client

    production = registry.version_by_alias(client(), name, registry.PRODUCTION)
    if (str(production.version) if production else None) != record.production:
        return False
    return record.version is None or registry.version_with_sha256(name, record.sha256) == record.version
