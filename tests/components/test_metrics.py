import numpy as np
import pytest

from components.metrics import classification_metrics

pytestmark = pytest.mark.unit


def test_binary_metrics_against_hand_counts():
    # true:  0 0 0 0 1 1 1 ; predicted: 0 0 0 1 1 1 0  -> TN=3 FP=1 TP=2 FN=1
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    logits = np.array([[2, 0], [2, 0], [1, 0], [0, 1], [0, 3], [0, 2], [1, 0]], dtype=np.float32)
    m = classification_metrics(logits, y, ["ham", "spam"])
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.sensitivity == pytest.approx(2 / 3) and m.recall["spam"] == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(3 / 4)
    assert m.precision["spam"] == pytest.approx(2 / 3)
    assert m.f1_positive == pytest.approx(2 / 3)
    f1_ham = 2 * (3 / 4 * 3 / 4) / (3 / 4 + 3 / 4)
    assert m.macro_f1 == pytest.approx((f1_ham + 2 / 3) / 2)
    assert m.confusion == [[3, 1], [1, 2]]
    # P(spam): positives .953 .881 .269; negatives .119 .119 .269 .731. Of the 12 (pos, neg) pairs the first two
    # positives win all 4, the third wins 2 and ties 1 (counted 1/2): AUC = 10.5 / 12.
    assert m.roc_auc == pytest.approx(10.5 / 12)


def test_roc_auc_is_one_for_perfect_ranking_even_with_a_bad_threshold():
    y = np.array([0, 0, 1, 1])
    logits = np.array([[5, 0], [4, 0], [3, 0], [2, 0]], dtype=np.float32)  # all predicted 0, ranking still right
    m = classification_metrics(logits, y, ["neg", "pos"])
    assert m.roc_auc == pytest.approx(1.0) and m.sensitivity == 0.0


def test_multiclass_has_no_binary_metrics():
    m = classification_metrics(np.eye(3, dtype=np.float32), np.array([0, 1, 2]), ["a", "b", "c"])
    assert m.accuracy == 1.0 and m.macro_f1 == 1.0 and m.sensitivity is None and "sensitivity" not in m.scalars()
