"""The decision rule's statistics: a test with a stated error rate behind every verdict.

Every ✅/❌ in ``CLAIMS.md`` comes from one of these, at a two-sided 5 % level (issue 25):

* :func:`t_test` -- one-sample Student t on per-seed margins against 0 (the margin is already
  "ours − the claim's threshold"), with its 95 % confidence interval;
* :func:`z_test` -- one seed, against the **measured seed spread of a sibling study** (a normal
  test with the sibling's s.d. taken as known): how a single-seed row can still be decided;
* :func:`bootstrap_ci` / :func:`block_bootstrap_ci` -- 95 % percentile intervals where the
  statistic is not a mean (a correlation, a median, a fraction of cells), resampling cases or,
  within a time series, contiguous blocks (so autocorrelated steps are not counted as
  independent).

The Student t distribution is evaluated through the regularized incomplete beta function
(``scipy.special.betainc``/``betaincinv``), not through ``scipy.stats``, so
``tests/experiments/test_stats.py`` can check it against ``scipy.stats`` and closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, betaincinv, ndtr, ndtri

__all__ = [
    "ALPHA",
    "TestResult",
    "t_sf2",
    "t_quantile",
    "t_test",
    "z_test",
    "bootstrap_ci",
    "block_bootstrap_ci",
    "ci_verdict",
]

#: The error rate of every decided verdict (two-sided).
ALPHA = 0.05


@dataclass(frozen=True)
class TestResult:
    """A test's outcome: estimate, 95 % interval, two-sided p (nan for a bootstrap), method."""

    estimate: float
    low: float
    high: float
    p: float
    n: int
    method: str

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for t and z tests: p < ``ALPHA``)."""
        if math.isfinite(self.p):
            return self.p < ALPHA
        return self.low > 0 or self.high < 0


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| ≥ |t|) of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    return float(betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (``0 < q < 1``), inverting :func:`t_sf2`."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {q}")
    tail = 2 * min(q, 1 - q)  # two-sided tail of |t|
    x = float(betaincinv(df / 2.0, 0.5, tail))
    t = math.sqrt(df * (1 - x) / x) if x > 0 else math.inf
    return t if q > 0.5 else -t


def t_test(values: Sequence[float], *, alpha: float = ALPHA) -> TestResult:
    """One-sample two-sided t-test of mean(values) = 0, with the (1 − alpha) interval.

    Needs ≥ 2 finite values. Values that agree exactly (s.d. 0) give p = 0 if their mean is not
    0 (no spread to explain the margin away) and p = 1 if it is.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n < 2:
        raise ValueError(f"a t-test needs at least 2 values, got {n}")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    if sd <= 1e-12 * max(1.0, float(np.abs(v).max())):  # exact agreement, up to round-off
        return TestResult(mean, mean, mean, 0.0 if mean != 0 else 1.0, n, "t")
    se = sd / math.sqrt(n)
    half = t_quantile(1 - alpha / 2, n - 1) * se
    return TestResult(mean, mean - half, mean + half, t_sf2(mean / se, n - 1), n, "t")


def z_test(value: float, sd: float, *, alpha: float = ALPHA) -> TestResult:
    """Two-sided normal test of one value against 0 when its s.d. ``sd`` is known (measured
    on a sibling study's seeds): p = 2 (1 − Φ(|value| / sd)), interval value ± z·sd."""
    if not (sd > 0 and math.isfinite(sd)):
        raise ValueError(f"the sibling seed s.d. must be a positive number, got {sd}")
    z = abs(value) / sd
    half = float(ndtri(1 - alpha / 2)) * sd
    return TestResult(value, value - half, value + half, float(2 * (1 - ndtr(z))), 1, "z")


def bootstrap_ci(
    data: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 2000,
    alpha: float = ALPHA,
    generator: np.random.Generator | None = None,
) -> TestResult:
    """Percentile bootstrap interval of ``statistic`` over cases (rows of ``data``)."""
    x = np.asarray(data)
    if len(x) < 2:
        raise ValueError(f"a bootstrap needs at least 2 cases, got {len(x)}")
    gen = generator if generator is not None else np.random.default_rng(0)
    idx = gen.integers(0, len(x), size=(n_boot, len(x)))
    stats = np.asarray([statistic(x[i]) for i in idx], dtype=float)
    return _percentile(float(statistic(x)), stats, len(x), alpha, "bootstrap")


def block_bootstrap_ci(
    series: Sequence[np.ndarray],
    statistic: Callable[[list[np.ndarray]], float],
    *,
    block: int,
    n_boot: int = 1000,
    alpha: float = ALPHA,
    generator: np.random.Generator | None = None,
) -> TestResult:
    """Moving-block bootstrap within each series (a run's rows in time order), jointly.

    Each replicate rebuilds every series (arrays of shape (T_i, ...)) from random contiguous
    blocks of ``block`` rows of that same series, cut to its length, and evaluates
    ``statistic(list of series)``; runs are never mixed.
    """
    if block < 1:
        raise ValueError(f"block length must be ≥ 1, got {block}")
    gen = generator if generator is not None else np.random.default_rng(0)
    arrays = [np.asarray(s) for s in series]
    stats = np.empty(n_boot)
    for b in range(n_boot):
        stats[b] = statistic([_resample_blocks(a, block, gen) for a in arrays])
    n = sum(len(a) for a in arrays)
    return _percentile(float(statistic(arrays)), stats, n, alpha, f"block bootstrap ({block})")


def _resample_blocks(a: np.ndarray, block: int, gen: np.random.Generator) -> np.ndarray:
    t = len(a)
    if t <= block:
        return a[gen.integers(0, t, size=t)] if t > 1 else a
    starts = gen.integers(0, t - block + 1, size=-(-t // block))
    idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:t]
    return a[idx]


def _percentile(est: float, stats: np.ndarray, n: int, alpha: float, method: str) -> TestResult:
    ok = stats[np.isfinite(stats)]
    if len(ok) < 0.9 * len(stats):
        return TestResult(est, math.nan, math.nan, math.nan, n, method)
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return TestResult(est, float(low), float(high), math.nan, n, method)


def ci_verdict(result: TestResult, threshold: float, *, above: bool = True) -> bool | None:
    """True when the whole interval lies on the claim's side of ``threshold`` (``above``: the
    claim says ≥), False when it lies wholly on the other side, None when it straddles it."""
    lo, hi = result.low, result.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if above:
        return True if lo > threshold else False if hi < threshold else None
    return True if hi < threshold else False if lo > threshold else None
