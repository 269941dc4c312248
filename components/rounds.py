"""What rounds of timing can tell: a model's median with an exact interval, and two models measured side by side
compared round by round, over a plan of looks that may add rounds. Math and numpy only, like components.timing.

A model's figure is the median of its per-round values. Its interval is the distribution-free order-statistic
interval of a median: with n rounds, [x_(k), x_(n-k+1)] of the sorted values covers the true median with
probability 1 - 2 P(Binomial(n, 1/2) <= k-1), whatever the distribution of the rounds. k is the largest whose
coverage is at least 95%, and that exact coverage is kept beside the interval (96.9% with 6 rounds, 97.9% with 10).
Below 6 rounds even [min, max] covers less than 95% (93.75% with 5): there is then no 95% interval, and none is
made up.

Two models are compared paired by round: every round times both, one after the other in one pinned process, so a
slow spell of the machine falls on both. The comparison is the sign test's: the median of the per-round ratios
a/b with the same order-statistic interval, and `a` is measurably faster only where the whole interval is below 1,
that is where at most c of the n rounds have a >= b (ties count against a call). The sign test was chosen over
Wilcoxon's signed-rank test and its Hodges-Lehmann interval because it assumes nothing of the ratios'
distribution: Wilcoxon needs the log ratios symmetric about their centre, and a slow spell that catches one
model's half of a round makes them skewed. Where two models do not differ, each round's sign is a fair coin
whatever the distribution, so the chance of a false call is a binomial sum, computed exactly here.

A measurement may add rounds until its decisions settle (`Plan`): a look after `first` rounds, then one after
every `step` more, `looks` in all. Looking again and again inflates false calls, so the 5% is spent across the
planned looks: the first look uses the ordinary 95% interval (what a measurement without extra rounds uses), the
later ones stricter critical counts, the rest of the 5% in equal parts, each chosen so that the exact probability
that two models that do not differ are called different at any look so far stays within what has been spent
(the signs as a binomial random walk; tighter than Bonferroni's bound). Stopping early, for settled decisions or a
spent time budget, only drops looks, which cannot raise that probability.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LEVEL = 0.95  # every interval's coverage is at least this; 1 - LEVEL bounds false "measurable difference" calls


def below(c: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= c), exactly."""
    return sum(comb(n, i) for i in range(c + 1)) / 2**n


