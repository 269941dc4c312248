"""The model card of a registered version (Markdown, its MLflow description and model_card.md): what it is for,
its data and validation, every model's scores on val and test, the KD gain and the teacher's strength, the
benchmark under its device profile, the gate's verdict against production at the time, and its lineage."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from flows.reporting.gate_report import GateReport
from flows.reporting.report import Report

ROLES = {
    "teacher_fp32": "teacher",
    "plain_fp32": "plain student (no teacher, same budget)",
    "kd_fp32": "KD student",
    "classic_fp32": "classical baseline (scikit-learn, no network)",
}
INPUTS = {"image": "image files", "audio": "WAV files", "text": "text lines", "tabular": "rows of feature values"}


@dataclass(frozen=True)
class CardFacts:
    """What the card tells beyond the report: validation's outcome, the prepared data's summary (summary.json),
    the run's lineage tags, the registered artifact's sha256 and the run's id."""

    validation_success: bool
    expectations_evaluated: int
    expectations_failed: int
    data_summary: dict
    lineage: dict
    sha256: str
    run_id: str


def _on(m, target: str) -> str:
    """A model's p50 / p95 on a target, or why there is none (the target cannot run its format)."""
    lat = m.targets.get(target)
    return f"{lat.interval('p50')} / {lat.interval('p95')}" if lat else "not run there (format)"


