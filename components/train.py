"""Supervised training loop: seeded, early stopping on validation accuracy, fail-fast on NaN/Inf loss."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from components.augment import Views
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays; Linux reports it in
    /proc/cpuinfo's flags. Elsewhere bf16 would be emulated (slower than fp32), so the answer is no."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str = "auto") -> str:
    """`train.precision` made concrete for the training device `device` (`train.device`): `auto` is `bf16` on a
    CPU with native bf16 or a CUDA device that supports it, else `fp32`."""
    if precision != "auto":
        return precision
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` ("fp32": none) on `device`'s type."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _channels_last(model: nn.Module, precision: str) -> bool:
    """Whether `model` trains in channels_last: a 2-D convolutional network in bf16 (where oneDNN's and cuDNN's
    fast kernels want it)."""
    return precision == "bf16" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


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

    `idx` holds the batch's keys into values an objective may have precomputed (a KD teacher's cached logits):
    the rows' numbers in the training set when `x` holds them unchanged, `view * n + row` when `x` holds views of
    a pool (Views), None when `x` is a fresh augmentation. `gen` is the
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
        logits = model(x).float()
        return F.cross_entropy(logits, y), logits


class CrossEntropy(Objective):
    """Labels only: the plain student's and the teacher's loss, with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model, x, y, idx, gen):
        logits = model(x).float()
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


class Evaluation(NamedTuple):
    loss: float
    accuracy: float


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 512, precision: str = "fp32"
) -> Evaluation:
    """Loss and accuracy of a PyTorch model in the training's `precision` (training-time signal: early stopping;
    exported models are scored in fp32 through their runtime)."""
    model.eval()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    total_loss, correct = 0.0, 0
    last = _channels_last(model, precision)
    for i in range(0, len(y), batch_size):
        xb, yb = _layout(x[i : i + batch_size].to(device), last), y[i : i + batch_size].to(device)
        with autocast(device, precision):
            logits = model(xb).float()
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
    seconds: float = 0.0  # wall time of the epoch's training pass (not its validation)


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
    precision: str = "fp32",
    views: Views | None = None,
    optimizer: str = "adamw",
    schedule: str = "cosine",
) -> tuple[nn.Module, list[Epoch]]:
    """Train with `optimizer` ("adamw", or "sgd": Nesterov momentum 0.9) and `schedule` ("cosine" per epoch, or
    "onecycle": warm-up to `lr` over the first 25% of the steps, then cosine down, per step), early stopping after
    `patience` epochs without validation gain.

    Returns the model (on CPU, in eval mode, contiguous) with the weights of the best validation epoch (`checkpoint`
    "best") or of the last epoch ("last"), and one history row per epoch. Torch runs on `threads` threads meanwhile
    (`torch_settings`), forward passes in `precision` ("fp32" or "bf16" autocast; weights stay fp32). With `views`
    (a pool of augmentation draws, see Views) every training sample is one of its pool's views instead of a fresh
    `augment` draw, and the objective gets each sample's key into the pool.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' (resolve 'auto' first), got {precision!r}")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    with torch_settings(threads, deterministic):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        objective = (objective or Objective()).to(device)
        model.to(device)
        last = _channels_last(model, precision)
        if last:
            model.to(memory_format=torch.channels_last)
        batches = Batches(train, batch_size, gen, device, augment, views, last)
        opt, sched = _optimizer(
            [*model.parameters(), *objective.parameters()], optimizer, schedule, lr, weight_decay, epochs, batches.steps
        )
        history, best_state = _epochs(model, objective, opt, sched, batches, val, epochs, patience, precision, on_epoch)
        objective.close()
        assert best_state is not None
        if checkpoint == "best":
            model.load_state_dict(best_state)
        return model.cpu().to(memory_format=torch.contiguous_format).eval(), history


def _epochs(model, objective, opt, sched, batches, val, epochs, patience, precision, on_epoch):
    """The epochs of `fit` until `epochs` or early stopping: (history, the state of the best validation epoch)."""
    per_step = isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    best_key, best_state, stale, history = (-1.0, 0.0), None, 0, []
    for epoch in range(1, epochs + 1):
        objective.start_epoch(epoch, epochs)
        t0 = time.perf_counter()
        loss, accuracy = _epoch(model, objective, opt, batches, epoch, precision, sched if per_step else None)
        seconds = time.perf_counter() - t0
        if not per_step:
            sched.step()
        v = evaluate(model, val, batches.device, precision=precision)
        row = Epoch(
            epoch=epoch,
            train_loss=loss,
            train_accuracy=accuracy,
            val_loss=v.loss,
            val_accuracy=v.accuracy,
            seconds=seconds,
        )
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        if (v.accuracy, -v.loss) > best_key:
            best_key, best_state, stale = (v.accuracy, -v.loss), copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    return history, best_state


class Batches:
    """One epoch's training batches in a seeded random order, as `(x, y, keys)`: `x` augmented by a fresh draw of
    `augment`, or set to one of the `views` pool's views per sample, or unchanged; `keys` index what an objective
    may have precomputed per (sample, view) (None where a fresh draw made a new view)."""

    def __init__(self, train: Dataset, batch_size: int, gen, device, augment, views: Views | None, last: bool):
        self.x, self.y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        if views is not None and views.params.shape[1] != len(self.y):
            raise ValueError(f"the views pool covers {views.params.shape[1]} samples, the training set {len(self.y)}")
        self.batch_size, self.gen, self.device = batch_size, gen, device
        self.augment, self.views, self.last = augment, views, last

    def __len__(self) -> int:
        return len(self.y)

    @property
    def steps(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n, generator=self.gen)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            xb, yb, keys = self.x[idx], self.y[idx], idx
            if self.views is not None:  # one of the pool's views of each sample, its key view * n + row
                pick = torch.randint(0, self.views.count, (len(idx),), generator=self.gen)
                xb, keys = self.views.augmentation.apply(xb, self.views.params[pick, idx]), pick * n + idx
            elif self.augment is not None:
                xb, keys = self.augment(xb, self.gen), None
            yield _layout(xb.to(self.device), self.last), yb.to(self.device), keys


def _optimizer(params, optimizer: str, schedule: str, lr: float, weight_decay: float, epochs: int, steps: int):
    """The optimizer and learning-rate schedule `fit` names (see there)."""
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    if schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if schedule == "onecycle":
        return opt, torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.25, cycle_momentum=optimizer == "sgd"
        )
    raise ValueError(f"schedule must be 'cosine' or 'onecycle', got {schedule!r}")


def _epoch(
    model, objective: Objective, opt, batches: Batches, epoch: int, precision: str, sched=None
) -> tuple[float, float]:
    """One pass over the training batches: (mean training loss, training accuracy); `sched` steps per batch."""
    model.train()
    device = batches.device
    run_loss, run_correct = 0.0, 0
    for b, (xb, yb, keys) in enumerate(batches):
        with autocast(device, precision):
            loss, logits = objective(model, xb, yb, keys, batches.gen)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {epoch}, batch {b}; lower the learning rate "
                f"or check the inputs for NaN/Inf"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        run_loss += loss.item() * len(yb)
        run_correct += (logits.argmax(1) == yb).sum().item()
    return run_loss / len(batches), run_correct / len(batches)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
