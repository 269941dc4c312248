"""MLflow tracking and registry helpers: runs by explicit id (thread-safe), aliases with an audit trail.

Registry stages are deprecated since MLflow 2.9; promotion uses the aliases `staging` and `production`.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

STAGING, PRODUCTION = "staging", "production"
HISTORY_TAG = "edgekd.production_history"
ARCHIVED = "archived"  # tag of a version that `production` moved away from
COMPLETE = "registration_complete"  # the last tag `register` writes


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def actor() -> str:
    return os.environ.get("EDGEKD_USER") or getpass.getuser()


class Tracker:
    """One parent run per pipeline run; nested runs per stage and candidate."""

    def __init__(self, experiment: str, artifact_root: Path | None = None):
        """`artifact_root`: where a new experiment keeps its artifacts (None: the tracking server decides)."""
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        self.client = MlflowClient()
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (artifact_root / experiment).as_uri() if artifact_root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                # another machine's first run of this dataset created it a moment ago (a shared server)
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.started = datetime.now()
        self.parent: str | None = None
        self._open: list[str] = []

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
            if r.data.tags.get("host") == host and pid.isdigit() and not _alive(int(pid)):
                self.client.set_tag(r.info.run_id, "failure", f"process {pid} on {host} ended without finishing "
                                                              "the run (killed or crashed)")
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
                self.end(rid, ok=False)
            raise
        self.end(rid)

    def end(self, run_id: str, ok: bool = True) -> None:
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))
        if run_id in self._open:
            self._open.remove(run_id)

    def fail_open_runs(self, error: BaseException | None = None) -> None:
        """Mark this process's open runs FAILED, unless `error` is the tracking server not answering: that would
        only wait for it again, and the next run marks them (close_dead_runs)."""
        if error is not None and unreachable(error):
            return
        for rid in list(reversed(self._open)):
            self.end(rid, ok=False)

    def metrics(self, run_id: str, values: dict, step: int = 0) -> None:
        ts = int(datetime.now().timestamp() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in values.items() if isinstance(v, (int, float))]
        if ms:
            self.client.log_batch(run_id, metrics=ms)

    def history(self, run_id: str, rows: list[dict]) -> None:
        ts = int(datetime.now().timestamp() * 1000)
        ms = [Metric(k, float(v), ts, r["epoch"]) for r in rows for k, v in r.items() if k != "epoch"]
        for i in range(0, len(ms), 900):
            self.client.log_batch(run_id, metrics=ms[i:i + 900])

    # In batches (MLflow takes up to 100 params or tags per request): a run logs about 150 params, and against a
    # tracking server each request is a round trip.
    def params(self, run_id: str, values: dict) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def tags(self, run_id: str, values: dict) -> None:
        items = [RunTag(k, str(v)) for k, v in values.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i:i + 100])

    def inputs(self, run_id: str, datasets: dict[str, "mlflow.data.dataset.Dataset"]) -> None:
        """Datasets a run read, by context (train, val, test): the run's inputs and the experiment's Dataset column."""
        self.client.log_inputs(run_id, [DatasetInput(Dataset(**d.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, ctx)])
                                        for ctx, d in datasets.items()])

    def json(self, run_id: str, obj, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def folder(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


# --- registry -----------------------------------------------------------------------------------------------


def client() -> MlflowClient:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


def version_by_alias(c: MlflowClient, name: str, alias: str):
    """The version holding `alias`, or None. (Its .version may be an int: compare through str().)"""
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        # no such model, or no such alias; a busy store or a server not answering is not "no such alias"
        missing = e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
        if missing and "database is locked" not in str(e):
            return None
        raise


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and k != "batch_size"}


def metric_tags(candidate: dict, teacher: dict, plain: dict) -> dict:
    """Version tags of what was measured at registration, so that `promote` can re-run the gate from the registry
    alone: the candidate's test metrics and latency (`metric.*`, the report) and validation metrics (`val.*`, what
    the gate judges), its teacher's (`teacher.*`, `teacher_val.*`) and the plain student's (`plain_val.*`)."""
    latency = _scalars({k: v for k, v in candidate.items() if k not in ("val", "test")})
    return ({f"metric.{k}": v for k, v in (_scalars(candidate["test"]) | latency).items()}
            | {f"val.{k}": v for k, v in _scalars(candidate["val"]).items()}
            | {f"teacher.{k}": v for k, v in _scalars(teacher["test"]).items()}
            | {f"teacher_val.{k}": v for k, v in _scalars(teacher["val"]).items()}
            | {f"plain_val.{k}": v for k, v in _scalars(plain["val"]).items()})


def version_metrics(mv, prefix: str = "metric.") -> dict:
    """The measured metrics recorded on a version at registration (`prefix` "teacher." for its teacher's)."""
    return {k[len(prefix):]: float(v) for k, v in mv.tags.items() if k.startswith(prefix)}


def gate_metrics(mv, prefix: str = "val.") -> dict:
    """What the gate judges of a registered version (or, with `prefix` "teacher_val.", of its teacher): validation
    metrics with latency and size. Versions registered before validation metrics were recorded fall back to their
    test metrics."""
    latency = {k: v for k, v in version_metrics(mv).items() if k in ("p50_ms", "p95_ms", "p99_ms", "size_bytes")}
    val = version_metrics(mv, prefix)
    fallback = {"val.": "metric.", "teacher_val.": "teacher.", "plain_val.": None}[prefix]
    if not val and fallback:
        val = version_metrics(mv, fallback)
    return (val | latency) if val else {}


def register(run_id: str, name: str, onnx_path: str | Path, input_example, extra_files: list[str],
             tags: dict, description: str) -> str:
    """Log the ONNX model with signature, input example and extra files, register it with its tags (one request:
    the version never exists without them), describe it, alias it staging, and mark it complete last."""
    import onnx
    from mlflow.models import infer_signature

    from components.export import ort_predict

    model = onnx.load(str(onnx_path))
    signature = infer_signature(input_example, ort_predict(onnx_path, input_example))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            model, name="model", signature=signature, input_example=input_example, extra_files=extra_files,
            save_as_external_data=False, pip_requirements=["onnxruntime", "onnx", "numpy"],
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    version = str(mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items()}).version)
    c = client()
    c.update_model_version(name, version, description=description)
    c.set_registered_model_alias(name, STAGING, version)
    c.set_model_version_tag(name, version, COMPLETE, "true")  # last: without it, the version is partial
    return version


