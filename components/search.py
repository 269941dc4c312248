"""Hardware-aware search: the space of recipes, how a trial's measurements are judged, the Pareto front and the
pick. Pure: the study (Optuna), the cluster (Dask) and the tracking live in flows/search.py.

A recipe is a student (architecture, width, depth where edgekd's student of the data kind has one, KD method and
options, "plain" included), a prune ratio (0: none) and a precision ("fp32", "fp16", "int8_static" per-channel,
"int8_static_per_tensor", "int8_dynamic", "int8_qat": a quantization-aware fine-tune with the student's own
objective, then static INT8). Each trial trains it on the student budget of params.yaml, the same for
every trial and for the references, so that the front compares like with like.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from components import gate, kd
from components.config import GateConfig, SearchConfig
from components.gate import GateView
from components.models import DEPTHS
from components.rounds import Interval, Series, compare

PRECISIONS = {
    "fp32": None,
    "fp16": {"mode": "fp16"},
    "int8_static": {"mode": "static", "per_channel": True},
    "int8_static_per_tensor": {"mode": "static", "per_channel": False},
    "int8_dynamic": {"mode": "dynamic"},
    "int8_qat": {"mode": "qat", "per_channel": True},  # a quantization-aware fine-tune, then static INT8
}
OBJECTIVES = {"accuracy": "maximize", "p95": "minimize", "size": "minimize", "energy": "minimize"}
PICKS = ("latency", "accuracy", "size")
SEARCHED_OPTIONS = {"temperature": (0.5, 1.0, 2.0)}  # a method's option searched as these factors of its setting


class SearchConfigError(ValueError):
    """A search setting or argument that cannot work; the message names it."""


def parse_budget(text: str) -> tuple[float | None, int | None]:
    """'15m', '90s', '1h' -> (seconds, None); '40' -> (None, 40 trials)."""
    t = str(text).strip().lower()
    if t.isdigit() and int(t) > 0:
        return None, int(t)
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h)", t):
        return float(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]], None
    raise SearchConfigError(f"--budget {text!r}: expected a wall time such as 15m, 90s or 1h, or a number of trials")


def parse_objectives(text: str | None, energy_measured: bool) -> list[str]:
    """The objectives asked for (default: accuracy, p95, size, and energy where RAPL measures it)."""
    names = (
        [s.strip() for s in text.split(",") if s.strip()]
        if text
        else ["accuracy", "p95", "size"] + (["energy"] if energy_measured else [])
    )
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or "accuracy" not in names or len(set(names)) != len(names):
        raise SearchConfigError(
            f"--objectives {text!r}: expected distinct names from {list(OBJECTIVES)}, "
            "accuracy (the gate metric) included"
        )
    return names


@dataclass(frozen=True)
class Space:
    """The choices of one search, resolved against the dataset's config."""

    widths: tuple[int, ...]
    depths: tuple[int, ...] | None  # None: the kind's student has one depth (edgekd's image student has three)
    methods: dict[str, dict]  # method -> its options from params.yaml (plain: {})
    prune_ratios: tuple[float, ...]
    precisions: tuple[str, ...]
    archs: tuple[str, ...] = ("edgekd",)

    def describe(self) -> dict:
        return {
            "archs": list(self.archs),
            "widths": list(self.widths),
            "depths": list(self.depths) if self.depths else None,
            "methods": sorted(self.methods),
            "prune_ratios": list(self.prune_ratios),
            "precisions": list(self.precisions),
        }


def space(
    search: SearchConfig, kind: str, student_width: int, distill, feature_teacher: bool, arch: str = "edgekd"
) -> Space:
    """The search space of a dataset: `search.archs` or its student's `arch`; `search.widths` or factors 0.5-4 of
    its student width; the depths edgekd's student of the kind has; `search.methods` with their distill.* options
    (methods that need one teacher's features are left out when the teacher is a file or an ensemble)."""
    archs = tuple(search.archs) or (arch,)
    widths = search.widths or sorted({max(1, round(student_width * f)) for f in (0.5, 0.75, 1, 1.5, 2, 3, 4)})
    methods = {}
    for name in search.methods:
        if name == "plain":
            methods[name] = {}
            continue
        method = kd.make(name, distill.options(name))  # raises KDConfigError naming the bad key
        if method.uses_features and not feature_teacher:
            continue
        methods[name] = method.o.model_dump()
    bad = [p for p in search.precisions if p not in PRECISIONS]
    if bad:
        raise SearchConfigError(f"search.precisions {bad}: expected some of {list(PRECISIONS)}")
    depths = DEPTHS.get((kind, "student")) if "edgekd" in archs else None
    return Space(tuple(widths), depths, methods, tuple(search.prune_ratios), tuple(search.precisions), archs)


