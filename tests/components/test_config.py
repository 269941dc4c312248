"""The typed configuration: unknown keys and bad values are errors naming the key of params.yaml to change,
dataset options are typed by their kind, and the shipped params.yaml holds only what differs from the defaults."""

import pytest

from components.config import (
    DIGITS,
    STAGE_SECTIONS,
    ConfigError,
    DataConfig,
    PipelineConfig,
    effective_config,
    load_config,
    read_params,
)
from components.data.options import OPTIONS

pytestmark = pytest.mark.unit


def _write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def _defaults_in(values: dict, defaults: dict, where: str) -> list[str]:
    """The keys of `values` (nested) whose value is the default's."""
    out = []
    for key, value in values.items():
        if key not in defaults:
            continue
        if isinstance(value, dict) and isinstance(defaults[key], dict) and value != defaults[key]:
            out += _defaults_in(value, defaults[key], f"{where}.{key}")
        elif value == defaults[key]:
            out.append(f"{where}.{key}")
    return out


def test_the_shipped_params_file_holds_no_default_of_the_config_models():
    """Defaults live in components/config.py only: params.yaml says what differs from them (the datasets and their
    overrides), so a default changed in the code is never silently pinned by a copy in the file."""
    from components.kd import METHODS

    params = read_params("params.yaml")
    stage_defaults = PipelineConfig.model_fields
    found = []
    for section in STAGE_SECTIONS:
        defaults = stage_defaults[section].default.model_dump()
        defaults |= {m: c.Options().model_dump() for m, c in METHODS.items()} if section == "distill" else {}
        found += _defaults_in(params.get(section) or {}, defaults, section)
    data_defaults = {
        k: f.get_default(call_default_factory=True)
        for k, f in DataConfig.model_fields.items()
        if not f.is_required() and k != "options"
    }
    data_defaults["validation"] = data_defaults["validation"].model_dump()
    for name, section in params["datasets"].items():
        found += _defaults_in(section, data_defaults, f"datasets.{name}")
        found += _defaults_in(
            section.get("options") or {}, OPTIONS[section["kind"]]().model_dump(), f"datasets.{name}.options"
        )
        for stage, values in (section.get("overrides") or {}).items():
            found += _defaults_in(values, stage_defaults[stage].default.model_dump(), f"datasets.{name}.{stage}")
    assert found == []


def test_a_misspelled_dataset_option_is_an_error_naming_its_key(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets\.digits\.options\.mdoe: unknown key"):
        effective_config({"datasets": {"digits": DIGITS | {"options": {"mdoe": "RGB"}}}})
    with pytest.raises(ConfigError, match=r"datasets\.voice\.options\.n_mels: Input should be greater than or equal"):
        effective_config(
            {
                "datasets": {
                    "voice": {
                        "kind": "audio",
                        "root": "d",
                        "source": "w",
                        "classes": ["a", "b"],
                        "options": {"n_mels": 0},
                    }
                }
            }
        )
    cfg = effective_config(
        {
            "datasets": {
                "t": {"kind": "text", "root": "d", "source": "s.tsv", "classes": ["a", "b"], "options": {"max_len": 8}}
            }
        }
    )
    assert (type(cfg.data.options).__name__, cfg.data.options.max_len, cfg.data.options.min_count) == (
        "TextOptions",
        8,
        2,
    )
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # the kind types them back


def test_unknown_key_is_an_error_that_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"student\.epoch"):
        load_config(_write(tmp_path, "student:\n  epoch: 4\n"))


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown top-level keys \['data'\]"):
        load_config(_write(tmp_path, "data:\n  seed: 1\n"))


