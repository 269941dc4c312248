"""A run's report: the candidate table (val and test side by side), the KD gain, the terminal summary, the JSON
summary and the files logged with the run."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from math import nan
from pathlib import Path

import pandas as pd

from components.benchmark import Resolution
from components.candidate import Measurement
from components.config import PipelineConfig
from components.formats.runtime import format_of
from components.gate import Decision
from components.timing import DeviceFacts
from flows.reporting.gate_report import GateReport
from flows.reporting.mcu import McuRow, mcu_lines, mcu_rows
from flows.reporting.plots import confusion_plot, tradeoff_plot


def flat_metrics(m: Measurement) -> dict[str, float]:
    """A measured candidate as MLflow metrics: `val.*`, `test.*`, latency and size."""
    return (
        {f"val.{k}": v for k, v in m.val.scalars().items()}
        | {f"test.{k}": v for k, v in m.test.scalars().items()}
        | m.latency.numbers()
        | {f"{p}_ms.{t}": getattr(lat, f"{p}_ms") for t, lat in m.targets.items() for p in ("p50", "p95")}
    )


def _p50_on(m: Measurement, target: str) -> str:
    """A model's p50 on a target, or a dash where that target cannot run its format."""
    return f"{m.targets[target].p50_ms:.4f}" if target in m.targets else "—"


@dataclass(frozen=True)
class Timing:
    """How a run's latencies were measured: each target's resolution and what each device agent said it is."""

    resolutions: dict[str, Resolution]
    devices: dict[str, DeviceFacts]

    def as_json(self) -> dict:
        return {
            t: {"resolution": r.model_dump(mode="json")}
            | ({"device": self.devices[t].model_dump(mode="json")} if t in self.devices else {})
            for t, r in self.resolutions.items()
        }


@dataclass(frozen=True)
class KdGain:
    """The KD student minus the plain student (same architecture and budget) on the gate metric."""

    val: float
    test: float


