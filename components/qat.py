"""Quantization-aware fine-tuning: a network trained with INT8 rounding simulated in its forward pass, so that its
weights settle where ONNX Runtime's static INT8 (components/quantize.py) loses little.

While `fake_quantized` holds, every conv and linear weight is rounded to symmetric INT8 per output channel (as
static INT8 quantizes weights), and the output of every conv, linear, batch-norm and ReLU module to asymmetric UINT8
per tensor over a running min/max (as static INT8 quantizes activations, U8S8). Gradients pass the rounding
unchanged (the straight-through estimator of `torch.fake_quantize_*`). The block's exit leaves the plain FP32
network with its fine-tuned weights: it is exported and quantized by ONNX Runtime like any other, calibrated on the
same train samples. What the simulation cannot see: ONNX export folds batch norm into the conv before quantizing,
so a conv weight is rounded here before that scaling (its output after batch norm is rounded as deployed).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
ACTIVATIONS = WEIGHTED + (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU)
MOMENTUM = 0.1  # of the running activation min/max


class WeightInt8(nn.Module):
    """A weight rounded to symmetric INT8 per output channel (scale: the channel's absolute maximum / 127)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=1e-8) / 127.0
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


class ActivationUint8:
    """A forward hook rounding a module's output to UINT8 over its running min/max (updated in training mode)."""

    def __init__(self) -> None:
        self.lo: float | None = None
        self.hi: float | None = None

    def __call__(self, module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        if module.training:
            lo, hi = min(float(out.detach().min()), 0.0), max(float(out.detach().max()), 0.0)
            self.lo = lo if self.lo is None else (1 - MOMENTUM) * self.lo + MOMENTUM * lo
            self.hi = hi if self.hi is None else (1 - MOMENTUM) * self.hi + MOMENTUM * hi
        if self.lo is None or self.hi <= self.lo:
            return out
        scale = (self.hi - self.lo) / 255.0
        zero = int(round(-self.lo / scale))
        return torch.fake_quantize_per_tensor_affine(out, scale, zero, 0, 255)


@contextmanager
def fake_quantized(model: nn.Module):
    """INT8 rounding simulated in `model`'s forward pass for the block (see the module's docstring); on exit the
    model is its plain FP32 self again, with whatever weights training left."""
    weighted = [m for m in model.modules() if isinstance(m, WEIGHTED)]
    hooks = [m.register_forward_hook(ActivationUint8()) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    for m in weighted:
        parametrize.register_parametrization(m, "weight", WeightInt8())
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        for m in weighted:
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
