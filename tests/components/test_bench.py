"""The KD bench's arithmetic against hand-computed values: the stratified labelled subset, mean ± std over seeds,
gap recovery, and the method chosen on validation."""

import numpy as np
import pytest

from components.bench import Accuracy, BenchRow, chosen, labelled_subset, recovery, summarize
from components.data import Dataset

pytestmark = pytest.mark.unit


def test_labelled_subset_is_stratified_seeded_and_leaves_the_rest_as_the_pool():
    y = np.repeat(np.arange(4), 25)  # 4 classes x 25 rows
    x = np.arange(100, dtype=np.float32)[:, None]
    train = Dataset(x, y, {"hash": np.arange(100)})
    labelled, pool = labelled_subset(train, 0.2, seed=7)
    assert len(labelled) == 20 and len(pool) == 80
    assert np.bincount(labelled.y).tolist() == [5, 5, 5, 5]  # stratified
    assert sorted(labelled.x[:, 0].tolist() + pool[:, 0].tolist()) == list(range(100))  # a partition
    assert labelled.meta["hash"].tolist() == labelled.x[:, 0].astype(int).tolist()
    again, _ = labelled_subset(train, 0.2, seed=7)
    assert np.array_equal(again.x, labelled.x)
    tiny, _ = labelled_subset(train, 0.01, seed=7)
    assert sorted(set(tiny.y.tolist())) == [0, 1, 2, 3]  # at least one labelled row per class
    full, empty = labelled_subset(train, 1.0, seed=7)
    assert full is train and len(empty) == 0
    with pytest.raises(ValueError, match="labelled fraction"):
        labelled_subset(train, 0.0, seed=7)


def test_recovery_is_the_share_of_the_teacher_plain_gap_closed():
    assert recovery(kd=0.95, plain=0.90, teacher=1.0) == pytest.approx(0.5)
    assert recovery(kd=0.88, plain=0.90, teacher=1.0) == pytest.approx(-0.2)
    assert recovery(kd=0.95, plain=0.96, teacher=0.96) is None  # no gap to close


ROWS = [
    BenchRow(width=4, method=m, seed=s, val_accuracy=v, test_accuracy=t, variant=m)
    for m, s, v, t in (
        # width 4: plain and two methods over two seeds
        ("plain", 0, 0.90, 0.88),
        ("plain", 1, 0.92, 0.90),
        ("hinton", 0, 0.95, 0.90),
        ("hinton", 1, 0.93, 0.92),
        ("dkd", 0, 0.91, 0.97),
        ("dkd", 1, 0.93, 0.95),
    )
]
TEACHER = Accuracy(val_accuracy=0.99, test_accuracy=0.99)


def test_summarize_gives_mean_std_and_recovery_per_width_and_method():
    table = summarize(ROWS, TEACHER)
    by = {r.method: r for r in table}
    assert [r.method for r in table] == ["plain", "dkd", "hinton"]  # plain first
    assert by["plain"].test.model_dump() == {"mean": pytest.approx(0.89), "std": pytest.approx(0.01), "n": 2}
    assert by["hinton"].val.mean == pytest.approx(0.94)
    assert by["hinton"].recovery == pytest.approx((0.91 - 0.89) / (0.99 - 0.89))
    assert by["plain"].recovery is None


def test_the_chosen_method_is_the_best_on_val_not_on_test():
    best = chosen(summarize(ROWS, TEACHER))
    assert best[4].method == "hinton"  # val 0.94 beats dkd's 0.92, though dkd is better on test