def _targets(report: Report) -> list[str]:
    """Each target's resolution and device, and every model's p50 and p95 on each when there are several."""
    out = []
    for t, res in report.timing.resolutions.items():
        d = report.timing.devices.get(t)
        where = (
            f"{d.cpu}, {d.cores} cores, {d.os}, ONNX Runtime {d.onnxruntime}, runs {', '.join(d.formats)}, "
            f"emulation {d.emulation}; "
            if d
            else ""
        )
        out.append(
            f"- **{t}**{' (the gate used these numbers)' if t == report.cfg.gate.target else ''}: {where}{res.line()}"
        )
    if len(report.timing.resolutions) > 1:
        names = list(report.timing.resolutions)
        out += ["", _row(["model", *[f"p50 / p95 ms on {t}" for t in names]]), _row(["---"] * (len(names) + 1))]
        for n, m in report.results.items():
            out.append(_row([n, *[_on(m, t) for t in names]]))
    return out


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _tables(report: Report) -> tuple[list[str], list[str]]:
    """The quality table (val and test scores, the gate's verdict) and the benchmark table, one row a model."""
    m, d = report.metric, report.cfg.data
    extra = [c for c in ("sensitivity", "specificity") if len(d.classes) == 2 and c != m]
    acc = ["val accuracy", "test accuracy"] if m != "accuracy" else []
    head = ["model", "role", f"val {m}", f"test {m}", *acc, "test macro F1", *[f"test {c}" for c in extra], "gate"]
    quality = [_row(head), _row(["---"] * len(head))]
    bench = [
        _row(
            [
                "model",
                "size KiB",
                "p50 ms [95% CI]",
                "p95 ms [95% CI]",
                "p99 ms",
                "throughput /s",
                "peak MiB",
                "energy nJ",
            ]
        ),
        _row(["---"] * 8),
    ]
    for r in report.table().itertuples():
        res = report.results[r.candidate]
        role = "**registered**" if r.candidate == report.best else ROLES.get(r.candidate, "candidate")
        quality.append(
            _row(
                [
                    r.candidate,
                    role,
                    f"{r.val_score:.4f}",
                    f"{r.test_score:.4f}",
                    *([f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}"] if acc else []),
                    f"{r.test_macro_f1:.4f}",
                    *[f"{res.test.get(c):.4f}" for c in extra],
                    r.gate,
                ]
            )
        )
        bench.append(
            _row(
                [
                    r.candidate,
                    f"{r.size_kb:.1f}",
                    str(res.latency.interval("p50")),
                    str(res.latency.interval("p95")),
                    f"{r.p99_ms:.4f}",
                    f"{r.throughput_sps:.0f}",
                    f"{r.peak_mem_mb:.1f}",
                    "—" if r.energy_nj != r.energy_nj else f"{r.energy_nj:.0f}",  # NaN: not estimated
                ]
            )
        )
    return quality, bench


def _data(report: Report, facts: CardFacts) -> list[str]:
    d, summary = report.cfg.data, facts.data_summary
    counts, from_source = summary.get("counts", {}), summary.get("splits_from_source")
    return [
        f"- Dataset `{d.name}` (kind `{d.kind}`), source `{d.source}` under `{d.root}`",
        f"- Data version (DVC hash of the prepared splits): `{facts.lineage['dataset_hash']}`",
        f"- Splits: train {counts.get('train')}, val {counts.get('val')}, test {counts.get('test')}; "
        f"duplicates dropped: {summary.get('duplicates_dropped')}"
        + (f"; {', '.join(from_source)} as the source split them" if from_source else ""),
        f"- Validation (Great Expectations): {'passed' if facts.validation_success else 'FAILED'}, "
        f"{facts.expectations_evaluated} expectations evaluated, {facts.expectations_failed} failed",
    ]


def _teacher(report: Report) -> str:
    t = report.cfg.teacher
    if t.source:
        return f"a file brought by the user (`{t.source}`)"
    if t.weights:
        return f"the user's trained `{t.arch}` network (width {t.width}, checkpoint `{t.weights}`)"
    networks = f"an ensemble of {t.ensemble} networks" if t.ensemble > 1 else "one network"
    arch = "" if t.arch == "edgekd" else f"`{t.arch}`, "
    return f"{networks} trained here ({arch}width {t.ensemble_widths or t.width})"


def _file(report: Report) -> str:
    return "model" + Path(report.results[report.best].artifact.path).suffix


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _executorch() -> str:
    return _version("executorch")


def _format(report: Report) -> str:
    """The registered file's format and the runtime it runs on."""
    if _file(report) == "model.pte":
        return (
            f"ExecuTorch program (`model.pte`, XNNPACK delegate, ExecuTorch {_executorch()}), lowered for batches of "
            f"exactly {report.cfg.benchmark.batch_size}"
        )
    if _file(report) == "model.tflite":
        mcu = report.results[report.best].mcu
        micro = (
            f"; full-integer, and runs under TensorFlow Lite Micro in a {mcu.fit.arena_bytes}-byte arena "
            f"(`edgekd export NAME@VERSION --format tflm DIR` writes the firmware files)"
            if mcu and mcu.fit.runs
            else ""
        )
        return (
            f"LiteRT (`model.tflite`), run by the LiteRT interpreter ({_version('ai-edge-litert')}), lowered for "
            f"batches of exactly {report.cfg.benchmark.batch_size}{micro}"
        )
    return "ONNX (`model.onnx`), run by ONNX Runtime's CPU execution provider, any batch size"


def _profile(report: Report) -> str:
    """The device profile every candidate was timed under on this host, with the runtimes that ran them."""
    import onnxruntime

    b = report.cfg.benchmark
    pte = (
        f"; `.pte` programs through ExecuTorch {_executorch()} (XNNPACK)" if "pte" in report.cfg.export.formats else ""
    )
    if "tflite" in report.cfg.export.formats:
        pte += f"; `.tflite` files through the LiteRT interpreter {_version('ai-edge-litert')} (XNNPACK)"
    return (
        f"Device profile: ONNX Runtime {onnxruntime.__version__} CPU execution provider, {b.intra_op_threads} "
        f"intra-op thread(s), batch {b.batch_size}, {b.rounds} interleaved rounds of {b.warmup_runs} warm-up "
        f"+ {b.timed_runs} timed runs, on {platform.machine()} ({os.cpu_count()} logical CPUs, {platform.system()})"
        f"{pte}."
    )


def _training(report: Report) -> str:
    """What a rebuild needs besides the commit and the data: the settings that change trained weights."""
    import torch

    t = report.cfg.train
    return (
        f"- Training: seed {t.seed}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels) on "
        f"{t.threads} CPU thread(s), deterministic algorithms {'on' if t.deterministic else 'off'} (`train.*`: another "
        "thread count or kernel level rounds sums differently, so `edgekd reproduce` rebuilds the same file only with "
        "these)"
    )


def model_card(report: Report, gate: GateReport, facts: CardFacts) -> str:
    d = report.cfg.data
    quality, bench = _tables(report)
    intended = d.intended_use or (
        f"Classifies {d.kind} inputs into {', '.join(d.classes)}, on inputs like "
        f"those of the `{d.name}` dataset; not validated for anything else."
    )
    lines = [
        f"# Model card: {d.name} / {report.best}",
        "",
        "## Intended use",
        "",
        intended,
        "",
        f"Input: raw {INPUTS.get(d.kind, 'samples')} through `extra_files/preprocess.json` (`edgekd predict`). "
        "Output: one of " + ", ".join(f"`{c}`" for c in d.classes) + ".",
        "",
        f"Format: {_format(report)}.",
        "",
        "## Data",
        "",
        *_data(report, facts),
        "",
        "## Metrics (validation and test splits, measured through each model's runtime)",
        "",
        "Every choice (KD variant, registered candidate) was made on validation; test is reported only. "
        f"Teacher: {_teacher(report)}.",
        "",
        *quality,
        "",
        *report.lines(),
        "",
        "## Benchmark",
        "",
        _profile(report),
        "",
        *bench,
        "",
        *_targets(report),
        "",
        report.energy_line(),
        "",
        *(["## Microcontroller (TensorFlow Lite Micro)", "", *report.mcu_lines(), ""] if report.mcu_rows() else []),
        "## Gate",
        "",
        *gate.lines(report.metric),
        "",
        "## Lineage",
        "",
        f"- Pipeline run (MLflow): `{facts.run_id}`; Prefect flow run: `{facts.lineage.get('prefect_flow_run_id')}`",
        f"- Git commit: `{facts.lineage.get('git_commit')}`; params hash: `{facts.lineage.get('params_hash')}`",
        f"- `{_file(report)}` sha256: `{facts.sha256}`",
        _training(report),
    ]
    return "\n".join(lines) + "\n"
