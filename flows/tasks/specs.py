"""What each stage reads (its spec, the cache key) and what it hands on (its output), typed.

A spec is the stage's cache key (Prefect's INPUTS policy over its JSON, plus the task's source): the data version,
the config sections the stage uses, the sha256 of upstream artifacts and a hash of the component modules it runs.
So changing a KD option retrains only the KD students, a gate or benchmark setting retrains nothing, and editing
components/gate.py leaves every trained model cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

import components
from components.config import (
    ClassicConfig,
    ConfigError,
    PipelineConfig,
    PruneConfig,
    QuantizeConfig,
    StudentBudget,
    TeacherTraining,
    TrainConfig,
)
from components.formats.base import Artifact, artifact_info
from components.kd import METHODS, Variant
from components.metrics import Scores
from components.prune import PruneReport
from components.train import Epoch

# The component modules each stage runs: a change to one of them re-runs exactly the stages that use it.
TRAIN_CODE = (
    "train.py",
    "augment.py",
    "models.py",
    "classifier.py",
    "archs.py",
    "formats/base.py",
    "formats/onnx_rt.py",
    "metrics.py",
    "data",
)
STUDENT_CODE = TRAIN_CODE + ("kd", "distill.py", "teachers.py")
PRUNE_CODE = STUDENT_CODE + ("prune.py",)
QUANTIZE_CODE = ("quantize.py", "formats/base.py", "formats/onnx_rt.py")
PTE_CODE = STUDENT_CODE + ("formats/pte.py",)
LITERT_CODE = STUDENT_CODE + ("formats/litert.py", "quantize.py")
TFLM_CODE = ("formats/tflm.py", "formats/litert.py", "formats/base.py", "metrics.py", "data")
QAT_CODE = PRUNE_CODE + ("qat.py", "quantize.py")
CLASSIC_CODE = ("classic.py", "formats/base.py", "formats/onnx_rt.py", "metrics.py", "data")


def code_version(*paths: str) -> str:
    """Hash of the component sources at `paths` (files or folders under components/)."""
    base, h = Path(components.__file__).parent, hashlib.sha256()
    for rel in paths:
        p = base / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(base)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


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
    split: int = 0  # `bench kd --splits`: train and val drawn again with this seed (0: as prepared)


class Member(Spec):
    """One network of the teacher: its architecture, width and weights (saved by a teacher stage, or the user's
    checkpoint: `teacher.weights`)."""

    width: int
    weights: Artifact
    arch: str = "edgekd"


class TeacherRef(Spec):
    """The teacher of a KD stage: networks trained here (weights, averaged when several) or a user's file."""

    members: list[Member] = []
    file: Artifact | None = None

    @property
    def id(self) -> str:
        shas = [self.file.sha256] if self.file else [m.weights.sha256 for m in self.members]
        return hashlib.sha256("|".join(shas).encode()).hexdigest()[:16]


class TeacherSpec(Spec):
    data: DataRef
    width: int
    arch: str = "edgekd"
    seed: int
    train: TrainConfig
    recipe: TeacherTraining
    code: str = code_version(*TRAIN_CODE)


class TeacherExportSpec(Spec):
    """The KD teacher of several networks or of a user's TorchScript file, to export as one ONNX file."""

    data: DataRef
    teacher: TeacherRef


class StudentSpec(Spec):
    data: DataRef
    width: int
    depth: int | None = None  # None: the architecture's own (the search varies it where the kind has DEPTHS)
    arch: str = "edgekd"
    init: Artifact | None = None  # `student.weights`: what every student starts from instead of a random init
    seed: int
    train: TrainConfig
    budget: StudentBudget  # the same for every variant
    variant: Variant
    teacher: TeacherRef | None  # None for the plain student: no KD option can retrain it
    views: int = 0  # cached teacher views (distill.views) of a method that can use them; 0: the teacher online
    code: str = code_version(*STUDENT_CODE)

    @classmethod
    def of(
        cls,
        cfg: PipelineConfig,
        data: DataRef,
        variant: Variant,
        teacher: TeacherRef | None,
        seed: int | None = None,
        width: int | None = None,
        depth: int | None = None,
        arch: str | None = None,
    ) -> StudentSpec:
        """What a student stage reads: the same budget for every variant, the teacher only when the variant has
        one; the seed, width, depth and architecture of the config's student unless given (`student.weights`
        start the config's architecture only)."""
        arch = arch or cfg.student.arch
        init = cfg.student.weights if arch == cfg.student.arch else None
        return cls(
            data=data,
            width=width or cfg.student.width,
            depth=depth,
            arch=arch,
            init=user_file(data.root, init, "student.weights") if init else None,
            seed=cfg.train.seed if seed is None else seed,
            train=cfg.train,
            budget=StudentBudget.model_validate(cfg.student.model_dump(include=set(StudentBudget.model_fields))),
            variant=variant,
            teacher=None if variant.method == "plain" else teacher,
            views=cfg.distill.views if _poolable(data.kind, cfg.train, variant) else 0,
        )

    def alone(self) -> StudentSpec:
        """The same student trained without a teacher on the same budget (the plain student KD must beat)."""
        return self.model_copy(update={"variant": Variant("plain"), "teacher": None, "views": 0})


