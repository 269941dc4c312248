"""Feature-matching KD: multi-level hints (FitNets) between the student's and the teacher's activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from components.kd.base import (
    FEATURES_NEED,
    KDConfigError,
    KDMethod,
    LogitObjective,
    Options,
    TeacherSignal,
    register,
    soft_kl,
)


def feature_points(model: nn.Module) -> list[nn.Module]:
    """The activations a feature method can tap: the ReLUs of the model's body, input to output."""
    body = getattr(model, "body", model)
    return [m for m in body.modules() if isinstance(m, nn.ReLU)]


def matched_levels(n_student: int, n_teacher: int, levels: int) -> list[tuple[int, int]]:
    """Pairs (student point, teacher point) at the same relative depths 1/levels, 2/levels, ..., 1."""
    levels = max(1, min(levels, n_student, n_teacher))
    return [(round(n_student * j / levels) - 1, round(n_teacher * j / levels) - 1) for j in range(1, levels + 1)]


class _Tap:
    def __init__(self, modules: list[nn.Module]):
        self.out: list[torch.Tensor | None] = [None] * len(modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i):
        def hook(module, inputs, output):
            self.out[i] = output

        return hook


def _projection(cs: int, ct: int, ndim: int) -> nn.Module:
    """A learned 1x1 map from the student's channels to the teacher's, for (N, C), (N, C, L) or (N, C, H, W)."""
    return {2: nn.Linear, 3: lambda a, b: nn.Conv1d(a, b, 1), 4: lambda a, b: nn.Conv2d(a, b, 1)}[ndim](cs, ct)


def _align(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger feature map to the other's spatial size."""
    if s.dim() <= 2 or s.shape[2:] == t.shape[2:]:
        return s, t
    size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
    pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
    return pool(s, size), pool(t, size)


@register
class Hint(KDMethod):
    """Multi-level hints (FitNets, Romero et al. 2015): at `levels` matched depths, a learned 1x1 projection of the
    student's activations regresses the teacher's (MSE), added to Hinton's loss on the logits."""

    name = "hint"
    uses_features = True

    class Options(Options):
        levels: int = Field(
            2,
            ge=1,
            description="How many depths are matched (evenly spaced, the last one is the features before the head).",
        )
        weight: float = Field(1.0, ge=0, description="Weight of the summed feature MSE.")
        temperature: float = Field(2.0, gt=0, description="Softmax temperature of the logit term.")
        alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft logit term; (1 - alpha) weights labels.")

    def loss(self, s, t, y):
        return self.o.alpha * soft_kl(s, t, self.o.temperature) + (1 - self.o.alpha) * F.cross_entropy(s, y)

    def feature_loss(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], projections: nn.ModuleList) -> torch.Tensor:
        total = 0.0
        for (s, t), proj in zip(pairs, projections):
            s, t = _align(proj(s), t)
            total = total + F.mse_loss(s, t)
        return self.o.weight * total

    def objective(self, student, teacher, example):
        if teacher.module is None:
            raise KDConfigError(f"distill.method 'hint' {FEATURES_NEED}")
        return HintObjective(self, student, teacher, example)


class HintObjective(LogitObjective):
    def __init__(self, method: Hint, student: nn.Module, teacher: TeacherSignal, example: torch.Tensor):
        super().__init__(method, teacher)
        sp, tp = feature_points(student), feature_points(teacher.module)
        pairs = matched_levels(len(sp), len(tp), method.o.levels)
        self.s_tap, self.t_tap = _Tap([sp[i] for i, _ in pairs]), _Tap([tp[j] for _, j in pairs])
        # One probe forward (eval mode: BatchNorm statistics untouched) tells each level's channel counts.
        modes = student.training, teacher.module.training
        student.eval(), teacher.module.eval()
        with torch.no_grad():  # each net where it lives (a teacher may already sit on the GPU)
            for net in (student, teacher.module):
                net(example.to(next(net.parameters()).device))
        student.train(modes[0]), teacher.module.train(modes[1])
        self.projections = nn.ModuleList(
            _projection(s.shape[1], t.shape[1], s.dim()) for s, t in zip(self.s_tap.out, self.t_tap.out)
        )

    def parameters(self):
        return list(self.projections.parameters())

    def to(self, device):
        self.projections.to(device)
        return self

    def close(self) -> None:
        for h in self.s_tap.handles + self.t_tap.handles:
            h.remove()

    def __call__(self, model, x, y, idx, gen):
        logits = model(x)
        with torch.no_grad():
            t_logits = self.teacher.module.to(x.device)(x)
        pairs = [(s, t.detach()) for s, t in zip(self.s_tap.out, self.t_tap.out)]
        return self.method.loss(logits, t_logits, y) + self.method.feature_loss(pairs, self.projections), logits
