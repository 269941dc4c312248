"""What the commands stand on: process-wide settings, processes and their clean-up, the Prefect server, the Dask
cluster, the watchdog, the database connection and the team's servers. Nothing here imports a pipeline, a phase
or a task."""
