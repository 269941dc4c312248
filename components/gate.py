"""Promotion gate: a pure policy over measured metrics. No I/O, no registry access."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from components.config import GateConfig
from components.rounds import Comparison, Interval, Series, compare


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # failed conditions; empty when passed


class GateView(BaseModel):
    """What the gate judges of a model: its validation metrics by name (accuracy, the gate metric, sensitivity...),
    and its latency, size and energy where they were measured (a teacher or a plain student compared against
    needs only metrics). Test metrics are left out on purpose: choosing on test would bias the number reported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: dict[str, float]
    p50_ms: float | None = None
    p95_ms: float | None = None
    p95_lo_ms: float | None = None  # the bounds of p95's 95% interval, where its rounds were enough for one
    p95_hi_ms: float | None = None
    p95_series: Series | None = None  # its per-round p95: what a speed rule compares, paired by round
    p99_ms: float | None = None
    size_bytes: int | None = None
    energy_nj: float | None = None
    arena_bytes: int | None = None  # TensorFlow Lite Micro's smallest arena, for a full-integer LiteRT file it runs
    flash_bytes: int | None = None  # the model's bytes in flash, likewise

    def has(self, metric: str) -> bool:
        return metric in self.metrics

    def __getitem__(self, metric: str) -> float:
        return self.metrics[metric]

    def p95(self) -> Interval:
        """p95 with its interval (a single figure where its rounds are not known: a version registered before)."""
        n = len(self.p95_series.values) if self.p95_series else None
        return Interval(value=self.p95_ms, lo=self.p95_lo_ms, hi=self.p95_hi_ms, rounds=n)

    def against(self, other: GateView) -> Comparison:
        """Its p95 against `other`'s, paired by round where both were measured side by side (else no comparison,
        and so no measurable difference)."""
        return compare(self.p95_series, other.p95_series)

    def as_json(self) -> dict:
        """Metrics and measured figures in one mapping, as the gate report keeps the production version's."""
        return self.metrics | self.model_dump(exclude={"metrics"}, exclude_none=True)

    @classmethod
    def from_json(cls, values: dict) -> GateView:
        """Inverse of `as_json`: the measured figures by their names, every other value a metric."""
        figures = set(cls.model_fields) - {"metrics"}
        return cls(
            metrics={k: v for k, v in values.items() if k not in figures},
            **{k: v for k, v in values.items() if k in figures},
        )


QUANTIZING = {
    "int8": "INT8",
    "qat": "INT8 (QAT)",
    "pte_int8": "INT8",
    "tflite_int8": "INT8",
    "fp16": "FP16",
}  # transforms that change precision: they must pay in speed


def decide(
    candidate: GateView,
    teacher: GateView,
    champion: GateView | None,
    policy: GateConfig,
    plain: GateView | None = None,
    source: GateView | None = None,
    transform: str | None = None,
) -> Decision:
    """Check a candidate's measured metrics (`accuracy`, `policy.metric`, and `sensitivity` when required) and its
    `p95_ms` and `size_bytes` against the policy. `teacher` needs `accuracy` and `policy.metric`; `champion` (the
    version holding `production`, or None) and `plain` (the same student trained without a teacher on the same
    budget, or None) need `policy.metric`. `source` (the model the candidate was made from, measured in the same
    run) and `transform` (the recipe's: "int8", "fp16", "prune", ...) add the rules that a compression step must
    pay: a quantized model must be faster than its FP32 source, a pruned one faster or smaller than its source."""
    m = policy.metric
    if not candidate.has(m) or not teacher.has(m):
        return Decision(False, [f"gate metric {m!r} was not measured for this candidate"])
    reasons = _quality_reasons(candidate, teacher, policy) + _device_reasons(candidate, policy)
    if source is not None:
        reasons += compression_reasons(candidate, source, transform)
    score = candidate[m]
    if plain is not None and plain.has(m) and score < plain[m] - policy.plain_tolerance:
        reasons.append(
            f"{m} {score:.4f} < plain_fp32's {plain[m]:.4f} - plain_tolerance {policy.plain_tolerance:.4f}: "
            "the student trained without a teacher on the same budget does better"
        )
    if champion is not None and champion.has(m) and score < champion[m] - policy.regression_tolerance:
        reasons.append(
            f"{m} {score:.4f} regresses below production {champion[m]:.4f} "
            f"- tolerance {policy.regression_tolerance:.4f}"
        )
    return Decision(passed=not reasons, reasons=reasons)


def _quality_reasons(candidate: GateView, teacher: GateView, policy: GateConfig) -> list[str]:
    """The floors and drops of accuracy, the gate metric and sensitivity."""
    reasons, m = [], policy.metric
    acc, score = candidate["accuracy"], candidate[m]
    if acc < policy.min_accuracy:
        reasons.append(f"accuracy {acc:.4f} < min_accuracy {policy.min_accuracy:.4f}")
    drop = teacher["accuracy"] - acc
    if drop > policy.max_accuracy_drop:
        reasons.append(f"accuracy drop from teacher {drop:.4f} > max_accuracy_drop {policy.max_accuracy_drop:.4f}")
    if score < policy.min_metric:
        reasons.append(f"{m} {score:.4f} < min_metric {policy.min_metric:.4f}")
    if m != "accuracy" and teacher[m] - score > policy.max_metric_drop:
        reasons.append(f"{m} drop from teacher {teacher[m] - score:.4f} > max_metric_drop {policy.max_metric_drop:.4f}")
    if policy.min_sensitivity > 0:
        if not candidate.has("sensitivity"):
            reasons.append("min_sensitivity is set but sensitivity is only defined for two classes")
        elif candidate["sensitivity"] < policy.min_sensitivity:
            reasons.append(f"sensitivity {candidate['sensitivity']:.4f} < min_sensitivity {policy.min_sensitivity:.4f}")
    return reasons


