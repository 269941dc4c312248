"""Phase 2, train: the teacher (a user's file, or networks trained here), the plain student, and every KD variant
asked for, all students on the same budget; the KD student is the variant best on val."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components import kd
from components.classic import families_for
from components.config import PipelineConfig, TeacherTraining
from components.formats.base import Artifact, artifact_info
from components.metrics import Scores
from components.teachers import TORCHSCRIPT_SUFFIXES, TeacherFileError, check_teacher, load_teacher_file
from flows.phases.context import Run, parallel, prefetch, tracked
from flows.tasks.caching import cached
from flows.tasks.data import load_data
from flows.tasks.specs import (
    ClassicModel,
    ClassicSpec,
    DataRef,
    Member,
    StudentSpec,
    TeacherExportSpec,
    TeacherRef,
    TeacherSpec,
    TrainedModel,
    user_file,
)
from flows.tasks.train import (
    export_teacher,
    runtime_metrics,
    teacher_view,
    train_classic,
    train_student,
    train_teacher,
)


@dataclass(frozen=True)
class Teacher:
    """The KD teacher as one ONNX file, its validation scores, and what a KD stage reads of it."""

    onnx: Artifact
    val: Scores
    ref: TeacherRef


@dataclass(frozen=True)
class Student:
    """A trained student: the spec it was trained from (a pruning's source) and the model."""

    spec: StudentSpec
    model: TrainedModel


@dataclass(frozen=True)
class Trained:
    teacher: Teacher
    plain: Student
    kd: Student | None  # the KD variant chosen on val; None when the plain student won the choice
    kd_variant: str | None  # its label
    variants: dict[str, Student]  # every KD variant trained, by label
    teacher_strong: bool
    classic: ClassicModel | None = None  # the scikit-learn baseline; None when classic.families is empty


def train(
    run: Run, data: DataRef, variants: list[kd.Variant], on_student: Callable[[Student], None] | None = None
) -> Trained:
    """The teacher, the plain student, and every KD variant asked for; the KD student is the best on val.

    On Dask workers the trainings that do not wait on each other run side by side: the teacher networks beside the
    plain student, then the pool of cached teacher views, then the KD variants beside each other. `on_student` is
    called with the plain student as soon as it is trained and with the chosen KD student (the next phase starts
    its work on them early)."""
    cfg, metric = run.cfg, run.cfg.gate.metric
    plain_spec = StudentSpec.of(cfg, data, kd.PLAIN, None)
    if not (cfg.teacher.source or cfg.teacher.weights):
        for spec in teacher_specs(cfg, data):
            prefetch(run, train_teacher, spec)
    prefetch(run, train_student, plain_spec)
    if families_for(data.kind, cfg.classic.families):
        prefetch(run, train_classic, classic_spec(cfg, data))
    # On workers the plain student finishes long before the teacher: its pruning can start in between. Here, one
    # after another, the teacher comes first as it always did.
    plain = _plain(run, plain_spec, on_student) if parallel() else None
    teacher = train_teachers(run, data)
    plain = plain or _plain(run, plain_spec, on_student)
    specs = {v.label: StudentSpec.of(cfg, data, v, teacher.ref) for v in variants if v.method != "plain"}
    build_views(run, list(specs.values()))
    for spec in specs.values():
        prefetch(run, train_student, spec)
    outs = {v.label: plain for v in variants if v.method == "plain"}
    for label, spec in specs.items():
        outs[label] = Student(spec, tracked(run, "student_kd", train_student, spec, {"variant": label}))
    best = max(outs, key=lambda label: outs[label].model.val.get(metric)) if outs else None
    strong = _teacher_strong(run, teacher.val.get(metric), plain.model.val.get(metric))
    if best is not None:
        run.log.info(
            f"KD student chosen on val {metric}: {best} ({outs[best].model.val.get(metric):.4f}; plain "
            f"{plain.model.val.get(metric):.4f})"
            + ("; the plain student won: no KD candidate" if best == "plain" else "")
        )
    chosen = None if best is None or best == "plain" else best
    if chosen and on_student:
        on_student(outs[chosen])
    run.tracker.tags(run.parent, {"kd_variant": best or "none", "teacher_clearly_stronger": strong})
    return Trained(
        teacher, plain, outs[chosen] if chosen else None, chosen, outs, strong, train_classic_model(run, data)
    )


def _plain(run: Run, spec: StudentSpec, on_student: Callable[[Student], None] | None) -> Student:
    plain = Student(spec, tracked(run, "student_plain", train_student, spec))
    if on_student:
        on_student(plain)
    return plain


def build_views(run: Run, specs: list[StudentSpec]) -> None:
    """The pools of cached teacher views the KD students `specs` train on (those with `views`), one task per view,
    side by side on the flow's Dask workers; their size and build time logged and kept for the run's summary."""
    pools = {}
    for s in specs:  # variants of one seed share one pool: only the loss differs
        if s.views:
            pools.setdefault(s.model_copy(update={"variant": kd.PLAIN}).key(), s)
    for s in pools.values():
        t0 = time.perf_counter()
        if parallel():
            futures = [teacher_view.submit(s, v) for v in range(s.views)]
            built = [f.result() for f in futures]
        else:
            built = [teacher_view(s, v) for v in range(s.views)]
        wall = time.perf_counter() - t0
        n = built[0].samples
        report = {
            "views": s.views,
            "samples": n,
            "logits_mib": round(s.views * n * len(s.data.classes) * 4 / 2**20, 2),
            "cached_views": sum(b.cached for b in built),
            "wall_s": round(wall, 3),
            "sum_s": round(sum(b.seconds for b in built), 3),
        }
        run.summary.setdefault("teacher_views", []).append(report)
        run.tracker.metrics(run.parent, {f"teacher_views.{k}": v for k, v in report.items()})
        run.log.info(
            f"cached teacher views: {s.views} views x {n} samples ({report['logits_mib']} MiB of logits), "
            f"{report['cached_views']} found cached; built in {wall:.1f} s wall ({report['sum_s']:.1f} s of work)"
        )


def train_classic_model(run: Run, data: DataRef) -> ClassicModel | None:
    """The classical baseline (classic.*), or None when no family is asked for."""
    cfg = run.cfg
    if not families_for(data.kind, cfg.classic.families):
        return None
    out = tracked(run, "classic", train_classic, classic_spec(cfg, data))
    run.log.info(
        f"classical baseline: {out.family} (val {cfg.gate.metric} "
        + ", ".join(f"{k} {v:.4f}" for k, v in out.val_scores.items())
        + f"; {out.seconds:.1f} s)"
    )
    return out


def classic_spec(cfg: PipelineConfig, data: DataRef) -> ClassicSpec:
    return ClassicSpec(data=data, classic=cfg.classic, metric=cfg.gate.metric, seed=cfg.train.seed)


def _teacher_strong(run: Run, teacher: float, plain: float) -> bool:
    """Whether the teacher beats the plain student on val by teacher.min_margin; warns when not."""
    margin, metric = run.cfg.teacher.min_margin, run.cfg.gate.metric
    if teacher - plain >= margin:
        return True
    run.log.warning(teacher_warning(metric, teacher, plain, margin))
    return False


def teacher_warning(metric: str, teacher: float, plain: float, margin: float) -> str:
    return (
        f"the teacher is not clearly stronger than the plain student (val {metric} {teacher:.4f} vs "
        f"{plain:.4f}, needed a margin of {margin}): KD cannot be expected to help; strengthen the teacher "
        f"(teacher.width, teacher.epochs, teacher.ensemble) or bring one (teacher.source)"
    )


def train_teachers(run: Run, data: DataRef) -> Teacher:
    """The KD teacher: a user's file (teacher.source), a user's checkpoint of an architecture (teacher.weights), or N
    networks trained here (one, or an ensemble)."""
    t = run.cfg.teacher
    val_split = load_data(data).splits["val"]
    source = t.source or (f"checkpoint {t.weights}" if t.weights else "trained")
    with run.tracker.stage("teacher", {"source": source, "arch": t.arch, "ensemble": t.ensemble}) as rid:
        members = []
        if t.source:
            ref = TeacherRef(file=artifact_info(teacher_path(run.root, t.source)))
            check_teacher(load_teacher_file(ref.file.path)[0], val_split.x, len(data.classes), t.source)
        elif t.weights:  # the user's trained network: loaded, exported and scored, not trained
            ref = TeacherRef(
                members=[Member(width=t.width, arch=t.arch, weights=user_file(run.root, t.weights, "teacher.weights"))]
            )
        else:
            specs = teacher_specs(run.cfg, data)
            for spec in specs:
                prefetch(run, train_teacher, spec)
            members = [
                tracked(run, "teacher_member", train_teacher, spec, {"member": i}) for i, spec in enumerate(specs)
            ]
            ref = TeacherRef(
                members=[Member(width=sp.width, arch=sp.arch, weights=m.weights) for sp, m in zip(specs, members)]
            )
        if len(members) == 1:
            onnx, val = members[0].onnx, members[0].val
        elif ref.file and ref.file.path.endswith(".onnx"):
            onnx, val = ref.file, runtime_metrics(ref.file.path, val_split, data.classes)
        else:
            exported, _ = cached(export_teacher, TeacherExportSpec(data=data, teacher=ref))
            onnx, val = exported.onnx, exported.val
        run.tracker.tags(rid, {"teacher_id": ref.id})
        run.tracker.metrics(rid, {f"val.{k}": v for k, v in val.scalars().items()})
    return Teacher(onnx, val, ref)


def teacher_specs(cfg: PipelineConfig, data: DataRef) -> list[TeacherSpec]:
    """One spec per teacher network: member i of an ensemble has seed train.seed + i and the i-th width (cycled)."""
    t = cfg.teacher
    widths = t.ensemble_widths or [t.width]
    recipe = TeacherTraining.model_validate(t.model_dump(include=set(TeacherTraining.model_fields)))
    return [
        TeacherSpec(
            data=data,
            width=widths[i % len(widths)],
            arch=t.arch,
            seed=cfg.train.seed + i,
            train=cfg.train,
            recipe=recipe,
        )
        for i in range(t.ensemble)
    ]


def teacher_path(root: Path, source: str) -> str:
    """The absolute path of `teacher.source` (relative to the project), refused when missing or of another kind."""
    path = (Path(root) / source).resolve()
    if not path.is_file():
        raise TeacherFileError(f"teacher.source {source!r}: {path} does not exist (paths are relative to the project)")
    if path.suffix != ".onnx" and path.suffix not in TORCHSCRIPT_SUFFIXES:
        raise TeacherFileError(
            f"teacher.source {source!r}: expected an .onnx or TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)}) file"
        )
    return str(path)
