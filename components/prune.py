"""Structured channel pruning that physically removes channels (torch-pruning)."""
from __future__ import annotations

import copy

import torch
import torch_pruning as tp

from components.models import Classifier, count_params


def measure(model: torch.nn.Module, example: torch.Tensor) -> dict:
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {"params": int(params), "macs": int(macs)}


def conv_channels(model: Classifier) -> list[int]:
    """Widths of the prunable layers: conv output channels and hidden linear units (not the output layer)."""
    out = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            out.append(m.out_channels)
        elif isinstance(m, torch.nn.Linear) and m is not model.output_layer:
            out.append(m.out_features)
    return out


def prune_channels(model: Classifier, example: torch.Tensor, ratio: float) -> tuple[Classifier, dict]:
    """Remove `ratio` of the channels of every prunable layer by L2 magnitude; the output layer keeps its classes.
    `example` is a batch of real inputs: torch-pruning traces the graph with it.

    Returns a pruned copy (the input model is untouched) and a before/after report.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    model = copy.deepcopy(model).cpu().eval()
    before = measure(model, example) | {"channels": conv_channels(model)}
    if ratio > 0:
        pruner = tp.pruner.BasePruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, ignored_layers=[model.output_layer],
            # torch-pruning's default roots leave nn.Embedding whole; a text model's table is most of its size.
            root_module_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.LSTM, torch.nn.Embedding],
        )
        pruner.step()
    after = measure(model, example) | {"channels": conv_channels(model)}
    assert count_params(model) == after["params"]
    report = {"ratio": ratio, **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}
    return model, report
