"""The interval and the comparison of components.timing, on hand-made per-round numbers."""

import pytest

from components.timing import Interval, compare, median_interval

pytestmark = pytest.mark.unit


def test_the_median_interval_holds_the_median_within_the_values_and_is_seeded():
    rounds = [0.0210, 0.0204, 0.0231, 0.0208, 0.0206]
    i = median_interval(rounds)
    assert i.value == pytest.approx(0.0208)
    assert min(rounds) <= i.lo <= i.value <= i.hi <= max(rounds)
    assert median_interval(rounds) == i  # the same numbers, the same interval
    assert median_interval([0.5] * 5) == Interval(value=0.5, lo=0.5, hi=0.5)
    assert str(Interval(value=0.5, lo=0.5, hi=0.5)) == "0.5000"
    assert str(i) == f"0.0208 [{i.lo:.4f}, {i.hi:.4f}]"
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def test_a_wider_spread_gives_a_wider_interval():
    tight = median_interval([1.00, 1.01, 0.99, 1.00, 1.02])
    loose = median_interval([1.00, 1.30, 0.70, 1.10, 0.90])
    assert loose.hi - loose.lo > tight.hi - tight.lo


def test_compare_calls_a_difference_only_where_the_intervals_do_not_overlap():
    fast, slow = Interval(value=1.0, lo=0.9, hi=1.1), Interval(value=2.0, lo=1.8, hi=2.2)
    near = Interval(value=1.05, lo=0.95, hi=1.2)
    assert compare(fast, slow) == -1 and compare(slow, fast) == 1
    assert compare(fast, near) == 0 and compare(near, fast) == 0  # inside the noise: no measurable difference
