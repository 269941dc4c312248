"""Phase 5, judge: the gate on validation metrics. Each candidate against the policy, the teacher, the plain
student trained on the same budget, the model it was compressed from, and the version holding production; the
best passing one on val is selected."""

from __future__ import annotations

from dataclasses import dataclass

from components import gate
from components.candidate import Measurement
from components.recipes import recipes
from flows.phases.context import Run
from flows.tracking.registry import PRODUCTION, gate_view, version_by_alias
from flows.tracking.tracker import client


@dataclass(frozen=True)
class Verdict:
    decisions: dict[str, gate.Decision]
    best: str | None
    champion_version: str | None  # the version holding production at the time, if any
    champion: gate.GateView | None  # what the gate judged of it


def champion(name: str) -> tuple[str | None, gate.GateView | None]:
    """The version holding `production` of registered model `name` and its gate view, or (None, None)."""
    mv = version_by_alias(client(), name, PRODUCTION)
    return (str(mv.version), gate_view(mv)) if mv else (None, None)


def judge(run: Run, results: dict[str, Measurement]) -> Verdict:
    view = {n: m.view() for n, m in results.items()}
    champion_version, champion_view = champion(run.cfg.data.name)
    table = {
        r.name: r for r in recipes(formats=tuple(run.cfg.export.formats))
    }  # a compression step is judged against its source measured here
    decisions = {
        n: gate.decide(
            v,
            view["teacher_fp32"],
            champion_view,
            run.cfg.gate,
            plain=view["plain_fp32"],
            source=view.get(table[n].source),
            transform=table[n].transform,
        )
        for n, v in view.items()
    }
    g = run.cfg.gate
    best = gate.select_best(view, decisions, g.metric, g.select, g.select_tolerance)
    return Verdict(decisions, best, champion_version, champion_view)