def version_with_sha256(name: str, sha256: str) -> str | None:
    """The complete version of `name` whose artifact has this sha256, if one is registered."""
    for mv in client().search_model_versions(f"name='{name}'"):
        if mv.tags.get("sha256") == sha256 and COMPLETE in mv.tags:
            return str(mv.version)
    return None


def drop_partial_versions(name: str, run_ids: list[str]) -> list[str]:
    """Delete versions that runs in `run_ids` (dead ones) began registering but never finished."""
    c, dropped = client(), []
    if not run_ids:
        return dropped
    for mv in c.search_model_versions(f"name='{name}'"):
        if mv.run_id in run_ids and COMPLETE not in mv.tags:
            try:
                c.delete_model_version(name, mv.version)
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue  # another run on this host, starting at the same time, deleted it first
            dropped.append(str(mv.version))
    return dropped


def model_onnx_path(c: MlflowClient, name: str, version: str) -> Path:
    """Local path of a version's ONNX file (downloaded to a temp dir for remote stores)."""
    mv = c.get_model_version(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tempfile.mkdtemp()))
    return local / "model.onnx"


def _audit(c: MlflowClient, name: str, versions: list[str], record: dict) -> None:
    for v in versions:
        stamp = datetime.fromisoformat(record["when"]).strftime("%Y%m%dT%H%M%S.%fZ")  # tag keys allow no '+'
        c.set_model_version_tag(name, v, f"audit.{stamp}.{record['action']}", json.dumps(record))


def _history(c: MlflowClient, name: str) -> list[dict]:
    return json.loads(c.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))


class PromotionError(RuntimeError):
    pass


