"""`edgekd bench kd` arithmetic: the labelled subset, and the table of a KD benchmark (mean ± std over seeds, the
method chosen on validation, teacher-gap recovery). Pure: rows in, numbers out."""

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


def summarize(rows: list[BenchRow], teacher: Accuracy) -> list[BenchCell]:
    """Per width and method (plain first): mean ± std of val and test accuracy over seeds, and the gap recovery
    (KD - plain) / (teacher - plain) on test."""
    groups: dict[tuple, list[BenchRow]] = defaultdict(list)
    for r in rows:
        groups[(r.width, r.method)].append(r)
    order = sorted(groups, key=lambda k: (k[0], k[1] != "plain", k[1]))
    stats = {
        k: (Stats.of([r.val_accuracy for r in groups[k]]), Stats.of([r.test_accuracy for r in groups[k]]))
        for k in order
    }
    out = []
    for width, method in order:
        val, test = stats[(width, method)]
        plain = stats.get((width, "plain"))
        rec = recovery(test.mean, plain[1].mean, teacher.test_accuracy) if plain and method != "plain" else None
        out.append(BenchCell(width=width, method=method, val=val, test=test, recovery=rec))
    return out


def recovery(kd: float, plain: float, teacher: float) -> float | None:
    """Share of the teacher - plain gap that KD closes (1: matches the teacher, < 0: worse than plain); None when
    the teacher is no better than plain (there is no gap to close)."""
    gap = teacher - plain
    return None if gap <= 0 else (kd - plain) / gap


def chosen(table: list[BenchCell]) -> dict[int, BenchCell]:
    """Per width, the KD method with the best mean validation accuracy (ties: lower val std, then table order): the
    method a user would pick without looking at test."""
    best: dict[int, BenchCell] = {}
    for row in table:
        if row.method == "plain":
            continue
        cur = best.get(row.width)
        if cur is None or (row.val.mean, -row.val.std) > (cur.val.mean, -cur.val.std):
            best[row.width] = row
    return best