class SearchRecipe(BaseModel):
    """One point of the space: the student (width, depth where the kind has depths, KD method and its options,
    'plain' included), the prune ratio (0: none) and the precision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "edgekd"
    width: int
    depth: int | None
    method: str
    options: dict
    prune_ratio: float
    precision: str

    def label(self) -> str:
        """'w8 d1 dkd(T=8) prune0.25 int8_static': the recipe on one line."""
        t = f"(T={self.options['temperature']:g})" if "temperature" in self.options else ""
        arch = [] if self.arch == "edgekd" else [self.arch]
        parts = arch + [f"w{self.width}"] + ([f"d{self.depth}"] if self.depth else []) + [self.method + t]
        return " ".join(parts + ([f"prune{self.prune_ratio:g}"] if self.prune_ratio else []) + [self.precision])


def variant(recipe: SearchRecipe) -> kd.Variant:
    """The way a recipe's student is trained."""
    return kd.Variant(recipe.method, dict(recipe.options))


def suggest(trial, sp: Space) -> SearchRecipe:
    """A recipe from an Optuna trial (anything with suggest_categorical)."""
    method = trial.suggest_categorical("method", sorted(sp.methods))
    options = dict(sp.methods[method])
    for opt, factors in SEARCHED_OPTIONS.items():
        if opt in options:
            options[opt] = options[opt] * trial.suggest_categorical(f"{method}.{opt}_factor", factors)
    arch = trial.suggest_categorical("arch", sp.archs) if len(sp.archs) > 1 else sp.archs[0]
    return SearchRecipe(
        arch=arch,
        width=trial.suggest_categorical("width", sp.widths),
        depth=trial.suggest_categorical("depth", sp.depths) if sp.depths and arch == "edgekd" else None,
        method=method,
        options=options,
        prune_ratio=trial.suggest_categorical("prune_ratio", sp.prune_ratios),
        precision=trial.suggest_categorical("precision", sp.precisions),
    )


