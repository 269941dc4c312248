"""MLflow runs by explicit id (thread-safe): one parent run per command's run, nested runs per stage and candidate,
and the runs a killed process left RUNNING marked FAILED."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from flows.infra.processes import alive
from flows.tracking.errors import stopped, unreachable


def client() -> MlflowClient:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


class Tracker:
    """One parent run per pipeline run; nested runs per stage and candidate."""

    def __init__(self, experiment: str, artifact_root: Path | None = None):
        """`artifact_root`: where a new experiment keeps its artifacts (None: the tracking server decides)."""
        self.client = client()
        self.experiment_id = self._experiment(experiment, artifact_root)
        self.experiment = experiment
        self.started = datetime.now()
        self.parent: str | None = None
        self._open: list[str] = []

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = (artifact_root / name).as_uri() if artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # another machine's first run of this dataset created it a moment ago (a shared server)
            return self.client.get_experiment_by_name(name).experiment_id

    def start(self, stage: str, tags: dict | None = None, parent: bool = False) -> str:
        """A run named for the UI, 'digits · candidate:student_fp32 · 2026-11-23 14:05:09', tagged `stage`."""
        tags = dict(tags or {}, stage=stage, host=socket.gethostname(), pid=os.getpid())
        if not parent:
            tags["mlflow.parentRunId"] = self.parent
        name = f"{self.experiment} · {stage} · {self.started:%Y-%m-%d %H:%M:%S}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
        rid = run.info.run_id
        if parent:
            self.parent = rid
        self._open.append(rid)
        return rid

    def close_dead_runs(self) -> list[str]:
        """Mark FAILED the runs of this experiment that a process on this host left RUNNING and that process is
        gone (killed, crashed, machine restarted), so no dead run shows as running. Returns their ids."""
        host, dead = socket.gethostname(), []
        for r in self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
            pid = r.data.tags.get("pid", "")
            if r.data.tags.get("host") == host and pid.isdigit() and not alive(int(pid)):
                try:
                    self.client.set_tag(
                        r.info.run_id,
                        "failure",
                        f"process {pid} on {host} ended without finishing the run (killed or crashed)",
                    )
                except MlflowException:
                    if "failure" in self.client.get_run(r.info.run_id).data.tags:
                        continue  # another process on this host closes it at the same moment
                    raise
                self.client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.FAILED))
                dead.append(r.info.run_id)
        return dead

    @contextmanager
    def stage(self, stage: str, tags: dict | None = None):
        """A nested run around a block: FINISHED when the block completes, FAILED when it raises."""
        rid = self.start(stage, tags)
        try:
            yield rid
        except BaseException as e:
            if not unreachable(e):  # else fail_open_runs' reason: the next run closes it
                self.end(rid, ok=False, error=e)
            raise
        self.end(rid)

    def end(self, run_id: str, ok: bool = True, error: BaseException | None = None) -> None:
        """Close a run: FINISHED, or FAILED; KILLED when `error` is a stop by a signal."""
        status = RunStatus.FINISHED if ok else RunStatus.KILLED if stopped(error) else RunStatus.FAILED
        self.client.set_terminated(run_id, RunStatus.to_string(status))
        if run_id in self._open:
            self._open.remove(run_id)

    def fail_open_runs(self, error: BaseException | None = None) -> None:
        """Mark this process's open runs FAILED (KILLED when stopped by a signal), unless `error` is the tracking
        server not answering: that would only wait for it again, and the next run marks them (close_dead_runs)."""
        if error is not None and unreachable(error):
            return
        for rid in list(reversed(self._open)):
            self.end(rid, ok=False, error=error)

    def metrics(self, run_id: str, values: dict, step: int = 0) -> None:
        ts = int(datetime.now().timestamp() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in values.items() if isinstance(v, (int, float))]
        if ms:
            self.client.log_batch(run_id, metrics=ms)

    def history(self, run_id: str, rows: list) -> None:
        """Per-epoch metrics (components.train.Epoch rows), each at its epoch as the step."""
        ts = int(datetime.now().timestamp() * 1000)
        ms = [Metric(k, float(v), ts, r.epoch) for r in rows for k, v in r.model_dump().items() if k != "epoch"]
        for i in range(0, len(ms), 900):
            self.client.log_batch(run_id, metrics=ms[i : i + 900])

    # In batches (MLflow takes up to 100 params or tags per request): a run logs about 150 params, and against a
    # tracking server each request is a round trip.
    def params(self, run_id: str, values: dict) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def tags(self, run_id: str, values: dict) -> None:
        items = [RunTag(k, str(v)) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i : i + 100])

    def inputs(self, run_id: str, datasets: dict[str, mlflow.data.dataset.Dataset]) -> None:
        """Datasets a run read, by context (train, val, test): the run's inputs and the experiment's Dataset column."""
        self.client.log_inputs(
            run_id,
            [
                DatasetInput(Dataset(**d.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, ctx)])
                for ctx, d in datasets.items()
            ],
        )

    def json(self, run_id: str, obj, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def folder(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), folder)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: a nested config as MLflow params."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def dataset_inputs(
    splits: dict, paths: dict[str, Path], root: Path, name: str
) -> dict[str, mlflow.data.dataset.Dataset]:
    """The prepared splits (components Dataset by split) as MLflow datasets named NAME-SPLIT: the digest is DVC's
    md5 of the split's file (`paths`), the source its DVC-tracked path in the project."""
    import hashlib

    import mlflow.data
    from mlflow.data.sources import LocalArtifactDatasetSource

    out = {}
    for split, d in splits.items():
        with open(paths[split], "rb") as f:
            digest = hashlib.file_digest(f, "md5").hexdigest()
        # A source object, not a path string: MLflow warns that a path could be either of its two local sources.
        source = LocalArtifactDatasetSource(str(paths[split].relative_to(root)))
        out[split] = mlflow.data.from_numpy(d.x, source=source, targets=d.y, name=f"{name}-{split}", digest=digest)
    return out
