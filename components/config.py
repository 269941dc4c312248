"""Typed pipeline configuration, loaded from params.yaml. Unknown keys are errors."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidationConfig(_Section):
    min_rows_per_class: int = Field(20, ge=1, description="Each class needs at least this many rows in each split.")
    max_class_imbalance: float = Field(3.0, ge=1, description="Largest class count / smallest class count, per split.")


class DataConfig(_Section):
    """One dataset: where it is, which kind reads it, how it is labelled and split."""

    name: str = Field("digits", description="Dataset name: the MLflow experiment and registered model's name.")
    kind: str = Field("image", description="Data kind plug-in: see components/data.")
    root: str = Field("data/external", description="Data root, relative to the project; `source` must stay inside it. "
                                                   "DVC watches it as the input of the ingest stage.")
    source: str = Field("sklearn:digits", description="A built-in ('sklearn:digits') or a path relative to `root`.")
    unlabelled: str | None = Field(None, description="An unlabelled pool of the same kind (a path relative to `root`) "
                                                     "for methods that use one, e.g. distill.method pseudo_label.")
    classes: list[str] = Field([str(i) for i in range(10)], min_length=2,
                               description="The label set as the source spells labels; its order fixes class indices.")
    options: dict = Field({}, description="Kind-specific reading and preprocessing options (see README).")
    seed: int = Field(42, description="Seed of the split.")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Fraction of samples in the validation split.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Fraction of samples in the test split.")
    validation: ValidationConfig = ValidationConfig()
    intended_use: str = Field("", description="What the model is for and not for, for the model card (default: a "
                                              "sentence from the kind and classes).")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class TrainConfig(_Section):
    """What every model's training shares: teacher, plain student and KD students alike."""

    seed: int = Field(0, description="Seed of weight init and batch order (`edgekd bench kd` varies the students').")
    batch_size: int = Field(64, ge=1, description="Mini-batch size.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    augment: bool = Field(True, description="The data kind's training augmentation (images: 1-pixel shifts).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when available.")


class TeacherConfig(_Section):
    """The teacher: trained here (one network or an ensemble), or brought by the user as a file."""

    source: str | None = Field(None, description="Bring your own teacher: an .onnx or TorchScript (.pt/.ts) file, "
                                                  "relative to the project, that maps the prepared inputs to logits. "
                                                  "Nothing is trained then.")
    width: int = Field(32, ge=1, description="Width of the teacher architecture (first layer's channels or units).")
    ensemble: int = Field(1, ge=1, description="Train N teachers (seeds seed, seed+1, ...) whose averaged logits "
                                               "act as one teacher.")
    ensemble_widths: list[int] = Field([], description="Widths of the ensemble's members, cycled (default: all "
                                                       "`width`): different architectures instead of seeds only.")
    epochs: int = Field(100, ge=1, description="Maximum teacher epochs.")
    lr: float = Field(3e-3, gt=0, description="Teacher AdamW learning rate.")
    patience: int = Field(20, ge=1, description="Early stopping: epochs without validation gain.")
    checkpoint: Literal["best", "last"] = Field("best", description="'best': the early-stopped checkpoint of best "
                                                                    "validation accuracy; 'last': the final epoch's.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the teacher's loss. Keep 0: "
                                                                "it erases the dark knowledge KD transfers.")
    min_margin: float = Field(0.01, ge=0, le=1, description="The teacher counts as clearly stronger only when its "
                                                            "val gate metric beats the plain student's by this much; "
                                                            "otherwise the run warns that KD cannot help.")


class StudentConfig(_Section):
    """The budget every student gets, plain and KD alike: only the loss differs."""

    width: int = Field(16, ge=1, description="Width of the student architecture (first layer's channels or units).")
    epochs: int = Field(200, ge=1, description="Maximum epochs of every student.")
    lr: float = Field(5e-3, gt=0, description="AdamW learning rate of every student.")
    patience: int = Field(200, ge=1, description="Early stopping of every student: epochs without validation gain "
                                                 "(the best validation epoch is kept either way).")


class DistillConfig(_Section):
    """Which KD method(s) train the KD student, and each method's options under its own name."""

    model_config = ConfigDict(extra="allow", frozen=True)  # distill.<method>: options, typed by components.kd
    method: str | list[str] = Field("dkd", description="A KD method of components.kd (see README), or a list "
                                                          "of them: every variant is trained and the best on "
                                                          "validation becomes the KD student.")

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(self.method)

    def options(self, method: str) -> dict:
        return dict((self.model_extra or {}).get(method) or {})


class PruneConfig(_Section):
    ratio: float = Field(0.25, ge=0, lt=1, description="Fraction of channels removed from each prunable conv.")
    finetune_epochs: int = Field(20, ge=0, description="Fine-tune epochs after pruning, with the loss its source "
                                                       "was trained with (KD for the KD student, labels for plain).")
    finetune_lr: float = Field(2e-3, gt=0, description="Learning rate of the fine-tune.")


class QuantizeConfig(_Section):
    calibration_samples: int = Field(256, ge=1, description="Train-split samples used to calibrate static INT8.")
    per_channel: bool = Field(True, description="Per-channel weight scales for static INT8.")


class BenchmarkConfig(_Section):
    intra_op_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads of the device profile.")
    batch_size: int = Field(1, ge=1, description="Batch size of the device profile.")
    warmup_runs: int = Field(50, ge=0, description="Runs discarded before timing.")
    timed_runs: int = Field(500, ge=10, description="Timed runs per candidate.")


class GateConfig(_Section):
    """Every metric condition is checked on the validation split, measured through ONNX Runtime: the gate chooses,
    and choices are made on validation. Test metrics are reported, never used to choose."""

    metric: str = Field("accuracy", description="Metric that ranks candidates and that max_metric_drop and the "
                                                "production comparison use: accuracy, macro_f1, or for two classes "
                                                "f1_positive, sensitivity, specificity, roc_auc.")
    min_metric: float = Field(0.0, ge=0, le=1, description="Minimum of `metric`.")
    max_metric_drop: float = Field(1.0, ge=0, le=1, description="Maximum drop of `metric` from the teacher.")
    min_sensitivity: float = Field(0.0, ge=0, le=1, description="Minimum recall of the positive (last) class; "
                                                                "two-class datasets only.")
    min_accuracy: float = Field(0.97, ge=0, le=1, description="Minimum accuracy.")
    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="Maximum accuracy drop from the teacher.")
    max_p95_ms: float = Field(1.0, gt=0, description="Maximum p95 latency in ms under the device profile.")
    max_size_kb: float = Field(200.0, gt=0, description="Maximum ONNX file size in KiB.")
    regression_tolerance: float = Field(0.01, ge=0, le=1, description="Allowed loss of `metric` vs the production "
                                                                      "version.")
    plain_tolerance: float = Field(0.0, ge=0, le=1, description="Allowed loss of the val `metric` vs `plain_fp32`, "
                                                                "the same student trained without a teacher.")


