import pytest

from components.config import ConfigError, PipelineConfig, load_config


def test_defaults_match_the_shipped_params_file():
    assert load_config("params.yaml") == PipelineConfig()


def test_unknown_key_is_an_error_that_names_it(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("distill:\n  temprature: 4\n")
    with pytest.raises(ConfigError, match=r"distill\.temprature"):
        load_config(p)


def test_out_of_range_value_names_key_and_bound(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("prune:\n  ratio: 1.5\n")
    with pytest.raises(ConfigError, match=r"prune\.ratio.*less than 1"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_splits_must_leave_training_data(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  val_fraction: 0.45\n  test_fraction: 0.45\n")
    with pytest.raises(ConfigError, match="at least 20% for training"):
        load_config(p)
