"""Supervised training loop: seeded, early stopping on validation accuracy, fail-fast on NaN/Inf loss."""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.data.base import Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, x, y) -> loss
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
EpochCallback = Callable[[int, dict], None]


class NonFiniteLossError(FloatingPointError):
    pass


def select_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 512) -> dict:
    """Loss and accuracy of a PyTorch model (training-time signal; exported models are scored through ORT)."""
    model.eval()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"loss": total_loss / len(y), "accuracy": correct / len(y)}


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
    loss_fn: LossFn = cross_entropy,
    augment: Augment | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW + cosine schedule; keep the weights of the best validation epoch.

    Returns the model (best weights, on CPU, in eval mode) and one history row per epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    best_key, best_state, stale, history = (-1.0, 0.0), None, 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y_all), generator=gen)
        run_loss, run_correct = 0.0, 0
        for b, i in enumerate(range(0, len(order), batch_size)):
            idx = order[i:i + batch_size]
            xb, yb = x_all[idx], y_all[idx]
            if augment is not None:
                xb = augment(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss = loss_fn(logits, xb, yb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, batch {b}; lower the learning rate "
                                         f"or check the inputs for NaN/Inf")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.item() * len(yb)
            run_correct += (logits.argmax(1) == yb).sum().item()
        sched.step()
        v = evaluate(model, val, device)
        row = {"epoch": epoch, "train_loss": run_loss / len(y_all), "train_accuracy": run_correct / len(y_all),
               "val_loss": v["loss"], "val_accuracy": v["accuracy"]}
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        key = (v["accuracy"], -v["loss"])
        if key > best_key:
            best_key, best_state, stale = key, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


def shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image independently by up to `max_shift` pixels (zero padding)."""
    n, c, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
    return xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
