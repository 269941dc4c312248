"""`edgekd bench kd` arithmetic: the labelled subset, train and val drawn again, and the table of a KD benchmark
(mean ± std over seeds and splits, the method chosen on validation, each method's paired difference against the
plain student with the split as the unit and the test items' sampling variance in its 95% interval, a verdict
Holm-adjusted over the methods of a width, teacher-gap recovery). Pure: rows in, numbers out."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from sklearn.model_selection import train_test_split

from components.data.base import Dataset
from components.paired import Interval, clustered, holm, verdict


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


def correctness(predicted: np.ndarray, y: np.ndarray) -> str:
    """Per test item, in the test split's order, '1' where the prediction is right and '0' where it is wrong: one
    byte an item, so that the bench's JSON keeps every student's items (10,000 test images: 10 kB a student)."""
    return ((np.asarray(predicted) == np.asarray(y)).astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def _correct(text: str) -> np.ndarray:
    return (np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")).astype(np.int8)


class StudentAccuracy(Accuracy):
    """A student's accuracy and which test items it gets right (`correctness`): the test set's own sampling
    variance in a paired difference needs the items, not only their mean."""

    test_correct: str

    @classmethod
    def of(cls, val_accuracy: float, predicted: np.ndarray, y: np.ndarray) -> StudentAccuracy:
        right = np.asarray(predicted) == np.asarray(y)
        return cls(val_accuracy=val_accuracy, test_accuracy=float(right.mean()), test_correct=correctness(predicted, y))


class BenchRow(BaseModel):
    """One student of the bench: its width, method, seed, split, accuracies, which test items it gets right
    (`correctness`; empty where not recorded) and the variant that trained it. A sweep (`variants` > 1) keeps its
    best on val, so its val accuracy is a selection, not a measurement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    method: str
    seed: int
    val_accuracy: float
    test_accuracy: float
    variant: str
    split: int = 0
    variants: int = 1
    test_correct: str = ""

    @model_validator(mode="after")
    def _items_give_the_accuracy(self) -> BenchRow:
        if self.test_correct:
            if not set(self.test_correct) <= {"0", "1"}:
                raise ValueError("test_correct: expected one '0' or '1' per test item")
            mean = float(_correct(self.test_correct).mean())
            if abs(mean - self.test_accuracy) > 1e-9:
                raise ValueError(f"test_correct: its mean {mean} is not test_accuracy {self.test_accuracy}")
        return self


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
    interval: str = (
        "paired over splits: each split's mean (method - plain) over its seeds, Student's t over splits (splits - 1 "
        "degrees of freedom); on test the test items' sampling variance added (t over items, items - 1 degrees of "
        "freedom; the two half-widths summed in quadrature); 95% intervals; verdicts Holm-adjusted over a width's "
        "methods, familywise 5%"
    )


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
    """One width and method over seeds and splits: val and test accuracy, the recovery of the teacher - plain gap
    on test (None for plain, or when the teacher is no better than plain), and for a KD method its paired
    differences against plain, the test p-value Holm-adjusted over the `family` of KD methods of its width, and the
    verdict. A sweep (`selected_on_val`) has no val difference: it picked its best variant on val."""

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
    holm_p: float | None = None
    family: int = 0
    selected_on_val: bool = False
    verdict: str | None = None


def summarize(rows: list[BenchRow], teachers: dict[int, Accuracy]) -> list[BenchCell]:
    """Per width and method (plain first): mean ± std of val and test accuracy over seeds and splits, the gap
    recovery (KD - plain) / (teacher - plain) on mean test accuracy, and (KD methods) the paired differences against
    plain with their intervals over splits and the verdict after Holm over the width's methods. `teachers`: the
    teacher's accuracy on each split."""
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
    return _holm(out)


def _paired(cell: BenchCell, rows: list[BenchRow], plain: dict, teachers: dict[int, Accuracy], rec) -> BenchCell:
    """The cell with its pairs against plain (same seed, same split), their intervals over splits and the per-pair
    recoveries (each against its split's teacher), averaged per split like the differences."""
    matched = [(r, plain[(r.seed, r.split)]) for r in rows if (r.seed, r.split) in plain]
    pairs = [
        Pair(
            seed=r.seed,
            split=r.split,
            val_diff=r.val_accuracy - b.val_accuracy,
            test_diff=r.test_accuracy - b.test_accuracy,
        )
        for r, b in matched
    ]
    val, test, recoveries = defaultdict(list), defaultdict(list), defaultdict(list)
    for p, (r, b) in zip(pairs, matched):
        val[p.split].append(p.val_diff)
        test[p.split].append(p.test_diff)
        if (x := recovery(r.test_accuracy, b.test_accuracy, teachers[r.split].test_accuracy)) is not None:
            recoveries[r.split].append(x)
    selected = any(r.variants > 1 for r in rows)
    return cell.model_copy(
        update={
            "recovery": rec,
            "pairs": pairs,
            "val_gain": None if selected else clustered(val),
            "test_gain": clustered(test, _items(matched)),
            "recovery_interval": clustered(recoveries) if recoveries else None,
            "selected_on_val": selected,
        }
    )


def _items(matched: list[tuple[BenchRow, BenchRow]]) -> dict[int, np.ndarray] | None:
    """Per split, the mean over its seeds of (method - plain) on each test item; None unless every row has them."""
    if not matched or not all(r.test_correct and b.test_correct for r, b in matched):
        return None
    sizes = {len(x.test_correct) for pair in matched for x in pair}
    if len(sizes) > 1:
        raise ValueError(f"test_correct: rows of {sorted(sizes)} test items; every student is scored on one test split")
    per: dict[int, list[np.ndarray]] = defaultdict(list)
    for r, b in matched:
        per[r.split].append(_correct(r.test_correct).astype(float) - _correct(b.test_correct))
    return {k: np.mean(v, axis=0) for k, v in per.items()}


def _holm(cells: list[BenchCell]) -> list[BenchCell]:
    """The cells with their verdicts: each width's KD methods with a test p-value are one family, Holm-adjusted."""
    out = list(cells)
    for width in dict.fromkeys(c.width for c in cells):
        family = [i for i, c in enumerate(cells) if c.width == width and c.test_gain and c.test_gain.p is not None]
        for i, p in zip(family, holm([cells[i].test_gain.p for i in family])):
            out[i] = out[i].model_copy(update={"holm_p": p, "family": len(family)})
    return [c if c.test_gain is None else c.model_copy(update={"verdict": verdict(c.test_gain, c.holm_p)}) for c in out]


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
