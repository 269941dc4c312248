"""The pipeline's stages as Prefect tasks over components, each keyed by a typed spec of exactly what it reads.

A spec is the stage's cache key (Prefect's INPUTS policy over its JSON, plus the task's source): the data version,
the config fields the stage uses, the sha256 of upstream artifacts and a hash of the component modules it runs.
So changing a KD option retrains only the KD students, a gate or benchmark setting retrains nothing, and editing
components/gate.py leaves every trained model cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel, ConfigDict

import components
from components import quantize
from components.data import Dataset, get_kind
from components.distill import train_variant
from components.export import artifact_info, atomic_path, export_onnx, file_sha256, ort_predict
from components.kd import Variant
from components.metrics import classification_metrics
from components.models import Ensemble, build, count_params
from components.prune import prune_channels
from components.teachers import load_teacher_file, logits, torch_teacher
from components.train import CrossEntropy, evaluate, fit, select_device
from components.validation import describe_features, describe_pool, raw_plan, split_plan, validate
from flows import dvc_stages


def _retry_on_io(task, task_run, state) -> bool:
    """Retry a task that failed on I/O (a full or busy disk, a lock held too long); a missing file, a permission
    problem or any other error (bad data, NaN loss) fails at once."""
    try:
        state.result()
    except (OSError, TimeoutError) as e:
        return not isinstance(e, (FileNotFoundError, PermissionError))
    except Exception:
        return False
    return False


IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_on_io)
# Cached stages persist a small JSON result (paths + metrics); the weights live in files, loaded safely.
CACHED = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_serializer="json", **IO_RETRIES)

# The component modules each stage runs: a change to one of them re-runs exactly the stages that use it.
TRAIN_CODE = ("train.py", "models.py", "export.py", "metrics.py", "data")
STUDENT_CODE = TRAIN_CODE + ("kd.py", "distill.py", "teachers.py")
PRUNE_CODE = STUDENT_CODE + ("prune.py",)
QUANTIZE_CODE = ("quantize.py", "export.py")


def code_version(*paths: str) -> str:
    """Hash of the component sources at `paths` (files or folders under components/)."""
    base, h = Path(components.__file__).parent, hashlib.sha256()
    for rel in paths:
        p = base / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(base)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


# --- specs ----------------------------------------------------------------------------------------------------


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


class DataRef(Spec):
    """A version of one dataset's prepared splits, as training stages read it."""

    root: str
    name: str
    dataset_hash: str  # DVC's hash of data/prepared/NAME: splits, unlabelled pool and preprocessing spec
    kind: str
    classes: list[str]
    labelled_fraction: float = 1.0  # `bench kd --labelled-fraction`: the stratified part of train that keeps labels
    subset_seed: int = 0


class TeacherRef(Spec):
    """The teacher of a KD stage: networks trained here (weights, averaged when several) or a user's file."""

    members: list[dict] = []  # [{"width": int, "weights": {"path", "sha256"}}]
    file: dict | None = None  # {"path", "sha256"}

    @property
    def id(self) -> str:
        shas = [self.file["sha256"]] if self.file else [m["weights"]["sha256"] for m in self.members]
        return hashlib.sha256("|".join(shas).encode()).hexdigest()[:16]


class TeacherSpec(Spec):
    data: DataRef
    width: int
    seed: int
    train: dict  # TrainConfig
    recipe: dict  # TeacherConfig's training fields: epochs, lr, patience, checkpoint, label_smoothing
    code: str = code_version(*TRAIN_CODE)


class StudentSpec(Spec):
    data: DataRef
    width: int
    depth: int | None = None  # None: the architecture's own (the search varies it where the kind has DEPTHS)
    seed: int
    train: dict
    budget: dict  # StudentConfig without width: the same for every variant
    variant: dict  # {"method", "options"}
    teacher: TeacherRef | None  # None for the plain student: no KD option can retrain it
    code: str = code_version(*STUDENT_CODE)


class PruneSpec(Spec):
    source: StudentSpec  # the student that is pruned, then fine-tuned with its own objective
    weights: dict
    prune: dict
    code: str = code_version(*PRUNE_CODE)


class QuantizeSpec(Spec):
    data: DataRef
    fp32: dict  # the ONNX file quantized: {"path", "sha256", ...}
    mode: str  # "static", "dynamic" or "fp16"
    quantize: dict
    code: str = code_version(*QUANTIZE_CODE)


