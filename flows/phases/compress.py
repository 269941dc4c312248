"""Phase 3, compress: every recipe of the candidate table (components/recipes.py) for the formats of
`export.formats`, in order. A recipe's source is a trained model or an earlier recipe's candidate."""

from __future__ import annotations

from dataclasses import dataclass

from components.export import Artifact
from components.recipes import Recipe, recipes
from flows.phases.context import Run, tracked
from flows.phases.train import Student, Trained
from flows.tasks.compress import lower_pte, prune_student, quantize_int8
from flows.tasks.specs import DataRef, PruneSpec, PteSpec, QuantizeSpec


@dataclass(frozen=True)
class Made:
    """A candidate's file (ONNX, or an ExecuTorch program), and for a trained student or its FP32 program the student
    itself (what a pruning or an ExecuTorch INT8 starts from)."""

    artifact: Artifact
    student: Student | None = None


def compress(run: Run, data: DataRef, trained: Trained) -> dict[str, Made]:
    """Every recipe of the candidate table, in order: candidate name -> what it made."""
    sources = {"teacher": Made(trained.teacher.onnx), "plain": _made(trained.plain)}
    if trained.kd:
        sources["kd"] = _made(trained.kd)
    made: dict[str, Made] = {}
    for r in recipes(("plain", "kd") if trained.kd else ("plain",), tuple(run.cfg.export.formats)):
        made[r.name] = TRANSFORMS[r.transform](run, data, r, sources.get(r.source) or made[r.source])
    return made


def _made(student: Student) -> Made:
    return Made(student.model.onnx, student)


def _export(run: Run, data: DataRef, r: Recipe, source: Made) -> Made:
    return source


def _prune(run: Run, data: DataRef, r: Recipe, source: Made) -> Made:
    s = source.student
    spec = PruneSpec(source=s.spec, weights=s.model.weights, prune=run.cfg.prune)
    return Made(tracked(run, "prune", prune_student, spec, {"candidate": r.name}).onnx)


def _int8(run: Run, data: DataRef, r: Recipe, source: Made) -> Made:
    spec = QuantizeSpec(data=data, fp32=source.artifact, mode=r.options["mode"], quantize=run.cfg.quantize)
    return Made(tracked(run, "quantize", quantize_int8, spec, {"candidate": r.name}))


def _pte(mode: str):
    def lower(run: Run, data: DataRef, r: Recipe, source: Made) -> Made:
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


TRANSFORMS = {"export": _export, "prune": _prune, "int8": _int8, "pte": _pte("fp32"), "pte_int8": _pte("int8")}