class SearchConfig(_Section):
    """`edgekd search`: the space of recipes, what a chosen point must beat, where trials run and the study lives."""

    widths: list[int] = Field([], description="Student widths to try (default: 0.5x to 4x of student.width).")
    methods: list[str] = Field(["plain", "hinton", "dkd", "dist"], min_length=1,
                               description="KD methods to try, 'plain' (no teacher) included; options come from "
                                           "distill.<method>, the temperature is searched at 0.5x, 1x and 2x.")
    prune_ratios: list[float] = Field([0.0, 0.25, 0.5], min_length=1, description="Prune ratios to try (0: none).")
    precisions: list[str] = Field(["fp32", "fp16", "int8_static", "int8_static_per_tensor", "int8_dynamic"],
                                  min_length=1, description="Precisions to try: fp32, fp16, int8_static (per-channel), "
                                                            "int8_static_per_tensor, int8_dynamic.")
    default_tolerance: float = Field(0.0, ge=0, le=1, description="A point may score at most this much below the "
                                                                  "default recipe's val `gate.metric`.")
    pick: Literal["latency", "accuracy", "size"] = Field("latency", description="Which front point is registered: "
                                                                                "the fastest, most accurate or smallest.")
    storage: str | None = Field(None, description="Optuna storage, any SQLAlchemy URL (default: "
                                                  "sqlite:///mlruns/search.db in the project).")
    dask_address: str | None = Field(None, description="A running Dask scheduler (tcp://HOST:8786); none: a "
                                                       "LocalCluster on this machine.")
    workers: int = Field(0, ge=0, description="Workers of the LocalCluster (0: one per CPU core).")
    seed: int = Field(0, description="Seed of the sampler (Optuna TPE).")
    remeasure_rounds: int = Field(3, ge=1, description="After the trials, the front and both references are "
                                                       "measured again side by side this many rounds (median).")


