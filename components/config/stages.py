"""The stage sections of params.yaml: what every model's training shares, the teacher, the students' budget,
distillation, pruning, quantization, the deployable formats, the device profile, the gate and the search. Each
field has its default and a description: the configuration reference is generated from them."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from components.config.base import Section


class TrainConfig(Section):
    """What every model's training shares: teacher, plain student and KD students alike."""

    seed: int = Field(0, description="Seed of weight init and batch order (`edgekd bench kd` varies the students').")
    batch_size: int = Field(64, ge=1, description="Mini-batch size.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (AdamW's decoupled, or SGD's L2).")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="Every model's optimizer: `adamw`, or `sgd` with Nesterov momentum 0.9."
    )
    schedule: Literal["cosine", "onecycle"] = Field(
        "cosine",
        description="Learning-rate schedule: `cosine` from the stage's lr to 0 over its epochs (per epoch), or "
        "`onecycle`: up to the lr over the first 25% of the steps, then cosine down (per step).",
    )
    augment: bool = Field(
        True, description="The data kind's training augmentation (images: shifts, `shift` and `flip` below)."
    )
    shift: int = Field(1, ge=0, description="Images: the largest random shift in pixels (zero padding).")
    flip: bool = Field(False, description="Images: also mirror a random half of each batch (photos, not digits).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when available.")
    threads: int = Field(
        1,
        ge=1,
        description="Torch's CPU threads while a model trains. A float sum rounds differently on a different "
        "thread count, so a model is rebuilt bit for bit only at the count it was trained with; one thread gives "
        "the same numbers on every machine and in every worker (`edgekd bench kd`'s Dask workers too).",
    )
    deterministic: bool = Field(
        True, description="Torch's deterministic algorithms while training (on CUDA: slower, reproducible kernels)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Arithmetic of training's forward passes: `bf16` autocast (weights, gradients and the optimizer "
        "stay fp32; convolutional networks in channels_last), or `fp32`. `auto` is resolved when a run starts: "
        "`bf16` where the CPU has AVX512-BF16 or AMX, or on a CUDA device with bf16, else `fp32`; the resolved value "
        "is what the model card, MLflow and every cache key hold. Exports and every score stay fp32 (ONNX).",
    )


class TeacherTraining(Section):
    """How each teacher network trains: what a teacher stage reads (its cache key), apart from the data."""

    epochs: int = Field(100, ge=1, description="Maximum teacher epochs.")
    lr: float = Field(3e-3, gt=0, description="Teacher learning rate (the peak of `onecycle`).")
    patience: int = Field(20, ge=1, description="Early stopping: epochs without validation gain.")
    checkpoint: Literal["best", "last"] = Field(
        "best",
        description="'best': the early-stopped checkpoint of best validation accuracy; 'last': the final epoch's.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Label smoothing of the teacher's loss. Keep 0: it erases the dark knowledge KD transfers.",
    )


class TeacherConfig(TeacherTraining):
    """The teacher: trained here (one network or an ensemble), or brought by the user as a file."""

    source: str | None = Field(
        None,
        description="Bring your own teacher: an .onnx or TorchScript (.pt/.ts) file, "
        "relative to the project, that maps the prepared inputs to logits. "
        "Nothing is trained then.",
    )
    width: int = Field(
        32,
        ge=1,
        description="Width of the teacher architecture: edgekd's first layer's channels or units, or the width "
        "multiplier of `dscnn`, `dscnn_l` and `resnet8`.",
    )
    arch: str = Field(
        "edgekd",
        description="The teacher's architecture: `edgekd` (the data kind's own), `dscnn`, `dscnn_l`, `resnet8` "
        "(MLPerf Tiny's references), `torchvision:NAME`, or `MODULE:FUNCTION` (a factory in your project).",
    )
    weights: str | None = Field(
        None,
        description="A trained checkpoint of `arch` at `width` to use as the teacher, untrained here: a state "
        "dict (.pt, loaded with weights_only) or a .safetensors file, relative to the project.",
    )
    ensemble: int = Field(
        1, ge=1, description="Train N teachers (seeds seed, seed+1, ...) whose averaged logits act as one teacher."
    )
    ensemble_widths: list[int] = Field(
        [],
        description="Widths of the ensemble's members, cycled (default: all "
        "`width`): different architectures instead of seeds only.",
    )

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return _known_arch(v)

    @model_validator(mode="after")
    def _one_teacher(self) -> TeacherConfig:
        if self.source and self.weights:
            raise ValueError("teacher.source (a file) and teacher.weights (a checkpoint of teacher.arch): give one")
        if self.weights and self.ensemble > 1:
            raise ValueError("teacher.weights is one network: it takes no teacher.ensemble")
        return self

    min_margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="The teacher counts as clearly stronger only when its "
        "val gate metric beats the plain student's by this much; "
        "otherwise the run warns that KD cannot help.",
    )


def _known_arch(v: str) -> str:
    from components.archs import check_arch

    return check_arch(v)