class Report:
    """Everything one run reports, computed once from the measured candidates and the gate's decisions. A
    candidate without a decision is a reference (a search's)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        results: dict[str, Measurement],
        decisions: dict[str, Decision],
        best: str | None,
        kd_variant: str | None,
        teacher_strong: bool,
        timing: Timing,
    ):
        self.cfg, self.results, self.decisions, self.best = cfg, results, decisions, best
        self.kd_variant, self.teacher_strong, self.timing = kd_variant, teacher_strong, timing
        self.resolution = timing.resolutions[cfg.gate.target]
        self.metric = cfg.gate.metric

    def verdict_of(self, name: str) -> str:
        d = self.decisions.get(name)
        return "reference" if d is None else "pass" if d.passed else "fail"

    def kd_gain(self) -> KdGain | None:
        if "kd_fp32" not in self.results:
            return None
        kd, plain, m = self.results["kd_fp32"], self.results["plain_fp32"], self.metric
        return KdGain(kd.val.get(m) - plain.val.get(m), kd.test.get(m) - plain.test.get(m))

    def table(self) -> pd.DataFrame:
        teacher, rows = self.results["teacher_fp32"].latency, []
        for name, m in self.results.items():
            lat = m.latency
            rows.append(
                {
                    "candidate": name,
                    "metric": self.metric,
                    "val_score": m.val.get(self.metric),
                    "test_score": m.test.get(self.metric),
                    "val_accuracy": m.val.accuracy,
                    "test_accuracy": m.test.accuracy,
                    "test_macro_f1": m.test.macro_f1,
                    "size_kb": lat.size_bytes / 1024,
                    "p50_ms": lat.p50_ms,
                    "p95_ms": lat.p95_ms,
                    "p99_ms": lat.p99_ms,
                    "throughput_sps": lat.throughput_sps,
                    "peak_mem_mb": lat.peak_mem_mb,
                    "energy_nj": lat.energy_nj,
                    "size_ratio": teacher.size_bytes / lat.size_bytes,
                    "p50_speedup": teacher.p50_ms / lat.p50_ms,
                    "gate": self.verdict_of(name),
                }
                | {f"p50_ms_{t}": m.targets[t].p50_ms if t in m.targets else nan for t in self.other_targets()}
            )
        return pd.DataFrame(rows)

    def mcu_rows(self) -> list[McuRow]:
        return mcu_rows(self.results, self.cfg, self.metric)

    def mcu_lines(self) -> list[str]:
        return mcu_lines(self.mcu_rows(), self.cfg, self.metric)

    def other_targets(self) -> list[str]:
        """The targets measured besides the gate's, in order."""
        return [t for t in self.timing.resolutions if t != self.cfg.gate.target]

    def summary_metrics(self) -> dict[str, float]:
        out = {}
        if gain := self.kd_gain():
            out |= {"kd_gain.val": gain.val, "kd_gain.test": gain.test}
        for r in self.table().itertuples():
            out |= {
                f"{r.candidate}.size_ratio": r.size_ratio,
                f"{r.candidate}.p50_speedup": r.p50_speedup,
                f"{r.candidate}.val_{self.metric}": r.val_score,
                f"{r.candidate}.test_{self.metric}": r.test_score,
            }
        return out

    def as_json(self, version: str | None, new: bool = True) -> dict:
        """The run summary `edgekd run --json` writes."""
        gain = self.kd_gain()
        return {
            "dataset": self.cfg.data.name,
            "gate_metric": self.metric,
            "registered": {"candidate": self.best, "version": version, "new_version": new} if version else None,
            "kd_variant": self.kd_variant,
            "kd_gain": vars(gain) if gain else None,
            "teacher_clearly_stronger": self.teacher_strong,
            "candidates": {
                n: {
                    "format": format_of(m.artifact.path),
                    "val": m.val.scalars(),
                    "test": m.test.scalars(),
                    **{p: m.latency.interval(p).model_dump() | {"unit": "ms"} for p in ("p50", "p95")},
                    "p50_ms": m.latency.p50_ms,
                    "p95_ms": m.latency.p95_ms,
                    "targets": {
                        t: {p: lat.interval(p).model_dump() | {"unit": "ms"} for p in ("p50", "p95")}
                        for t, lat in m.targets.items()
                    },
                    "size_bytes": m.latency.size_bytes,
                    "sha256": m.artifact.sha256,
                    **({"tflm": m.mcu.as_json(self.cfg.benchmark.mcus())} if m.mcu else {}),
                    "gate": self.verdict_of(n),
                    "reasons": self.decisions[n].reasons if n in self.decisions else [],
                }
                for n, m in self.results.items()
            },
            "gate_target": self.cfg.gate.target,
            "timing_resolution": self.resolution.model_dump(mode="json"),
            "targets": self.timing.as_json(),
        }

    def write(self, folder: Path, gate_report: GateReport) -> dict[str, Path]:
        """benchmark.csv, accuracy_vs_p95.png, gate_report.json and one confusion plot per candidate."""
        files = {
            "benchmark.csv": folder / "benchmark.csv",
            "accuracy_vs_p95.png": folder / "accuracy_vs_p95.png",
            "gate_report.json": folder / "gate_report.json",
        }
        self.table().to_csv(files["benchmark.csv"], index=False)
        tradeoff_plot(self.results, files["accuracy_vs_p95.png"], self.cfg.benchmark, self.metric)
        files["gate_report.json"].write_text(json.dumps(gate_report.as_json(), indent=2))
        for name, m in self.results.items():
            files[f"confusion_{name}.png"] = folder / f"confusion_{name}.png"
            confusion_plot(m.test.confusion, self.cfg.data.classes, files[f"confusion_{name}.png"], name)
        return files

    def lines(self) -> list[str]:
        """The KD gain and the teacher's strength, as sentences (terminal and model card)."""
        m, out = self.metric, []
        gain = self.kd_gain()
        teacher, plain = self.results["teacher_fp32"], self.results["plain_fp32"]
        if gain is None:
            out.append(
                f"KD gain: none. No KD variant beat the plain student on val {m}, so there is no KD "
                f"candidate (plain_fp32: val {plain.val.get(m):.4f}, test {plain.test.get(m):.4f})."
            )
        else:
            out.append(
                f"KD gain ({self.kd_variant} vs the same student trained without a teacher on the same "
                f"budget, {m}): val {gain.val * 100:+.2f} points, test {gain.test * 100:+.2f} points. One seed "
                f"of one split: a difference of this size can be noise; `edgekd bench kd --seeds 5 --splits 3` "
                "gives it with its 95% interval."
            )
        if not self.teacher_strong:
            out.append(
                f"Warning: the teacher is not clearly stronger than the plain student (val {m} "
                f"{teacher.val.get(m):.4f} vs {plain.val.get(m):.4f}, margin below teacher.min_margin "
                f"{self.cfg.teacher.min_margin}): KD cannot be expected to help."
            )
        return out

    def energy_line(self) -> str:
        sources = sorted({m.latency.energy_source or "not measured" for m in self.results.values()})
        return "Energy per inference (nJ): " + "; ".join(sources) + "."

    def render(self, version: str | None, model_name: str, new: bool = True) -> str:
        from rich.console import Console
        from rich.table import Table

        p, m = self.cfg.benchmark, self.metric
        t = Table(
            title=f"Candidates: {m} through their runtime on val (chosen on) and test (reported); latency on "
            f"{self.cfg.gate.target}, CPU, {p.intra_op_threads} thread(s), batch {p.batch_size}, medians of "
            f"{self.resolution.rounds} interleaved rounds of {p.timed_runs} timed runs after {p.warmup_runs} warm-up"
        )
        others = self.other_targets()
        acc = m != "accuracy"
        cols = [
            "candidate",
            f"val {m}",
            f"test {m}",
            *(["val acc", "test acc"] if acc else []),
            "size KiB",
            "p50 ms",
            "p95 ms",
            *[f"p50 @{o}" for o in others],
            "nJ",
            "size ×",
            "speed ×",
            "gate",
        ]
        for c in cols:
            t.add_column(c, justify="left" if c in ("candidate", "gate") else "right")
        for r in self.table().itertuples():
            t.add_row(
                r.candidate,
                f"{r.val_score:.4f}",
                f"{r.test_score:.4f}",
                *([f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}"] if acc else []),
                f"{r.size_kb:.1f}",
                f"{r.p50_ms:.4f}",
                f"{r.p95_ms:.4f}",
                *[_p50_on(self.results[r.candidate], o) for o in others],
                "—" if r.energy_nj != r.energy_nj else f"{r.energy_nj:.0f}",  # NaN: not estimated
                f"{r.size_ratio:.1f}",
                f"{r.p50_speedup:.2f}",
                r.gate,
            )
        buf = io.StringIO()
        con = Console(file=buf, width=140, force_terminal=False)
        con.print(t)
        for target, res in self.timing.resolutions.items():
            con.print(f"{target}: {res.line()}", highlight=False)
        con.print(self.energy_line(), highlight=False)
        for line in self.mcu_lines():
            con.print(line, highlight=False)
        for line in self.lines():
            con.print(line)
        con.print(self.verdict(version, model_name, new))
        for name, d in self.decisions.items():
            if not d.passed:
                con.print(f"  {name} failed: " + "; ".join(d.reasons))
        return buf.getvalue()

    def verdict(self, version: str | None, model_name: str, new: bool = True) -> str:
        if not self.best:
            return "No candidate passed the gate; nothing was registered."
        if not new:
            return (
                f"{model_name} version {version} already holds this artifact ({self.best}, {self.chosen_by()}, "
                "same sha256): no new version registered, no alias moved."
            )
        return f"Registered {model_name} version {version} ({self.best}, {self.chosen_by()}) with alias 'staging'."

    def chosen_by(self) -> str:
        """How the registered candidate was chosen among those that passed (`gate.select`)."""
        g = self.cfg.gate
        if g.select == "accuracy":
            return f"chosen on val {self.metric}"
        what = f"the fastest on {g.target}" if g.select == "latency" else "the smallest"
        return f"{what} within {g.select_tolerance * 100:g} points of the best val {self.metric}"

    def gate_markdown(self, gate_report: GateReport, version: str | None, new: bool, run_id: str) -> str:
        """The gate report of a run as Markdown (the Prefect artifact `gate-<dataset>`)."""
        name = self.cfg.data.name
        return (
            "\n".join(
                [
                    f"# Gate: {name}",
                    "",
                    self.verdict(version, name, new),
                    "",
                    *gate_report.lines(self.metric),
                    "",
                    f"MLflow: experiment `{name}`, pipeline run `{run_id}`.",
                ]
            )
            + "\n"
        )