def critical(n: int, alpha: float = 1 - LEVEL) -> int | None:
    """The most rounds of `n` that may fall on the wrong side for the order-statistic interval
    [x_(c+1), x_(n-c)] to keep a coverage of at least 1 - alpha; None where even [min, max] does not."""
    c = None
    for k in range((n + 1) // 2):
        if 2 * below(k, n) > alpha:
            break
        c = k
    return c


def coverage(n: int, c: int | None) -> float | None:
    """The exact coverage of [x_(c+1), x_(n-c)] for the median of n values; None where there is no interval."""
    return None if c is None else 1 - 2 * below(c, n)


class Interval(BaseModel):
    """A median over `rounds` rounds with its exact order-statistic interval (ms) of `coverage` (at least 95%);
    `lo` and `hi` None where the rounds are too few for one, `rounds` None for a single figure without rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    lo: float | None = None
    hi: float | None = None
    rounds: int | None = None
    coverage: float | None = None

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{self.value:.4f} [{self.lo:.4f}, {self.hi:.4f}]"
        if self.rounds is None:  # a single figure (a version registered without its rounds)
            return f"{self.value:.4f}"
        return f"{self.value:.4f} ({self.rounds} rounds: no 95% interval)"


def median_interval(values) -> Interval:
    """The median of `values` with its exact order-statistic 95% interval (none below 6 values)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("no values to take the median of")
    n, c = v.size, critical(v.size)
    lo, hi = (None, None) if c is None else (float(v[c]), float(v[n - 1 - c]))
    return Interval(value=float(np.median(v)), lo=lo, hi=hi, rounds=n, coverage=coverage(n, c))


@lru_cache(maxsize=64)
def _plan_criticals(sizes: tuple[int, ...], alpha: float) -> tuple[int | None, ...]:
    """Each look's critical count: the first look's ordinary one, then the largest whose cumulative false-call
    probability stays within the first look's share plus an equal part of the rest of `alpha` per later look."""
    first = critical(sizes[0], alpha)
    spent = 0.0 if first is None else 2 * below(first, sizes[0])
    crits: list[int | None] = [first]
    for j in range(1, len(sizes)):
        allowed = spent + (alpha - spent) * j / (len(sizes) - 1)
        pick = None
        for c in range((sizes[j] - 1) // 2, -1, -1):
            if false_call_rate(sizes[: j + 1], (*crits, c)) <= allowed + 1e-12:
                pick = c
                break
        crits.append(pick)
    return tuple(crits)


def false_call_rate(sizes, crits) -> float:
    """The exact probability that two models that do not differ are called different at one of the looks after
    `sizes` rounds with critical counts `crits` (None: that look cannot call): the number of rounds where one comes
    out slower walks as a sum of fair coins, and a path stops where it crosses a look's bounds."""
    alive, seen, total = np.ones(1), 0, 0.0
    for n, c in zip(sizes, crits, strict=True):
        step = n - seen
        alive = np.convolve(alive, [comb(step, i) / 2**step for i in range(step + 1)])
        if c is not None:
            k = np.arange(n + 1)
            out = (k <= c) | (k >= n - c)
            total += float(alive[out].sum())
            alive[out] = 0.0
        seen = n
    return total


class Plan(BaseModel):
    """When a measurement looks at its paired comparisons: after `first` rounds, then after every `step` more,
    `looks` looks at most; a measurement that adds no rounds has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first: int = Field(ge=1)
    step: int = Field(ge=1)
    looks: int = Field(1, ge=1)

    @classmethod
    def fixed(cls, rounds: int) -> Plan:
        return cls(first=rounds, step=rounds, looks=1)

    def sizes(self) -> tuple[int, ...]:
        return tuple(self.first + i * self.step for i in range(self.looks))

    def criticals(self) -> tuple[int | None, ...]:
        return _plan_criticals(self.sizes(), 1 - LEVEL)

    def false_call_rate(self) -> float:
        """The exact chance that two models that do not differ are called different at any look of the plan."""
        return false_call_rate(self.sizes(), self.criticals())


class Series(BaseModel):
    """A model's per-round p95 (ms) in one measurement, in round order, with the measurement's id and plan: two
    series pair round by round only where they come from the same measurement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measurement: str
    plan: Plan
    values: list[float]


class Comparison(BaseModel):
    """`a` against `b`, paired by round: the median of the per-round p95 ratio a/b with its interval and exact
    coverage at the look that settled it (or the last look taken), over `rounds` rounds, and the verdict: -1 `a`
    measurably faster, 1 measurably slower, 0 no measurable difference. `rounds` 0: not measured side by side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: int
    ratio: float | None = None
    lo: float | None = None
    hi: float | None = None
    rounds: int = 0
    coverage: float | None = None

    def __str__(self) -> str:
        if self.ratio is None:
            return "not measured side by side: no paired comparison"
        if self.lo is None or self.hi is None:
            return f"paired p95 ratio {self.ratio:.3f}x ({self.rounds} rounds: no 95% interval)"
        return (
            f"paired p95 ratio {self.ratio:.3f}x [{self.lo:.3f}, {self.hi:.3f}] "
            f"({self.rounds} rounds, {self.coverage:.1%} interval)"
        )


def compare(a: Series | None, b: Series | None) -> Comparison:
    """`a` against `b` round by round, replaying the plan's looks over the rounds taken: the first look whose
    interval of the median ratio excludes 1 settles it; none that does is "no measurable difference". Series of
    different measurements, or missing ones, are not compared."""
    if a is None or b is None or a.measurement != b.measurement or len(a.values) != len(b.values):
        return Comparison(verdict=0)
    ratios = np.asarray(a.values, dtype=float) / np.asarray(b.values, dtype=float)
    looks = [(n, c) for n, c in zip(a.plan.sizes(), a.plan.criticals(), strict=True) if n <= len(ratios)]
    if not looks:  # rounds the plan does not know (a hand-made series): one look over all of them
        looks = [(len(ratios), critical(len(ratios)))]
    for n, c in looks:
        r = ratios[:n]
        verdict = 0
        if c is not None and int((r >= 1).sum()) <= c:
            verdict = -1
        elif c is not None and int((r <= 1).sum()) <= c:
            verdict = 1
        if verdict or n == looks[-1][0]:
            s = np.sort(r)
            lo, hi = (None, None) if c is None else (float(s[c]), float(s[n - 1 - c]))
            ratio = float(np.median(r))
            return Comparison(verdict=verdict, ratio=ratio, lo=lo, hi=hi, rounds=n, coverage=coverage(n, c))
    raise AssertionError("unreachable: the last look returns")
