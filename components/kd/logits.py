"""KD methods on logits alone: Hinton, DKD, DIST, and the adaptive Hinton sweep."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from components.kd.base import PLAIN, KDMethod, Options, Variant, register, soft_kl


@register
class Hinton(KDMethod):
    """Hinton et al. 2015: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(student, labels)."""

    name = "hinton"
    cached_views = True

    class Options(Options):
        temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions.")
        alpha: float = Field(
            0.5,
            ge=0,
            le=1,
            description="Weight of the soft term; (1 - alpha) weights the labels. 0 is the plain student.",
        )
        schedule: Literal["constant", "linear_decay"] = Field(
            "constant",
            description="'linear_decay' lowers alpha linearly to 0 over the epochs (the teacher guides "
            "early, the labels finish).",
        )

    def weight(self) -> float:
        return self.o.alpha * (1 - self.progress if self.o.schedule == "linear_decay" else 1.0)

    def loss(self, s, t, y):
        a = self.weight()
        return a * soft_kl(s, t, self.o.temperature) + (1 - a) * F.cross_entropy(s, y)


@register
class DKD(KDMethod):
    """Decoupled KD (Zhao et al. 2022): CE + alpha * TCKD (target vs rest) + beta * NCKD (among non-targets)."""

    name = "dkd"
    cached_views = True

    class Options(Options):
        alpha: float = Field(1.0, ge=0, description="Weight of target-class KD (binary: target vs all others).")
        beta: float = Field(2.0, ge=0, description="Weight of non-target-class KD (the teacher's dark knowledge).")
        temperature: float = Field(4.0, gt=0, description="Softmax temperature T (terms are scaled by T^2).")
        warmup_epochs: int = Field(20, ge=0, description="The KD terms ramp up linearly over this many epochs.")

    def loss(self, s, t, y):
        T = self.o.temperature
        gt = F.one_hot(y, s.shape[1]).bool()
        ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        # Binary distributions (p_target, p_rest); their KL is TCKD.
        bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], dim=1).clamp_min(1e-12)
        bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], dim=1).clamp_min(1e-12)
        tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T * T
        # Distributions over the non-target classes only (the target's logit pushed to -inf); their KL is NCKD.
        mask = gt * 1e4
        nckd = (
            F.kl_div(
                F.log_softmax(s / T - mask, dim=1),
                F.log_softmax(t / T - mask, dim=1),
                reduction="batchmean",
                log_target=True,
            )
            * T
            * T
        )
        ramp = min(1.0, self.epoch / self.o.warmup_epochs) if self.o.warmup_epochs else 1.0
        return F.cross_entropy(s, y) + ramp * (self.o.alpha * tckd + self.o.beta * nckd)


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of two (rows, cols) matrices."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register
class DIST(KDMethod):
    """DIST (Huang et al. 2022): match the teacher's relations, not its values: 1 - Pearson correlation of the
    class probabilities per sample (inter-class) and per class across the batch (intra-class), plus CE."""

    name = "dist"
    cached_views = True

    class Options(Options):
        beta: float = Field(1.0, ge=0, description="Weight of the inter-class relation (each sample's ranking).")
        gamma: float = Field(1.0, ge=0, description="Weight of the intra-class relation (each class across the batch).")
        temperature: float = Field(4.0, gt=0, description="Softmax temperature T (terms are scaled by T^2).")

    def loss(self, s, t, y):
        T = self.o.temperature
        ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        inter = 1 - _pearson(ps, pt).mean()
        intra = 1 - _pearson(ps.T, pt.T).mean()
        return F.cross_entropy(s, y) + T * T * (self.o.beta * inter + self.o.gamma * intra)


@register
class Adaptive(KDMethod):
    """Adaptive Hinton: every (T, alpha, schedule) of a small grid is trained and the best on validation is kept;
    alpha = 0 (the plain student) is in the grid, so on validation it never loses to plain (on test it may)."""

    name = "adaptive"

    class Options(Options):
        temperatures: list[float] = Field([1.0, 2.0, 4.0], min_length=1, description="Temperatures to try.")
        alphas: list[float] = Field([0.0, 0.5, 0.9], min_length=1, description="Alphas to try (0: plain).")
        schedules: list[Literal["constant", "linear_decay"]] = Field(
            ["constant"], min_length=1, description="Alpha schedules to try."
        )

    def variants(self):
        out = []
        for a in self.o.alphas:
            if a == 0:  # T and the schedule do not matter without a soft term: that is the plain student
                out.append(PLAIN)
                continue
            out += [
                Variant("hinton", Hinton.Options(temperature=t, alpha=a, schedule=s).model_dump())
                for t in self.o.temperatures
                for s in self.o.schedules
            ]
        return list({v.label: v for v in out}.values())  # unique, in order

    def loss(self, s, t, y):  # never trained as itself: `variants` are
        raise AssertionError("adaptive trains its variants")
