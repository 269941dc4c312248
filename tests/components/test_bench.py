"""The KD bench's arithmetic against hand-computed values: the stratified labelled subset, train and val drawn
again, mean ± std over seeds, gap recovery, paired differences with their t-intervals and verdicts, and the method
chosen on validation."""

import numpy as np
import pytest

from components.bench import (
    GAIN,
    LOSS,
    NO_GAIN,
    Accuracy,
    BenchRow,
    Interval,
    chosen,
    labelled_subset,
    recovery,
    resplit,
    summarize,
    verdict,
)
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
TEACHER = {0: Accuracy(val_accuracy=0.99, test_accuracy=0.99)}


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


def test_the_interval_is_student_t_on_the_paired_differences():
    # differences 1, 2, 3 points: mean 2, sd 1, n 3, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3)
    i = Interval.of([0.01, 0.02, 0.03])
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert (i.mean, i.lo, i.hi, i.n) == (pytest.approx(0.02), pytest.approx(0.02 - half), pytest.approx(0.02 + half), 3)
    assert i.text() == "+2.00 [-0.48, +4.48]"
    one = Interval.of([0.05])
    assert (one.lo, one.hi, one.n) == (None, None, 1) and "no interval" in one.text()


def test_a_gain_needs_its_whole_interval_above_zero():
    assert verdict(Interval.of([0.02, 0.021, 0.019, 0.022, 0.018])) == GAIN
    assert verdict(Interval.of([0.02, -0.01, 0.03, 0.0, 0.01])) == NO_GAIN  # mean +1 point, interval spans zero
    assert verdict(Interval.of([-0.02, -0.021, -0.019])) == LOSS
    assert verdict(Interval.of([0.05])) == NO_GAIN  # one seed says nothing


def test_pairs_are_taken_against_plain_of_the_same_seed_and_split():
    rows = [
        BenchRow(width=4, method=m, seed=s, split=k, val_accuracy=v, test_accuracy=t, variant=m)
        for m, s, k, v, t in (
            ("plain", 0, 0, 0.90, 0.80),
            ("plain", 0, 1, 0.90, 0.90),  # split 1 is easier: an unpaired mean difference would mislead
            ("plain", 1, 0, 0.90, 0.82),
            ("plain", 1, 1, 0.90, 0.92),
            ("dkd", 0, 0, 0.91, 0.81),
            ("dkd", 0, 1, 0.91, 0.91),
            ("dkd", 1, 0, 0.91, 0.83),
            ("dkd", 1, 1, 0.91, 0.93),
        )
    ]
    teachers = {0: Accuracy(val_accuracy=1.0, test_accuracy=0.90), 1: Accuracy(val_accuracy=1.0, test_accuracy=1.0)}
    dkd = {r.method: r for r in summarize(rows, teachers)}["dkd"]
    assert [p.test_diff for p in dkd.pairs] == pytest.approx([0.01] * 4)
    assert dkd.test_gain.mean == pytest.approx(0.01) and dkd.test_gain.lo == pytest.approx(0.01)  # no spread
    assert dkd.verdict == GAIN
    # per-pair recovery against its split's teacher: 0.01/0.10, 0.01/0.10, 0.01/0.08, 0.01/0.08
    assert dkd.recovery_interval.mean == pytest.approx(np.mean([0.1, 0.1, 0.125, 0.125]))


def test_resplit_draws_train_and_val_again_keeping_their_sizes_and_classes():
    y = np.repeat(np.arange(3), 30)
    x = np.arange(90, dtype=np.float32)[:, None]
    train, val = Dataset(x[:60], y[:60], {"hash": np.arange(60)}), Dataset(x[60:], y[60:], {"hash": np.arange(60, 90)})
    assert resplit(train, val, 0) == (train, val)
    tr, va = resplit(train, val, 3)
    assert (len(tr), len(va)) == (60, 30)
    assert sorted(tr.x[:, 0].tolist() + va.x[:, 0].tolist()) == list(range(90))  # a partition of the union
    assert np.bincount(va.y).tolist() == [10, 10, 10]  # stratified
    assert va.meta["hash"].tolist() == va.x[:, 0].astype(int).tolist()
    assert not np.array_equal(va.x, val.x)
    assert np.array_equal(resplit(train, val, 3)[1].x, va.x)  # seeded
