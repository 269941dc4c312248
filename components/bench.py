"""`edgekd bench kd` arithmetic: the labelled subset, and the table of a KD benchmark (mean ± std over seeds, the
method chosen on validation, teacher-gap recovery). Pure: rows in, numbers out."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
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


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "n": len(a)}


def summarize(rows: list[dict], teacher: dict) -> list[dict]:
    """Per width and method: mean ± std of val and test accuracy over seeds, and the gap recovery
    (KD - plain) / (teacher - plain) on test. `rows`: {"width", "method", "seed", "val_accuracy", "test_accuracy"};
    `teacher`: {"val_accuracy", "test_accuracy"}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["width"], r["method"])].append(r)
    out = []
    for (width, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "plain", kv[0][1])):
        val, test = _stats([r["val_accuracy"] for r in rs]), _stats([r["test_accuracy"] for r in rs])
        out.append({"width": width, "method": method, "val": val, "test": test})
    for row in out:
        plain = next((p for p in out if p["width"] == row["width"] and p["method"] == "plain"), None)
        row["recovery"] = recovery(row["test"]["mean"], plain["test"]["mean"], teacher["test_accuracy"]) \
            if plain and row["method"] != "plain" else None
    return out


def recovery(kd: float, plain: float, teacher: float) -> float | None:
    """Share of the teacher - plain gap that KD closes (1: matches the teacher, < 0: worse than plain); None when
    the teacher is no better than plain (there is no gap to close)."""
    gap = teacher - plain
    return None if gap <= 0 else (kd - plain) / gap


def chosen(table: list[dict]) -> dict[int, dict]:
    """Per width, the KD method with the best mean validation accuracy (ties: lower test std, then name): the
    method a user would pick without looking at test."""
    best: dict[int, dict] = {}
    for row in table:
        if row["method"] == "plain":
            continue
        cur = best.get(row["width"])
        if cur is None or (row["val"]["mean"], -row["val"]["std"]) > (cur["val"]["mean"], -cur["val"]["std"]):
            best[row["width"]] = row
    return best
