"""Hinton knowledge distillation: softened-teacher KL (times T^2) weighted by alpha, plus CE on labels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.train import LossFn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), batch-mean."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * (t * t) * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def kd_objective(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """A training loss for `train.fit` that queries the frozen teacher on the same (augmented) batch."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher.to(x.device)(x)
        return kd_loss(logits, t_logits, y, temperature, alpha)

    return loss