@contextmanager
def registry_lock(name: str, timeout: float | None = None):
    """Serialize changes of `name`'s production alias; a promotion waits at most `timeout` seconds (default
    EDGEKD_LOCK_TIMEOUT, else 60) for another one to finish. With EDGEKD_DATABASE_URL (a team's PostgreSQL) the lock
    is a PostgreSQL advisory lock, which every machine sees and which the server releases when its holder's
    connection ends (a killed process never leaves it held); otherwise a file lock beside the project's store."""
    timeout = float(os.environ.get("EDGEKD_LOCK_TIMEOUT", 60)) if timeout is None else timeout
    url = os.environ.get("EDGEKD_DATABASE_URL")
    if url:
        with _advisory_lock(url, name, timeout):
            yield
        return
    if not os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:"):
        print(f"warning: promotions of {name} are serialized by a file lock on this machine only; set "
              "EDGEKD_DATABASE_URL (or team.database_url) to the team's PostgreSQL so every machine shares the guard",
              file=sys.stderr, flush=True)
    from filelock import FileLock, Timeout

    folder = Path(os.environ.get("EDGEKD_LOCK_DIR", ".edgekd/locks"))
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"registry-{name}.lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _waiting(name, timeout)
            lock.acquire(timeout=timeout)
    except Timeout:
        raise PromotionError(_busy(name, timeout, str(folder))) from None
    try:
        yield
    finally:
        lock.release()


def _waiting(name: str, timeout: float) -> None:
    print(f"waiting up to {timeout:.0f} s for another promotion or rollback of {name} to finish ...",
          file=sys.stderr, flush=True)


def _busy(name: str, timeout: float, where: str) -> str:
    return (f"another promotion or rollback of {name} has held the registry lock for {timeout:.0f} s ({where}); "
            "nothing was changed, try again")


