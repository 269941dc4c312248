"""Classification metrics of a model's outputs: what every kind reports, plus the binary ones that matter for
screening tasks (spam, malignancy), where the positive class is the last of `classes`."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from components.export import softmax


def classification_metrics(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Scalar metrics (accuracy, macro_f1, per-class precision/recall, and for two classes f1_positive,
    sensitivity, specificity, roc_auc) plus `confusion` (rows: true class, columns: predicted)."""
    pred = logits.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {"accuracy": float((pred == y).mean()),
           "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))}
    for i, c in enumerate(classes):
        out[f"precision.{c}"], out[f"recall.{c}"] = float(p[i]), float(r[i])
    if len(classes) == 2:
        out["f1_positive"], out["sensitivity"], out["specificity"] = float(f[1]), float(r[1]), float(r[0])
        prob = softmax(logits.astype(np.float64))[:, 1]
        out["roc_auc"] = float(roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else float("nan")
    out["confusion"] = confusion_matrix(y, pred, labels=labels).tolist()
    return out
