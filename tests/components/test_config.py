import pytest

from components.config import ConfigError, PipelineConfig, effective_config, load_config


def _write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_defaults_match_the_shipped_params_file():
    """The stage sections of params.yaml spell out the code's defaults (a dataset's `overrides` aside)."""
    from components.config import read_params
    from components.kd import resolve

    params = read_params("params.yaml")
    for section in params["datasets"].values():
        section.pop("overrides", None)
    shipped, default = effective_config(params), PipelineConfig()
    assert shipped.model_dump(exclude={"distill"}) == default.model_dump(exclude={"distill"})
    assert resolve(shipped.distill) == resolve(default.distill)  # the file spells out the method's defaults


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


def test_splits_must_leave_training_data():
    with pytest.raises(ConfigError, match="at least 20% for training"):
        effective_config({"datasets": {"d": {"val_fraction": 0.45, "test_fraction": 0.45}}})


def test_dataset_selection_and_overrides():
    params = {"dataset": "a", "gate": {"min_accuracy": 0.9},
              "datasets": {"a": {"kind": "image"}, "b": {"classes": ["x", "y"], "overrides": {"gate": {"min_accuracy": 0.5}}}}}
    a, b = effective_config(params), effective_config(params, "b")
    assert (a.data.name, a.gate.min_accuracy) == ("a", 0.9)
    assert (b.data.name, b.data.num_classes, b.gate.min_accuracy, b.gate.max_size_kb) == ("b", 2, 0.5, 200.0)
    with pytest.raises(ConfigError, match=r"unknown dataset 'c'; params.yaml defines \['a', 'b'\]"):
        effective_config(params, "c")
    with pytest.raises(ConfigError, match=r"overrides: unknown sections \['data'\]"):
        effective_config({"datasets": {"a": {"overrides": {"data": {}}}}})


def test_run_overrides_win_over_dataset_overrides_and_are_validated():
    params = {"datasets": {"b": {"overrides": {"gate": {"min_accuracy": 0.5}}}}}
    cfg = effective_config(params, "b", {"gate.min_accuracy": 0.8, "distill.hinton.temperature": 3,
                                         "distill.method": "dkd"})
    assert (cfg.gate.min_accuracy, cfg.distill.methods, cfg.distill.options("hinton")) == (0.8, ["dkd"],
                                                                                           {"temperature": 3})
    with pytest.raises(ConfigError, match=r"student\.epoch"):
        effective_config(params, "b", {"student.epoch": 2})
    with pytest.raises(ConfigError, match=r"prune\.ratio.*less than 1"):
        effective_config(params, "b", {"prune.ratio": 3})
    with pytest.raises(ConfigError, match=r"'datasets\.b\.seed'.*versioned with the data by DVC"):
        effective_config(params, "b", {"datasets.b.seed": 1})
