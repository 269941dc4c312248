"""The KD bench's statistics against hand-computed values: Student's t over split means, the test items' sampling
variance added in quadrature, the p-value that matches the interval, Holm's step-down adjustment, the verdicts, and
a simulation with a split effect, an item effect and no true gain that must claim a gain at most 5% of the time."""

import numpy as np
import pytest

from components.paired import FEW_SPLITS, GAIN, LOSS, NO_GAIN, Interval, crossed, holm, verdict

pytestmark = pytest.mark.unit


def test_the_interval_is_student_t_on_the_split_means():
    # split means 1, 2, 3 points: mean 2, sd 1, n 3, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3)
    i = Interval.of([0.01, 0.02, 0.03])
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert (i.mean, i.lo, i.hi, i.n) == (pytest.approx(0.02), pytest.approx(0.02 - half), pytest.approx(0.02 + half), 3)
    assert i.text() == "+2.00 [-0.48, +4.48]"
    # t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3 on 2 df, whose two-sided p is 1 - t / sqrt(2 + t^2)
    assert i.p == pytest.approx(1 - np.sqrt(12) / np.sqrt(14))
    one = Interval.of([0.05])
    assert (one.lo, one.hi, one.p, one.n) == (None, None, None, 1) and "no interval" in one.text()


def test_split_and_item_errors_add_in_quadrature_each_at_its_own_t_quantile():
    # t(0.975, 2) = 4.302653, t(0.975, 100) = 1.983972
    i = Interval.combined(0.03, split_se=0.01, splits=3, item_se=0.01, items=101)
    half = 0.01 * np.hypot(4.302653, 1.983972)
    assert (i.lo, i.hi) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    # the p-value is one minus the level at which the interval just reaches zero
    assert Interval.combined(0.03, 0.01, 3, 0.01, 101, level=1 - i.p).lo == pytest.approx(0.0, abs=1e-12)
    assert Interval.combined(0.0, 0.01, 3, 0.01, 101).p == 1.0
    exact = Interval.combined(0.01, 0.0, 3)  # no spread at all: the mean is exact
    assert (exact.lo, exact.hi, exact.p) == (0.01, 0.01, 0.0)


def test_a_shared_test_set_adds_its_item_variance_to_identical_splits():
    # Every split gives the same per-item differences (+1 on 4 of 20 items, -1 on one): the splits agree exactly,
    # yet the 20 test items are a sample. What is left is the paired t over items: sd of the 20 differences / sqrt 20,
    # sd^2 = (5 - 20 x 0.15^2) / 19, t(0.975, 19) = 2.093024.
    d = np.array([1.0] * 4 + [-1.0] + [0.0] * 15)
    i = crossed(np.stack([d, d, d]))
    se = np.sqrt((5 - 20 * 0.15**2) / 19 / 20)
    assert (i.mean, i.split_se, i.item_se, i.items) == (pytest.approx(0.15), 0.0, pytest.approx(se), 20)
    assert i.lo == pytest.approx(0.15 - 2.093024 * se)
    assert verdict(i) == NO_GAIN
    # where the split means disagree and the items only repeat that residual, the items add nothing
    noise = crossed(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    assert noise.item_se == 0.0


def test_holm_multiplies_the_kth_smallest_by_m_minus_k_plus_1_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.30, 0.005]) == pytest.approx([0.03, 0.08, 0.30, 0.02])
    assert holm([0.02, 0.021]) == pytest.approx([0.04, 0.04])  # never below the step before
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_gain_needs_a_p_below_5_percent_and_a_positive_mean():
    assert verdict(Interval.of([0.02, 0.021, 0.019, 0.022, 0.018])) == GAIN
    assert verdict(Interval.of([0.02, -0.01, 0.03, 0.0, 0.01])) == NO_GAIN  # mean +1 point, interval spans zero
    assert verdict(Interval.of([-0.02, -0.021, -0.019])) == LOSS
    assert verdict(Interval.of([0.02, 0.021, 0.019]), adjusted_p=0.2) == NO_GAIN  # Holm's p decides when given
    assert verdict(Interval.of([0.05])) == FEW_SPLITS  # one split says nothing, however many seeds it has


def _simulated_false_gains(reps: int, contested: float, item_spread: float, split_sd: float) -> float:
    """The share of `reps` benches with no true gain that the verdict calls a gain: 3 splits x 5 seeds, 300 test
    items drawn afresh each time. Most items both students always get right; on a `contested` share both are right
    with probability 0.5 -/+ half of an item effect (uniform within `item_spread`: items the method is better or
    worse on) plus a split effect (normal, `split_sd`: each split's teacher and draw), both of mean zero."""
    rng = np.random.default_rng(0)
    gains = 0
    for _ in range(reps):
        c = rng.random(300) < contested
        shift = (rng.uniform(-item_spread, item_spread, 300) + rng.normal(0, split_sd, (3, 1))) * c / 2
        kd, plain = (np.clip(np.where(c, 0.5, 1.0) + sign * shift, 0, 1)[:, None, :] for sign in (1, -1))
        diff = (rng.random((3, 5, 300)) < kd).astype(float) - (rng.random((3, 5, 300)) < plain)
        gains += verdict(crossed(diff.mean(1))) == GAIN
    return gains / reps


@pytest.mark.parametrize(
    "contested, item_spread, split_sd",
    [
        (0.2, 0.0, 0.3),  # a split effect alone: the 15 pairs taken as independent claimed a gain 23% of the time
        (0.1, 0.9, 0.0),  # an item effect alone: t over the split means without the items claimed 17%
        (0.2, 0.5, 0.15),  # both
    ],
)
def test_with_no_true_gain_a_gain_is_claimed_at_most_5_percent_of_the_time(contested, item_spread, split_sd):
    assert _simulated_false_gains(1000, contested, item_spread, split_sd) <= 0.05
