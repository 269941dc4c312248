"""Orchestration (Prefect), tracking and registry (MLflow), and the CLI. Components stay free of both."""
