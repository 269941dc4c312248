"""Quantization-aware fine-tuning: INT8 rounding is simulated only inside the block, gradients pass it, and the
network leaves the block as a plain FP32 module."""

import pytest
import torch
from torch import nn

from components.qat import fake_quantized

pytestmark = pytest.mark.unit


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_weights_and_activations_are_rounded_inside_the_block_only():
    net, x = _net(), torch.randn(8, 1, 8, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fp32 = net.eval()(x)
    with fake_quantized(net.train()) as q:
        q(x)  # one training-mode pass sets the activation ranges
        w = q[0].weight  # the rounded weight: at most 255 levels per output channel, each a multiple of its scale
        for ch in w:
            scale = ch.abs().max() / 127
            assert torch.allclose(ch / scale, torch.round(ch / scale), atol=1e-3)
        rounded = q.eval()(x)
        assert not torch.equal(rounded, fp32) and torch.allclose(rounded, fp32, atol=0.2)
        q.train()
        loss = q(x).square().mean()
        loss.backward()  # the straight-through estimator: gradients reach the FP32 weights
        assert q[0].parametrizations.weight.original.grad.abs().sum() > 0
    assert set(net.state_dict()) == set(before)  # a plain module again: the same keys, no hooks
    assert not net[0]._forward_hooks and type(net[0]) is nn.Conv2d
    assert torch.equal(net[0].weight, before["0.weight"])  # no step taken: the FP32 weights are untouched
    plain = _net()
    plain.load_state_dict(net.state_dict())  # (training passes moved batch norm's running statistics)
    assert torch.equal(net.eval()(x), plain.eval()(x))  # nothing rounds any more
