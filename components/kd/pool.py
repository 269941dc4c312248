"""KD methods that look past the labelled rows: function matching (mixed-up views, the unlabelled pool) and
pseudo-labelling."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from components.data.base import Dataset
from components.kd.base import KDConfigError, KDMethod, LogitObjective, Options, Variant, make, register, soft_kl


@register
class FunctionMatching(KDMethod):
    """Function matching (Beyer et al. 2022): teacher and student see the same mixed-up view of the batch, and the
    student matches the teacher's outputs on it (KL only, no labels). Patient: give every student long
    `student.epochs` (the plain student gets the same)."""

    name = "function_matching"

    class Options(Options):
        temperature: float = Field(1.0, gt=0, description="Softmax temperature T of the KL.")
        mixup_alpha: float = Field(
            1.0,
            ge=0,
            description="Mixing weights ~ Beta(a, a) per sample (1: uniform); 0 "
            "turns mixup off (the kind's augmentation only).",
        )
        use_pool: bool = Field(
            True, description="Also match the teacher on the unlabelled pool, when there is one (no labels are needed)."
        )

    @property
    def uses_pool(self) -> bool:
        return self.o.use_pool

    def loss(self, s, t, y):
        return soft_kl(s, t, self.o.temperature)

    def training_set(self, train, pool, pool_logits):
        if pool is None or pool_logits is None or not len(pool):
            return train
        return Dataset(
            np.concatenate([train.x, pool]), np.concatenate([train.y, pool_logits.argmax(1).astype(train.y.dtype)])
        )

    def objective(self, student, teacher, example):
        return MixedViewObjective(self, teacher)


def mixup(x: torch.Tensor, gen: torch.Generator, alpha: float) -> torch.Tensor:
    """Each sample mixed with a random other one of the batch, weights ~ Beta(alpha, alpha) drawn from `gen`."""
    if alpha <= 0 or len(x) < 2:
        return x
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, len(x)).astype(np.float32)).to(x.device)
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    lam = lam.view(-1, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[perm]


class MixedViewObjective(LogitObjective):
    def __call__(self, model, x, y, idx, gen):
        if x.is_floating_point():  # token ids cannot be mixed: text keeps the kind's augmentation only
            x = mixup(x, gen, self.method.o.mixup_alpha)
            idx = None  # a new view: the teacher must see it
        logits = model(x)
        return self.method.loss(logits, self.teacher(x, idx), y), logits


@register
class PseudoLabel(KDMethod):
    """Pseudo-labelling: the teacher labels an unlabelled pool (its argmax; soft targets through the base loss),
    and the student trains on the labelled rows plus the pool with a logit KD loss (`base`)."""

    name = "pseudo_label"
    requires_pool = True

    class Options(Options):
        base: Literal["hinton", "dkd", "dist"] = Field(
            "hinton", description="The logit KD loss on labelled and pseudo-labelled rows."
        )
        base_options: dict = Field(
            {"temperature": 2.0, "alpha": 0.5},
            description="Options of the base loss (see its method), e.g. hinton's T and alpha.",
        )
        min_confidence: float = Field(
            0.0,
            ge=0,
            le=1,
            description="Pool rows whose teacher probability of its top class is below this are left out.",
        )

    def __init__(self, options: Options):
        super().__init__(options)
        self.base = make(options.base, options.base_options)

    def set_epoch(self, epoch, epochs):  # the base loss keeps its own schedule (dkd's warm-up, hinton's decay)
        super().set_epoch(epoch, epochs)
        self.base.set_epoch(epoch, epochs)

    def variants(self):
        # Store the base's options in full, so that a default changed later cannot hide behind an equal spec.
        return [Variant(self.name, self.o.model_dump() | {"base_options": self.base.o.model_dump()})]

    def loss(self, s, t, y):
        return self.base.loss(s, t, y)

    def training_set(self, train, pool, pool_logits):
        if pool is None or pool_logits is None or len(pool) == 0:
            raise KDConfigError(
                "distill.method 'pseudo_label' needs an unlabelled pool: set datasets.NAME.unlabelled "
                "(`edgekd data add NAME ... --unlabelled PATH`) or run `edgekd bench kd "
                "--labelled-fraction F`"
            )
        z = pool_logits - pool_logits.max(1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        keep = prob.max(1) >= self.o.min_confidence
        return Dataset(
            np.concatenate([train.x, pool[keep]]),
            np.concatenate([train.y, pool_logits[keep].argmax(1).astype(train.y.dtype)]),
        )