# --- judging a trial ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """The gate views of a trial's models: the trained student (FP32), the pruned one (or None), the final one in
    the recipe's precision, and for a KD student `plain`: the same width and depth trained without a teacher on the
    same budget (val metrics only)."""

    student: GateView
    pruned: GateView | None
    final: GateView
    precision: str
    plain: GateView | None = None


def reasons(
    chain: Chain,
    teacher: GateView,
    plain: GateView,
    policy: GateConfig,
    default: GateView | None,
    default_tolerance: float,
    champion: GateView | None = None,
) -> list[str]:
    """Why a trial's model fails, [] when it passes: the gate (on val, against `champion`, the version holding
    production, too; with the rules that a pruned model must be faster or smaller than its source and a quantized
    one faster than its FP32 source), the same student trained alone (`chain.plain`), which a KD student must not
    fall below, and at least the val gate metric of the default recipe's model (`default`) less
    `default_tolerance`."""
    final, pruned, precision = chain.final, chain.pruned, chain.precision
    transform = (
        None if precision == "fp32" else "fp16" if precision == "fp16" else "qat" if precision == "int8_qat" else "int8"
    )
    out = gate.decide(
        final,
        teacher,
        champion,
        policy,
        plain=plain,
        source=(pruned or chain.student) if transform else None,
        transform=transform,
    ).reasons
    if pruned is not None:
        out += gate.compression_reasons(pruned, chain.student, "prune")
    m = policy.metric
    alone = chain.plain
    if alone is not None and final[m] < alone[m] - policy.plain_tolerance:
        out.append(
            f"{m} {final[m]:.4f} < {alone[m]:.4f} of the same student trained without a teacher - "
            f"plain_tolerance {policy.plain_tolerance:.4f}: KD does not pay at this width and depth"
        )
    if default is not None and final[m] < default[m] - default_tolerance:
        out.append(
            f"{m} {final[m]:.4f} < the default recipe's {default[m]:.4f} - default_tolerance {default_tolerance:.4f}"
        )
    return out


class SearchPoint(BaseModel):
    """A model on the search's plane: a trial's final model (`recipe`) or a reference (`candidate`, the name of a
    run's candidate), its val and test accuracy and gate metric (`val_score`, `test_score`), p95, size and energy;
    `trial` and `gate_reasons` once it has been judged on the front."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: SearchRecipe | None = None
    candidate: str | None = None
    val_accuracy: float
    test_accuracy: float
    val_score: float
    test_score: float
    p95_ms: float
    p95_lo_ms: float | None = None  # p95's 95% interval, where its rounds were enough for one
    p95_hi_ms: float | None = None
    p95_series: Series | None = None  # its per-round p95, for comparisons paired by round
    size_bytes: int
    energy_nj: float | None
    energy_source: str | None
    trial: int | None = None
    gate_reasons: list[str] | None = None

    @property
    def name(self) -> str:
        return self.recipe.label() if self.recipe else str(self.candidate)

    def p95(self) -> Interval:
        n = len(self.p95_series.values) if self.p95_series else None
        return Interval(value=self.p95_ms, lo=self.p95_lo_ms, hi=self.p95_hi_ms, rounds=n)

    def objectives(self, names: list[str]) -> list[float]:
        value = {"accuracy": self.val_score, "p95": self.p95_ms, "size": self.size_bytes, "energy": self.energy_nj}
        return [float(value[o]) for o in names]

    def as_json(self, metric: str) -> dict:
        """The POINT of `search --json`: recipe (or {"candidate": NAME}), val and test accuracy, val_METRIC and
        test_METRIC for another gate metric, p95 (with its per-round series), size, energy; trial and gate_reasons
        when set."""
        out = {
            "recipe": self.recipe.model_dump() if self.recipe else {"candidate": self.candidate},
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "p95_ms": self.p95_ms,
            "p95_lo_ms": self.p95_lo_ms,
            "p95_hi_ms": self.p95_hi_ms,
            "p95_series": self.p95_series.model_dump() if self.p95_series else None,
            "size_bytes": self.size_bytes,
            "energy_nj": self.energy_nj,
            "energy_source": self.energy_source,
        }
        if metric != "accuracy":
            out |= {f"val_{metric}": self.val_score, f"test_{metric}": self.test_score}
        return out | {k: v for k, v in (("trial", self.trial), ("gate_reasons", self.gate_reasons)) if v is not None}

    @classmethod
    def from_json(cls, d: dict, metric: str) -> SearchPoint:
        """Inverse of `as_json` (how a study keeps its points)."""
        recipe = d["recipe"]
        ref = "candidate" in recipe
        return cls(
            recipe=None if ref else SearchRecipe.model_validate(recipe),
            candidate=recipe.get("candidate"),
            val_score=d.get(f"val_{metric}", d["val_accuracy"]),
            test_score=d.get(f"test_{metric}", d["test_accuracy"]),
            **{
                k: d.get(k)
                for k in (
                    "val_accuracy",
                    "test_accuracy",
                    "p95_ms",
                    "p95_lo_ms",
                    "p95_hi_ms",
                    "p95_series",
                    "size_bytes",
                    "energy_nj",
                    "energy_source",
                    "trial",
                    "gate_reasons",
                )
            },
        )


# --- the front and the pick -----------------------------------------------------------------------------------


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    signed = [(x, y) if d == "minimize" else (-x, -y) for x, y, d in zip(a, b, directions)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def front(points: list[SearchPoint], objectives: list[str]) -> list[SearchPoint]:
    """The points no other point dominates on the objectives (points of equal values kept once)."""
    directions = [OBJECTIVES[o] for o in objectives]
    vals = [p.objectives(objectives) for p in points]
    out, seen = [], set()
    for i, p in enumerate(points):
        if any(dominates(vals[j], vals[i], directions) for j in range(len(points)) if j != i):
            continue
        if tuple(vals[i]) not in seen:
            seen.add(tuple(vals[i]))
            out.append(p)
    return out


def pick(points: list[SearchPoint], how: str) -> SearchPoint | None:
    """latency: the fastest (p95), then the most accurate; accuracy: the most accurate, then the fastest; size:
    the smallest, then the most accurate."""
    if not points:
        return None
    key = {
        "latency": lambda p: (p.p95_ms, -p.val_score),
        "accuracy": lambda p: (-p.val_score, p.p95_ms),
        "size": lambda p: (p.size_bytes, -p.val_score),
    }[how]
    return min(points, key=key)


SPEED = {-1: "faster", 0: "no measurable difference", 1: "slower"}


class Ratios(BaseModel):
    """A point against a reference: the val gate metric's difference, p95, size and energy as point / ref (None
    where the reference has none), and whether the point is faster, paired by round (`speed`: faster, slower, or
    no measurable difference) with the median per-round p95 ratio and its interval (`paired_*`, None where the two
    were not measured side by side or the rounds were too few)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_diff: float
    speed: str
    p95_ms: float | None
    size_bytes: float | None
    energy_nj: float | None
    paired_p95: float | None = None
    paired_p95_lo: float | None = None
    paired_p95_hi: float | None = None

    @classmethod
    def of(cls, point: SearchPoint, ref: SearchPoint) -> Ratios:
        def ratio(a, b):
            return _round(a / b) if a is not None and b else None

        def rounded(v):
            return None if v is None else _round(v)

        paired = compare(point.p95_series, ref.p95_series)
        return cls(
            score_diff=_round(point.val_score - ref.val_score),
            speed=SPEED[paired.verdict],
            p95_ms=ratio(point.p95_ms, ref.p95_ms),
            size_bytes=ratio(point.size_bytes, ref.size_bytes),
            energy_nj=ratio(point.energy_nj, ref.energy_nj),
            paired_p95=rounded(paired.ratio),
            paired_p95_lo=rounded(paired.lo),
            paired_p95_hi=rounded(paired.hi),
        )

    def as_json(self, score_key: str) -> dict:
        """{SCORE_KEY_diff, speed, p95_ms, size_bytes, energy_nj, paired_p95[_lo, _hi]} as `search --json` writes
        them (absent ones left out)."""
        out = {
            f"{score_key}_diff": self.score_diff,
            "speed": self.speed,
            "p95_ms": self.p95_ms,
            "size_bytes": self.size_bytes,
            "energy_nj": self.energy_nj,
            "paired_p95": self.paired_p95,
            "paired_p95_lo": self.paired_p95_lo,
            "paired_p95_hi": self.paired_p95_hi,
        }
        return {k: v for k, v in out.items() if v is not None}


def _round(v: float) -> float:
    return round(v, 4) if math.isfinite(v) else v
