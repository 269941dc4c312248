"""Hardware-aware search: the space of recipes, how a trial's measurements are judged, the Pareto front and the
pick. Pure: the study (Optuna), the cluster (Dask) and the tracking live in flows/search.py.

A recipe is a student (width, depth where the data kind's student has one, KD method and options, "plain"
included), a prune ratio (0: none) and a precision ("fp32", "fp16", "int8_static" per-channel,
"int8_static_per_tensor", "int8_dynamic"). Each trial trains it on the student budget of params.yaml, the same for
every trial and for the references, so that the front compares like with like.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from components import gate, kd
from components.config import GateConfig, SearchConfig
from components.models import DEPTHS

PRECISIONS = {"fp32": None, "fp16": {"mode": "fp16"}, "int8_static": {"mode": "static", "per_channel": True},
              "int8_static_per_tensor": {"mode": "static", "per_channel": False},
              "int8_dynamic": {"mode": "dynamic"}}
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
    names = [s.strip() for s in text.split(",") if s.strip()] if text else \
        ["accuracy", "p95", "size"] + (["energy"] if energy_measured else [])
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or "accuracy" not in names or len(set(names)) != len(names):
        raise SearchConfigError(f"--objectives {text!r}: expected distinct names from {list(OBJECTIVES)}, "
                                "accuracy (the gate metric) included")
    return names


@dataclass(frozen=True)
class Space:
    """The choices of one search, resolved against the dataset's config."""

    widths: tuple[int, ...]
    depths: tuple[int, ...] | None  # None: the kind's student has one depth
    methods: dict[str, dict]  # method -> its options from params.yaml (plain: {})
    prune_ratios: tuple[float, ...]
    precisions: tuple[str, ...]

    def describe(self) -> dict:
        return {"widths": list(self.widths), "depths": list(self.depths) if self.depths else None,
                "methods": sorted(self.methods), "prune_ratios": list(self.prune_ratios),
                "precisions": list(self.precisions)}


def space(search: SearchConfig, kind: str, student_width: int, distill, feature_teacher: bool) -> Space:
    """The search space of a dataset: `search.widths` or factors 0.5-4 of its student width; the depths its
    student has; `search.methods` with their distill.* options (methods that need one teacher's features are left
    out when the teacher is a file or an ensemble)."""
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
    return Space(tuple(widths), DEPTHS.get((kind, "student")), methods, tuple(search.prune_ratios),
                 tuple(search.precisions))


def suggest(trial, sp: Space) -> dict:
    """A recipe from an Optuna trial (anything with suggest_categorical)."""
    method = trial.suggest_categorical("method", sorted(sp.methods))
    options = dict(sp.methods[method])
    for opt, factors in SEARCHED_OPTIONS.items():
        if opt in options:
            options[opt] = options[opt] * trial.suggest_categorical(f"{method}.{opt}_factor", factors)
    return {"width": trial.suggest_categorical("width", sp.widths),
            "depth": trial.suggest_categorical("depth", sp.depths) if sp.depths else None,
            "method": method, "options": options,
            "prune_ratio": trial.suggest_categorical("prune_ratio", sp.prune_ratios),
            "precision": trial.suggest_categorical("precision", sp.precisions)}


def label(recipe: dict) -> str:
    """'w8 d1 dkd(T=8) prune0.25 int8_static': a recipe on one line."""
    opts = recipe.get("options") or {}
    t = f"(T={opts['temperature']:g})" if "temperature" in opts else ""
    parts = [f"w{recipe['width']}"] + ([f"d{recipe['depth']}"] if recipe.get("depth") else []) \
        + [recipe["method"] + t] + ([f"prune{recipe['prune_ratio']:g}"] if recipe.get("prune_ratio") else []) \
        + [recipe["precision"]]
    return " ".join(parts)


# --- judging a trial ------------------------------------------------------------------------------------------


def reasons(chain: dict, teacher: dict, plain: dict, policy: GateConfig, default: dict | None,
            default_tolerance: float, champion: dict | None = None) -> list[str]:
    """Why a trial's model fails, [] when it passes: the gate (on val, against `champion`, the version holding
    production, too; with the rules that a pruned model must be faster or smaller than its source and a quantized
    one faster than its FP32 source), and at least the val gate
    metric of the default recipe's model (`default`, a gate view) less `default_tolerance`.
    `chain` holds the gate views of the trial's models, "student" (FP32), "pruned" (or None) and "final", the
    recipe's "precision", and for a KD student "plain": the val metrics of the same width and depth trained
    without a teacher on the same budget, which the final model must not fall below."""
    final, pruned, precision = chain["final"], chain.get("pruned"), chain["precision"]
    transform = None if precision == "fp32" else "fp16" if precision == "fp16" else "int8"
    out = gate.decide(final, teacher, champion, policy, plain=plain, source=(pruned or chain["student"]) if transform
                      else None, transform=transform).reasons
    if pruned is not None:
        out += gate.compression_reasons(pruned, chain["student"], "prune")
    m = policy.metric
    alone = chain.get("plain")  # a KD student's own width and depth trained without a teacher, same budget
    if alone is not None and final[m] < alone[m] - policy.plain_tolerance:
        out.append(f"{m} {final[m]:.4f} < {alone[m]:.4f} of the same student trained without a teacher - "
                   f"plain_tolerance {policy.plain_tolerance:.4f}: KD does not pay at this width and depth")
    if default is not None and final[m] < default[m] - default_tolerance:
        out.append(f"{m} {final[m]:.4f} < the default recipe's {default[m]:.4f} - default_tolerance "
                   f"{default_tolerance:.4f}")
    return out


def objective_values(item: dict, objectives: list[str], score: str) -> list[float]:
    """The objectives of a gate view or a POINT; `score` is its key of the val gate metric."""
    key = {"accuracy": score, "p95": "p95_ms", "size": "size_bytes", "energy": "energy_nj"}
    return [float(item[key[o]]) for o in objectives]


# --- the front and the pick -----------------------------------------------------------------------------------


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    signed = [(x, y) if d == "minimize" else (-x, -y) for x, y, d in zip(a, b, directions)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def front(points: list[dict], objectives: list[str], score: str) -> list[dict]:
    """The points no other point dominates on the objectives (points of equal values kept once); `score` is the
    points' key of the val gate metric."""
    directions = [OBJECTIVES[o] for o in objectives]
    vals = [objective_values(p, objectives, score) for p in points]
    out, seen = [], set()
    for i, p in enumerate(points):
        if any(dominates(vals[j], vals[i], directions) for j in range(len(points)) if j != i):
            continue
        if tuple(vals[i]) not in seen:
            seen.add(tuple(vals[i]))
            out.append(p)
    return out


def pick(points: list[dict], how: str, score: str) -> dict | None:
    """latency: the fastest (p95), then the most accurate; accuracy: the most accurate, then the fastest; size:
    the smallest, then the most accurate."""
    if not points:
        return None
    key = {"latency": lambda p: (p["p95_ms"], -p[score]), "accuracy": lambda p: (-p[score], p["p95_ms"]),
           "size": lambda p: (p["size_bytes"], -p[score])}[how]
    return min(points, key=key)


def ratios(point: dict, ref: dict, score: str) -> dict:
    """The point against a reference: the val gate metric's difference (`score`: its key), and p95, size and
    energy as ratios (point / ref)."""
    out = {f"{score}_diff": point[score] - ref[score]}
    for k in ("p95_ms", "size_bytes", "energy_nj"):
        if point.get(k) is not None and ref.get(k):
            out[k] = point[k] / ref[k]
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}
