"""What `edgekd bench kd` shows: the table of mean ± std accuracy per width and method with the method chosen on
val, each method's paired difference against plain with its interval over splits, Holm-adjusted p, recovery and
verdict, the conditions and the statistics the numbers hold under, its JSON, and the accuracy-vs-width plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.bench import Accuracy, BenchCell, BenchRow, Conditions, chosen
from components.paired import FAMILYWISE
from flows.reporting.plots import _pyplot


@dataclass(frozen=True)
class BenchResult:
    dataset: str
    labelled_fraction: float
    teachers: dict[int, Accuracy]  # split -> the teacher trained on it
    rows: list[BenchRow]
    table: list[BenchCell]
    skipped: dict[str, str]  # method -> why the data or the teacher cannot serve it
    conditions: Conditions

    @property
    def teacher(self) -> Accuracy:
        """The teacher's accuracy, averaged over splits."""
        ts = list(self.teachers.values())
        return Accuracy(
            val_accuracy=sum(t.val_accuracy for t in ts) / len(ts),
            test_accuracy=sum(t.test_accuracy for t in ts) / len(ts),
        )

    @property
    def chosen(self) -> dict[str, str]:
        """Per width, the method chosen on val."""
        return {str(w): r.method for w, r in chosen(self.table).items()}

    def as_json(self) -> dict:
        """What `bench kd --json` writes and the bench's MLflow run keeps."""
        return {
            "dataset": self.dataset,
            "labelled_fraction": self.labelled_fraction,
            "conditions": self.conditions.model_dump(),
            "teacher": self.teacher.model_dump(),
            "teachers": {str(k): t.model_dump() for k, t in self.teachers.items()},
            "rows": [r.model_dump() for r in self.rows],
            "table": [r.model_dump() for r in self.table],
            "chosen": self.chosen,
            "skipped": self.skipped,
        }


def render(result: BenchResult, min_margin: float = 0.0) -> str:
    teacher, table, c = result.teacher, result.table, result.conditions
    best = chosen(table)
    lines = [
        f"KD bench on {result.dataset} (labelled fraction {result.labelled_fraction:g}): accuracy through ONNX "
        f"Runtime, mean ± std over {c.seeds} seed(s) x {c.splits} split(s); teacher val "
        f"{teacher.val_accuracy:.4f}, test {teacher.test_accuracy:.4f}",
        f"conditions: {c.threads} training thread(s), deterministic algorithms {c.deterministic}, torch {c.torch} "
        f"({c.cpu or 'CPU kernels not recorded'}), "
        f"commit {c.commit[:12]}, {c.date}",
        f"statistics: {c.interval}",
        f"{'width':>5}  {'method':<18} {'val':>15}  {'test':>15}  {'val - plain, points [95% CI]':>29}  "
        f"{'test - plain, points [95% CI]':>30}  {'Holm p':>6}  {'recovery [95% CI]':>22}  verdict",
    ]
    for r in table:
        mark = " <- chosen on val" if best.get(r.width) is r else ""
        val_gain = SELECTED if r.selected_on_val else "" if r.val_gain is None else r.val_gain.text()
        gain = "" if r.test_gain is None else r.test_gain.text()
        holm = "" if r.holm_p is None else "<0.001" if r.holm_p < 0.001 else f"{r.holm_p:.3f}"
        rec = "" if r.recovery_interval is None else r.recovery_interval.text(unit="%")
        lines.append(
            f"{r.width:>5}  {r.method:<18} {r.val.mean:.4f} ± {r.val.std:.4f}  {r.test.mean:.4f} ± "
            f"{r.test.std:.4f}  {val_gain:>29}  {gain:>30}  {holm:>6}  {rec:>22}  {r.verdict or ''}{mark}"
        )
    return "\n".join(lines + _notes(result, min_margin))


SELECTED = "selected on val: not a claim"


def _notes(result: BenchResult, min_margin: float) -> list[str]:
    """What the columns mean, under the table, and what the teacher and the data could not serve."""
    teacher, table, c = result.teacher, result.table, result.conditions
    family = max((r.family for r in table), default=0)
    lines = [
        f"val - plain, test - plain: the paired difference against the plain student of the same seed and split "
        f"(the same student trained without a teacher on the same budget), paired over splits: the seeds of a split "
        f"share its teacher and its train/val draw, so each split's mean over its {c.seeds} seed(s) is one value "
        f"and the interval is over {c.splits} split(s); on test the test items' sampling variance is added (every "
        f"student is scored on the same test set); recovery = (method - plain) / (teacher - plain), per split",
    ]
    if family:
        lines.append(
            f"Holm p: the test p-value Holm-adjusted over the {family} KD method(s) of the width; a method gains only "
            f"where it is below {FAMILYWISE:g} with a positive mean, loses where below with a negative one, else no "
            "measurable gain (a 95% interval clear of zero is not enough among several methods)",
        )
    if any(r.selected_on_val for r in table):
        lines.append(f"{SELECTED}: a sweep picked its best variant on val, so its val difference is at least zero")
    if c.splits < 2:
        lines.append(
            f"{c.splits} split: no interval between splits, so no verdict (not enough splits); run --splits 3 or "
            "more to test a gain"
        )
    if any(r.test_gain is not None and r.test_gain.n >= 2 and r.test_gain.items == 0 for r in table):
        lines.append("some rows carry no per-item test scores: their test interval is the spread between splits alone")
    lines += [
        f"width {r.width}: the teacher is not clearly stronger than the plain student (val "
        f"{teacher.val_accuracy:.4f} vs {r.val.mean:.4f}, margin below teacher.min_margin "
        f"{min_margin}): KD cannot be expected to help"
        for r in table
        if r.method == "plain" and teacher.val_accuracy - r.val.mean < min_margin
    ]
    return lines + [f"skipped {name}: {why}" for name, why in result.skipped.items()]


def width_plot(table: list[BenchCell], teacher: Accuracy, path: Path, dataset: str, fraction: float) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r.method for r in table):
        rs = sorted((r for r in table if r.method == method), key=lambda r: r.width)
        ax.errorbar(
            [r.width for r in rs],
            [r.test.mean * 100 for r in rs],
            yerr=[r.test.std * 100 for r in rs],
            marker="o",
            capsize=3,
            label=method,
            linewidth=2.5 if method == "plain" else 1.2,
            color="black" if method == "plain" else None,
        )
    ax.axhline(teacher.test_accuracy * 100, linestyle="--", color="grey", label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("student width")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds, ORT")
    ax.set_title(f"KD methods vs the plain student: {dataset}, labelled fraction {fraction:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
