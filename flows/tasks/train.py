"""Training tasks: a teacher network, the KD teacher exported as one ONNX file, and a student of any variant."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from prefect import get_run_logger, task
from pydantic import BaseModel

from components.data import Dataset, get_kind
from components.distill import train_variant
from components.formats import runtime
from components.formats.onnx_rt import export_onnx
from components.metrics import Scores, classification_metrics
from components.models import build, count_params
from components.train import CrossEntropy, Epoch, fit, resolve_precision, select_device
from flows.tasks.caching import CACHED, IO_RETRIES, stage_task
from flows.tasks.data import load_data
from flows.tasks.specs import (
    ClassicModel,
    ClassicSpec,
    ExportedTeacher,
    StudentSpec,
    TeacherExportSpec,
    TeacherSpec,
    TrainedModel,
    out_dir,
)
from flows.tasks.weights import kd_teacher, load_weights, logits_cache, save_weights, teacher_module, views_cache


def runtime_metrics(path: str, data: Dataset, classes: list[str]) -> Scores:
    """Classification metrics of an exported model on one split, computed from its runtime's outputs (ONNX Runtime,
    or ExecuTorch for a `.pte` program)."""
    return classification_metrics(runtime.predict(path, data.x), data.y, classes)


def _progress(name: str, total: int):
    log = get_run_logger()
    every = max(1, total // 10)

    def on_epoch(epoch: int, row: Epoch) -> None:
        if epoch == 1 or epoch % every == 0:
            log.info(f"[{name}] epoch {epoch}/{total} train_loss={row.train_loss:.4f} val_acc={row.val_accuracy:.4f}")

    return on_epoch


def augmentation(kind: str, train):
    """The data kind's training augmentation as `train` (a TrainConfig) sets it, or None."""
    data_kind = get_kind(kind)
    if not train.augment or data_kind.augment is None:
        return None
    return data_kind.augment_with(train) if hasattr(data_kind, "augment_with") else data_kind.augment


def fit_kwargs(kind: str, train, epochs: int, lr: float, patience: int, seed: int, name: str) -> dict:
    """What `fit` takes besides the model and data: the budget, the shared training settings (`train`, a
    TrainConfig), the kind's augmentation and progress lines in the run's log."""
    augment = augmentation(kind, train)
    return dict(
        epochs=epochs,
        lr=lr,
        batch_size=train.batch_size,
        patience=patience,
        seed=seed,
        device=select_device(train.device),
        weight_decay=train.weight_decay,
        threads=train.threads,
        deterministic=train.deterministic,
        precision=resolve_precision(train.precision, train.device),  # `auto` only where no run resolved it
        optimizer=train.optimizer,
        schedule=train.schedule,
        augment=augment,
        on_epoch=_progress(name, epochs),
    )


def finish(
    model: torch.nn.Module,
    out: Path,
    history: list[Epoch],
    splits: dict,
    classes: list[str],
    started: float,
    **extra,
) -> TrainedModel:
    """Save the weights and the FP32 ONNX export of a trained model; its validation scores through ORT and size;
    the task's start (`started`, time.time()) and duration."""
    onnx = export_onnx(model, splits["test"].x, out / "model.onnx")
    return TrainedModel(
        started=started,
        seconds=time.time() - started,
        weights=save_weights(model, out / "weights.pt"),
        onnx=onnx,
        history=history,
        params=count_params(model),
        val=runtime_metrics(onnx.path, splits["val"], classes),
        **extra,
    )


def train_teacher_stage(s: TeacherSpec) -> TrainedModel:
    """One teacher network (an ensemble trains one per member)."""
    started = time.time()
    data = load_data(s.data)
    r = s.recipe
    kw = fit_kwargs(s.data.kind, s.train, r.epochs, r.lr, r.patience, s.seed, f"teacher w{s.width} s{s.seed}")
    model = build(s.data.kind, "teacher", data.spec, len(s.data.classes), s.width, s.seed, arch=s.arch)
    model, hist = fit(
        model,
        data.splits["train"],
        data.splits["val"],
        objective=CrossEntropy(r.label_smoothing),
        checkpoint=r.checkpoint,
        **kw,
    )
    return finish(model, out_dir(s, "teacher", s.data.root), hist, data.splits, s.data.classes, started)


train_teacher = stage_task(train_teacher_stage, **CACHED)


@task(**CACHED)
def export_teacher(s: TeacherExportSpec) -> ExportedTeacher:
    """The KD teacher as one ONNX file: an ensemble's averaged logits, or a user's TorchScript file; and its
    validation scores through ORT. (A single trained network or a user's ONNX file is already one.)"""
    data = load_data(s.data)
    module = teacher_module(s.teacher, s.data, data.spec)
    out = Path(s.data.root) / ".edgekd" / "artifacts" / "teacher_export" / s.teacher.id
    onnx = export_onnx(module, data.splits["test"].x, out / "model.onnx")
    return ExportedTeacher(onnx=onnx, val=runtime_metrics(onnx.path, data.splits["val"], s.data.classes))


