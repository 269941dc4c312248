"""The Prefect flows each command runs, as wiring of phases: `run` (the pipeline), `search`, `bench kd`, and the
deployment entrypoint; plus what decides whether a run is needed at all (uptodate.py) and the re-run bench."""
