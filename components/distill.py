"""Train one student variant: the plain student (labels only) or a KD method of components.kd, on the same budget.

Only the objective (and, for pool methods, the rows) differs between variants; everything passed to `fit` (epochs,
optimizer, schedule, augmentation, stopping rule, seed) is the caller's and is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from components.augment import Augmentation, Views
from components.data.base import Dataset
from components.kd import TeacherSignal, Variant
from components.teachers import TeacherFn
from components.train import CrossEntropy, Epoch, fit

LogitsOf = Callable[[np.ndarray], np.ndarray]  # inputs -> the teacher's logits (the caller may cache by content)
# (training inputs, their augmentation) -> a pool of views and the teacher's logits on each, (count * n, classes)
ViewsOf = Callable[[np.ndarray, Augmentation], tuple[Views, np.ndarray]]


def train_variant(
    student: nn.Module,
    variant: Variant,
    train: Dataset,
    val: Dataset,
    *,
    teacher: TeacherFn | None = None,
    teacher_module: nn.Module | None = None,
    logits_of: LogitsOf | None = None,
    pool: np.ndarray | None = None,
    views_of: ViewsOf | None = None,
    **fit_kwargs,
) -> tuple[nn.Module, list[Epoch]]:
    """Train `student` as `variant` says. KD variants need `teacher` (logits of a batch) and `logits_of` (logits of
    fixed inputs: the training rows when nothing augments them, and the unlabelled `pool`); feature methods need
    the torch `teacher_module`. With `views_of`, a method whose loss reads only the teacher's logits
    (`cached_views`) trains on a pool of augmented views whose teacher logits were computed once, instead of
    running the teacher on a fresh view at every step."""
    method = variant.build()
    if method is None:
        return fit(student, train, val, objective=CrossEntropy(), **fit_kwargs)
    assert teacher is not None and logits_of is not None, "a KD variant needs a teacher"
    pool_logits = logits_of(pool) if method.uses_pool and pool is not None and len(pool) else None
    rows = method.training_set(train, pool, pool_logits)
    augment = fit_kwargs.get("augment")
    if views_of is not None and method.cached_views and isinstance(augment, Augmentation) and rows is train:
        views, cached = views_of(rows.x, augment)
        signal = TeacherSignal(teacher, cached, teacher_module)
        objective = method.objective(student, signal, torch.from_numpy(rows.x[:2]))
        return fit(student, rows, val, objective=objective, views=views, **fit_kwargs)
    fixed = augment is None  # augmented rows differ every epoch: the teacher sees each batch
    signal = TeacherSignal(teacher, logits_of(rows.x) if fixed else None, teacher_module)
    objective = method.objective(student, signal, torch.from_numpy(rows.x[:2]))
    return fit(student, rows, val, objective=objective, **fit_kwargs)
