"""Paired differences against the plain student with the split as the unit, as `edgekd bench kd` reads them: the
mean over splits of each split's mean over its seeds, its 95% interval with the test set's own sampling variance
added, the two-sided p-value, Holm's step-down adjustment over the methods of a width, and the verdict. Pure."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

LEVEL, FAMILYWISE = 0.95, 0.05  # the intervals' level; the familywise error rate of a width's verdicts (Holm)


class Interval(BaseModel):
    """A mean paired difference (method - plain) with the split as the unit, its 95% interval and two-sided p-value
    against no difference. `n`: the splits, `split_se`: the standard error from the spread between them (Student's
    t, n - 1 degrees of freedom); `items`, `item_se`: the test items and the standard error from their sampling (t,
    items - 1 degrees of freedom; 0: not included). From fewer than two splits: no interval and no p."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    lo: float | None
    hi: float | None
    n: int
    p: float | None = None
    split_se: float | None = None
    items: int = 0
    item_se: float = 0.0

    @classmethod
    def of(cls, values: list[float], level: float = LEVEL) -> Interval:
        """Student's t over `values`, one per split (its mean over seeds), n - 1 degrees of freedom."""
        a = np.asarray(values, dtype=float)
        if len(a) < 2:
            return cls(mean=float(a.mean()) if len(a) else float("nan"), lo=None, hi=None, n=len(a))
        return cls.combined(float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))), len(a), level=level)

    @classmethod
    def combined(
        cls, mean: float, split_se: float, splits: int, item_se: float = 0.0, items: int = 0, level: float = LEVEL
    ) -> Interval:
        """`mean` with a standard error from splits and one from test items: the half-width is each at its own t
        quantile (splits - 1 and items - 1 degrees of freedom), summed in quadrature; p is one minus the level at
        which the interval just reaches zero. One pooled (Satterthwaite) df would be too generous with three
        splits: where their spread is small by chance, the df grows as the variance shrinks, and a simulation with
        no true gain then claimed one 5.5% of the time instead of at most 2.5%."""
        se = (split_se, splits, item_se, items)
        half = _half(level, *se)
        return cls(
            mean=mean,
            lo=mean - half,
            hi=mean + half,
            n=splits,
            p=_p(mean, *se),
            split_se=split_se,
            items=items,
            item_se=item_se,
        )

    def text(self, scale: float = 100.0, unit: str = "") -> str:
        if self.lo is None or self.hi is None:
            return f"{self.mean * scale:+.2f}{unit} ({self.n} split: no interval)"
        return f"{self.mean * scale:+.2f}{unit} [{self.lo * scale:+.2f}, {self.hi * scale:+.2f}]"


def _half(level: float, split_se: float, splits: int, item_se: float, items: int) -> float:
    from scipy.special import stdtrit  # Student's t quantile: stats.t.ppf without its per-call overhead

    q = (1 + level) / 2
    square = (float(stdtrit(splits - 1, q)) * split_se) ** 2
    if item_se > 0:
        square += (float(stdtrit(items - 1, q)) * item_se) ** 2
    return float(np.sqrt(square))


def _p(mean: float, split_se: float, splits: int, item_se: float, items: int) -> float:
    """The two-sided p-value that matches `_half`: Student's t where one standard error is zero, else one minus the
    level whose interval just reaches zero (0.0 where that is beyond 1 - 1e-12)."""
    from scipy import optimize
    from scipy.special import stdtr

    if mean == 0:
        return 1.0
    if item_se == 0 or split_se == 0:
        se, df = (split_se, splits - 1) if item_se == 0 else (item_se, items - 1)
        return 0.0 if se == 0 else float(2 * stdtr(df, -abs(mean) / se))
    top = 1 - 1e-12
    if _half(top, split_se, splits, item_se, items) < abs(mean):
        return 0.0
    reach = optimize.brentq(lambda lv: _half(lv, split_se, splits, item_se, items) - abs(mean), 0.0, top, xtol=1e-15)
    return float(1 - reach)


def clustered(by_split: dict[int, list[float]], items: dict[int, np.ndarray] | None = None) -> Interval:
    """The mean paired difference with the split as the unit: the pairs of a split share its teacher and its
    train/val draw, so they are not independent; each split's mean over its seeds, then t over splits (splits - 1
    degrees of freedom). `items`: per split, its seeds' mean paired difference on each test item (every split is
    scored on the same test set); with them the test set's sampling variance, which no spread between splits can
    show, is added (`crossed`)."""
    splits = sorted(by_split)
    means = [float(np.mean(by_split[k])) for k in splits]
    if len(splits) < 2 or items is None:
        return Interval.of(means)
    return crossed(np.stack([np.asarray(items[k], dtype=float) for k in splits]))


def crossed(e: np.ndarray, level: float = LEVEL) -> Interval:
    """The grand mean of `e` (splits x test items) with splits and items both sampled, a two-way crossed design
    without replication: var = var_split / S + var_item / N + var_residual / (S N). The split means' spread
    estimates the first and the last term; the items' term is estimated from the item means net of the residual
    they also carry (expected mean squares: items S var_item + var_residual, residual var_residual), so that the
    residual is not counted twice. The items' term is the test set's sampling variance: every pair shares it."""
    s, n = e.shape
    m, d, mean = e.mean(1), e.mean(0), float(e.mean())
    split_se = float(np.sqrt(m.var(ddof=1) / s))
    if n < 2:
        return Interval.combined(mean, split_se, s, level=level)
    ms_item = s * float(d.var(ddof=1))
    ms_res = float(((e - m[:, None] - d[None, :] + mean) ** 2).sum()) / ((s - 1) * (n - 1))
    item_var = max(0.0, (ms_item - ms_res) / (s * n))
    return Interval.combined(mean, split_se, s, float(np.sqrt(item_var)), n, level=level)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m times (m - k + 1), never below
    the one before it, at most 1. Claiming only where the adjusted p is below alpha keeps the chance of any false
    claim among the m at most alpha."""
    out, running = [1.0] * len(ps), 0.0
    for rank, i in enumerate(sorted(range(len(ps)), key=lambda j: ps[j])):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


GAIN, NO_GAIN, LOSS, FEW_SPLITS = "gain", "no measurable gain", "loss", "not enough splits"


def verdict(test_gain: Interval, adjusted_p: float | None = None, alpha: float = FAMILYWISE) -> str:
    """What a method's paired test difference against plain supports: a gain when its p-value (Holm-adjusted over
    the width's methods; alone, its own) is below `alpha` with a positive mean, a loss with a negative one, else no
    measurable gain. With fewer than two splits there is nothing to test: not enough splits."""
    p = test_gain.p if adjusted_p is None else adjusted_p
    if p is None:
        return FEW_SPLITS
    if p < alpha and test_gain.mean != 0:
        return GAIN if test_gain.mean > 0 else LOSS
    return NO_GAIN
