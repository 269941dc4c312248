import pytest
import torch

from components.models import build
from components.prune import prune_channels

pytestmark = pytest.mark.unit

SPEC = {"kind": "image", "input_shape": [1, 8, 8], "input_dtype": "float32", "scale": 16.0}


def test_pruning_physically_removes_channels_and_keeps_output_shape():
    model = build("image", "student", SPEC, 10, 16, seed=0)
    example = torch.zeros(1, 1, 8, 8)
    pruned, report = prune_channels(model, example, 0.25)
    assert report.channels_before == [16, 32, 32]
    assert report.channels_after == [12, 24, 24]
    assert [m.weight.shape[0] for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)] == [12, 24, 24]
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    x = torch.randn(7, 1, 8, 8)
    assert pruned(x).shape == model(x).shape == (7, 10)


def test_input_model_is_left_untouched():
    model = build("image", "student", SPEC, 10, 16, seed=0)
    prune_channels(model, torch.zeros(1, 1, 8, 8), 0.5)
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32, 32]


def test_ratio_zero_changes_nothing():
    model = build("image", "student", SPEC, 10, 16, seed=0)
    _, report = prune_channels(model, torch.zeros(1, 1, 8, 8), 0.0)
    assert report.params_after == report.params_before


def test_bad_ratio():
    with pytest.raises(ValueError, match="prune ratio"):
        prune_channels(build("image", "student", SPEC, 10, 4, seed=0), torch.zeros(1, 1, 8, 8), 1.0)
