"""The `team` section of params.yaml: where a team's shared servers are. Not part of a run's config (nothing of it
is logged)."""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section


class TeamConfig(Section):
    """Shared servers of a team (docs: Team mode). Each tool's own environment variable wins over its
    key here; with none set, everything stays in the project folder."""

    mlflow_tracking_uri: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The team's `mlflow server`, https://HOST:5000 "
        "(env MLFLOW_TRACKING_URI wins; none: mlruns/mlflow.db).",
    )
    prefect_api_url: str | None = Field(
        None,
        pattern=r"^https?://.+/api/?$",
        description="The team's Prefect server, https://HOST:4200/api (env "
        "PREFECT_API_URL wins; none: a temporary server per command).",
    )
    database_url: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description="PostgreSQL whose advisory locks serialize promotions across "
        "machines, postgresql://USER@HOST:5432/edgekd; the password from "
        "PGPASSWORD or ~/.pgpass (env EDGEKD_DATABASE_URL wins; none: a file "
        "lock that guards this machine only).",
    )
