"""How large a true accuracy drop the champion gate can see (exact binomial power, pure functions).

The accuracy rule of :mod:`evals.stats.regression` flags a regression when McNemar's exact
two-sided test on the discordant pairs gives ``p < alpha`` *and* the observed drop
``(b - c) / n`` exceeds ``max_drop``. On few examples that rule is blind to large drops:
on 22 examples with 5 discordant pairs no split of them reaches ``p < 0.05``.

The power model: each of the ``n`` paired examples is independently a noise flip towards
the champion (rate ``d / 2``), a noise flip towards the candidate (``d / 2``), a true loss
(``drop``), or concordant. ``d`` is the run-to-run discordance, estimated by the observed
``(b + c) / n`` (which also holds any real change, so the estimate errs on the blind side),
and floored at ``1 / n``. Given ``m`` discordant pairs, ``b`` is binomial, so the
probability that the rule fires is an exact sum over ``m`` (no simulation).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

POWER = 0.8
"""The detection probability the minimum detectable drop is quoted at."""
_COARSE, _FINE = 0.01, 0.001


def detection_probability(
    n: int, drop: float | NDArray[np.float64], discordance: float, alpha: float, max_drop: float
) -> NDArray[np.float64]:
    """Probability that the accuracy rule flags a true drop, for each value of ``drop``.

    Args:
        n: Paired examples.
        drop: True accuracy drop(s), 0-1 scale.
        discordance: Run-to-run discordance rate ``d`` (noise flips both ways).
        alpha: Level of McNemar's exact two-sided test.
        max_drop: The observed drop must exceed this as well.

    Returns:
        An array shaped like ``drop``; 0 where ``drop + d / 2 > 1`` is impossible.
    """
    from scipy.stats import binom

    drops = np.atleast_1d(np.asarray(drop, dtype=np.float64))
    p_c = discordance / 2
    p_b = p_c + drops
    feasible = (p_b + p_c <= 1 + 1e-12) & (drops >= 0)
    m = np.arange(n + 1)
    b_min = _smallest_flagged_b(m, n, alpha, max_drop)
    p_discordant = np.clip(p_b + p_c, 0, 1)[:, None]
    share_b = np.divide(p_b, p_b + p_c, out=np.zeros_like(p_b), where=p_b + p_c > 0)[:, None]
    # P(M = m) * P(B >= b_min(m) | M = m); b_min > m means the rule cannot fire on m pairs.
    fired = binom.pmf(m[None, :], n, p_discordant) * binom.sf(b_min[None, :] - 1, m[None, :], share_b)
    result = np.where(feasible, fired.sum(axis=1), 0.0)
    return np.asarray(result.reshape(np.shape(drop)), dtype=np.float64)


def _smallest_flagged_b(m: NDArray[np.int64], n: int, alpha: float, max_drop: float) -> NDArray[np.int64]:
    """For each number ``m`` of discordant pairs, the smallest ``b`` the rule flags (``m + 1``: none)."""
    from scipy.stats import binom

    # p = min(1, 2 * cdf(c; m, 1/2)) < alpha as statsmodels' exact McNemar (c = min(b, c) when b > c):
    # the largest such c is just below the alpha/2 quantile; check the neighbours for rounding.
    quantile = binom.ppf(alpha / 2, m, 0.5).astype(np.int64)
    c_max = np.full(m.shape, -1, dtype=np.int64)
    for candidate in (quantile - 2, quantile - 1, quantile):
        ok = (candidate >= 0) & (candidate <= m) & (np.minimum(1.0, 2 * binom.cdf(candidate, m, 0.5)) < alpha)
        c_max = np.where(ok, np.maximum(c_max, candidate), c_max)
    b_by_test = np.where(c_max >= 0, m - c_max, m + 1)
    # The observed drop (b - c) / n = (2b - m) / n must exceed max_drop.
    b_by_drop = np.floor((m + max_drop * n) / 2).astype(np.int64) + 1
    b_min = np.maximum(b_by_test, b_by_drop)
    return np.asarray(np.where(b_min > m, m + 1, b_min), dtype=np.int64)


def discordance_estimate(n: int, b: int, c: int) -> float:
    """The run-to-run discordance used as the nuisance parameter: ``(b + c) / n``, at least ``1 / n``."""
    return max(b + c, 1) / n if n else 1.0


def minimum_detectable_drop(n: int, discordance: float, alpha: float, max_drop: float, power: float = POWER) -> float:
    """The smallest true accuracy drop the rule flags with probability >= ``power``.

    Searched on a 0.01 grid, then refined to 0.001 (the result is rounded up to it).

    Args:
        n: Paired examples.
        discordance: Run-to-run discordance, e.g. :func:`discordance_estimate`.
        alpha: Level of McNemar's exact test.
        max_drop: The tolerated drop of the rule.
        power: Required detection probability.

    Returns:
        The drop (0-1 scale); ``1.0`` when no possible drop reaches ``power`` (a blind gate).
    """
    if n <= 0:
        return 1.0
    largest = 1 - discordance / 2
    coarse = np.arange(_COARSE, largest + _COARSE, _COARSE).clip(max=largest)
    reached = np.flatnonzero(detection_probability(n, coarse, discordance, alpha, max_drop) >= power)
    if not len(reached):
        return 1.0
    high = float(coarse[reached[0]])
    fine = np.arange(max(high - _COARSE, 0) + _FINE, high + _FINE / 2, _FINE).clip(max=high)
    hits = np.flatnonzero(detection_probability(n, fine, discordance, alpha, max_drop) >= power)
    found = float(fine[hits[0]]) if len(hits) else high
    return min(1.0, math.ceil(round(found / _FINE, 6)) * _FINE)
