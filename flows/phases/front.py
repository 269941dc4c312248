"""The search's end: the front of the passing trials and both references measured again side by side, the front
recomputed and judged on those numbers, the pick, and the pick registered like any run's candidate."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components import benchmark as bench
from components import gate
from components import search as S
from components.candidate import Measurement
from components.config import PipelineConfig
from flows.phases import study as st
from flows.phases.context import Run
from flows.phases.publish import artifact_key, register
from flows.phases.trials import NAIVE, Refs, search_point, trial_reasons
from flows.reporting import search as view
from flows.reporting.gate_report import GateReport
from flows.reporting.report import Report, Timing
from flows.tasks.data import load_data
from flows.tasks.measure import time_on
from flows.tasks.specs import DataRef
from flows.tasks.trial import TrialResult


@dataclass(frozen=True)
class Settled:
    """The passing front on the numbers measured again, the points refused on them, the pick (and its models'
    measurements), both references and the pick's ratios against them."""

    front: list[S.SearchPoint]
    refused_on_remeasure: list[S.SearchPoint]
    chosen: S.SearchPoint | None
    chosen_measured: Measurement | None
    default: S.SearchPoint
    naive: S.SearchPoint
    ratios: dict[str, S.Ratios]
    resolution: bench.Resolution

    def as_json(self, metric: str) -> dict:
        key = view.score_key(metric)
        return {
            "reference": {"default": self.default.as_json(metric), "naive": self.naive.as_json(metric)},
            "chosen": self.chosen.as_json(metric) if self.chosen else None,
            "ratios": {n: r.as_json(key) for n, r in self.ratios.items()},
            "front": [p.as_json(metric) for p in self.front],
            "refused_on_remeasure": [p.as_json(metric) for p in self.refused_on_remeasure],
            "resolution": self.resolution.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class SearchOutcome:
    """What a search ends with: its terminal summary, the JSON `search --json` writes, and the version registered
    for the chosen point (None: no point passed; `new_version` False: an earlier version held the same artifact)."""

    summary: str
    json: dict
    version: str | None
    new_version: bool
    chosen: S.SearchPoint | None


def remeasure(paths: list[str], x, cfg: PipelineConfig, rounds: int, pairs=()) -> bench.Measured:
    """Latency of every model again on `gate.target`, timed interleaved over `rounds` rounds with the workers idle
    (so a slow spell of the machine hits all of them), each percentile the median over rounds with its interval;
    more rounds while one of `pairs` (paths) is undecided, paired by round."""
    b = cfg.benchmark.model_copy(update={"rounds": rounds})
    return time_on(cfg.gate.target, {p: p for p in paths}, x, b, pairs=pairs)


def settle(
    run: Run, study: optuna.Study, refs: Refs, data: DataRef, objectives: list[str], how: str
) -> tuple[Settled, Refs]:
    """The front of the passing trials and both references measured again side by side; the front recomputed and
    judged on those numbers; the pick. Returns it with the references as measured again."""
    cfg, metric = run.cfg, run.cfg.gate.metric
    trials = {t.number: t for t in st.feasible(study)}
    first = S.front([st.point(t, metric).model_copy(update={"trial": n}) for n, t in trials.items()], objectives)
    measured = {p.trial: TrialResult.model_validate(trials[p.trial].user_attrs["measured"]) for p in first}
    paths = sorted(
        {m.artifact.path for r in measured.values() for m in (r.student, r.pruned, r.final) if m}
        | {refs.default.artifact.path, refs.naive.artifact.path}
    )
    run.log.info(
        f"measuring the front ({len(first)} point(s)) and both references again, side by side: "
        f"{len(paths)} models x {cfg.search.remeasure_rounds} rounds"
    )
    timed = remeasure(paths, load_data(data).splits["test"].x, cfg, cfg.search.remeasure_rounds, _pairs(measured, refs))
    lat = timed.latency

    def again(m: Measurement | None) -> Measurement | None:
        return m.with_latency(lat[m.artifact.path]) if m else None

    refs = replace(refs, default=again(refs.default), naive=again(refs.naive))
    points, finals = [], {}
    for number, r in measured.items():
        r = TrialResult(student=again(r.student), pruned=again(r.pruned), final=again(r.final), plain_val=r.plain_val)
        recipe = S.SearchRecipe.model_validate(trials[number].user_attrs["recipe"])
        points.append(
            search_point(recipe, r.final, metric, trial=number, gate_reasons=trial_reasons(run, refs, r, recipe))
        )
        finals[number] = r.final
    passing = S.front([p for p in points if not p.gate_reasons], objectives)
    chosen = S.pick(passing, how)
    default = search_point(None, refs.default, metric, candidate=refs.default_name)
    naive = search_point(None, refs.naive, metric, candidate=NAIVE)
    ratios = {"default": S.Ratios.of(chosen, default), "naive": S.Ratios.of(chosen, naive)} if chosen else {}
    return Settled(
        passing,
        [p for p in points if p.gate_reasons],
        chosen,
        finals[chosen.trial] if chosen else None,
        default,
        naive,
        ratios,
        timed.resolution,
    ), refs


def _pairs(measured: dict[int, TrialResult], refs: Refs) -> list[tuple[str, str]]:
    """The comparisons the front is judged on, as paths: each point's compression steps against their sources,
    and its final model against the default recipe's (the search's claim)."""
    out = []
    for r in measured.values():
        source = r.pruned or r.student
        if r.final.artifact.path != source.artifact.path:
            out.append((r.final.artifact.path, source.artifact.path))
        if r.pruned:
            out.append((r.pruned.artifact.path, r.student.artifact.path))
        out.append((r.final.artifact.path, refs.default.artifact.path))
    return sorted({p for p in out if p[0] != p[1]})


def publish(run: Run, study: optuna.Study, refs: Refs, settled: Settled, objectives: list[str]) -> SearchOutcome:
    """Plot and JSON on the search's MLflow run, Prefect artifacts of the front, and the chosen point registered
    like any run's candidate (same gate, card, sha256, 'staging')."""
    cfg, tr, metric = run.cfg, run.tracker, run.cfg.gate.metric
    summary = {
        "dataset": cfg.data.name,
        "study": study.study_name,
        "objectives": objectives,
        "pick": cfg.search.pick,
        "trials": len(study.trials),
    } | settled.as_json(metric)
    version, new = None, False
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "pareto_front.png"
        view.pareto_plot(
            [st.point(t, metric) for t in study.get_trials(deepcopy=False) if "point" in t.user_attrs],
            settled,
            metric,
            plot,
        )
        tr.file(run.parent, plot)
        tr.json(run.parent, summary, "search.json")
        tr.metrics(
            run.parent,
            {"trials": len(study.trials), "front_points": len(settled.front)}
            | {
                f"chosen_vs_{n}.{k}": v
                for n, q in settled.ratios.items()
                for k, v in q.as_json(view.score_key(metric)).items()
                if isinstance(v, float)
            },
        )
        if settled.chosen:
            version, new = _register(run, study, refs, settled, Path(tmp), plot)
    c = settled.chosen
    summary["registered"] = (
        {"candidate": f"search_trial_{c.trial}", "version": version, "new_version": new} if version else None
    )
    _artifacts(run, settled, version)
    run.log.info(view.verdict_lines(settled, metric)[0])
    return SearchOutcome(view.render(settled, metric, cfg), summary, version, new, c)


def _artifacts(run: Run, settled: Settled, version: str | None) -> None:
    """The front as a Prefect table artifact, and the pick as a Markdown one."""
    name, metric = run.cfg.data.name, run.cfg.gate.metric
    key = artifact_key(name)
    create_table_artifact(
        view.front_rows(settled, metric),
        key=f"search-front-{key}",
        description=f"The search's Pareto front on {name} and both references",
    )
    registered = f"Registered: version {version}" if version else "Registered: nothing"
    lines = [
        f"# Search: {name}",
        "",
        *view.verdict_lines(settled, metric),
        "",
        registered,
        "",
        f"MLflow: search run `{run.parent}` (pareto_front.png).",
    ]
    create_markdown_artifact("\n".join(lines) + "\n", key=f"search-{key}", description=f"The search's pick on {name}")


def _register(run: Run, study: optuna.Study, refs: Refs, settled: Settled, tmp: Path, plot: Path) -> tuple[str, bool]:
    """The chosen point registered as `search_trial_N`, its card telling the search beside the run's report."""
    cfg, c, metric = run.cfg, settled.chosen, run.cfg.gate.metric
    name = f"search_trial_{c.trial}"
    results = {
        "teacher_fp32": refs.teacher,
        "plain_fp32": refs.plain,
        refs.default_name: refs.default,
        NAIVE: refs.naive,
        name: settled.chosen_measured,
    }
    decisions = {name: gate.Decision(True)}  # the others are references, measured beside it
    timing = Timing({cfg.gate.target: settled.resolution}, {})
    report = Report(cfg, results, decisions, name, refs.kd_variant, refs.teacher_strong, timing)
    gate_report = GateReport(
        cfg.gate,
        refs.champion_version,
        refs.champion,
        name,
        decisions,
        search={"study": study.study_name, "pick": cfg.search.pick, "reasons": c.gate_reasons},
    )
    report.write(tmp, gate_report)
    card = view.card_section(study, settled, metric, cfg.search.pick)
    return register(run, report, gate_report, tmp, extra_card=card, extra_files=[str(plot)])
