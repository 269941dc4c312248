"""Phase 6, publish: the report (terminal, MLflow runs, plots, Prefect artifacts), the selected candidate registered
with its model card, and the run's outcome with its JSON summary."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components.candidate import Candidates, Measurement
from components.formats.runtime import format_of
from flows.data import layout
from flows.phases.context import Run, TrainingTimes
from flows.phases.judge import Verdict
from flows.phases.train import Trained
from flows.reporting.card import CardFacts, model_card
from flows.reporting.gate_report import GateReport
from flows.reporting.report import KdGain, Report, Timing, flat_metrics
from flows.tracking import registry


@dataclass(frozen=True)
class RunOutcome:
    """What a run of the pipeline ends with: its terminal summary, the candidate selected (None: nothing passed)
    and the version that holds it (`new_version` False: an earlier version already held the same artifact), the
    KD gain, every candidate's measurement and the gate's reasons, the production version it was judged against,
    its MLflow parent run, and the JSON summary `run --json` writes."""

    summary: str
    selected: str | None
    version: str | None
    new_version: bool
    kd_gain: KdGain | None
    parent_run_id: str
    candidates: dict[str, Measurement]
    champion_version: str | None
    decisions: dict[str, list[str]]
    json: dict


def artifact_key(name: str) -> str:
    """`name` as Prefect allows in an artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def publish(run: Run, trained: Trained, measured: Candidates, verdict: Verdict) -> RunOutcome:
    cfg, tr, results = run.cfg, run.tracker, measured.measured
    timing = Timing(measured.resolutions, measured.devices)
    report = Report(cfg, results, verdict.decisions, verdict.best, trained.kd_variant, trained.teacher_strong, timing)
    gate = GateReport(cfg.gate, verdict.champion_version, verdict.champion, verdict.best, verdict.decisions)
    with tempfile.TemporaryDirectory() as tmp:
        files = report.write(Path(tmp), gate)
        _log_candidates(run, report, files)
        version, new = register(run, report, gate, Path(tmp)) if verdict.best else (None, False)
    tr.tags(run.parent, {"registered_version": version or "none: no candidate passed the gate"})
    key = artifact_key(cfg.data.name)
    create_markdown_artifact(
        report.gate_markdown(gate, version, new, run.parent),
        key=f"gate-{key}",
        description=f"The gate's verdict on every candidate of {cfg.data.name}, on val",
    )
    create_table_artifact(
        report.table().round(4).to_dict("records"),
        key=f"candidates-{key}",
        description=f"The candidates of {cfg.data.name}: val (chosen on) and test (reported) "
        "through ORT, latency under the device profile",
    )
    # The table itself is printed once, by the caller (`edgekd run`), and kept as a Prefect artifact.
    run.log.info(report.verdict(version, cfg.data.name, new))
    return RunOutcome(
        report.render(version, cfg.data.name, new),
        verdict.best,
        version,
        new,
        report.kd_gain(),
        run.parent,
        results,
        verdict.champion_version,
        {n: d.reasons for n, d in verdict.decisions.items()},
        report.as_json(version, new) | {"training": TrainingTimes.of(run.times).as_json()} | run.summary,
    )


def _log_candidates(run: Run, report: Report, files: dict[str, Path]) -> None:
    """The benchmark, one nested run per candidate (its metrics, confusion matrix, the gate's verdict), the
    parent's summary metrics and files, and the gate's run."""
    tr, cfg = run.tracker, run.cfg
    with tr.stage("benchmark", {"device_profile": json.dumps(cfg.benchmark.model_dump(mode="json"))}) as rid:
        tr.file(rid, files["benchmark.csv"])
        tr.file(rid, files["accuracy_vs_p95.png"])
    for name, m in report.results.items():
        d = report.decisions[name]
        with tr.stage(
            f"candidate:{name}",
            {"candidate": name, "gate_passed": d.passed, "gate_reasons": "; ".join(d.reasons) or "none"},
        ) as rid:
            tr.metrics(rid, flat_metrics(m))
            tr.file(rid, files[f"confusion_{name}.png"])
            tr.json(rid, {"classes": cfg.data.classes, "matrix": m.test.confusion}, "confusion_matrix.json")
    tr.metrics(run.parent, report.summary_metrics())
    for f in ("benchmark.csv", "accuracy_vs_p95.png", "gate_report.json"):
        tr.file(run.parent, files[f])
    with tr.stage("gate", {"selected": report.best or "none"}) as rid:
        tr.file(rid, files["gate_report.json"])


def register(
    run: Run, report: Report, gate: GateReport, tmp: Path, extra_card: str = "", extra_files: list[str] = ()
) -> tuple[str, bool]:
    """The selected candidate as a new version of the dataset's registered model, alias 'staging'; or, when a
    version already holds the very same artifact (sha256), that version, and nothing is registered or moved.
    `extra_card` is appended to the model card, `extra_files` go with it. Returns (version, whether it is new)."""
    best, cfg, tr = report.best, run.cfg, run.tracker
    m = report.results[best]
    sha = m.artifact.sha256
    if existing := registry.version_with_sha256(cfg.data.name, sha):  # publish's verdict line says so
        tr.tags(run.parent, {"registered_version": existing, "registered_candidate": best, "registered_new": False})
        return existing, False
    v = run.validation
    facts = CardFacts(
        v.success,
        v.evaluated,
        v.failed,
        layout.load_summary(run.root, cfg.data.name),
        run.lineage.tags(),
        sha,
        run.parent,
    )
    card = model_card(report, gate, facts) + extra_card
    (tmp / "model_card.md").write_text(card)
    tr.file(run.parent, tmp / "model_card.md")
    example = layout.load_splits(run.root, cfg.data.name)["test"].x[:1]
    files = [str(tmp / f) for f in ("model_card.md", "benchmark.csv", "gate_report.json")]
    files.append(str(layout.prepared_dir(run.root, cfg.data.name) / "preprocess.json"))
    tags = (
        run.lineage.tags()
        | {"candidate": best, "sha256": sha, "format": format_of(m.artifact.path), "gate_metric": cfg.gate.metric}
        | registry.metric_tags(m, report.results["teacher_fp32"], report.results["plain_fp32"])
    )
    version = registry.register(
        run.parent, cfg.data.name, m.artifact.path, example, files + list(extra_files), tags=tags, description=card
    )
    tr.tags(run.parent, {"registered_version": version, "registered_candidate": best, "registered_new": True})
    return version, True