def _poolable(kind: str, train: TrainConfig, variant: Variant) -> bool:
    """Whether a student of `variant` can train on cached teacher views: a method whose loss reads only the
    teacher's logits, on data whose augmentation draws its views' parameters apart (components.train.Augmentation)."""
    from components.augment import Augmentation
    from components.data import get_kind

    if variant.method == "plain" or not METHODS[variant.method].cached_views or not train.augment:
        return False
    return isinstance(get_kind(kind).augment, Augmentation)


class PruneSpec(Spec):
    source: StudentSpec  # the student that is pruned, then fine-tuned with its own objective
    weights: Artifact
    prune: PruneConfig
    code: str = code_version(*PRUNE_CODE)


class QuantizeSpec(Spec):
    data: DataRef
    fp32: Artifact  # the ONNX file quantized
    mode: str  # "static", "dynamic" or "fp16"
    quantize: QuantizeConfig
    code: str = code_version(*QUANTIZE_CODE)


class QatSpec(Spec):
    """A trained student, or its pruned form (`prune`: the pruning whose structure `weights` have), fine-tuned with
    INT8 simulated, then quantized to static INT8 as `quantize` says."""

    source: StudentSpec
    weights: Artifact
    prune: PruneSpec | None = None
    quantize: QuantizeConfig
    code: str = code_version(*QAT_CODE)


class PteSpec(Spec):
    """A trained student lowered to an ExecuTorch program for batches of `batch_size`: FP32, or INT8 calibrated on
    the train samples ONNX Runtime's static INT8 is calibrated on."""

    source: StudentSpec
    weights: Artifact
    mode: str  # "fp32" or "int8"
    batch_size: int
    quantize: QuantizeConfig
    code: str = code_version(*PTE_CODE)


class LiteRtSpec(Spec):
    """A trained student lowered to a `.tflite` file for batches of `batch_size` (FP32), or that file (`fp32`)
    quantized to full-integer INT8, calibrated on the train samples ONNX Runtime's static INT8 is calibrated on."""

    source: StudentSpec
    weights: Artifact
    mode: str  # "fp32" or "int8"
    batch_size: int
    quantize: QuantizeConfig
    fp32: Artifact | None = None  # the FP32 file an INT8 one is quantized from
    code: str = code_version(*LITERT_CODE)


class TflmSpec(Spec):
    """A full-integer LiteRT file to run under TensorFlow Lite Micro on `data`'s val and test splits."""

    data: DataRef
    model: Artifact
    code: str = code_version(*TFLM_CODE)


class ClassicSpec(Spec):
    """The classical baseline: the families tried (chosen on val by `metric`), on at most `classic.max_rows` train
    rows drawn with `seed`."""

    data: DataRef
    classic: ClassicConfig
    metric: str
    seed: int
    code: str = code_version(*CLASSIC_CODE)


class ClassicModel(BaseModel):
    """The classical baseline as one ONNX file, the family kept and every family's val score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onnx: Artifact
    family: str
    val_scores: dict[str, float]
    seconds: float


def user_file(root: str, rel: str, key: str) -> Artifact:
    """A file the user names in params.yaml (relative to the project), with its hash: a change to its content is
    a change to every stage that reads it."""
    path = (Path(root) / rel).resolve()
    if not path.is_file():
        raise ConfigError(f"{key} {rel!r}: {path} does not exist (paths are relative to the project)")
    return artifact_info(path)


def out_dir(spec: Spec, stage: str, root: str) -> Path:
    return Path(root) / ".edgekd" / "artifacts" / stage / spec.key()


class TrainedModel(BaseModel):
    """A trained (or pruned and fine-tuned) network: its weights, its FP32 ONNX export, the training history, its
    parameter count, its validation scores through ONNX Runtime (what choices between trained models are made on),
    and for a pruned one the pruning report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Artifact
    onnx: Artifact
    history: list[Epoch]
    params: int
    val: Scores
    prune: PruneReport | None = None
    started: float = 0.0  # when its task began (Unix time) and how long it took: a run's stage times
    seconds: float = 0.0


class ExportedTeacher(BaseModel):
    """The KD teacher as one ONNX file and its validation scores through ONNX Runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onnx: Artifact
    val: Scores
