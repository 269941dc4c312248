"""`edgekd bench kd` arithmetic: the labelled subset, train and val drawn again, and the table of a KD benchmark
(mean ± std over seeds and splits, the method chosen on validation, each method's paired difference against the
plain student with its 95% interval and verdict, teacher-gap recovery). Pure: rows in, numbers out."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import train_test_split

from components.data.base import Dataset


def labelled_subset(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """A stratified `fraction` of the train split that keeps its labels, and the inputs of the rest (the
    unlabelled pool). At least one row per class stays labelled."""
    if not 0 < fraction <= 1:
        raise ValueError(f"labelled fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train, train.x[:0]
    n_classes = len(np.unique(train.y))
    size = max(n_classes, int(round(fraction * len(train))))
    keep, rest = train_test_split(np.arange(len(train)), train_size=size, stratify=train.y, random_state=seed)
    keep, rest = np.sort(keep), np.sort(rest)
    meta = {k: v[keep] for k, v in train.meta.items()}
    return Dataset(train.x[keep], train.y[keep], meta), train.x[rest]


def resplit(train: Dataset, val: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """Train and val drawn again from their union (stratified, val keeping its size), so that a choice made on val
    is not tuned to one split; `seed` 0 keeps them as prepared. The test split is never touched."""
    if seed == 0:
        return train, val
    x, y = np.concatenate([train.x, val.x]), np.concatenate([train.y, val.y])
    meta = {k: np.concatenate([train.meta[k], val.meta[k]]) for k in train.meta if k in val.meta}
    tr, va = train_test_split(np.arange(len(y)), test_size=len(val), stratify=y, random_state=seed)
    tr, va = np.sort(tr), np.sort(va)
    return (
        Dataset(x[tr], y[tr], {k: v[tr] for k, v in meta.items()}),
        Dataset(x[va], y[va], {k: v[va] for k, v in meta.items()}),
    )


class Accuracy(BaseModel):
    """A model's accuracy on val and test, through ONNX Runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_accuracy: float
    test_accuracy: float