def lock_key(name: str) -> int:
    """The advisory lock key of a registered model: a signed 64-bit number from its name."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"edgekd.registry:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def _advisory_lock(url: str, name: str, timeout: float):
    import time

    import psycopg2

    try:
        conn = psycopg2.connect(url, connect_timeout=10, application_name=f"edgekd promote {name}")
    except psycopg2.Error as e:
        raise PromotionError(f"the promotion guard's database {_redact(url)} could not be reached: "
                             f"{str(e).strip()}; nothing was changed") from None
    conn.autocommit = True
    where = f"PostgreSQL advisory lock on {_redact(url)}"
    try:
        with conn.cursor() as cur:
            deadline, waited = time.monotonic() + timeout, False
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise PromotionError(_busy(name, timeout, where))
                if not waited:
                    _waiting(name, timeout)
                    waited = True
                time.sleep(0.2)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
    finally:
        conn.close()


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _move_production(c: MlflowClient, name: str, record: dict) -> None:
    """Point `production` at record['to'], archive the version it replaces, and record the move."""
    c.set_registered_model_alias(name, PRODUCTION, record["to"])
    if ARCHIVED in c.get_model_version(name, record["to"]).tags:  # a rollback brings an archived version back
        c.delete_model_version_tag(name, record["to"], ARCHIVED)
    if record["from"]:
        c.set_model_version_tag(name, record["from"], ARCHIVED, json.dumps({"when": record["when"],
                                                                            "by": record["who"],
                                                                            "replaced_by": record["to"]}))
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(_history(c, name) + [record]))
    _audit(c, name, [v for v in (record["to"], record["from"]) if v], record)


def _refuse(c: MlflowClient, name: str, record: dict, reason: str) -> None:
    """Record a refused attempt in the history (who tried what, and why), then refuse."""
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(_history(c, name) + [record | {"refused": reason}]))
    raise PromotionError(reason)


def promote(name: str, version: str, gate_check) -> dict:
    """Move `production` to `version` if its artifact is intact and `gate_check(candidate, teacher, production|None,
    plain|None)` (validation metric dicts -> components.gate.Decision) passes. Serialized: when another promotion moves `production`
    while this one waits for the lock, this one is refused rather than silently overriding it."""
    c = client()
    seen = version_by_alias(c, name, PRODUCTION)
    seen = str(seen.version) if seen else None
    with registry_lock(name):
        current = version_by_alias(c, name, PRODUCTION)
        cur = str(current.version) if current else None
        record = {"action": "promote", "who": actor(), "when": now(), "from": cur, "to": str(version)}
        if cur != seen:
            _refuse(c, name, record, f"{PRODUCTION} of {name} moved from version {seen} to {cur} while this "
                                     f"promotion of version {version} waited; nothing was changed: review version "
                                     f"{cur} and promote again if {version} should replace it")
        if cur == str(version):
            raise PromotionError(f"{name} version {version} already holds '{PRODUCTION}'")
        mv = c.get_model_version(name, version)
        if COMPLETE not in mv.tags:
            _refuse(c, name, record, f"{name} version {version} was never completely registered (the run that "
                                     "registered it stopped midway); the next run of that dataset deletes it")
        try:
            verify_artifact(c, name, mv)
        except IntegrityError as e:
            _refuse(c, name, record, str(e))
        decision = gate_check(gate_metrics(mv), gate_metrics(mv, "teacher_val."),
                              gate_metrics(current) if current else None, gate_metrics(mv, "plain_val.") or None)
        if not decision.passed:
            _refuse(c, name, record, f"{name} version {version} fails the gate against "
                                     f"{'version ' + cur if cur else 'no production version'}:\n  - "
                                     + "\n  - ".join(decision.reasons))
        _move_production(c, name, record)
    return record


def production_stack(history: list[dict]) -> list[str]:
    """Versions that held production, oldest first: promote pushes, rollback pops (refused attempts don't count)."""
    stack: list[str] = []
    for h in history:
        if "refused" in h:
            continue
        if h["action"] == "promote":
            stack.append(h["to"])
        elif h["action"] == "rollback" and stack:
            stack.pop()
    return stack


def rollback(name: str) -> dict:
    """Give `production` back to the version that held it before the current one."""
    c = client()
    with registry_lock(name):
        current = version_by_alias(c, name, PRODUCTION)
        if current is None:
            raise PromotionError(f"{name} has no '{PRODUCTION}' version to roll back")
        cur = str(current.version)
        stack = production_stack(_history(c, name))
        if len(stack) < 2 or stack[-1] != cur:
            raise PromotionError(f"{name} version {cur} holds '{PRODUCTION}' with no earlier holder "
                                 "recorded by promote; nothing to roll back to")
        record = {"action": "rollback", "who": actor(), "when": now(), "from": cur, "to": stack[-2]}
        _move_production(c, name, record)
    return record


def history(name: str) -> list[dict]:
    """Every promotion, rollback and refused attempt of `name`, oldest first."""
    c = client()
    c.get_registered_model(name)  # a clear MlflowException for an unknown model
    return _history(c, name)


class IntegrityError(RuntimeError):
    pass


def unreachable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the MLflow tracking server not answering after the client's retries,
    rather than the server refusing a request."""
    seen = set()
    while error is not None and id(error) not in seen:  # a chain of causes can loop back
        seen.add(id(error))
        text = str(error)
        if isinstance(error, MlflowException) and ("Max retries exceeded" in text or "Connection refused" in text
                                                   or "Read timed out" in text):
            return True
        error = error.__cause__ or error.__context__
    return False


def verify_artifact(c: MlflowClient, name: str, mv) -> Path:
    """Download a version's ONNX file and check it against the sha256 recorded at registration, then with
    onnx.checker; returns its local path."""
    from components.export import check_onnx, file_sha256

    onnx_file = model_onnx_path(c, name, str(mv.version))
    digest = file_sha256(onnx_file)
    if digest != mv.tags.get("sha256"):
        raise IntegrityError(f"{name} version {mv.version}: model.onnx has sha256 {digest}, but "
                             f"{mv.tags.get('sha256')} was recorded at registration; refusing a tampered artifact")
    check_onnx(onnx_file)
    return onnx_file


def fetch_verified(name: str, ref: str) -> tuple[Path, dict, object]:
    """Download a version's artifacts (`ref`: a version number or an alias) and check the ONNX file against the
    sha256 recorded at registration. Returns (model dir, its preprocessing spec, the ModelVersion)."""
    c = client()
    mv = c.get_model_version(name, ref) if ref.isdigit() else version_by_alias(c, name, ref)
    if mv is None:
        raise PromotionError(f"{name} has no version with alias {ref!r}")
    if COMPLETE not in mv.tags:
        raise PromotionError(f"{name} version {mv.version} was never completely registered (the run that "
                             "registered it stopped midway)")
    onnx_file = verify_artifact(c, name, mv)
    spec_file = onnx_file.parent / "extra_files" / "preprocess.json"
    if not spec_file.is_file():
        raise IntegrityError(f"{name} version {mv.version} carries no preprocess.json; re-register it")
    return onnx_file.parent, json.loads(spec_file.read_text()), mv
