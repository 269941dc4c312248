"""Phase 3, compress: every recipe of the candidate table (components/recipes.py) for the formats of
`export.formats`, in order. A recipe's source is a trained model or an earlier recipe's candidate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from components.formats.base import Artifact
from components.recipes import Recipe, recipes
from flows.phases.context import Run, prefetch, tracked
from flows.phases.train import Student, Trained
from flows.tasks.compress import lower_pte, lower_tflite, prune_student, qat_student, quantize_int8
from flows.tasks.data import load_data
from flows.tasks.specs import DataRef, LiteRtSpec, PruneSpec, PteSpec, QatSpec, QuantizeSpec
from flows.tasks.train import runtime_metrics


@dataclass(frozen=True)
class Made:
    """A candidate's file (ONNX, an ExecuTorch program or a LiteRT file), and for a trained student or its FP32
    program or file the student itself (what a pruning or an INT8 program starts from), for a pruned one the pruning
    (what QAT starts from)."""

    artifact: Artifact
    student: Student | None = None
    pruning: tuple[PruneSpec, Artifact] | None = None  # a pruned student's: its pruning and fine-tuned weights


def compress(run: Run, data: DataRef, trained: Trained) -> dict[str, Made]:
    """Every recipe of the candidate table, in order: candidate name -> what it made."""
    sources = {"teacher": Made(trained.teacher.onnx), "plain": _made(trained.plain)}
    if trained.kd:
        sources["kd"] = _made(trained.kd)
    if trained.classic:
        sources["classic"] = Made(trained.classic.onnx)
    made: dict[str, Made] = {}
    students = ("plain", "kd") if trained.kd else ("plain",)
    for r in recipes(students, tuple(run.cfg.export.formats), classic=trained.classic is not None):
        out = TRANSFORMS[r.transform](run, data, r, sources.get(r.source) or made[r.source], made)
        if out is not None:  # a conditional recipe (QAT) whose condition did not hold made nothing
            made[r.name] = out
    return made


def start(run: Run) -> Callable[[Student], None]:
    """What the train phase calls with each student as soon as it is trained (see flows.phases.train.train): its
    pruning starts on the flow's Dask workers, beside the trainings still running; the recipe table then waits
    for it. Without workers nothing starts early."""

    def on_student(student: Student) -> None:
        prefetch(run, prune_student, PruneSpec(source=student.spec, weights=student.model.weights, prune=run.cfg.prune))

    return on_student


def _made(student: Student) -> Made:
    return Made(student.model.onnx, student)


def _export(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made:
    return source


def _prune(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made:
    s = source.student
    spec = PruneSpec(source=s.spec, weights=s.model.weights, prune=run.cfg.prune)
    pruned = tracked(run, "prune", prune_student, spec, {"candidate": r.name})
    return Made(pruned.onnx, pruning=(spec, pruned.weights))


def _int8(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made:
    spec = QuantizeSpec(data=data, fp32=source.artifact, mode=r.options["mode"], quantize=run.cfg.quantize)
    return Made(tracked(run, "quantize", quantize_int8, spec, {"candidate": r.name}))


def _pte(mode: str):
    def lower(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made:
        s = source.student
        spec = PteSpec(
            source=s.spec,
            weights=s.model.weights,
            mode=mode,
            batch_size=run.cfg.benchmark.batch_size,
            quantize=run.cfg.quantize,
        )
        return Made(tracked(run, "pte", lower_pte, spec, {"candidate": r.name}), s)

    return lower


def _tflite(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made:
    """A trained student's LiteRT file (FP32), or, from that file, its full-integer INT8 form."""
    s = source.student
    spec = LiteRtSpec(
        source=s.spec,
        weights=s.model.weights,
        mode="int8" if r.transform == "tflite_int8" else "fp32",
        batch_size=run.cfg.benchmark.batch_size,
        quantize=run.cfg.quantize,
        fp32=source.artifact if r.transform == "tflite_int8" else None,
    )
    return Made(tracked(run, "tflite", lower_tflite, spec, {"candidate": r.name}), s)


def _qat(run: Run, data: DataRef, r: Recipe, source: Made, made: dict[str, Made]) -> Made | None:
    """A quantization-aware fine-tune of a pruned student, when its static INT8 lost more than
    quantize.qat_threshold of val metric against it."""
    q, metric = run.cfg.quantize, run.cfg.gate.metric
    val = load_data(data).splits["val"]
    before = runtime_metrics(source.artifact.path, val, data.classes).get(metric)
    after = runtime_metrics(made[r.options["after"]].artifact.path, val, data.classes).get(metric)
    if before - after <= q.qat_threshold:
        run.log.info(
            f"{r.name}: not made, static INT8 lost {before - after:+.4f} of val {metric} "
            f"(<= quantize.qat_threshold {q.qat_threshold})"
        )
        return None
    run.log.info(f"{r.name}: static INT8 lost {before - after:.4f} of val {metric} (> {q.qat_threshold}): QAT")
    prune, weights = source.pruning
    spec = QatSpec(source=prune.source, weights=weights, prune=prune, quantize=q)
    return Made(tracked(run, "qat", qat_student, spec, {"candidate": r.name}))


TRANSFORMS = {
    "export": _export,
    "prune": _prune,
    "int8": _int8,
    "qat": _qat,
    "pte": _pte("fp32"),
    "pte_int8": _pte("int8"),
    "tflite": _tflite,
    "tflite_int8": _tflite,
}
