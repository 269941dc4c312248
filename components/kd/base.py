"""The KD registry and what every method shares: typed options, the teacher as an objective sees it, the
variants a config asks for, and the base class of a method (see components.kd for how to add one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from components.data.base import Dataset
from components.train import Objective


class KDConfigError(ValueError):
    """A distill.* setting that names no method, an unknown option or a bad value; the message names the key."""


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the teacher as the objective sees it --------------------------------------------------------------------


class TeacherSignal:
    """Logits of a frozen teacher for a batch. `cached` holds its logits for every training row (fixed inputs,
    computed once and cached by content), or for every (view, row) of a pool of views (row `view * n + row`); a
    batch with keys (`idx` given, see components.train.Objective) is looked up there, a freshly augmented or mixed
    batch (`idx` None) is sent through the teacher."""

    def __init__(
        self,
        teacher: Callable[[torch.Tensor], torch.Tensor],
        cached: np.ndarray | None = None,
        module: nn.Module | None = None,
    ):
        self.teacher, self.module = teacher, module  # `module`: the torch teacher itself, for feature methods
        self.cached = None if cached is None else torch.from_numpy(np.asarray(cached, dtype=np.float32))

    def __call__(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is not None and self.cached is not None:
            return self.cached[idx].to(x.device)
        with torch.no_grad():
            return self.teacher(x).to(x.device).float()


# --- registry -------------------------------------------------------------------------------------------------


METHODS: dict[str, type[KDMethod]] = {}


def register(cls: type[KDMethod]) -> type[KDMethod]:
    assert cls.name not in METHODS and cls.name != "plain", cls.name
    METHODS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Variant:
    """One concrete way to train a student: a method name ("plain" for labels only) and its full options."""

    method: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.method}({opts})" if opts else self.method

    def build(self) -> KDMethod | None:
        return None if self.method == "plain" else METHODS[self.method](METHODS[self.method].Options(**self.options))


PLAIN = Variant("plain")


def make(name: str, options: dict | None = None) -> KDMethod:
    """The method `name` with `options` (missing keys take their defaults)."""
    if name not in METHODS:
        raise KDConfigError(f"distill.method {name!r} is not a KD method; expected one of {sorted(METHODS)}")
    cls = METHODS[name]
    try:
        return cls(cls.Options(**(options or {})))
    except ValidationError as e:
        lines = [f"distill.{name}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise KDConfigError("invalid KD options:\n  " + "\n  ".join(lines)) from None


FEATURES_NEED = (
    "needs one PyTorch teacher trained here (its intermediate features): it cannot use a "
    "teacher.source file or an ensemble (teacher.ensemble > 1)"
)


def resolve(distill, teacher=None) -> list[Variant]:
    """The variants a `distill` config section asks for (components.config.DistillConfig): every listed method with
    its options from `distill.<method>`, expanded (a sweep gives several). With the `teacher` section, a method the
    teacher cannot serve is refused too. Raises KDConfigError naming the bad key."""
    extra = set(distill.model_extra or {}) - set(METHODS)
    if extra:
        raise KDConfigError(
            f"distill: unknown keys {sorted(extra)}; expected 'method' and options sections named "
            f"after methods: {sorted(METHODS)}"
        )
    if teacher is not None and (teacher.source or teacher.ensemble > 1):
        for name in distill.methods:
            if METHODS.get(name) is not None and METHODS[name].uses_features:
                raise KDConfigError(f"distill.method {name!r} {FEATURES_NEED}")
    return [v for name in distill.methods for v in make(name, distill.options(name)).variants()]


def describe() -> dict[str, dict]:
    """Every method's one-line description and its options (default, description): the README's catalogue."""
    return {
        n: {
            "doc": (c.__doc__ or "").strip().splitlines()[0],
            "options": {k: (f.default, f.description) for k, f in c.Options.model_fields.items()},
        }
        for n, c in METHODS.items()
    }


# --- losses shared by methods ----------------------------------------------------------------------------------


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean: Hinton's soft term, on the scale of cross-entropy."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True
    ) * (t * t)


class KDMethod:
    """Base class. `loss(student_logits, teacher_logits, labels)` is the objective on a batch of logits."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    requires_pool: ClassVar[bool] = False  # cannot run without an unlabelled pool (datasets.NAME.unlabelled, or
    # `bench kd --labelled-fraction`)
    uses_features: ClassVar[bool] = False  # needs a PyTorch teacher's intermediate features
    cached_views: ClassVar[bool] = False  # its loss reads the teacher's logits on the student's own view alone, so a
    # pool of views with the teacher's logits cached (components.kd.views) can stand in for fresh augmentation

    def __init__(self, options: Options):
        self.o = options
        self.epoch, self.progress = 1, 0.0  # where training is: epoch 1.., and 0 at the first epoch to 1 at the last

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch, self.progress = epoch, (epoch - 1) / max(1, epochs - 1)

    @property
    def uses_pool(self) -> bool:
        """Whether the student also trains on the unlabelled pool when there is one."""
        return self.requires_pool

    def variants(self) -> list[Variant]:
        return [Variant(self.name, self.o.model_dump())]

    def loss(self, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_set(self, train: Dataset, pool: np.ndarray | None, pool_logits: np.ndarray | None) -> Dataset:
        """The rows the student trains on (default: the labelled train split)."""
        return train

    def objective(self, student: nn.Module, teacher: TeacherSignal, example: torch.Tensor) -> Objective:
        """The training objective of `student`; `example` is a batch of real inputs (for shape probes)."""
        return LogitObjective(self, teacher)


class LogitObjective(Objective):
    """Student and teacher logits on the same batch, combined by `method.loss` (with epoch-dependent weights)."""

    def __init__(self, method: KDMethod, teacher: TeacherSignal):
        self.method, self.teacher = method, teacher

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.method.set_epoch(epoch, epochs)

    def __call__(self, model, x, y, idx, gen):
        logits = model(x).float()
        return self.method.loss(logits, self.teacher(x, idx), y), logits
