"""The network every architecture builds: a feature body and a linear head (what pruning must leave alone)."""

from __future__ import annotations

import torch
from torch import nn


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
