"""Supervised training loop: seeded, early stopping on validation accuracy, fail-fast on NaN/Inf loss."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from components.data.base import Dataset

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    pass


def select_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


@contextmanager
def torch_settings(threads: int, deterministic: bool = True) -> Iterator[None]:
    """Torch on `threads` intra-op threads, with deterministic algorithms or not, for the block; both set back after.

    A float sum rounds differently when a different number of threads share it, so training is repeatable only at
    a fixed thread count; the count is set here, in the training's own thread, not left to whatever the process
    (or the thread pool a Prefect task runs in) happens to have."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what cuBLAS needs to be deterministic
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


class Objective:
    """What a training step minimises: `objective(model, x, y, idx, gen) -> (loss, logits)`.

    `idx` holds the batch's row numbers in the training set when `x` holds those rows unchanged (no augmentation),
    else None, so an objective may look precomputed values up (a KD teacher's cached logits). `gen` is the
    training's seeded generator, for objectives that draw random views. An objective may bring trainable
    parameters of its own (e.g. feature projections), which the optimizer then updates with the model's.
    """

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def to(self, device: torch.device) -> Objective:
        return self

    def start_epoch(self, epoch: int, epochs: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


class CrossEntropy(Objective):
    """Labels only: the plain student's and the teacher's loss, with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model, x, y, idx, gen):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


class Evaluation(NamedTuple):
    loss: float
    accuracy: float


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 512) -> Evaluation:
    """Loss and accuracy of a PyTorch model (training-time signal; exported models are scored through ORT)."""
    model.eval()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return Evaluation(total_loss / len(y), correct / len(y))


class Epoch(BaseModel):
    """One epoch of training: its number (from 1), the training loss and accuracy over its batches, and the
    validation loss and accuracy after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


EpochCallback = Callable[[int, Epoch], None]


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int,
    seed: int,
    device: torch.device,
    weight_decay: float = 0.0,
    objective: Objective | None = None,
    augment: Augment | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint: str = "best",
    threads: int = 1,
    deterministic: bool = True,
) -> tuple[nn.Module, list[Epoch]]:
    """Train with AdamW + cosine schedule, early stopping after `patience` epochs without validation gain.

    Returns the model (on CPU, in eval mode) with the weights of the best validation epoch (`checkpoint` "best") or
    of the last epoch ("last"), and one history row per epoch. Torch runs on `threads` threads meanwhile
    (`torch_settings`).
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    with torch_settings(threads, deterministic):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        objective = (objective or Objective()).to(device)
        model.to(device)
        opt = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        best_key, best_state, stale, history = (-1.0, 0.0), None, 0, []
        for epoch in range(1, epochs + 1):
            objective.start_epoch(epoch, epochs)
            loss, accuracy = _epoch(model, objective, opt, train, batch_size, gen, device, augment, epoch)
            sched.step()
            v = evaluate(model, val, device)
            history.append(
                row := Epoch(
                    epoch=epoch, train_loss=loss, train_accuracy=accuracy, val_loss=v.loss, val_accuracy=v.accuracy
                )
            )
            if on_epoch is not None:
                on_epoch(epoch, row)
            if (v.accuracy, -v.loss) > best_key:
                best_key, best_state, stale = (v.accuracy, -v.loss), copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
        objective.close()
        assert best_state is not None
        if checkpoint == "best":
            model.load_state_dict(best_state)
        return model.cpu().eval(), history


def _epoch(
    model,
    objective: Objective,
    opt,
    train: Dataset,
    batch_size: int,
    gen: torch.Generator,
    device: torch.device,
    augment: Augment | None,
    epoch: int,
) -> tuple[float, float]:
    """One pass over `train` in a seeded random order: (mean training loss, training accuracy)."""
    model.train()
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    order = torch.randperm(len(y_all), generator=gen)
    run_loss, run_correct = 0.0, 0
    for b, i in enumerate(range(0, len(order), batch_size)):
        idx = order[i : i + batch_size]
        xb, yb = x_all[idx], y_all[idx]
        if augment is not None:
            xb = augment(xb, gen)
        xb, yb = xb.to(device), yb.to(device)
        loss, logits = objective(model, xb, yb, None if augment is not None else idx, gen)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {epoch}, batch {b}; lower the learning rate "
                f"or check the inputs for NaN/Inf"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss += loss.item() * len(yb)
        run_correct += (logits.argmax(1) == yb).sum().item()
    return run_loss / len(y_all), run_correct / len(y_all)


def shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1, flip: bool = False) -> torch.Tensor:
    """Shift each image independently by up to `max_shift` pixels (zero padding); with `flip`, also mirror a random
    half of them left to right (natural photos: CIFAR-10's standard augmentation with `max_shift` 4)."""
    n, c, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
    out = xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=gen) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
