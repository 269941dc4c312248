"""Promotion gate: a pure policy over measured metrics. No I/O, no registry access."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.config import GateConfig


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # failed conditions; empty when passed


LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms", "size_bytes")


def gate_view(measured: dict) -> dict:
    """What the gate judges of a measured candidate: its validation metrics and its latency and size. Test metrics
    are left out on purpose: choosing on test would bias the number reported for the chosen one."""
    return {k: v for k, v in measured["val"].items() if k != "confusion"} | {
        k: measured[k] for k in LATENCY_KEYS if k in measured}


QUANTIZING = {"int8": "INT8", "fp16": "FP16"}  # transforms that change precision: they must pay in speed


def decide(candidate: dict, teacher: dict, champion: dict | None, policy: GateConfig,
           plain: dict | None = None, source: dict | None = None, transform: str | None = None) -> Decision:
    """Check a candidate's measured metrics (`accuracy`, `policy.metric`, `p95_ms`, `size_bytes`, and
    `sensitivity` when required; the validation split's, see `gate_view`) against the policy. `teacher` needs
    `accuracy` and `policy.metric`; `champion` (the version holding `production`, or None) and `plain` (the same
    student trained without a teacher on the same budget, or None) need `policy.metric`. `source` (the model the
    candidate was made from, measured in the same run, with `p95_ms` and `size_bytes`) and `transform` (the
    recipe's: "int8", "fp16", "prune", ...) add the rules that a compression step must pay: a quantized model
    must be faster than its FP32 source, a pruned one faster or smaller than its source."""
    reasons = []
    m = policy.metric
    if m not in candidate or m not in teacher:
        return Decision(False, [f"gate metric {m!r} was not measured for this candidate"])
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
        sens = candidate.get("sensitivity")
        if sens is None:
            reasons.append("min_sensitivity is set but sensitivity is only defined for two classes")
        elif sens < policy.min_sensitivity:
            reasons.append(f"sensitivity {sens:.4f} < min_sensitivity {policy.min_sensitivity:.4f}")
    if candidate["p95_ms"] > policy.max_p95_ms:
        reasons.append(f"p95 latency {candidate['p95_ms']:.4f} ms > max_p95_ms {policy.max_p95_ms:.4f} ms")
    size_kb = candidate["size_bytes"] / 1024
    if size_kb > policy.max_size_kb:
        reasons.append(f"size {size_kb:.1f} KiB > max_size_kb {policy.max_size_kb:.1f} KiB")
    if source is not None:
        reasons += compression_reasons(candidate, source, transform)
    if plain is not None and m in plain and score < plain[m] - policy.plain_tolerance:
        reasons.append(f"{m} {score:.4f} < plain_fp32's {plain[m]:.4f} - plain_tolerance {policy.plain_tolerance:.4f}: "
                       "the student trained without a teacher on the same budget does better")
    if champion is not None and m in champion and score < champion[m] - policy.regression_tolerance:
        reasons.append(f"{m} {score:.4f} regresses below production {champion[m]:.4f} "
                       f"- tolerance {policy.regression_tolerance:.4f}")
    return Decision(passed=not reasons, reasons=reasons)


def compression_reasons(candidate: dict, source: dict, transform: str | None) -> list[str]:
    """What a compression step failed to pay, [] when it paid: a quantized model (`transform` int8 or fp16) must
    be faster (p95) than its FP32 source, a pruned one faster or smaller; both measured in the same run."""
    c, s = candidate, source
    if transform in QUANTIZING and c["p95_ms"] >= s["p95_ms"]:
        return [f"{QUANTIZING[transform]} slower than FP32 on this device: p95 {c['p95_ms']:.4f} ms >= its FP32 "
                f"source's {s['p95_ms']:.4f} ms"]
    if transform == "prune" and not (c["p95_ms"] < s["p95_ms"] or c["size_bytes"] < s["size_bytes"]):
        return [f"pruning paid nothing: p95 {c['p95_ms']:.4f} ms and size {c['size_bytes'] / 1024:.1f} KiB are not "
                f"below its source's {s['p95_ms']:.4f} ms and {s['size_bytes'] / 1024:.1f} KiB"]
    return []


def select_best(candidates: dict[str, dict], decisions: dict[str, Decision], metric: str = "accuracy") -> str | None:
    """Name of the passing candidate with the highest `metric`, ties broken by lower p95; None if none passes."""
    passing = [n for n, d in decisions.items() if d.passed]
    if not passing:
        return None
    return min(passing, key=lambda n: (-candidates[n][metric], candidates[n]["p95_ms"]))
