"""Entrypoint of the work-pool deployment in prefect.yaml: the pipeline flow, with the project's environment set.

A process worker starts each flow run in a fresh process with the worker's environment, which `edgekd`'s
settings (MLflow store, telemetry off) are not part of unless the worker was started by `edgekd deploy`. Prefect
loads this file by path after the pull step has made the project the working directory, so the settings are
applied here, before the pipeline imports MLflow, GX and DVC's helpers.
"""

from pathlib import Path

from flows.infra.environment import configure

configure(Path(__file__).resolve().parents[2])

from flows.pipelines.run import pipeline  # noqa: E402  (after configure, on purpose)

__all__ = ["pipeline"]