def test_out_of_range_value_names_key_and_bound(tmp_path):
    with pytest.raises(ConfigError, match=r"prune\.ratio.*less than 1"):
        load_config(_write(tmp_path, "prune:\n  ratio: 1.5\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_dataset_needs_its_kind_root_source_and_classes():
    with pytest.raises(ConfigError, match=r"datasets\.d\.kind: Field required\n.*datasets\.d\.root: Field required"):
        effective_config({"datasets": {"d": {"seed": 1}}})
    assert effective_config({}).data == DataConfig(name="digits", **DIGITS)  # no datasets: the built-in digits


def test_splits_must_leave_training_data():
    with pytest.raises(ConfigError, match="at least 20% for training"):
        effective_config({"datasets": {"d": DIGITS | {"val_fraction": 0.45, "test_fraction": 0.45}}})


def test_dataset_selection_and_overrides():
    params = {
        "dataset": "a",
        "gate": {"min_accuracy": 0.9},
        "datasets": {"a": DIGITS, "b": DIGITS | {"classes": ["x", "y"], "overrides": {"gate": {"min_accuracy": 0.5}}}},
    }
    a, b = effective_config(params), effective_config(params, "b")
    assert (a.data.name, a.gate.min_accuracy) == ("a", 0.9)
    assert (b.data.name, b.data.num_classes, b.gate.min_accuracy, b.gate.max_size_kb) == ("b", 2, 0.5, 200.0)
    with pytest.raises(ConfigError, match=r"unknown dataset 'c'; params.yaml defines \['a', 'b'\]"):
        effective_config(params, "c")
    with pytest.raises(ConfigError, match=r"overrides: unknown sections \['data'\]"):
        effective_config({"datasets": {"a": DIGITS | {"overrides": {"data": {}}}}})


def test_run_overrides_win_over_dataset_overrides_and_are_validated():
    params = {"datasets": {"b": DIGITS | {"overrides": {"gate": {"min_accuracy": 0.5}}}}}
    cfg = effective_config(
        params, "b", {"gate.min_accuracy": 0.8, "distill.hinton.temperature": 3, "distill.method": "dkd"}
    )
    assert (cfg.gate.min_accuracy, cfg.distill.methods, cfg.distill.options("hinton")) == (
        0.8,
        ["dkd"],
        {"temperature": 3},
    )
    with pytest.raises(ConfigError, match=r"student\.epoch"):
        effective_config(params, "b", {"student.epoch": 2})
    with pytest.raises(ConfigError, match=r"prune\.ratio.*less than 1"):
        effective_config(params, "b", {"prune.ratio": 3})
    with pytest.raises(ConfigError, match=r"'datasets\.b\.seed'.*versioned with the data by DVC"):
        effective_config(params, "b", {"datasets.b.seed": 1})


def test_auto_precision_is_resolved_to_what_the_cpu_computes(monkeypatch):
    from components import train
    from components.config.stages import TrainConfig
    from components.train import resolve_precision

    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"  # an emulated bf16 would be slower than fp32
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: kept
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


def test_a_target_is_a_device_agent_or_an_mcu_budget_and_the_gate_cannot_time_on_an_mcu():
    nucleo = {"ram_kb": 640, "flash_kb": 2048}
    agent = {"url": "https://board.local:8765", "token_env": "BOARD_TOKEN"}
    data = {"data": {"name": "d", "kind": "image", "root": ".", "source": "x", "classes": ["a", "b"]}}
    cfg = PipelineConfig.model_validate(data | {"benchmark": {"targets": {"nucleo": nucleo, "board": agent}}})
    assert list(cfg.benchmark.mcus()) == ["nucleo"] and list(cfg.benchmark.agents()) == ["board"]
    for bad, says in (
        ({"ram_kb": 640}, "either a device agent"),  # a budget needs both
        (nucleo | {"token_env": "X"}, "either a device agent"),
        (agent | {"ram_kb": 640}, "takes no ram_kb"),
    ):
        with pytest.raises(ValueError, match=says):
            PipelineConfig.model_validate(data | {"benchmark": {"targets": {"t": bad}}})
    with pytest.raises(ValueError, match="is an MCU budget, which is not timed"):
        PipelineConfig.model_validate(
            data | {"benchmark": {"targets": {"nucleo": nucleo}}, "gate": {"target": "nucleo"}}
        )
