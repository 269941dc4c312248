"""Promotion gate: a pure policy over measured metrics. No I/O, no registry access."""
from __future__ import annotations

from dataclasses import dataclass, field

from components.config import GateConfig


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # failed conditions; empty when passed


def decide(candidate: dict, teacher: dict, champion: dict | None, policy: GateConfig) -> Decision:
    """Check a candidate's measured `accuracy`, `p95_ms` and `size_bytes` against the policy.

    `teacher` needs `accuracy`; `champion` (the version holding `production`, or None) needs `accuracy`.
    """
    reasons = []
    acc = candidate["accuracy"]
    if acc < policy.min_accuracy:
        reasons.append(f"accuracy {acc:.4f} < min_accuracy {policy.min_accuracy:.4f}")
    drop = teacher["accuracy"] - acc
    if drop > policy.max_accuracy_drop:
        reasons.append(f"accuracy drop from teacher {drop:.4f} > max_accuracy_drop {policy.max_accuracy_drop:.4f}")
    if candidate["p95_ms"] > policy.max_p95_ms:
        reasons.append(f"p95 latency {candidate['p95_ms']:.4f} ms > max_p95_ms {policy.max_p95_ms:.4f} ms")
    size_kb = candidate["size_bytes"] / 1024
    if size_kb > policy.max_size_kb:
        reasons.append(f"size {size_kb:.1f} KiB > max_size_kb {policy.max_size_kb:.1f} KiB")
    if champion is not None and acc < champion["accuracy"] - policy.regression_tolerance:
        reasons.append(f"accuracy {acc:.4f} regresses below production {champion['accuracy']:.4f} "
                       f"- tolerance {policy.regression_tolerance:.4f}")
    return Decision(passed=not reasons, reasons=reasons)


def select_best(candidates: dict[str, dict], decisions: dict[str, Decision]) -> str | None:
    """Name of the passing candidate with the highest accuracy, ties broken by lower p95; None if none passes."""
    passing = [n for n, d in decisions.items() if d.passed]
    if not passing:
        return None
    return min(passing, key=lambda n: (-candidates[n]["accuracy"], candidates[n]["p95_ms"]))