class StudentBudget(Section):
    """The budget every student gets, plain and KD alike: only the loss differs."""

    epochs: int = Field(200, ge=1, description="Maximum epochs of every student.")
    lr: float = Field(5e-3, gt=0, description="Learning rate of every student (the peak of `onecycle`).")
    patience: int = Field(
        200,
        ge=1,
        description="Early stopping of every student: epochs without validation gain "
        "(the best validation epoch is kept either way).",
    )


class StudentConfig(StudentBudget):
    """The student: its architecture and width, and the budget every student gets."""

    width: int = Field(
        16,
        ge=1,
        description="Width of the student architecture: edgekd's first layer's channels or units, or the width "
        "multiplier of `dscnn`, `dscnn_l` and `resnet8`.",
    )
    arch: str = Field(
        "edgekd",
        description="The students' architecture (plain and KD alike): as `teacher.arch`.",
    )
    weights: str | None = Field(
        None,
        description="Weights every student starts from instead of a random init (a state dict or .safetensors "
        "file of `arch` at `width`, relative to the project).",
    )

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return _known_arch(v)


class DistillConfig(Section):
    """Which KD method(s) train the KD student, and each method's options under its own name."""

    model_config = ConfigDict(extra="allow", frozen=True)  # distill.<method>: options, typed by components.kd
    method: str | list[str] = Field(
        "dkd",
        description="A KD method of components.kd (see README), or a list "
        "of them: every variant is trained and the best on "
        "validation becomes the KD student.",
    )

    views: int = Field(
        16,
        ge=0,
        description="Cached teacher views: for the methods whose loss reads only the teacher's logits (hinton, dkd, "
        "dist, adaptive's variants), this many augmentation draws per training sample are made once, the "
        "teacher's logits on each computed once (in parallel, cached with the run's artifacts), and the student "
        "trains on exactly those views; 0: the teacher runs on a fresh view at every step. Function matching and "
        "the feature methods always run the teacher online.",
    )

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(self.method)

    def options(self, method: str) -> dict:
        return dict((self.model_extra or {}).get(method) or {})


class PruneConfig(Section):
    """Structured pruning of each student: channels physically removed, then a fine-tune with the student's own
    objective (KD for the KD student, labels for the plain one)."""

    ratio: float = Field(0.25, ge=0, lt=1, description="Fraction of channels removed from each prunable conv.")
    finetune_epochs: int = Field(
        20,
        ge=0,
        description="Fine-tune epochs after pruning, with the loss its source "
        "was trained with (KD for the KD student, labels for plain).",
    )
    finetune_lr: float = Field(2e-3, gt=0, description="Learning rate of the fine-tune.")


class QuantizeConfig(Section):
    """ONNX Runtime's INT8 of the pruned students (static: calibrated on train samples), and QAT where it loses."""

    calibration_samples: int = Field(256, ge=1, description="Train-split samples used to calibrate static INT8.")
    per_channel: bool = Field(True, description="Per-channel weight scales for static INT8.")
    qat_threshold: float = Field(
        0.01,
        ge=-1,
        le=1,
        description="When a pruned student's static INT8 loses more than this of val `gate.metric` against its FP32 "
        "source, a quantization-aware fine-tune of that source (with its own objective: KD against the teacher for "
        "the KD student) becomes the candidate `*_pruned_int8_qat`; negative: always.",
    )
    qat_epochs: int = Field(5, ge=1, description="Epochs of the quantization-aware fine-tune.")
    qat_lr: float = Field(5e-4, gt=0, description="Learning rate of the quantization-aware fine-tune.")


class ClassicConfig(Section):
    """The classical baseline `classic_fp32`: a scikit-learn model on the same inputs, chosen on val, exported with
    skl2onnx and measured and gated like every network (components/classic.py)."""

    families: list[Literal["logreg", "svm", "gbm"]] | None = Field(
        None,
        description="Families tried on image, audio and tabular inputs: `logreg` (logistic regression), `svm` (RBF "
        "SVM), `gbm` (gradient boosting); the best on val is kept. Default: all three for tabular data, `logreg` and "
        "`svm` for images and audio (boosting is slow on pixels). Text always gets TF-IDF with logistic "
        "regression. An empty list: no classical candidate.",
    )
    max_rows: int = Field(5000, ge=10, description="At most this many train rows fit it (a seeded, stratified subset).")


class ExportConfig(Section):
    """The deployable formats each trained student is built in. ONNX (run by ONNX Runtime) always; `pte` adds
    ExecuTorch programs lowered with the XNNPACK delegate, `tflite` LiteRT files, each FP32 and INT8, as candidates
    of their own. A full-integer INT8 LiteRT file is also run under TensorFlow Lite Micro: its accuracy there, its
    arena and its flash."""

    formats: list[Literal["onnx", "pte", "tflite"]] = Field(
        ["onnx"],
        description="Formats of the candidates: `onnx`, `pte` (ExecuTorch, needs `executorch` installed) and "
        "`tflite` (LiteRT and TensorFlow Lite Micro, needs `edgekd[litert]`); a program or file is lowered for the "
        "device profile's batch size.",
    )

    @field_validator("formats")
    @classmethod
    def _onnx_first(cls, v: list[str]) -> list[str]:
        if "onnx" not in v or len(set(v)) != len(v):
            raise ValueError(f"export.formats {v}: must hold `onnx` (the teacher's format), each format once")
        return v


