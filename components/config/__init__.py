"""Typed pipeline configuration, loaded from params.yaml. Unknown keys are errors; every default lives here, in
the section models (stages.py, measure.py, data.py), and nowhere else."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError, model_validator

from components.config.base import Section
from components.config.data import DIGITS, DataConfig, ValidationConfig
from components.config.measure import BenchmarkConfig, TargetConfig
from components.config.stages import (
    ClassicConfig,
    DistillConfig,
    ExportConfig,
    GateConfig,
    PruneConfig,
    QuantizeConfig,
    SearchConfig,
    StudentBudget,
    StudentConfig,
    TeacherConfig,
    TeacherTraining,
    TrainConfig,
)
from components.config.team import TeamConfig

__all__ = [
    "DIGITS",
    "STAGE_SECTIONS",
    "BenchmarkConfig",
    "ClassicConfig",
    "TargetConfig",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "GateConfig",
    "PipelineConfig",
    "PruneConfig",
    "QuantizeConfig",
    "ExportConfig",
    "SearchConfig",
    "StudentBudget",
    "StudentConfig",
    "TeacherConfig",
    "TeacherTraining",
    "TeamConfig",
    "TrainConfig",
    "ValidationConfig",
    "effective_config",
    "load_config",
    "parse_overrides",
    "read_params",
    "team_config",
]


class PipelineConfig(Section):
    """The effective configuration of one run: one dataset plus every stage's section."""

    data: DataConfig
    train: TrainConfig = TrainConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()
    classic: ClassicConfig = ClassicConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gate: GateConfig = GateConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> PipelineConfig:
        if self.data.val_fraction + self.data.test_fraction >= 0.8:
            raise ValueError("data.val_fraction + data.test_fraction must leave at least 20% for training")
        if self.gate.target in self.benchmark.mcus():
            raise ValueError(
                f"gate.target {self.gate.target!r} is an MCU budget, which is not timed: gate on `host` or a device "
                "agent, and let gate.max_ram_kb and gate.max_flash_kb hold the budget"
            )
        if self.gate.target != "host" and self.gate.target not in self.benchmark.targets:
            raise ValueError(
                f"gate.target {self.gate.target!r} is neither `host` nor a name in benchmark.targets "
                f"{sorted(self.benchmark.targets)}"
            )
        return self


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or holds a bad value."""


STAGE_SECTIONS = (
    "train",
    "teacher",
    "student",
    "distill",
    "prune",
    "quantize",
    "export",
    "classic",
    "benchmark",
    "gate",
    "search",
)


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
            raise ConfigError(
                f"override {key!r}: expected SECTION.KEY with SECTION one of {list(STAGE_SECTIONS)}"
                + (
                    "; data settings are versioned with the data by DVC: change datasets.* in params.yaml"
                    if section in ("datasets", "dataset", "data")
                    else ""
                )
            )
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
        raise ConfigError(
            f"unknown top-level keys {sorted(unknown)}; expected 'dataset', 'datasets', 'team' and "
            f"{list(STAGE_SECTIONS)} (a dataset's settings go under datasets.NAME)"
        )
    team_config(params)  # checked here, applied by flows/env.py; not part of a run's config (no secrets logged)
    params.pop("team", None)
    datasets = params.pop("datasets", None) or {"digits": DIGITS}
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
        lines = [f"{_key(err['loc'], name)}: {_message(err)}" for err in e.errors()]
        raise ConfigError(f"dataset {name!r}: invalid configuration:\n  " + "\n  ".join(lines)) from None


def _key(loc: tuple, dataset: str) -> str:
    """An error's location as the key of params.yaml to change: data.* is datasets.NAME.*."""
    parts = [str(p) for p in loc]
    return ".".join([f"datasets.{dataset}", *parts[1:]] if parts and parts[0] == "data" else parts)


def _message(err: dict) -> str:
    return "unknown key (not an option of this kind)" if err["type"] == "extra_forbidden" else err["msg"]


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
