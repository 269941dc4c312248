"""Candidates as recipes: each deployable candidate is a source model and one transform, in one table.

A recipe names a trained model ("teacher", "plain", "kd", or "classic", the scikit-learn baseline) or another
recipe as its source, the transform
that turns the source into the candidate, and the transform's options: "export" (the trained model's FP32 ONNX
file), "prune" (channels removed, then a fine-tune with the source's own objective), "int8" (ONNX Runtime
quantization of the source's ONNX file, `mode` "static" or "dynamic"), "qat" (a quantization-aware fine-tune of
the source, then static INT8; made only when the static INT8 recipe `after` lost more than
`quantize.qat_threshold` of val metric against the source), "pte" (the trained student lowered to an
ExecuTorch program with the XNNPACK delegate, FP32) and "pte_int8" (the same student quantized to INT8 with
ExecuTorch's XNNPACK quantizer, then lowered; its source is the FP32 program, which it must beat), "tflite" (the
trained student lowered to a LiteRT file, FP32) and "tflite_int8" (that file quantized to full-integer INT8; its
source is the FP32 file). The flow runs the table in order; nothing else names candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRANSFORMS = ("export", "prune", "int8", "qat", "pte", "pte_int8", "tflite", "tflite_int8")
TRAINED = ("teacher", "plain", "kd", "classic")


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # one of TRAINED, or the name of an earlier recipe
    transform: str  # one of TRANSFORMS
    options: dict = field(default_factory=dict)  # the transform's, on top of its params.yaml section

    def __post_init__(self) -> None:
        assert self.transform in TRANSFORMS, self.transform


def student_recipes(student: str, formats: tuple[str, ...] = ("onnx",)) -> list[Recipe]:
    """A student's candidates: FP32, pruned FP32, and the pruned model's static and dynamic INT8 (and its QAT INT8
    where static INT8 loses too much); with the `pte` format also its ExecuTorch programs, with `tflite` its LiteRT
    files, each FP32 and INT8, and the unpruned student's ONNX static INT8 (the LiteRT INT8 file's twin)."""
    table = [
        Recipe(f"{student}_fp32", student, "export"),
        Recipe(f"{student}_pruned_fp32", f"{student}_fp32", "prune"),
        Recipe(f"{student}_pruned_int8_static", f"{student}_pruned_fp32", "int8", {"mode": "static"}),
        Recipe(f"{student}_pruned_int8_dynamic", f"{student}_pruned_fp32", "int8", {"mode": "dynamic"}),
        Recipe(
            f"{student}_pruned_int8_qat", f"{student}_pruned_fp32", "qat", {"after": f"{student}_pruned_int8_static"}
        ),
    ]
    if "pte" in formats:
        table += [
            Recipe(f"{student}_pte_fp32", student, "pte"),
            Recipe(f"{student}_pte_int8", f"{student}_pte_fp32", "pte_int8"),
        ]
    if "tflite" in formats:
        table += [
            # the full-integer file's ONNX Runtime twin: the same student, static INT8 on the same calibration samples
            Recipe(f"{student}_int8_static", f"{student}_fp32", "int8", {"mode": "static"}),
            Recipe(f"{student}_tflite_fp32", student, "tflite"),
            Recipe(f"{student}_tflite_int8", f"{student}_tflite_fp32", "tflite_int8"),
        ]
    return table


def recipes(
    students: tuple[str, ...] = ("plain", "kd"), formats: tuple[str, ...] = ("onnx",), classic: bool = True
) -> list[Recipe]:
    """The candidate table: the teacher as a reference, then the same recipes for each student, so the KD
    student's compressed forms always meet the plain student's compressed the same way; last, with `classic`, the
    classical baseline (last, so that a tie goes to a network)."""
    table = [Recipe("teacher_fp32", "teacher", "export")] + [r for s in students for r in student_recipes(s, formats)]
    table += [Recipe("classic_fp32", "classic", "export")] if classic else []
    names = [r.name for r in table]
    for i, r in enumerate(table):
        assert r.source in TRAINED or r.source in names[:i], f"{r.name}: unknown source {r.source}"
    return table
