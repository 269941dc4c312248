"""The KD bench's arithmetic against hand-computed values: the stratified labelled subset, train and val drawn
again, mean ± std over seeds, gap recovery, paired differences with the split as the unit and the test items in
their intervals, verdicts after Holm over a width's methods, a sweep's val difference withheld, and the method
chosen on validation. The statistics themselves: test_paired.py."""

import numpy as np
import pytest

from components.bench import (
    Accuracy,
    BenchRow,
    StudentAccuracy,
    chosen,
    correctness,
    labelled_subset,
    recovery,
    resplit,
    summarize,
)
from components.data import Dataset
from components.paired import FEW_SPLITS, GAIN, NO_GAIN, Interval

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
    assert dkd.test_gain.n == 2 and dkd.verdict == GAIN
    # per-pair recovery against its split's teacher: 0.01/0.10, 0.01/0.08 on each split, averaged per split
    assert dkd.recovery_interval.mean == pytest.approx(np.mean([0.1, 0.1, 0.125, 0.125]))
    assert dkd.recovery_interval.n == 2


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


TEACHERS = {k: Accuracy(val_accuracy=0.99, test_accuracy=0.99) for k in range(3)}


def _bench(diffs: dict[tuple[int, int], float], method: str = "dkd", **extra) -> list[BenchRow]:
    """Plain at 0.90 on val and test for each (seed, split) of `diffs`, and the method at plain + its difference."""
    return [
        BenchRow(width=4, method=m, seed=s, split=k, val_accuracy=v, test_accuracy=v, variant=m, **kw)
        for (s, k), diff in diffs.items()
        for m, v, kw in (("plain", 0.90, {}), (method, 0.90 + diff, extra))
    ]


def _cell(rows: list[BenchRow], method: str = "dkd"):
    return {c.method: c for c in summarize(rows, TEACHERS)}[method]


def test_the_split_is_the_unit_so_a_split_effect_is_not_a_gain():
    # 15 pairs, tight within a split (+/- 0.2 points over the seeds) but far apart between splits (+4, +2, -0.5
    # points): the seeds of a split share its teacher and its train/val draw, so three values are measured, not 15.
    means = {0: 0.04, 1: 0.02, 2: -0.005}
    rows = _bench({(s, k): means[k] + (s - 2) * 0.001 for s in range(5) for k in range(3)})
    dkd = _cell(rows)
    # over splits: mean 0.018333, sd of (0.04, 0.02, -0.005) = 0.0225462, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.0225462 / np.sqrt(3)
    assert (dkd.test_gain.n, len(dkd.pairs)) == (3, 15)
    assert dkd.test_gain.mean == pytest.approx(0.0183333, abs=1e-6)
    assert dkd.test_gain.lo == pytest.approx(0.0183333 - half, abs=1e-6)
    assert dkd.verdict == NO_GAIN
    # the 15 pairs taken as independent (t with 14 df) would have called it a gain
    assert Interval.of([p.test_diff for p in dkd.pairs]).lo > 0


def test_holm_turns_a_marginal_gain_among_four_methods_into_no_measurable_gain():
    # dkd's split means 2, 3, 4 points: t = 0.03 / (0.01 / sqrt 3) = 3 sqrt 3 on 2 df, p = 1 - t / sqrt(2 + t^2)
    p = 1 - np.sqrt(27) / np.sqrt(29)  # 0.0351
    dkd = _bench({(0, k): 0.02 + 0.01 * k for k in range(3)})
    alone = _cell(dkd)
    assert (alone.holm_p, alone.family, alone.verdict) == (pytest.approx(p), 1, GAIN)
    others = [  # no gain: their p-values are all above dkd's
        r
        for name, diffs in (("hinton", (0.01, -0.01, 0.0)), ("dist", (0.02, -0.02, 0.01)), ("nkd", (0.01, 0.0, 0.02)))
        for r in _bench({(0, k): d for k, d in enumerate(diffs)}, name)
        if r.method != "plain"
    ]
    among = _cell(dkd + others)
    assert among.test_gain.p == pytest.approx(p)  # its own interval is as before
    assert (among.holm_p, among.family, among.verdict) == (pytest.approx(4 * p), 4, NO_GAIN)