class BenchRow(BaseModel):
    """One student of the bench: its width, method, seed, accuracies and the variant that trained it (a sweep keeps
    its best on val)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    method: str
    seed: int
    val_accuracy: float
    test_accuracy: float
    variant: str
    split: int = 0


class Interval(BaseModel):
    """The mean of paired differences with its 95% interval: Student's t with n - 1 degrees of freedom (no
    interval from fewer than two pairs: lo and hi are None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    lo: float | None
    hi: float | None
    n: int

    @classmethod
    def of(cls, values: list[float], level: float = 0.95) -> Interval:
        from scipy import stats

        a = np.asarray(values, dtype=float)
        if len(a) < 2:
            return cls(mean=float(a.mean()) if len(a) else float("nan"), lo=None, hi=None, n=len(a))
        half = float(stats.t.ppf((1 + level) / 2, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
        return cls(mean=float(a.mean()), lo=float(a.mean()) - half, hi=float(a.mean()) + half, n=len(a))

    def text(self, scale: float = 100.0, unit: str = "") -> str:
        if self.lo is None or self.hi is None:
            return f"{self.mean * scale:+.2f}{unit} (n={self.n}, no interval)"
        return f"{self.mean * scale:+.2f}{unit} [{self.lo * scale:+.2f}, {self.hi * scale:+.2f}]"


GAIN, NO_GAIN, LOSS = "gain", "no measurable gain", "loss"


def verdict(test_gain: Interval) -> str:
    """What a method's paired test difference against plain supports: a gain only when its whole 95% interval is
    above zero, a loss when it is below, else no measurable gain (also with no interval at all)."""
    if test_gain.lo is not None and test_gain.lo > 0:
        return GAIN
    if test_gain.hi is not None and test_gain.hi < 0:
        return LOSS
    return NO_GAIN


class Conditions(BaseModel):
    """What a bench's numbers depend on besides the data: printed above its table and kept in its JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int
    deterministic: bool
    device: str
    seeds: int
    splits: int
    widths: list[int]
    labelled_fraction: float
    torch: str
    cpu: str = ""  # torch's CPU kernel level (AVX2, AVX512, ...): another level rounds differently, so other weights
    commit: str
    date: str
    interval: str = "95%, Student's t over the paired (seed, split) differences, n - 1 degrees of freedom"


class Pair(BaseModel):
    """One seed and split: a method's student minus the plain student trained with the same seed on the same
    split, on val and on test (accuracy, 0-1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    split: int
    val_diff: float
    test_diff: float


class Stats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        a = np.asarray(values, dtype=float)
        return cls(mean=float(a.mean()), std=float(a.std()), n=len(a))


class BenchCell(BaseModel):
    """One width and method over seeds: val and test accuracy, and the recovery of the teacher - plain gap on test
    (None for plain, or when the teacher is no better than plain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    method: str
    val: Stats
    test: Stats
    recovery: float | None
    pairs: list[Pair] = []
    val_gain: Interval | None = None
    test_gain: Interval | None = None
    recovery_interval: Interval | None = None
    verdict: str | None = None


def summarize(rows: list[BenchRow], teachers: dict[int, Accuracy]) -> list[BenchCell]:
    """Per width and method (plain first): mean ± std of val and test accuracy over seeds and splits, the gap
    recovery (KD - plain) / (teacher - plain) on mean test accuracy, and (KD methods) the paired differences against
    plain with their intervals and verdict. `teachers`: the teacher's accuracy on each split."""
    groups: dict[tuple, list[BenchRow]] = defaultdict(list)
    for r in rows:
        groups[(r.width, r.method)].append(r)
    order = sorted(groups, key=lambda k: (k[0], k[1] != "plain", k[1]))
    teacher_test = float(np.mean([t.test_accuracy for t in teachers.values()]))
    out = []
    for width, method in order:
        val = Stats.of([r.val_accuracy for r in groups[(width, method)]])
        test = Stats.of([r.test_accuracy for r in groups[(width, method)]])
        cell = BenchCell(width=width, method=method, val=val, test=test, recovery=None)
        plain = {(r.seed, r.split): r for r in groups.get((width, "plain"), [])}
        if method != "plain" and plain:
            base = Stats.of([r.test_accuracy for r in plain.values()]).mean
            cell = _paired(cell, groups[(width, method)], plain, teachers, recovery(test.mean, base, teacher_test))
        out.append(cell)
    return out


def _paired(cell: BenchCell, rows: list[BenchRow], plain: dict, teachers: dict[int, Accuracy], rec) -> BenchCell:
    """The cell with its pairs against plain (same seed, same split), their intervals, per-pair recoveries (each
    against its split's teacher) and the verdict."""
    pairs = [
        Pair(
            seed=r.seed,
            split=r.split,
            val_diff=r.val_accuracy - plain[(r.seed, r.split)].val_accuracy,
            test_diff=r.test_accuracy - plain[(r.seed, r.split)].test_accuracy,
        )
        for r in rows
        if (r.seed, r.split) in plain
    ]
    recoveries = [
        x
        for r in rows
        if (r.seed, r.split) in plain
        and (x := recovery(r.test_accuracy, plain[(r.seed, r.split)].test_accuracy, teachers[r.split].test_accuracy))
        is not None
    ]
    test_gain = Interval.of([p.test_diff for p in pairs])
    return cell.model_copy(
        update={
            "recovery": rec,
            "pairs": pairs,
            "val_gain": Interval.of([p.val_diff for p in pairs]),
            "test_gain": test_gain,
            "recovery_interval": Interval.of(recoveries) if recoveries else None,
            "verdict": verdict(test_gain),
        }
    )


def recovery(kd: float, plain: float, teacher: float) -> float | None:
    """Share of the teacher - plain gap that KD closes (1: matches the teacher, < 0: worse than plain); None when
    the teacher is no better than plain (there is no gap to close)."""
    gap = teacher - plain
    return None if gap <= 0 else (kd - plain) / gap


def chosen(table: list[BenchCell]) -> dict[int, BenchCell]:
    """Per width, the KD method with the best mean validation accuracy over seeds and splits (ties: lower val std,
    then table order): the method a user would pick without looking at test."""
    best: dict[int, BenchCell] = {}
    for row in table:
        if row.method == "plain":
            continue
        cur = best.get(row.width)
        if cur is None or (row.val.mean, -row.val.std) > (cur.val.mean, -cur.val.std):
            best[row.width] = row
    return best
