"""The MLflow model registry: a run's selected candidate registered as a version (with what was measured, so that
`promote` can judge it again from the registry alone), looked up by alias or content, verified on download."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.candidate import Measurement
from components.gate import GateView
from flows.infra.environment import USER
from flows.tracking.errors import IntegrityError, PromotionError, unreachable
from flows.tracking.tracker import client

STAGING, PRODUCTION = "staging", "production"
REGISTERED_BY = "edgekd.registered_by"  # who registered a version (a team server checks it names the user)
COMPLETE = "registration_complete"  # the last tag `register` writes
ONNX_FILE, PTE_FILE, TFLITE_FILE = "model.onnx", "model.pte", "model.tflite"  # a version's model file, by format
MODEL_FILES = (ONNX_FILE, PTE_FILE, TFLITE_FILE)
LATENCY_TAGS = ("p50_ms", "p95_ms", "p95_lo_ms", "p95_hi_ms", "p99_ms", "size_bytes")


def version_by_alias(c: MlflowClient, name: str, alias: str):
    """The version holding `alias`, or None. (Its .version may be an int: compare through str().)"""
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        # no such model, or no such alias; a busy store or a server not answering is not "no such alias"
        missing = e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
        if missing and "database is locked" not in str(e):
            return None
        # A server with auth denies a lookup in a model that does not exist yet (it finds no grant to check)
        if e.error_code == "PERMISSION_DENIED" and not c.search_registered_models(f"name = '{name}'"):
            return None
        raise


def metric_tags(candidate: Measurement, teacher: Measurement, plain: Measurement) -> dict:
    """Version tags of what was measured at registration, so that `promote` can re-run the gate from the registry
    alone: the candidate's test metrics and latency (`metric.*`, the report) and validation metrics (`val.*`, what
    the gate judges), its teacher's (`teacher.*`, `teacher_val.*`) and the plain student's (`plain_val.*`)."""

    def tags(prefix: str, values: dict) -> dict:
        return {f"{prefix}.{k}": v for k, v in values.items()}

    return (
        tags("metric", candidate.test.scalars() | candidate.latency.numbers())
        | tags("val", candidate.val.scalars())
        | tags("teacher", teacher.test.scalars())
        | tags("teacher_val", teacher.val.scalars())
        | tags("plain_val", plain.val.scalars())
    )


def version_metrics(mv, prefix: str = "metric.") -> dict[str, float]:
    """The measured metrics recorded on a version at registration (`prefix` "teacher." for its teacher's)."""
    return {k[len(prefix) :]: float(v) for k, v in mv.tags.items() if k.startswith(prefix)}


def gate_view(mv, prefix: str = "val.") -> GateView | None:
    """What the gate judges of a registered version (or, with `prefix` "teacher_val." or "plain_val.", of its
    teacher or plain student): validation metrics with latency and size; None when none were recorded. Versions
    registered before validation metrics were recorded fall back to their test metrics."""
    latency = {k: v for k, v in version_metrics(mv).items() if k in LATENCY_TAGS}
    val = version_metrics(mv, prefix)
    fallback = {"val.": "metric.", "teacher_val.": "teacher.", "plain_val.": None}[prefix]
    if not val and fallback:
        val = {k: v for k, v in version_metrics(mv, fallback).items() if k not in latency}
    if not val:
        return None
    size = latency.pop("size_bytes", None)
    return GateView(metrics=val, size_bytes=None if size is None else int(size), **latency)


DESCRIPTION_LIMIT = 5000  # characters: MLflow's SQL stores keep a version's description in a VARCHAR(5000)


def fit_description(card: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The model card as a version's description: whole, or, where it is longer than an SQL store holds
    (PostgreSQL refuses it), its whole lines up to the limit and a pointer to the complete card among the
    version's files."""
    if len(card) <= limit:
        return card
    note = "\n\n… (cut to fit the registry: the whole card is `model_card.md` among this version's files)\n"
    return card[: card.rfind("\n", 0, limit - len(note))] + note


def actor() -> str:
    """Who a registration or a move of `production` is recorded as: the user the MLflow server authenticated
    (a team server refuses a record naming anyone else), else EDGEKD_USER, else the operating-system user."""
    import getpass

    return os.environ.get("MLFLOW_TRACKING_USERNAME") or USER.get() or getpass.getuser()


def register(
    run_id: str, name: str, model_path: str | Path, input_example, extra_files: list[str], tags: dict, description: str
) -> str:
    """Log the model (an ONNX file, or an ExecuTorch program) with signature, input example and extra files,
    register it with its tags (one request: the version never exists without them), describe it, alias it staging,
    and mark it complete last. Interrupted (a signal, an error) before that, it undoes itself: the version is
    deleted and `staging` goes back where it was."""
    from mlflow.models import infer_signature

    from components.formats import runtime

    signature = infer_signature(input_example, runtime.predict(model_path, input_example))
    log = {".onnx": _log_onnx, ".pte": _log_pte, ".tflite": _log_tflite}[Path(model_path).suffix]
    with mlflow.start_run(run_id=run_id):
        uri = log(run_id, Path(model_path), signature, input_example, extra_files)
    c = client()
    before = version_by_alias(c, name, STAGING)
    try:
        tags = {k: str(v) for k, v in tags.items()} | {REGISTERED_BY: actor()}
        version = str(mlflow.register_model(uri, name, tags=tags).version)
        c.update_model_version(name, version, description=fit_description(description))
        c.set_registered_model_alias(name, STAGING, version)
        c.set_model_version_tag(name, version, COMPLETE, "true")  # last: without it, the version is partial
    except BaseException as e:
        if not unreachable(e):  # else the next run drops it (tracker.close_dead_runs)
            drop_partial_versions(name, [run_id])
            if before is not None:
                c.set_registered_model_alias(name, STAGING, str(before.version))
        raise
    return version


def _log_onnx(run_id: str, path: Path, signature, input_example, extra_files: list[str]) -> str:
    import onnx

    info = mlflow.onnx.log_model(
        onnx.load(str(path)),
        name="model",
        signature=signature,
        input_example=input_example,
        extra_files=extra_files,
        save_as_external_data=False,
        pip_requirements=["onnxruntime", "onnx", "numpy"],
        onnx_execution_providers=["CPUExecutionProvider"],
    )
    return info.model_uri


def _log_pte(run_id: str, path: Path, signature, input_example, extra_files: list[str]) -> str:
    """An ExecuTorch program. MLflow has no ExecuTorch flavor: MLmodel names the file and the runtime."""
    from importlib.metadata import version

    flavor = {"model": PTE_FILE, "executorch_version": version("executorch"), "delegate": "XNNPACK"}
    return _log_file(run_id, path, PTE_FILE, "executorch", flavor, signature, extra_files)


def _log_tflite(run_id: str, path: Path, signature, input_example, extra_files: list[str]) -> str:
    """A LiteRT file. MLflow has no LiteRT flavor: MLmodel names the file and the runtime."""
    from importlib.metadata import version

    flavor = {"model": TFLITE_FILE, "litert_version": version("ai-edge-litert")}
    return _log_file(run_id, path, TFLITE_FILE, "litert", flavor, signature, extra_files)


def _log_file(run_id: str, path: Path, name: str, flavor_name: str, flavor: dict, signature, extra_files) -> str:
    """A model file as the run's `model` folder, laid out as MLflow's flavors lay theirs out (MLmodel, the model
    file, extra_files/), with no pickle."""
    import shutil

    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copyfile(path, folder / name)
        (folder / "extra_files").mkdir()
        for f in extra_files:
            shutil.copyfile(f, folder / "extra_files" / Path(f).name)
        Model(artifact_path="model", run_id=run_id, flavors={flavor_name: flavor}, signature=signature).save(
            str(folder / "MLmodel")
        )
        mlflow.log_artifacts(str(folder), artifact_path="model")
    return f"runs:/{run_id}/model"


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


def model_file(c: MlflowClient, name: str, version: str, dst: Path) -> Path:
    """Local path of a version's model file (`model.onnx`, `model.pte` or `model.tflite`), downloaded with its other
    artifacts into `dst` (the caller's folder: it decides how long the download lives)."""
    mv = c.get_model_version(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst)))
    found = [local / f for f in MODEL_FILES if (local / f).is_file()]
    if not found:
        raise IntegrityError(f"{name} version {version} holds none of {', '.join(MODEL_FILES)}")
    return found[0]


