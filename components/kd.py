"""Knowledge-distillation methods: one registered class each, picked by name in params.yaml (`distill.method`).

A method has typed, described options (a pydantic model: unknown keys and out-of-range values are errors) and
builds the training objective of the student from a frozen teacher. To add one: subclass `KDMethod`, give it a
`name`, an `Options` model and a `loss` (or override `objective` / `training_set` / `variants` where it needs
more), decorate it with `@register`, and add a unit test with hand-computed values to tests/components/test_kd.py.

The student of every method gets the same budget as the plain student (components.train.fit with the `student`
section); only the objective differs. Every method here keeps a label term unless its paper drops it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
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
    computed once and cached by content); a batch of unchanged rows (`idx` given) is looked up there, an augmented
    or mixed batch (`idx` None) is sent through the teacher."""

    def __init__(self, teacher: Callable[[torch.Tensor], torch.Tensor], cached: np.ndarray | None = None,
                 module: nn.Module | None = None):
        self.teacher, self.module = teacher, module  # `module`: the torch teacher itself, for feature methods
        self.cached = None if cached is None else torch.from_numpy(np.asarray(cached, dtype=np.float32))

    def __call__(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is not None and self.cached is not None:
            return self.cached[idx].to(x.device)
        with torch.no_grad():
            return self.teacher(x).to(x.device).float()


# --- registry -------------------------------------------------------------------------------------------------


METHODS: dict[str, type["KDMethod"]] = {}


def register(cls: type["KDMethod"]) -> type["KDMethod"]:
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

    def build(self) -> "KDMethod | None":
        return None if self.method == "plain" else METHODS[self.method](METHODS[self.method].Options(**self.options))


PLAIN = Variant("plain")


def make(name: str, options: dict | None = None) -> "KDMethod":
    """The method `name` with `options` (missing keys take their defaults)."""
    if name not in METHODS:
        raise KDConfigError(f"distill.method {name!r} is not a KD method; expected one of {sorted(METHODS)}")
    cls = METHODS[name]
    try:
        return cls(cls.Options(**(options or {})))
    except ValidationError as e:
        lines = [f"distill.{name}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise KDConfigError("invalid KD options:\n  " + "\n  ".join(lines)) from None


FEATURES_NEED = ("needs one PyTorch teacher trained here (its intermediate features): it cannot use a "
                 "teacher.source file or an ensemble (teacher.ensemble > 1)")


def resolve(distill, teacher=None) -> list[Variant]:
    """The variants a `distill` config section asks for (components.config.DistillConfig): every listed method with
    its options from `distill.<method>`, expanded (a sweep gives several). With the `teacher` section, a method the
    teacher cannot serve is refused too. Raises KDConfigError naming the bad key."""
    extra = set(distill.model_extra or {}) - set(METHODS)
    if extra:
        raise KDConfigError(f"distill: unknown keys {sorted(extra)}; expected 'method' and options sections named "
                            f"after methods: {sorted(METHODS)}")
    if teacher is not None and (teacher.source or teacher.ensemble > 1):
        for name in distill.methods:
            if METHODS.get(name) is not None and METHODS[name].uses_features:
                raise KDConfigError(f"distill.method {name!r} {FEATURES_NEED}")
    return [v for name in distill.methods for v in make(name, distill.options(name)).variants()]


def describe() -> dict[str, dict]:
    """Every method's one-line description and its options (default, description): the README's catalogue."""
    return {n: {"doc": (c.__doc__ or "").strip().splitlines()[0],
                "options": {k: (f.default, f.description) for k, f in c.Options.model_fields.items()}}
            for n, c in METHODS.items()}


# --- losses shared by methods ----------------------------------------------------------------------------------


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean: Hinton's soft term, on the scale of cross-entropy."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                    log_target=True) * (t * t)


class KDMethod:
    """Base class. `loss(student_logits, teacher_logits, labels)` is the objective on a batch of logits."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    requires_pool: ClassVar[bool] = False  # cannot run without an unlabelled pool (datasets.NAME.unlabelled, or
    # `bench kd --labelled-fraction`)
    uses_features: ClassVar[bool] = False  # needs a PyTorch teacher's intermediate features

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
        logits = model(x)
        return self.method.loss(logits, self.teacher(x, idx), y), logits


# --- the catalogue ---------------------------------------------------------------------------------------------


@register
class Hinton(KDMethod):
    """Hinton et al. 2015: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(student, labels)."""

    name = "hinton"

    class Options(Options):
        temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions.")
        alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft term; (1 - alpha) weights the labels. "
                                                          "0 is the plain student.")
        schedule: Literal["constant", "linear_decay"] = Field(
            "constant", description="'linear_decay' lowers alpha linearly to 0 over the epochs (the teacher guides "
                                    "early, the labels finish).")

    def weight(self) -> float:
        return self.o.alpha * (1 - self.progress if self.o.schedule == "linear_decay" else 1.0)

    def loss(self, s, t, y):
        a = self.weight()
        return a * soft_kl(s, t, self.o.temperature) + (1 - a) * F.cross_entropy(s, y)


@register
class DKD(KDMethod):
    """Decoupled KD (Zhao et al. 2022): CE + alpha * TCKD (target vs rest) + beta * NCKD (among non-targets)."""

    name = "dkd"

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
        nckd = F.kl_div(F.log_softmax(s / T - mask, dim=1), F.log_softmax(t / T - mask, dim=1),
                        reduction="batchmean", log_target=True) * T * T
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

    class Options(Options):
        beta: float = Field(1.0, ge=0, description="Weight of the inter-class relation (each sample's ranking).")
        gamma: float = Field(1.0, ge=0, description="Weight of the intra-class relation (each class across the "
                                                    "batch).")
        temperature: float = Field(4.0, gt=0, description="Softmax temperature T (terms are scaled by T^2).")

    def loss(self, s, t, y):
        T = self.o.temperature
        ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        inter = 1 - _pearson(ps, pt).mean()
        intra = 1 - _pearson(ps.T, pt.T).mean()
        return F.cross_entropy(s, y) + T * T * (self.o.beta * inter + self.o.gamma * intra)


@register
class FunctionMatching(KDMethod):
    """Function matching (Beyer et al. 2022): teacher and student see the same mixed-up view of the batch, and the
    student matches the teacher's outputs on it (KL only, no labels). Patient: give every student long
    `student.epochs` (the plain student gets the same)."""

    name = "function_matching"

    class Options(Options):
        temperature: float = Field(1.0, gt=0, description="Softmax temperature T of the KL.")
        mixup_alpha: float = Field(1.0, ge=0, description="Mixing weights ~ Beta(a, a) per sample (1: uniform); 0 "
                                                          "turns mixup off (the kind's augmentation only).")
        use_pool: bool = Field(True, description="Also match the teacher on the unlabelled pool, when there is one "
                                                 "(no labels are needed).")

    @property
    def uses_pool(self) -> bool:
        return self.o.use_pool

    def loss(self, s, t, y):
        return soft_kl(s, t, self.o.temperature)

    def training_set(self, train, pool, pool_logits):
        if pool is None or pool_logits is None or not len(pool):
            return train
        return Dataset(np.concatenate([train.x, pool]),
                       np.concatenate([train.y, pool_logits.argmax(1).astype(train.y.dtype)]))

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
        base: Literal["hinton", "dkd", "dist"] = Field("hinton", description="The logit KD loss on labelled and "
                                                                             "pseudo-labelled rows.")
        base_options: dict = Field({"temperature": 2.0, "alpha": 0.5},
                                   description="Options of the base loss (see its method), e.g. hinton's T and alpha.")
        min_confidence: float = Field(0.0, ge=0, le=1, description="Pool rows whose teacher probability of its top "
                                                                   "class is below this are left out.")

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
            raise KDConfigError("distill.method 'pseudo_label' needs an unlabelled pool: set datasets.NAME.unlabelled "
                                "(`edgekd data add NAME ... --unlabelled PATH`) or run `edgekd bench kd "
                                "--labelled-fraction F`")
        z = pool_logits - pool_logits.max(1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        keep = prob.max(1) >= self.o.min_confidence
        return Dataset(np.concatenate([train.x, pool[keep]]),
                       np.concatenate([train.y, pool_logits[keep].argmax(1).astype(train.y.dtype)]))


@register
class Adaptive(KDMethod):
    """Adaptive Hinton: every (T, alpha, schedule) of a small grid is trained and the best on validation is kept;
    alpha = 0 (the plain student) is in the grid, so on validation it never loses to plain (on test it may)."""

    name = "adaptive"

    class Options(Options):
        temperatures: list[float] = Field([1.0, 2.0, 4.0], min_length=1, description="Temperatures to try.")
        alphas: list[float] = Field([0.0, 0.5, 0.9], min_length=1, description="Alphas to try (0: plain).")
        schedules: list[Literal["constant", "linear_decay"]] = Field(["constant"], min_length=1,
                                                                      description="Alpha schedules to try.")

    def variants(self):
        out = []
        for a in self.o.alphas:
            if a == 0:  # T and the schedule do not matter without a soft term: that is the plain student
                out.append(PLAIN)
                continue
            out += [Variant("hinton", Hinton.Options(temperature=t, alpha=a, schedule=s).model_dump())
                    for t in self.o.temperatures for s in self.o.schedules]
        return list({v.label: v for v in out}.values())  # unique, in order

    def loss(self, s, t, y):  # never trained as itself: `variants` are
        raise AssertionError("adaptive trains its variants")


# --- feature matching -------------------------------------------------------------------------------------------


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
        levels: int = Field(2, ge=1, description="How many depths are matched (evenly spaced, the last one is the "
                                                 "features before the head).")
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
        self.projections = nn.ModuleList(_projection(s.shape[1], t.shape[1], s.dim())
                                         for s, t in zip(self.s_tap.out, self.t_tap.out))

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