def out_dir(spec: Spec, stage: str, root: str) -> Path:
    return Path(root) / ".edgekd" / "artifacts" / stage / spec.key()


# --- data -----------------------------------------------------------------------------------------------------


def load_data(ref: DataRef) -> tuple[dict[str, Dataset], dict, np.ndarray | None]:
    """The splits (train restricted to its labelled part), the preprocessing spec, and the unlabelled pool (the
    dataset's own, plus the train rows that lost their labels), or None."""
    root = Path(ref.root)
    splits, spec = dvc_stages.load_splits(root, ref.name), dvc_stages.load_spec(root, ref.name)
    pool = dvc_stages.load_pool(root, ref.name)
    if ref.labelled_fraction < 1:
        from components.bench import labelled_subset

        train, rest = labelled_subset(splits["train"], ref.labelled_fraction, ref.subset_seed)
        splits["train"] = train
        pool = rest if pool is None else np.concatenate([rest, pool])
    return splits, spec, pool


# --- weights --------------------------------------------------------------------------------------------------


class UntrustedFileError(RuntimeError):
    pass


def save_weights(model: torch.nn.Module, path: Path) -> dict:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return artifact_info(path)


def load_weights(model: torch.nn.Module, weights: dict) -> torch.nn.Module:
    """Weights saved by an upstream stage (`weights`: its path and sha256), loaded without unpickling code."""
    path = weights["path"]
    if file_sha256(path) != weights["sha256"]:
        raise UntrustedFileError(f"{path}: sha256 differs from the one recorded when the stage saved it; "
                                 "refusing to load it (delete .edgekd/artifacts to retrain)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UntrustedFileError(f"{path}: not a plain tensor file; refusing to unpickle it ({e})") from None
    model.load_state_dict(state)
    return model.eval()


def teacher_module(ref: TeacherRef, data: DataRef, pspec: dict) -> torch.nn.Module | None:
    """The teacher as one torch module (an ensemble averages its members), or None for a user's ONNX file."""
    if ref.file:
        if file_sha256(ref.file["path"]) != ref.file["sha256"]:
            raise UntrustedFileError(f"teacher.source {ref.file['path']} changed since this run read it")
        return load_teacher_file(ref.file["path"])[1]
    nets = [load_weights(build(data.kind, "teacher", pspec, len(data.classes), m["width"], 0), m["weights"])
            for m in ref.members]
    return nets[0] if len(nets) == 1 else Ensemble(nets).eval()


def kd_teacher(ref: TeacherRef, data: DataRef, pspec: dict):
    """(logits function, the module whose layers feature methods may tap, or None) of a KD stage's teacher: only
    one network trained here exposes its layers; an ensemble or a user's file gives logits only."""
    module = teacher_module(ref, data, pspec)
    fn = load_teacher_file(ref.file["path"])[0] if module is None else torch_teacher(module)
    return fn, (module if len(ref.members) == 1 else None)


def logits_cache(root: str, teacher_id: str, teacher) -> callable:
    """Teacher logits of fixed inputs, cached on disk by content (teacher id + the inputs' bytes)."""
    def of(x: np.ndarray) -> np.ndarray:
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()).hexdigest()[:16]
        path = Path(root) / ".edgekd" / "logits" / f"{teacher_id}-{digest}.npy"
        if path.is_file():
            return np.load(path, allow_pickle=False)
        out = logits(teacher, x)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out)
        return out
    return of


# --- tasks ----------------------------------------------------------------------------------------------------


class DvcError(RuntimeError):
    """A DVC stage failed; `data_error` is the stage's own 'error: ...' line when the data was at fault."""

    def __init__(self, message: str, data_error: str | None = None):
        super().__init__(message)
        self.data_error = data_error


@task(**IO_RETRIES)
def dvc_repro(root: str, stage: str) -> list[str]:
    """`dvc repro STAGE` (with its upstream stages) in the project; returns the stages that actually ran."""
    # A subprocess, so DVC resolves paths against the project and its stage commands find this interpreter.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", stage], cwd=root, env=env, capture_output=True,
                          text=True, timeout=3600)
    log = get_run_logger()
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            log.info(f"dvc: {line}")
    if proc.returncode != 0:
        if "Unable to acquire lock" in proc.stderr:
            raise TimeoutError(f"dvc repro {stage}: the DVC repository is locked by another process")
        data_errors = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        raise DvcError(f"dvc repro {stage} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}",
                       data_errors[-1] if data_errors else None)
    return re.findall(r"Running stage '([^']+)'", proc.stdout)