class GateConfig(Section):
    """Every metric condition is checked on the validation split, measured through the model's runtime: the gate
    chooses, and choices are made on validation. Test metrics are reported, never used to choose."""

    metric: str = Field(
        "accuracy",
        description="Metric that ranks candidates and that max_metric_drop and the "
        "production comparison use: accuracy, macro_f1, or for two classes "
        "f1_positive, sensitivity, specificity, roc_auc.",
    )
    min_metric: float = Field(0.0, ge=0, le=1, description="Minimum of `metric`.")
    max_metric_drop: float = Field(1.0, ge=0, le=1, description="Maximum drop of `metric` from the teacher.")
    min_sensitivity: float = Field(
        0.0, ge=0, le=1, description="Minimum recall of the positive (last) class; two-class datasets only."
    )
    min_accuracy: float = Field(0.97, ge=0, le=1, description="Minimum accuracy.")
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="Maximum accuracy drop from the teacher.")
    target: str = Field(
        "host", description="Whose latency the gate's rules use: `host` or a name in `benchmark.targets`."
    )
    max_p95_ms: float = Field(1.0, gt=0, description="Maximum p95 latency in ms under the device profile.")
    max_size_kb: float = Field(200.0, gt=0, description="Maximum ONNX file size in KiB.")
    max_ram_kb: float | None = Field(
        None,
        gt=0,
        description="Maximum TensorFlow Lite Micro tensor arena in KiB (None: no limit). Set, it passes only "
        "full-integer LiteRT candidates whose smallest arena fits.",
    )
    max_flash_kb: float | None = Field(
        None,
        gt=0,
        description="Maximum flash for the model under TensorFlow Lite Micro in KiB (None: no limit). Set, it "
        "passes only full-integer LiteRT candidates whose model bytes fit.",
    )
    regression_tolerance: float = Field(
        0.01, ge=0, le=1, description="Allowed loss of `metric` vs the production version."
    )
    plain_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Allowed loss of the val `metric` vs `plain_fp32`, the same student trained without a teacher.",
    )
    select: Literal["accuracy", "latency", "size"] = Field(
        "accuracy",
        description="Which passing candidate is registered: `accuracy`, the best val `metric`; `latency`, the "
        "fastest p95 on `target` (measurably, else the best `metric` among those as fast) or `size`, the smallest "
        "file, among those within `select_tolerance` of the best val `metric`.",
    )
    select_tolerance: float = Field(
        0.005,
        ge=0,
        le=1,
        description="How far below the best passing val `metric` a candidate may be and still be chosen by "
        "`latency` or `size` (0.005: half a point).",
    )


class SearchConfig(Section):
    """`edgekd search`: the space of recipes, what a chosen point must beat, where trials run and the study lives."""

    archs: list[str] = Field(
        [],
        description="Student architectures to try, each as `student.arch` takes it (default: `student.arch` only); "
        "`student.weights` applies to `student.arch` alone.",
    )
    widths: list[int] = Field([], description="Student widths to try (default: 0.5x to 4x of student.width).")
    methods: list[str] = Field(
        ["plain", "hinton", "dkd", "dist"],
        min_length=1,
        description="KD methods to try, 'plain' (no teacher) included; options come from "
        "distill.<method>, the temperature is searched at 0.5x, 1x and 2x.",
    )
    prune_ratios: list[float] = Field([0.0, 0.25, 0.5], min_length=1, description="Prune ratios to try (0: none).")
    precisions: list[str] = Field(
        ["fp32", "fp16", "int8_static", "int8_static_per_tensor", "int8_dynamic", "int8_qat"],
        min_length=1,
        description="Precisions to try: fp32, fp16, int8_static (per-channel), int8_static_per_tensor, int8_dynamic, "
        "int8_qat (a quantization-aware fine-tune of `quantize.qat_epochs`, then static INT8).",
    )
    default_tolerance: float = Field(
        0.0, ge=0, le=1, description="A point may score at most this much below the default recipe's val `gate.metric`."
    )
    pick: Literal["latency", "accuracy", "size"] = Field(
        "latency", description="Which front point is registered: the fastest, most accurate or smallest."
    )
    storage: str | None = Field(
        None, description="Optuna storage, any SQLAlchemy URL (default: sqlite:///mlruns/search.db in the project)."
    )
    dask_address: str | None = Field(
        None, description="A running Dask scheduler (tcp://HOST:8786); none: a LocalCluster on this machine."
    )
    workers: int = Field(0, ge=0, description="Workers of the LocalCluster (0: one per CPU core).")
    seed: int = Field(0, description="Seed of the sampler (Optuna TPE).")
    remeasure_rounds: int = Field(
        10,
        ge=1,
        description="After the trials, the front and both references are measured again side by side this many "
        "rounds (then more, as `benchmark.max_extra_*` allow, while a comparison is undecided).",
    )

    @field_validator("archs")
    @classmethod
    def _archs(cls, v: list[str]) -> list[str]:
        return [_known_arch(a) for a in v]
