"""Human-facing output of a run: the candidate table (val and test side by side), plots, the terminal summary,
the JSON summary and the model card."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd

from components.config import BenchmarkConfig, PipelineConfig
from components.gate import Decision

ROLES = {"teacher_fp32": "teacher", "plain_fp32": "plain student (no teacher, same budget)",
         "kd_fp32": "KD student"}


def scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def flat_metrics(m: dict) -> dict:
    """A measured candidate as MLflow metrics: `val.*`, `test.*`, latency and size."""
    return ({f"val.{k}": v for k, v in scalars(m["val"]).items()}
            | {f"test.{k}": v for k, v in scalars(m["test"]).items()}
            | {k: v for k, v in scalars(m).items() if k not in ("batch_size",)})


class Report:
    """Everything one run reports, computed once from the measured candidates and the gate's decisions."""

    def __init__(self, cfg: PipelineConfig, results: dict[str, dict], decisions: dict[str, Decision],
                 best: str | None, kd_variant: str | None, teacher_strong: bool):
        self.cfg, self.results, self.decisions, self.best = cfg, results, decisions, best
        self.kd_variant, self.teacher_strong = kd_variant, teacher_strong
        self.metric = cfg.gate.metric

    def kd_gain(self) -> dict | None:
        """The KD student minus the plain student (same architecture and budget), on the gate metric."""
        if "kd_fp32" not in self.results:
            return None
        kd, plain = self.results["kd_fp32"], self.results["plain_fp32"]
        return {s: kd[s][self.metric] - plain[s][self.metric] for s in ("val", "test")}

    def table(self) -> pd.DataFrame:
        teacher, rows = self.results["teacher_fp32"], []
        for name, m in self.results.items():
            rows.append({
                "candidate": name, "metric": self.metric,
                "val_score": m["val"].get(self.metric, float("nan")),
                "test_score": m["test"].get(self.metric, float("nan")),
                "val_accuracy": m["val"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
                "test_macro_f1": m["test"]["macro_f1"], "size_kb": m["size_bytes"] / 1024, "p50_ms": m["p50_ms"],
                "p95_ms": m["p95_ms"], "p99_ms": m["p99_ms"], "throughput_sps": m["throughput_sps"],
                "peak_mem_mb": m["peak_mem_mb"], "energy_nj": m.get("energy_nj", float("nan")),
                "size_ratio": teacher["size_bytes"] / m["size_bytes"],
                "p50_speedup": teacher["p50_ms"] / m["p50_ms"],
                "gate": "pass" if self.decisions[name].passed else "fail",
            })
        return pd.DataFrame(rows)

    def summary_metrics(self) -> dict:
        out = {}
        gain = self.kd_gain()
        if gain:
            out |= {"kd_gain.val": gain["val"], "kd_gain.test": gain["test"]}
        for r in self.table().itertuples():
            out |= {f"{r.candidate}.size_ratio": r.size_ratio, f"{r.candidate}.p50_speedup": r.p50_speedup,
                    f"{r.candidate}.val_{self.metric}": r.val_score, f"{r.candidate}.test_{self.metric}": r.test_score}
        return out

    def json(self, version: str | None, new: bool = True) -> dict:
        """The run summary `edgekd run --json` writes."""
        gain = self.kd_gain()
        return {
            "dataset": self.cfg.data.name, "gate_metric": self.metric,
            "registered": {"candidate": self.best, "version": version, "new_version": new} if version else None,
            "kd_variant": self.kd_variant, "kd_gain": gain, "teacher_clearly_stronger": self.teacher_strong,
            "candidates": {n: {"val": scalars(m["val"]), "test": scalars(m["test"]), "p50_ms": m["p50_ms"],
                               "p95_ms": m["p95_ms"], "size_bytes": m["size_bytes"],
                               "gate": "pass" if self.decisions[n].passed else "fail",
                               "reasons": self.decisions[n].reasons} for n, m in self.results.items()},
        }

    def write(self, folder: Path, gate_report: dict) -> dict[str, Path]:
        """benchmark.csv, accuracy_vs_p95.png, gate_report.json and one confusion plot per candidate."""
        files = {"benchmark.csv": folder / "benchmark.csv", "accuracy_vs_p95.png": folder / "accuracy_vs_p95.png",
                 "gate_report.json": folder / "gate_report.json"}
        self.table().to_csv(files["benchmark.csv"], index=False)
        tradeoff_plot(self.results, files["accuracy_vs_p95.png"], self.cfg.benchmark, self.metric)
        files["gate_report.json"].write_text(json.dumps(gate_report, indent=2))
        for name, m in self.results.items():
            files[f"confusion_{name}.png"] = folder / f"confusion_{name}.png"
            confusion_plot(m["test"]["confusion"], self.cfg.data.classes, files[f"confusion_{name}.png"], name)
        return files

    def lines(self) -> list[str]:
        """The KD gain and the teacher's strength, as sentences (terminal and model card)."""
        m, out = self.metric, []
        gain = self.kd_gain()
        teacher, plain = self.results["teacher_fp32"], self.results["plain_fp32"]
        if gain is None:
            out.append(f"KD gain: none. No KD variant beat the plain student on val {m}, so there is no KD "
                       f"candidate (plain_fp32: val {plain['val'][m]:.4f}, test {plain['test'][m]:.4f}).")
        else:
            out.append(f"KD gain ({self.kd_variant} vs the same student trained without a teacher on the same "
                       f"budget, {m}): val {gain['val'] * 100:+.2f} points, test {gain['test'] * 100:+.2f} points.")
        if not self.teacher_strong:
            out.append(f"Warning: the teacher is not clearly stronger than the plain student (val {m} "
                       f"{teacher['val'][m]:.4f} vs {plain['val'][m]:.4f}, margin below teacher.min_margin "
                       f"{self.cfg.teacher.min_margin}): KD cannot be expected to help.")
        return out

    def energy_line(self) -> str:
        sources = sorted({m.get("energy_source") or "not measured" for m in self.results.values()})
        return "Energy per inference (nJ): " + "; ".join(sources) + "."

    def render(self, version: str | None, model_name: str, new: bool = True) -> str:
        from rich.console import Console
        from rich.table import Table

        p, m = self.cfg.benchmark, self.metric
        t = Table(title=f"Candidates: {m} through ORT on val (chosen on) and test (reported); latency on ORT CPU, "
                        f"{p.intra_op_threads} thread(s), batch {p.batch_size}, {p.timed_runs} timed runs after "
                        f"{p.warmup_runs} warm-up")
        acc = m != "accuracy"
        cols = ["candidate", f"val {m}", f"test {m}", *(["val acc", "test acc"] if acc else []), "size KiB",
                "p50 ms", "p95 ms", "nJ", "size ×", "speed ×", "gate"]
        for c in cols:
            t.add_column(c, justify="left" if c in ("candidate", "gate") else "right")
        for r in self.table().itertuples():
            t.add_row(r.candidate, f"{r.val_score:.4f}", f"{r.test_score:.4f}",
                      *([f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}"] if acc else []), f"{r.size_kb:.1f}",
                      f"{r.p50_ms:.4f}", f"{r.p95_ms:.4f}", f"{r.energy_nj:.0f}", f"{r.size_ratio:.1f}",
                      f"{r.p50_speedup:.2f}", r.gate)
        buf = io.StringIO()
        con = Console(file=buf, width=140, force_terminal=False)
        con.print(t)
        con.print(self.energy_line(), highlight=False)
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
            return (f"{model_name} version {version} already holds this artifact ({self.best}, chosen on val "
                    f"{self.metric}, same sha256): no new version registered, no alias moved.")
        return (f"Registered {model_name} version {version} ({self.best}, chosen on val {self.metric}) with alias "
                "'staging'.")

    def gate_lines(self, gate_report: dict) -> list[str]:
        """The gate's policy, the version holding production at the time and each candidate's verdict (Markdown)."""
        m, champion = self.metric, gate_report["champion_version"]
        if champion:
            prod = gate_report["champion"] or {}
            production = (f"Production at the time: version {champion} (val {m} {prod.get(m, float('nan')):.4f}); a "
                          f"candidate may lose at most {self.cfg.gate.regression_tolerance} of {m} against it.")
        else:
            production = "Production at the time: none (no version held `production`)."
        return [f"Policy (checked on validation metrics): "
                f"{', '.join(f'{k}={v}' for k, v in gate_report['policy'].items())}.", "", production, "",
                *[f"- {n}: " + ("pass" if d.passed else "fail: " + "; ".join(d.reasons))
                  for n, d in self.decisions.items()]]

    def gate_markdown(self, gate_report: dict, version: str | None, new: bool, run_id: str) -> str:
        """The gate report of a run as Markdown (the Prefect artifact `gate-<dataset>`)."""
        name = self.cfg.data.name
        return "\n".join([f"# Gate: {name}", "", self.verdict(version, name, new), "", *self.gate_lines(gate_report), "",
                          f"MLflow: experiment `{name}`, pipeline run `{run_id}`."]) + "\n"

    def model_card(self, gate_report: dict, validation: dict, data_summary: dict, lineage: dict, sha256: str,
                   run_id: str) -> str:
        """The Markdown card of a registered version: what it is for, its data and validation, every model's
        metrics on val and test, the KD gain and the teacher's strength, the benchmark under its device profile,
        and the gate's verdict against production at the time."""
        import platform

        import onnxruntime

        d, b, m, cfg = self.cfg.data, self.cfg.benchmark, self.metric, self.cfg

        def row(cells) -> str:
            return "| " + " | ".join(str(c) for c in cells) + " |"

        extra = [c for c in ("sensitivity", "specificity") if len(d.classes) == 2 and c != m]
        head = ["model", "role", f"val {m}", f"test {m}", *(["val accuracy", "test accuracy"] if m != "accuracy"
                                                           else []), "test macro F1", *[f"test {c}" for c in extra],
                "gate"]
        quality = [row(head), row(["---"] * len(head))]
        bench = [row(["model", "size KiB", "p50 ms", "p95 ms", "p99 ms", "throughput /s", "peak MiB", "energy nJ"]),
                 row(["---"] * 8)]
        for r in self.table().itertuples():
            res = self.results[r.candidate]
            role = "**registered**" if r.candidate == self.best else ROLES.get(r.candidate, "candidate")
            quality.append(row([r.candidate, role, f"{r.val_score:.4f}", f"{r.test_score:.4f}",
                                *([f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}"] if m != "accuracy" else []),
                                f"{r.test_macro_f1:.4f}", *[f"{res['test'][c]:.4f}" for c in extra], r.gate]))
            bench.append(row([r.candidate, f"{r.size_kb:.1f}", f"{r.p50_ms:.4f}", f"{r.p95_ms:.4f}",
                              f"{r.p99_ms:.4f}", f"{r.throughput_sps:.0f}", f"{r.peak_mem_mb:.1f}",
                              f"{r.energy_nj:.0f}"]))
        counts = data_summary.get("counts", {})
        intended = d.intended_use or (f"Classifies {d.kind} inputs into {', '.join(d.classes)}, on inputs like "
                                      f"those of the `{d.name}` dataset; not validated for anything else.")
        teacher = (f"a file brought by the user (`{cfg.teacher.source}`)" if cfg.teacher.source else
                   f"{'an ensemble of ' + str(cfg.teacher.ensemble) + ' networks' if cfg.teacher.ensemble > 1 else 'one network'} "
                   f"trained here (width {cfg.teacher.ensemble_widths or cfg.teacher.width})")
        from_source = data_summary.get("splits_from_source")
        lines = [
            f"# Model card: {d.name} / {self.best}", "",
            "## Intended use", "", intended, "",
            "Input: raw " + {"image": "image files", "audio": "WAV files", "text": "text lines",
                             "tabular": "rows of feature values"}.get(d.kind, "samples")
            + " through `extra_files/preprocess.json` (`edgekd predict`). Output: one of "
            + ", ".join(f"`{c}`" for c in d.classes) + ".", "",
            "## Data", "",
            f"- Dataset `{d.name}` (kind `{d.kind}`), source `{d.source}` under `{d.root}`",
            f"- Data version (DVC hash of the prepared splits): `{lineage['dataset_hash']}`",
            f"- Splits: train {counts.get('train')}, val {counts.get('val')}, test {counts.get('test')}; "
            f"duplicates dropped: {data_summary.get('duplicates_dropped')}"
            + (f"; {', '.join(from_source)} as the source split them" if from_source else ""),
            f"- Validation (Great Expectations): {'passed' if validation['success'] else 'FAILED'}, "
            f"{validation['evaluated']} expectations evaluated, {validation['failed']} failed", "",
            "## Metrics (validation and test splits, measured through ONNX Runtime)", "",
            f"Every choice (KD variant, registered candidate) was made on validation; test is reported only. "
            f"Teacher: {teacher}.", "", *quality, "", *self.lines(), "",
            "## Benchmark", "",
            f"Device profile: ONNX Runtime {onnxruntime.__version__} CPU execution provider, {b.intra_op_threads} "
            f"intra-op thread(s), batch {b.batch_size}, {b.timed_runs} timed runs after {b.warmup_runs} warm-up, "
            f"on {platform.machine()} ({os.cpu_count()} logical CPUs, {platform.system()}).", "", *bench, "",
            self.energy_line(), "",
            "## Gate", "", *self.gate_lines(gate_report), "",
            "## Lineage", "",
            f"- Pipeline run (MLflow): `{run_id}`; Prefect flow run: `{lineage.get('prefect_flow_run_id')}`",
            f"- Git commit: `{lineage.get('git_commit')}`; params hash: `{lineage.get('params_hash')}`",
            f"- `model.onnx` sha256: `{sha256}`",
        ]
        return "\n".join(lines) + "\n"


def tradeoff_plot(results: dict[str, dict], path: Path, profile: BenchmarkConfig, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in results.items():
        x, y = m["p95_ms"] * 1000, m["val"].get(metric, float("nan")) * 100
        ax.scatter(x, y, s=40 + m["size_bytes"] / 4096)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"p95 latency (µs), ORT CPU, {profile.intra_op_threads} thread(s), batch {profile.batch_size}")
    ax.set_ylabel(f"validation {metric} (%), through ONNX Runtime")
    ax.set_title("Validation score vs latency of every candidate (marker area ~ file size)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_plot(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1.0 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, matrix[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(n), classes, rotation=45, fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (test split, ORT)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