@task(**IO_RETRIES)
def validate_data(root: str, cfg, phase: str) -> dict:
    """GX suites over the raw dataset (phase 'raw') or the prepared splits (phase 'splits')."""
    rootp, name, kind = Path(root), cfg.data.name, get_kind(cfg.data.kind)
    if phase == "raw":
        plan = raw_plan(kind, dvc_stages.load_raw_data(rootp, cfg), cfg, pool=dvc_stages.load_raw_pool(rootp, cfg))
    else:
        splits, spec = dvc_stages.load_splits(rootp, name), dvc_stages.load_spec(rootp, name)
        pool = dvc_stages.load_pool(rootp, name)
        plan = split_plan({n: describe_features(d.x, d.y, list(d.meta["hash"])) for n, d in splits.items()}, spec,
                          cfg, pool=describe_pool(pool, dvc_stages.load_pool_hashes(rootp, name))
                          if pool is not None else None)
        if hasattr(kind, "split_checks"):  # optional hook: checks a kind adds per prepared split
            plan += [c for n, d in splits.items() for c in kind.split_checks(spec, n, d)]
    docs = rootp / ".edgekd" / "validation" / name / phase
    report = validate(plan, docs_dir=docs)
    out = report.to_dict() | {"phase": phase, "docs_dir": str(docs)}
    with atomic_path(docs / "result.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2, default=str))
    return out


def _progress(name: str, total: int):
    log = get_run_logger()
    every = max(1, total // 10)

    def on_epoch(epoch: int, row: dict) -> None:
        if epoch == 1 or epoch % every == 0:
            log.info(f"[{name}] epoch {epoch}/{total} train_loss={row['train_loss']:.4f} "
                     f"val_acc={row['val_accuracy']:.4f}")

    return on_epoch


def _fit_kwargs(kind: str, train: dict, epochs: int, lr: float, patience: int, seed: int, name: str) -> dict:
    return dict(epochs=epochs, lr=lr, batch_size=train["batch_size"], patience=patience, seed=seed,
                device=select_device(train["device"]), weight_decay=train["weight_decay"],
                augment=get_kind(kind).augment if train["augment"] else None, on_epoch=_progress(name, epochs))


def ort_metrics(onnx_path: str, data: Dataset, classes: list[str]) -> dict:
    """Classification metrics of an exported model on one split, computed from ONNX Runtime's outputs."""
    return classification_metrics(ort_predict(onnx_path, data.x), data.y, classes)


def _finish(model: torch.nn.Module, out: Path, history: list[dict], splits: dict, classes: list[str]) -> dict:
    """Save weights and the FP32 ONNX export of a trained model; its validation metrics through ORT (what
    choices between trained models are made on) and its size."""
    onnx = export_onnx(model, splits["test"].x, out / "model.onnx")
    return {"weights": save_weights(model, out / "weights.pt"), "onnx": onnx, "history": history,
            "params": count_params(model), "val": ort_metrics(onnx["path"], splits["val"], classes)}


@task(**CACHED)
def train_teacher(spec: dict) -> dict:
    """One teacher network (an ensemble trains one per member)."""
    s = TeacherSpec.model_validate(spec)
    splits, pspec, _ = load_data(s.data)
    r = s.recipe
    kw = _fit_kwargs(s.data.kind, s.train, r["epochs"], r["lr"], r["patience"], s.seed, f"teacher w{s.width} s{s.seed}")
    model = build(s.data.kind, "teacher", pspec, len(s.data.classes), s.width, s.seed)
    model, hist = fit(model, splits["train"], splits["val"], objective=CrossEntropy(r["label_smoothing"]),
                      checkpoint=r["checkpoint"], **kw)
    return _finish(model, out_dir(s, "teacher", s.data.root), hist, splits, s.data.classes)


@task(**CACHED)
def export_teacher(spec: dict) -> dict:
    """The KD teacher as one ONNX file: an ensemble's averaged logits, or a user's TorchScript file; and its
    validation metrics through ORT. (A single trained network or a user's ONNX file is already one.)"""
    data, ref = DataRef.model_validate(spec["data"]), TeacherRef.model_validate(spec["teacher"])
    splits, pspec, _ = load_data(data)
    module = teacher_module(ref, data, pspec)
    out = Path(data.root) / ".edgekd" / "artifacts" / "teacher_export" / ref.id
    onnx = export_onnx(module, splits["test"].x, out / "model.onnx")
    return {"onnx": onnx, "val": ort_metrics(onnx["path"], splits["val"], data.classes)}


def _student(s: StudentSpec, pspec: dict) -> torch.nn.Module:
    return build(s.data.kind, "student", pspec, len(s.data.classes), s.width, s.seed, s.depth)


def _objective_kwargs(s: StudentSpec, pspec: dict, pool) -> dict:
    """What a KD variant needs besides the data: the teacher, its cached logits, the unlabelled pool."""
    if s.teacher is None:
        return {}
    teacher, module = kd_teacher(s.teacher, s.data, pspec)
    return dict(teacher=teacher, teacher_module=module, logits_of=logits_cache(s.data.root, s.teacher.id, teacher),
                pool=pool)


@task(**CACHED)
def train_student(spec: dict) -> dict:
    """A student trained as its variant says (plain: labels only; a KD method: with the teacher)."""
    s = StudentSpec.model_validate(spec)
    splits, pspec, pool = load_data(s.data)
    variant, b = Variant(**s.variant), s.budget
    kw = _fit_kwargs(s.data.kind, s.train, b["epochs"], b["lr"], b["patience"], s.seed, f"student {variant.label}")
    model, hist = train_variant(_student(s, pspec), variant, splits["train"], splits["val"],
                                **_objective_kwargs(s, pspec, pool), **kw)
    return _finish(model, out_dir(s, "student", s.data.root), hist, splits, s.data.classes)


@task(**CACHED)
def prune_student(spec: dict) -> dict:
    """Remove channels of a trained student, then fine-tune it with the objective it was trained with."""
    p = PruneSpec.model_validate(spec)
    s = p.source
    splits, pspec, pool = load_data(s.data)
    student = load_weights(_student(s, pspec), p.weights)
    pruned, report = prune_channels(student, torch.from_numpy(splits["train"].x[:2]), p.prune["ratio"])
    report["torch_val_accuracy_before_finetune"] = evaluate(pruned, splits["val"], torch.device("cpu"))["accuracy"]
    hist: list[dict] = []
    if p.prune["finetune_epochs"]:
        kw = _fit_kwargs(s.data.kind, s.train, p.prune["finetune_epochs"], p.prune["finetune_lr"],
                         s.budget["patience"], s.seed, "prune-finetune")
        pruned, hist = train_variant(pruned, Variant(**s.variant), splits["train"], splits["val"],
                                     **_objective_kwargs(s, pspec, pool), **kw)
    return _finish(pruned, out_dir(p, "pruned", s.data.root), hist, splits, s.data.classes) | {"prune": report}


@task(**CACHED)
def quantize_int8(spec: dict) -> dict:
    q = QuantizeSpec.model_validate(spec)
    splits, _, _ = load_data(q.data)
    out = out_dir(q, "quantized", q.data.root) / "model.onnx"
    if q.mode == "fp16":
        return {"onnx": quantize.convert_fp16(q.fp32["path"], out)}
    if q.mode == "static":
        calib = quantize.calibration_sample(splits["train"].x, q.quantize["calibration_samples"], 0)
        return {"onnx": quantize.quantize_static_int8(q.fp32["path"], out, calib, q.quantize["per_channel"])}
    return {"onnx": quantize.quantize_dynamic_int8(q.fp32["path"], out)}


@task(**IO_RETRIES)
def measure_candidate(data: dict, onnx_path: str, benchmark: dict) -> dict:
    """Metrics through ONNX Runtime on the validation split (what the gate chooses on) and the test split (what
    is reported), then latency under the device profile."""
    from components import benchmark as bench

    ref = DataRef.model_validate(data)
    splits, _, _ = load_data(ref)
    b = benchmark
    metrics = {s: ort_metrics(onnx_path, splits[s], ref.classes) for s in ("val", "test")}
    return metrics | bench.benchmark(onnx_path, splits["test"].x, threads=b["intra_op_threads"],
                                     batch_size=b["batch_size"], warmup_runs=b["warmup_runs"],
                                     timed_runs=b["timed_runs"])
