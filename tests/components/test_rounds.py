"""components.rounds: the exact intervals and the paired comparison, on hand-computed numbers and on seeded
simulations of noisy rounds whose truth is known (coverage, false calls of identical models, power at 0.65x)."""

import numpy as np
import pytest

from components import rounds as R
from components.benchmark import until_settled
from components.config import BenchmarkConfig
from components.timing import Raw, Round, Settings

pytestmark = pytest.mark.unit

REPS = 2000  # simulated measurements per check: a coverage of 95% is then known to about +-1 point
SLACK = 0.02  # how far an observed rate may stray from its exact value


def noisy(rng, n: int, ratio: float, one_sided: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-round p95 of two models timed side by side: a lognormal machine state shared by both halves of a round
    (a slow spell), each model's own noise, and now and then a burst (x1.6) that catches one half only; with
    `one_sided` only `a`'s half is ever caught, so the per-round log ratio is skewed."""
    shared = rng.normal(0.0, 0.3, n)
    a = ratio * np.exp(shared + rng.normal(0.0, 0.08, n))
    b = np.exp(shared + rng.normal(0.0, 0.08, n))
    a *= np.where(rng.random(n) < 0.15, 1.6, 1.0)
    if not one_sided:
        b *= np.where(rng.random(n) < 0.15, 1.6, 1.0)
    return a, b


def series(values, plan: R.Plan, measurement: str = "m") -> R.Series:
    return R.Series(measurement=measurement, plan=plan, values=[float(v) for v in values])


def test_the_median_interval_is_the_order_statistic_one_with_its_exact_coverage():
    ten = [0.0210, 0.0204, 0.0231, 0.0208, 0.0206, 0.0299, 0.0201, 0.0212, 0.0209, 0.0205]
    i = R.median_interval(ten)
    # sorted: .0201 .0204 .0205 .0206 .0208 .0209 .0210 .0212 .0231 .0299; k = 2: the 2nd and 9th values,
    # coverage 1 - 2 P(Bin(10, 1/2) <= 1) = 1 - 2 * 11/1024
    assert (i.value, i.lo, i.hi, i.rounds) == (pytest.approx(0.02085), 0.0204, 0.0231, 10)
    assert i.coverage == pytest.approx(1 - 22 / 1024) and str(i) == "0.0209 [0.0204, 0.0231]"
    six = R.median_interval(ten[:6])
    assert (six.lo, six.hi, six.coverage) == (0.0204, 0.0299, pytest.approx(1 - 2 / 64))  # [min, max]: 96.9%
    five = R.median_interval(ten[:5])  # [min, max] of 5 covers 93.75% only: no 95% interval at all
    assert (five.lo, five.hi, five.coverage) == (None, None, None)
    assert str(five) == "0.0208 (5 rounds: no 95% interval)"
    assert str(R.Interval(value=0.5)) == "0.5000"  # a single figure, no rounds known
    with pytest.raises(ValueError, match="no values"):
        R.median_interval([])


def test_critical_counts_and_the_plan_of_looks_are_the_hand_computed_ones():
    assert R.below(1, 10) == 11 / 1024 and R.below(0, 6) == 1 / 64
    assert [R.critical(n) for n in (1, 5, 6, 8, 9, 10, 12, 17)] == [None, None, 0, 0, 1, 1, 2, 4]
    assert R.Plan.fixed(10).criticals() == (1,)  # one look: the ordinary 95% interval
    p = R.Plan(first=10, step=10, looks=3)
    # the first look keeps its ordinary critical count: adding looks never makes the first one stricter
    assert p.sizes() == (10, 20, 30) and p.criticals() == (1, 4, 8)
    assert R.false_call_rate((10,), (1,)) == pytest.approx(22 / 1024)
    assert 22 / 1024 < p.false_call_rate() <= 0.05
    assert R.Plan(first=5, step=5, looks=2).criticals() == (None, 1)  # 5 rounds cannot call: 10 can


def test_the_paired_comparison_needs_the_same_measurement_and_six_rounds():
    fixed = R.Plan.fixed(6)
    fast, slow = [1.0, 1.1, 0.9, 1.2, 1.0, 0.95], [2.0, 2.1, 1.9, 2.3, 2.0, 1.9]
    c = R.compare(series(fast, fixed), series(slow, fixed))
    assert c.verdict == -1 and c.rounds == 6 and c.coverage == pytest.approx(1 - 2 / 64)
    assert R.compare(series(slow, fixed), series(fast, fixed)).verdict == 1
    assert c.lo == pytest.approx(min(np.divide(fast, slow))) and c.hi == pytest.approx(max(np.divide(fast, slow)))
    five = R.Plan.fixed(5)  # every round faster, but 5 rounds give no 95% interval: never measurable
    few = R.compare(series(fast[:5], five), series(slow[:5], five))
    assert few.verdict == 0 and "5 rounds: no 95% interval" in str(few)
    apart = R.compare(series(fast, fixed, "run 1"), series(slow, fixed, "run 2"))  # not side by side: not paired
    assert apart.verdict == 0 and str(apart) == "not measured side by side: no paired comparison"
    assert R.compare(series(fast, fixed), None).verdict == 0
    one_wrong = [1.0, 1.1, 0.9, 1.2, 1.0, 2.5]  # one round of six the other way: 6 rounds allow none
    assert R.compare(series(one_wrong, fixed), series(slow, fixed)).verdict == 0


def test_the_median_interval_covers_the_true_median_as_often_as_it_says():
    rng = np.random.default_rng(1)
    truth = float(np.median(noisy(rng, 2_000_000, 1.0)[0]))
    for n in (6, 10, 15):
        hits = 0
        for _ in range(REPS):
            i = R.median_interval(noisy(rng, n, 1.0)[0])
            hits += i.lo <= truth <= i.hi
        exact = R.coverage(n, R.critical(n))
        assert R.LEVEL - SLACK <= hits / REPS <= exact + SLACK, (n, hits / REPS, exact)


def test_the_paired_interval_covers_the_true_median_ratio_also_when_the_noise_is_one_sided():
    rng = np.random.default_rng(2)
    a, b = noisy(rng, 2_000_000, 0.8, one_sided=True)
    truth = float(np.median(a / b))  # not 0.8: the bursts that catch only `a` skew the ratio
    assert truth > 0.81
    plan = R.Plan.fixed(10)
    hits = 0
    for _ in range(REPS):
        a, b = noisy(rng, 10, 0.8, one_sided=True)
        c = R.compare(series(a, plan), series(b, plan))
        hits += c.lo <= truth <= c.hi
    assert R.LEVEL - SLACK <= hits / REPS <= R.coverage(10, 1) + SLACK


@pytest.mark.parametrize(
    "plan", [R.Plan.fixed(10), R.Plan(first=10, step=10, looks=3), R.Plan(first=6, step=6, looks=4)]
)
def test_identical_models_are_called_faster_in_at_most_5_percent_of_measurements(plan):
    """Every look of the plan taken (the worst case: nothing settles earlier), the first that calls wins."""
    rng = np.random.default_rng(3)
    verdicts = []
    for _ in range(REPS):
        a, b = noisy(rng, plan.sizes()[-1], 1.0)
        verdicts.append(R.compare(series(a, plan), series(b, plan)).verdict)
    faster, different = verdicts.count(-1) / REPS, sum(v != 0 for v in verdicts) / REPS
    assert faster <= 0.05 and different <= plan.false_call_rate() + SLACK, (faster, different)


class Synthetic:
    """A stand-in for the timing child: rounds of two models (and the floor) from `noisy`, with the Settings of
    each call kept."""

    def __init__(self, rng, ratio: float):
        self.rng, self.ratio, self.calls = rng, ratio, []

    def __call__(self, s: Settings) -> Raw:
        self.calls.append(s)
        a, b = noisy(self.rng, s.rounds, self.ratio)

        def rs(v):
            return [Round(p50_ms=x, p95_ms=x, p99_ms=x, mean_ms=x, energy_uj=None) for x in v]

        return Raw(rounds=[rs(a), rs(b), rs(np.full(s.rounds, 0.01))], peak_mem_mb=[1.0, 1.0, float("nan")])


def settle(ratio: float, rng, b: BenchmarkConfig) -> tuple[R.Comparison, Synthetic]:
    timed = Synthetic(rng, ratio)
    raw = until_settled(timed, Settings(1, 1, 10, b.rounds), ["a", "b"], [("a", "b")], b)
    plan = R.Plan(first=b.rounds, step=b.rounds, looks=1 + b.max_extra_looks)
    a, b = ([r.p95_ms for r in rs] for rs in raw.rounds[:2])
    return R.compare(series(a, plan), series(b, plan)), timed


def test_adding_rounds_until_settled_keeps_false_faster_calls_of_identical_models_within_5_percent():
    rng = np.random.default_rng(4)
    b = BenchmarkConfig(rounds=10, max_extra_seconds=3600, max_extra_looks=2)
    runs = [settle(1.0, rng, b) for _ in range(REPS // 2)]
    faster = sum(c.verdict == -1 for c, _ in runs) / len(runs)
    assert faster <= 0.05, faster
    # an undecided pair took every look; extra rounds skip peak memory
    assert max(len(t.calls) for _, t in runs) == 3 and all(not s.memory for _, t in runs for s in t.calls[1:])
    assert all(t.calls[0].memory for _, t in runs)


def test_a_real_0_65x_speed_up_in_noisy_rounds_is_called_faster():
    rng = np.random.default_rng(5)
    b = BenchmarkConfig(rounds=10, max_extra_seconds=3600, max_extra_looks=2)
    runs = [settle(0.65, rng, b) for _ in range(REPS // 4)]
    assert sum(c.verdict == -1 for c, _ in runs) / len(runs) >= 0.99
    c, _ = runs[0]
    assert c.verdict == -1 and c.hi < 1 and 0.5 < c.ratio < 0.8, c
    # no time budget: no extra rounds, whatever the verdict
    _, timed = settle(1.0, rng, b.model_copy(update={"max_extra_seconds": 0.0}))
    assert len(timed.calls) == 1