def _items(right: int, wrong: int, n: int) -> tuple[str, str]:
    """Which of `n` test items plain and the method get right: the method alone on `right` items, plain alone on
    `wrong`, both on the rest."""
    plain = "0" * right + "1" * wrong + "1" * (n - right - wrong)
    return plain, "1" * right + "0" * wrong + "1" * (n - right - wrong)


def test_few_test_items_widen_the_interval_however_well_the_splits_agree():
    def rows(n: int, with_items: bool = True) -> list[BenchRow]:
        plain, kd = _items(n // 5, n // 20, n)  # +1 on a fifth of the items, -1 on a twentieth: +0.15
        return [
            BenchRow(
                width=4,
                method=m,
                seed=s,
                split=k,
                val_accuracy=0.9,
                test_accuracy=c.count("1") / n,
                variant=m,
                test_correct=c if with_items else "",
            )
            for s in range(2)
            for k in range(3)
            for m, c in (("plain", plain), ("dkd", kd))
        ]

    # Every pair gets the same items right: the splits agree exactly, so without the items the interval is a point
    assert _cell(rows(20, with_items=False)).test_gain.lo == pytest.approx(0.15)
    assert _cell(rows(20, with_items=False)).verdict == GAIN
    # 20 test items are a sample, though: the paired t over items, sd^2 = (5 - 20 x 0.15^2) / 19, t(0.975, 19)
    few = _cell(rows(20))
    se = np.sqrt((5 - 20 * 0.15**2) / 19 / 20)
    assert (few.test_gain.items, few.test_gain.item_se) == (20, pytest.approx(se))
    assert few.test_gain.lo == pytest.approx(0.15 - 2.093024 * se)
    assert few.verdict == NO_GAIN
    many = _cell(rows(2000))  # the same shares of 2,000 items
    assert many.test_gain.lo > 0.12 and many.verdict == GAIN


def test_a_student_s_items_give_its_accuracy_and_must_match_it():
    scored = StudentAccuracy.of(0.9, np.array([1, 2, 3, 0]), np.array([1, 2, 0, 0]))
    assert (scored.test_correct, scored.test_accuracy) == ("1101", 0.75)
    assert correctness(np.array([3]), np.array([4])) == "0"
    with pytest.raises(ValueError, match="test_accuracy"):
        BenchRow(width=4, method="plain", seed=0, val_accuracy=0.9, test_accuracy=0.5, variant="p", test_correct="1101")
    with pytest.raises(ValueError, match="'0' or '1'"):
        BenchRow(width=4, method="plain", seed=0, val_accuracy=0.9, test_accuracy=0.5, variant="p", test_correct="1x")


def test_a_sweep_chosen_on_val_makes_no_val_claim_but_keeps_its_test_verdict():
    # adaptive keeps its best of 3 variants on val: never below plain there, by construction
    rows = _bench({(s, k): 0.01 + 0.001 * s for s in range(2) for k in range(3)}, "adaptive", variants=3)
    adaptive = _cell(rows, "adaptive")
    assert adaptive.selected_on_val and adaptive.val_gain is None
    assert adaptive.test_gain.n == 3 and adaptive.verdict == GAIN  # test was not used to choose
    single = _cell(_bench({(s, k): 0.01 for s in range(2) for k in range(3)}))
    assert not single.selected_on_val and single.val_gain.n == 3


def test_one_split_gives_no_interval_and_no_verdict_however_many_seeds():
    dkd = _cell(_bench({(s, 0): 0.02 + 0.001 * s for s in range(5)}))
    assert (dkd.test_gain.n, dkd.test_gain.lo, dkd.test_gain.p) == (1, None, None)
    assert (dkd.holm_p, dkd.family, dkd.verdict) == (None, 0, FEW_SPLITS)
