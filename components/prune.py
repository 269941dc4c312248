"""Structured channel pruning that physically removes channels (torch-pruning)."""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict

from components.models import count_params, output_layer


class PruneReport(BaseModel):
    """A pruning before and after: parameters, MACs and the widths of the prunable layers; `torch_val_accuracy_before_
    finetune` is filled in by the caller that fine-tunes."""

    model_config = ConfigDict(extra="forbid")

    ratio: float
    params_before: int
    macs_before: int
    channels_before: list[int]
    params_after: int
    macs_after: int
    channels_after: list[int]
    torch_val_accuracy_before_finetune: float | None = None

    def numbers(self) -> dict[str, float]:
        """The report's scalars, as metrics to log."""
        return {k: v for k, v in self.model_dump().items() if isinstance(v, (int, float)) and v is not None}


def _size(model: torch.nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(parameters, MACs) of one forward pass of `example`."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(params), int(macs)


def conv_channels(model: torch.nn.Module) -> list[int]:
    """Widths of the prunable layers: conv output channels and hidden linear units (not the output layer)."""
    out, last = [], output_layer(model)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            out.append(m.out_channels)
        elif isinstance(m, torch.nn.Linear) and m is not last:
            out.append(m.out_features)
    return out


def prune_channels(model: torch.nn.Module, example: torch.Tensor, ratio: float) -> tuple[torch.nn.Module, PruneReport]:
    """Remove `ratio` of the channels of every prunable layer by L2 magnitude; the output layer keeps its classes.
    `example` is a batch of real inputs: torch-pruning traces the graph with it.

    Returns a pruned copy (the input model is untouched) and a before/after report.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    model = copy.deepcopy(model).cpu().eval()
    params_before, macs_before = _size(model, example)
    channels_before = conv_channels(model)
    if ratio > 0:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[output_layer(model)],
            # torch-pruning's default roots leave nn.Embedding whole; a text model's table is most of its size.
            root_module_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.LSTM, torch.nn.Embedding],
        )
        pruner.step()
    params_after, macs_after = _size(model, example)
    assert count_params(model) == params_after
    return model, PruneReport(
        ratio=ratio,
        params_before=params_before,
        macs_before=macs_before,
        channels_before=channels_before,
        params_after=params_after,
        macs_after=macs_after,
        channels_after=conv_channels(model),
    )
