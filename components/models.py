"""Teacher and student architectures per data kind, built from config."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _flat_size(body: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *input_shape)).numel())


class Classifier(nn.Module):
    """A feature body followed by a linear head; the head is what pruning must leave alone."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @property
    def output_layer(self) -> nn.Module:
        return [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]


def image_teacher(spec: dict, num_classes: int, width: int) -> Classifier:
    input_shape = tuple(spec["input_shape"])
    c = input_shape[0]
    body = nn.Sequential(
        *_conv(c, width), *_conv(width, 2 * width), nn.MaxPool2d(2),
        *_conv(2 * width, 4 * width), nn.MaxPool2d(2), nn.Flatten(),
    )
    n = _flat_size(body, input_shape)
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(n, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return Classifier(body, head)


def image_student(spec: dict, num_classes: int, width: int) -> Classifier:
    input_shape = tuple(spec["input_shape"])
    c = input_shape[0]
    body = nn.Sequential(*_conv(c, width), nn.MaxPool2d(2), *_conv(width, 2 * width), nn.MaxPool2d(2), nn.Flatten())
    return Classifier(body, nn.Sequential(nn.Linear(_flat_size(body, input_shape), num_classes)))


Builder = Callable[[dict, int, int], Classifier]  # (preprocessing spec, num_classes, width)
ARCHITECTURES: dict[str, dict[str, Builder]] = {"image": {"teacher": image_teacher, "student": image_student}}


def build(kind: str, role: str, spec: dict, num_classes: int, width: int, seed: int) -> Classifier:
    """Build the `role` ("teacher" or "student") network of data kind `kind` for inputs described by the
    preprocessing `spec` (components.preprocess), initialised from `seed`."""
    if kind not in ARCHITECTURES:
        raise ValueError(f"no architectures for data kind {kind!r}; expected one of {sorted(ARCHITECTURES)}")
    if role not in ARCHITECTURES[kind]:
        raise ValueError(f"unknown model role {role!r}; expected one of {sorted(ARCHITECTURES[kind])}")
    torch.manual_seed(seed)
    return ARCHITECTURES[kind][role](spec, num_classes, width)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
