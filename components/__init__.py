"""Pure building blocks of the edge-compression pipeline (no Prefect or MLflow in here)."""
