"""Cached teacher views (FKD, Shen & Xing 2022): a pool of `count` augmentation draws per training sample, and the
teacher's logits on each, computed once, so that a logit-KD student trains on exactly those views without running
the teacher at every step.

View v of every sample is drawn from its own generator (seeded by the seed and v), so one view can be computed
apart from the others (in parallel, in any order) and a pool of more views keeps the views of a smaller one.
Function matching and the feature methods stay online: they need fresh, consistent views (Beyer et al. 2022) or the
teacher's inner layers on each.
"""

from __future__ import annotations

import numpy as np
import torch

from components.augment import Augmentation, Views
from components.teachers import TeacherFn
from components.train import autocast


def view_seed(seed: int, view: int) -> int:
    """The seed of view `view`'s generator: distinct views, distinct streams, independent of the pool's size."""
    return (seed * 1_000_003 + view) % (2**63)


def draw_view(augmentation: Augmentation, n: int, seed: int, view: int) -> torch.Tensor:
    """The (n, P) parameters of view `view` of n samples."""
    return augmentation.draw(n, torch.Generator().manual_seed(view_seed(seed, view)))


def draw_views(augmentation: Augmentation, n: int, count: int, seed: int) -> Views:
    """`count` views of n samples."""
    return Views(augmentation, torch.stack([draw_view(augmentation, n, seed, v) for v in range(count)]))


@torch.no_grad()
def view_logits(
    teacher: TeacherFn,
    x: np.ndarray,
    augmentation: Augmentation,
    params: torch.Tensor,
    precision: str = "fp32",
    batch_size: int = 512,
) -> np.ndarray:
    """The teacher's logits (float32, (n, classes)) on one view of every sample: `params` (n, P) of that view, in
    the training's `precision` (what the teacher would compute online in the same step)."""
    device = torch.device("cpu")
    out = []
    for i in range(0, len(x), batch_size):
        xb = augmentation.apply(torch.from_numpy(x[i : i + batch_size]), params[i : i + batch_size])
        if precision == "bf16" and xb.dim() == 4:  # as the student's batches: oneDNN's fast bf16 convolutions
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out.append(teacher(xb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)
