"""The gate's report of a run: its policy, the version holding production at the time and the decision on each
candidate (gate_report.json, the model card's Gate section, the Prefect artifact)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.config import GateConfig
from components.gate import Decision, GateView


@dataclass(frozen=True)
class GateReport:
    policy: GateConfig
    champion_version: str | None
    champion: GateView | None
    selected: str | None
    decisions: dict[str, Decision]  # the candidates judged (a search's references are not)
    search: dict | None = field(default=None)  # a search's study, pick and the chosen point's reasons

    def as_json(self) -> dict:
        out = {
            "policy": self.policy.model_dump(mode="json"),
            "champion_version": self.champion_version,
            "champion": self.champion.as_json() if self.champion else None,
            "selected": self.selected,
            "decided_on": "val",
        }
        out |= {"search": self.search} if self.search is not None else {}
        return out | {"candidates": {n: {"passed": d.passed, "reasons": d.reasons} for n, d in self.decisions.items()}}

    def lines(self, metric: str) -> list[str]:
        """The policy, the version holding production at the time and each candidate's verdict (Markdown)."""
        if self.champion_version:
            prod = self.champion.metrics.get(metric, float("nan")) if self.champion else float("nan")
            production = (
                f"Production at the time: version {self.champion_version} (val {metric} {prod:.4f}); a "
                f"candidate may lose at most {self.policy.regression_tolerance} of {metric} against it."
            )
        else:
            production = "Production at the time: none (no version held `production`)."
        policy = ", ".join(f"{k}={v}" for k, v in self.policy.model_dump(mode="json").items())
        return [
            f"Policy (checked on validation metrics): {policy}.",
            "",
            production,
            "",
            *[
                f"- {n}: " + ("pass" if d.passed else "fail: " + "; ".join(d.reasons))
                for n, d in self.decisions.items()
            ],
        ]