def verify_artifact(c: MlflowClient, name: str, mv, dst: Path) -> Path:
    """Download a version's model file into `dst` and check it against the sha256 recorded at registration (an ONNX
    file then with onnx.checker); returns its local path."""
    from components.formats.base import file_sha256
    from components.formats.onnx_rt import check_onnx

    path = model_file(c, name, str(mv.version), dst)
    digest = file_sha256(path)
    if digest != mv.tags.get("sha256"):
        raise IntegrityError(
            f"{name} version {mv.version}: {path.name} has sha256 {digest}, but "
            f"{mv.tags.get('sha256')} was recorded at registration; refusing a tampered artifact"
        )
    if path.name == ONNX_FILE:
        check_onnx(path)
    return path


def parse_ref(ref: str) -> tuple[str, str]:
    """NAME@VERSION (a version number or an alias) as (name, version)."""
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise ValueError(f"{ref!r}: expected NAME@VERSION (a version number or an alias), e.g. digits@1")
    return name, version


def complete_version(c: MlflowClient, name: str, ref: str):
    """A version by number or alias; PromotionError when there is none or it was never completely registered."""
    mv = c.get_model_version(name, ref) if ref.isdigit() else version_by_alias(c, name, ref)
    if mv is None:
        raise PromotionError(f"{name} has no version with alias {ref!r}")
    if COMPLETE not in mv.tags:
        raise PromotionError(
            f"{name} version {mv.version} was never completely registered (the run that registered it stopped midway)"
        )
    return mv


@contextmanager
def fetch_verified(name: str, ref: str) -> Iterator[tuple[Path, dict, object]]:
    """Download a version's artifacts (`ref`: a version number or an alias) into a temporary folder and check the
    model file against the sha256 recorded at registration. Yields (the model file, its preprocessing spec, the
    ModelVersion); the folder is removed when the block ends, so a scheduled host does not fill its /tmp."""
    c = client()
    mv = complete_version(c, name, ref)
    with tempfile.TemporaryDirectory(prefix="edgekd-download-") as tmp:
        path = verify_artifact(c, name, mv, Path(tmp))
        spec_file = path.parent / "extra_files" / "preprocess.json"
        if not spec_file.is_file():
            raise IntegrityError(f"{name} version {mv.version} carries no preprocess.json; re-register it")
        yield path, json.loads(spec_file.read_text()), mv
