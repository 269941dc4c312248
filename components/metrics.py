"""Classification metrics of a model's outputs: what every kind reports, plus the binary ones that matter for
screening tasks (spam, malignancy), where the positive class is the last of `classes`."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from components.formats.base import softmax

BINARY = ("f1_positive", "sensitivity", "specificity", "roc_auc")  # defined for two classes only


class Scores(BaseModel):
    """Metrics of one split: accuracy and macro F1, precision and recall per class, the binary metrics for two
    classes, and the confusion matrix (rows: true class, columns: predicted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1_positive: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    roc_auc: float | None = None
    confusion: list[list[int]]

    def scalars(self) -> dict[str, float]:
        """Every metric by its name as logged and tagged: accuracy, macro_f1, precision.CLASS, recall.CLASS and,
        for two classes, f1_positive, sensitivity, specificity, roc_auc."""
        out = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        for c in self.precision:
            out[f"precision.{c}"], out[f"recall.{c}"] = self.precision[c], self.recall[c]
        return out | {k: getattr(self, k) for k in BINARY if getattr(self, k) is not None}

    def get(self, metric: str) -> float:
        """A metric by name (gate.metric); NaN when this split does not define it (a binary metric of 10 classes)."""
        value = self.scalars().get(metric)
        return float("nan") if value is None else value


def classification_metrics(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> Scores:
    pred = logits.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    binary = {}
    if len(classes) == 2:
        prob = softmax(logits.astype(np.float64))[:, 1]
        auc = float(roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else float("nan")
        binary = {"f1_positive": float(f[1]), "sensitivity": float(r[1]), "specificity": float(r[0]), "roc_auc": auc}
    return Scores(
        accuracy=float((pred == y).mean()),
        macro_f1=float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        precision={c: float(p[i]) for i, c in enumerate(classes)},
        recall={c: float(r[i]) for i, c in enumerate(classes)},
        confusion=confusion_matrix(y, pred, labels=labels).tolist(),
        **binary,
    )