def student_module(s: StudentSpec, pspec: dict) -> torch.nn.Module:
    """The student network before training: its architecture at its width, from `student.weights` where given."""
    model = build(s.data.kind, "student", pspec, len(s.data.classes), s.width, s.seed, s.depth, arch=s.arch)
    return load_weights(model, s.init) if s.init else model


def objective_kwargs(s: StudentSpec, pspec: dict, pool) -> dict:
    """What a KD variant needs besides the data: the teacher, its cached logits (of fixed inputs, and of the pool of
    views where the spec has one), the unlabelled pool."""
    if s.teacher is None:
        return {}
    teacher, module = kd_teacher(s.teacher, s.data, pspec)
    views = views_cache(s.data.root, s.teacher.id, teacher, s.views, s.seed, s.train.precision) if s.views else None
    return dict(
        teacher=teacher,
        teacher_module=module,
        logits_of=logits_cache(s.data.root, s.teacher.id, teacher),
        pool=pool,
        views_of=views,
    )


class ViewBuilt(BaseModel):
    """One view of a pool of cached teacher views: how long its teacher logits took (0 when found cached)."""

    view: int
    samples: int
    seconds: float
    cached: bool


def teacher_view_stage(s: StudentSpec, view: int) -> ViewBuilt:
    """The teacher's logits on view `view` of every training sample of the student `s` (a KD variant with
    `views`), computed single-threaded into the views cache the student then reads; one task per view, so a pool
    is built by as many workers as there are."""
    from components.train import torch_settings

    data = load_data(s.data)
    x = data.splits["train"].x
    augment = augmentation(s.data.kind, s.train)
    t0 = time.perf_counter()
    with torch_settings(s.train.threads, s.train.deterministic):
        teacher, _ = kd_teacher(s.teacher, s.data, data.spec)
        of = views_cache(s.data.root, s.teacher.id, teacher, s.views, s.seed, s.train.precision)
        _, cached = of.view(x, augment, view)
    return ViewBuilt(view=view, samples=len(x), seconds=0.0 if cached else time.perf_counter() - t0, cached=cached)


teacher_view = stage_task(teacher_view_stage, **IO_RETRIES)


def train_student_stage(s: StudentSpec) -> TrainedModel:
    """A student trained as its variant says (plain: labels only; a KD method: with the teacher)."""
    started = time.time()
    data = load_data(s.data)
    b = s.budget
    kw = fit_kwargs(s.data.kind, s.train, b.epochs, b.lr, b.patience, s.seed, f"student {s.variant.label}")
    model, hist = train_variant(
        student_module(s, data.spec),
        s.variant,
        data.splits["train"],
        data.splits["val"],
        **objective_kwargs(s, data.spec, data.pool),
        **kw,
    )
    return finish(model, out_dir(s, "student", s.data.root), hist, data.splits, s.data.classes, started)


train_student = stage_task(train_student_stage, **CACHED)


def train_classic_stage(s: ClassicSpec) -> ClassicModel:
    """The classical baseline (components/classic.py): each family fitted on (at most `max_rows` of) train, the best
    on val by the gate's metric kept and exported to ONNX."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from components import classic

    data, log = load_data(s.data), get_run_logger()
    train, val = data.splits["train"], data.splits["val"]
    x, y = train.x, train.y
    if len(y) > s.classic.max_rows:
        x, _, y, _ = train_test_split(x, y, train_size=s.classic.max_rows, stratify=y, random_state=s.seed)
        log.info(f"[classic] fitting on {len(y)} of {len(train.y)} train rows (classic.max_rows)")
    families = classic.families_for(s.data.kind, s.classic.families)

    def score(probabilities: np.ndarray, labels: np.ndarray) -> float:
        logits = np.log(np.clip(probabilities, classic.MIN_PROBABILITY, None))
        return classification_metrics(logits, labels, s.data.classes).get(s.metric)

    fitted = classic.fit(data.spec, (x, y), (val.x, val.y), score, families, s.seed, log.info)
    onnx = classic.export(fitted, data.spec, len(s.data.classes), out_dir(s, "classic", s.data.root) / "model.onnx")
    log.info(f"[classic] kept {fitted.family} (val {s.metric} {fitted.val_scores[fitted.family]:.4f})")
    return ClassicModel(onnx=onnx, family=fitted.family, val_scores=fitted.val_scores, seconds=fitted.seconds)


train_classic = stage_task(train_classic_stage, **CACHED)