def _device_reasons(candidate: GateView, policy: GateConfig) -> list[str]:
    """The latency and size limits of the device profile."""
    reasons = []
    if candidate.p95_ms > policy.max_p95_ms:
        reasons.append(f"p95 latency {candidate.p95_ms:.4f} ms > max_p95_ms {policy.max_p95_ms:.4f} ms")
    size_kb = candidate.size_bytes / 1024
    if size_kb > policy.max_size_kb:
        reasons.append(f"size {size_kb:.1f} KiB > max_size_kb {policy.max_size_kb:.1f} KiB")
    return reasons + _mcu_reasons(candidate, policy)


def _mcu_reasons(candidate: GateView, policy: GateConfig) -> list[str]:
    """The microcontroller's RAM and flash: set, they pass only a model TensorFlow Lite Micro ran, within them."""
    reasons = []
    for name, limit, figure, what in (
        ("max_ram_kb", policy.max_ram_kb, candidate.arena_bytes, "TFLite Micro arena"),
        ("max_flash_kb", policy.max_flash_kb, candidate.flash_bytes, "flash"),
    ):
        if limit is None:
            continue
        if figure is None:
            reasons.append(
                f"{name} {limit:g} KiB is set, but TensorFlow Lite Micro did not run this candidate (only a "
                "full-integer LiteRT file with operators TFLM has is run there)"
            )
        elif figure / 1024 > limit:
            reasons.append(f"{what} {figure / 1024:.1f} KiB > {name} {limit:g} KiB")
    return reasons


def compression_reasons(candidate: GateView, source: GateView, transform: str | None) -> list[str]:
    """What a compression step failed to pay, [] when it paid: a quantized model (`transform` int8 or fp16) must
    be measurably faster than its FP32 source, a pruned one measurably faster or smaller; both measured side by
    side in the same run and compared paired by round (the interval of the median per-round p95 ratio entirely
    below 1). An interval that holds 1, too few rounds for one, or no rounds side by side: no measurable
    difference."""
    c, s, paired = candidate.p95(), source.p95(), candidate.against(source)
    order = paired.verdict
    if transform in QUANTIZING and order >= 0:
        how = "slower than" if order > 0 else "not measurably faster than"
        return [f"{QUANTIZING[transform]} {how} FP32 on this device: p95 {c} ms vs its FP32 source's {s} ms ({paired})"]
    if transform == "prune" and order >= 0 and candidate.size_bytes >= source.size_bytes:
        how = "slower than" if order > 0 else "no measurable difference from"
        return [
            f"pruning paid nothing: p95 {c} ms ({how} its source's {s} ms; {paired}) and size "
            f"{candidate.size_bytes / 1024:.1f} KiB not below its {source.size_bytes / 1024:.1f} KiB"
        ]
    return []


def must_pay_in_speed(transform: str) -> bool:
    """Whether a recipe's transform is held to a speed rule against its source (what a measurement settles)."""
    return transform in QUANTIZING or transform == "prune"


def select_best(
    candidates: dict[str, GateView],
    decisions: dict[str, Decision],
    metric: str = "accuracy",
    select: str = "accuracy",
    tolerance: float = 0.0,
) -> str | None:
    """Name of the passing candidate to register, None if none passes. `select` "accuracy": the highest `metric`.
    "latency": among those within `tolerance` of the highest `metric`, the lowest p95, and among those not
    measurably slower than it (paired by round) the highest `metric`. "size": among the same, the smallest file,
    then the highest `metric`. Remaining ties go to the one measurably faster than each other, else the first in the
    candidate table's order (ONNX before an ExecuTorch program, a model before its compressed forms)."""
    passing = [n for n, d in decisions.items() if d.passed]
    if not passing:
        return None
    top = max(candidates[n][metric] for n in passing)
    if select == "accuracy":
        pool = passing
    else:
        near = [n for n in passing if candidates[n][metric] >= top - tolerance]
        if select == "latency":
            fastest = min(near, key=lambda n: candidates[n].p95_ms)
            pool = [n for n in near if candidates[n].against(candidates[fastest]).verdict <= 0]
        elif select == "size":
            smallest = min(candidates[n].size_bytes for n in near)
            pool = [n for n in near if candidates[n].size_bytes == smallest]
        else:
            raise ValueError(f"gate.select {select!r}: expected accuracy, latency or size")
    best = max(candidates[n][metric] for n in pool)
    tied = [n for n in pool if candidates[n][metric] == best]
    for n in tied:
        if all(candidates[n].against(candidates[o]).verdict < 0 for o in tied if o != n):
            return n
    return tied[0]