class TeamConfig(_Section):
    """Shared servers of a team (README "Working as a team"). Each tool's own environment variable wins over its
    key here; with none set, everything stays in the project folder."""

    mlflow_tracking_uri: str | None = Field(None, pattern=r"^https?://",
                                            description="The team's `mlflow server`, http://HOST:5000 "
                                                        "(env MLFLOW_TRACKING_URI wins; none: mlruns/mlflow.db).")
    prefect_api_url: str | None = Field(None, pattern=r"^https?://.+/api/?$",
                                        description="The team's Prefect server, http://HOST:4200/api (env "
                                                    "PREFECT_API_URL wins; none: a temporary server per command).")
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?://",
                                     description="PostgreSQL whose advisory locks serialize promotions across "
                                                 "machines, postgresql://USER@HOST:5432/edgekd; the password from "
                                                 "PGPASSWORD or ~/.pgpass (env EDGEKD_DATABASE_URL wins; none: a file "
                                                 "lock that guards this machine only).")


class PipelineConfig(_Section):
    """The effective configuration of one run: one dataset plus every stage's section."""

    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gate: GateConfig = GateConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "PipelineConfig":
        if self.data.val_fraction + self.data.test_fraction >= 0.8:
            raise ValueError("data.val_fraction + data.test_fraction must leave at least 20% for training")
        return self


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or holds a bad value."""


STAGE_SECTIONS = ("train", "teacher", "student", "distill", "prune", "quantize", "benchmark", "gate", "search")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: dict | None) -> dict:
    """{"distill.hinton.temperature": 4, ...} (as `--set` gives them) -> nested stage sections. Only stage keys: data
    settings are versioned with the data by DVC, which reads them from params.yaml itself."""
    nested: dict = {}
    for key, value in (overrides or {}).items():
        section, *path = str(key).split(".")
        if section not in STAGE_SECTIONS or not path or not all(path):
            raise ConfigError(f"override {key!r}: expected SECTION.KEY with SECTION one of {list(STAGE_SECTIONS)}"
                              + ("; data settings are versioned with the data by DVC: change datasets.* in "
                                 "params.yaml" if section in ("datasets", "dataset", "data") else ""))
        node = nested.setdefault(section, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return nested


def effective_config(params: dict, dataset: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Build one run's config from a params mapping: the stage sections, then the chosen dataset's `overrides`,
    then `overrides` given for this run (`{"SECTION.KEY": value}`, e.g. from `edgekd run --set`).

    `params` holds `dataset` (the default name), `datasets` (name -> data section + optional `overrides`) and the
    stage sections.
    """
    run_overrides = parse_overrides(overrides)
    params = dict(params)
    unknown = set(params) - {"dataset", "datasets", "team", *STAGE_SECTIONS}
    if unknown:
        raise ConfigError(f"unknown top-level keys {sorted(unknown)}; expected 'dataset', 'datasets', 'team' and "
                          f"{list(STAGE_SECTIONS)} (a dataset's settings go under datasets.NAME)")
    team_config(params)  # checked here, applied by flows/env.py; not part of a run's config (no secrets logged)
    params.pop("team", None)
    datasets = params.pop("datasets", None) or {"digits": {}}
    default = params.pop("dataset", next(iter(datasets)))
    name = dataset or default
    if name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; params.yaml defines {sorted(datasets)}")
    data = dict(datasets[name] or {})
    overrides = data.pop("overrides", {}) or {}
    unknown = set(overrides) - set(STAGE_SECTIONS)
    if unknown:
        raise ConfigError(f"datasets.{name}.overrides: unknown sections {sorted(unknown)}; expected {STAGE_SECTIONS}")
    merged = _merge(_merge(params, overrides), run_overrides) | {"data": data | {"name": name}}
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as e:
        lines = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"dataset {name!r}: invalid configuration:\n  " + "\n  ".join(lines)) from None


def team_config(params: dict) -> TeamConfig:
    """The `team` section of a params mapping (all none when absent)."""
    try:
        return TeamConfig.model_validate(params.get("team") or {})
    except ValidationError as e:
        lines = [f"team.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid team section:\n  " + "\n  ".join(lines)) from None


def read_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, dataset: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """The effective config of `dataset` (default: the file's `dataset`) from a params file, with `overrides`."""
    try:
        return effective_config(read_params(path), dataset, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
