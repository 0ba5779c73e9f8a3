"""F14's correlations with intervals: pooled (partial) log-log correlations over runs' windows.

Reads the window tables F14's ``summary.json`` stores per run (``runs.<schedule>.table``: one
row per probe window, every estimate in LR units). Each estimate is taken in logs; "partialled"
means the residual of a least-squares fit on ``[1, log LR]`` (optionally ``+ log step``) *within
each run*, so a run's own level or trend does not count as correlation; residuals are then
pooled over runs. Intervals: a moving-block bootstrap over each run's windows
(:func:`paper_figures.stats.block_bootstrap_ci`), runs never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .stats import TestResult, block_bootstrap_ci

__all__ = [
    "run_matrix",
    "pooled_partial",
    "pooled_with_lr",
    "partial_ci",
    "with_lr_ci",
    "per_run_partial",
]

BLOCK = 5  # windows per bootstrap block (a fifth of a 25-probe run)


def _log(values: Sequence) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.log(a), np.nan)


def run_matrix(table: dict, a: str, b: str) -> np.ndarray:
    """Rows (log a, log b, log LR, log step) of one run's windows, finite rows only."""
    cols = [_log(table.get(k, [])) for k in (a, b, "lr", "step")]
    if not all(len(c) == len(cols[2]) for c in cols):
        return np.zeros((0, 4))
    m = np.stack(cols, axis=1)
    return m[np.all(np.isfinite(m), axis=1)]


def _resid(m: np.ndarray, with_step: bool) -> np.ndarray:
    """Columns 0-1 minus their fit on [1, log LR (if it varies), log step (if asked)]."""
    design = [np.ones(len(m))]
    if np.std(m[:, 2]) > 1e-12:
        design.append(m[:, 2])
    if with_step:
        design.append(m[:, 3])
    x = np.stack(design, axis=1)
    if len(m) <= x.shape[1]:
        return np.zeros((0, 2))
    coef, *_ = np.linalg.lstsq(x, m[:, :2], rcond=None)
    return m[:, :2] - x @ coef


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 4 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def pooled_partial(mats: Sequence[np.ndarray], *, with_step: bool = False) -> float:
    """Correlation of the pooled within-run residuals of columns 0 and 1."""
    res = [_resid(m, with_step) for m in mats if len(m)]
    res = [r for r in res if len(r)]
    if not res:
        return math.nan
    cat = np.concatenate(res)
    return _corr(cat[:, 0], cat[:, 1])


def pooled_with_lr(mats: Sequence[np.ndarray]) -> float:
    """Log-log correlation of column 0 with the LR over the runs whose LR varies, pooled."""
    keep = [m for m in mats if len(m) and np.std(m[:, 2]) > 1e-12]
    if not keep:
        return math.nan
    cat = np.concatenate(keep)
    return _corr(cat[:, 0], cat[:, 2])


def partial_ci(
    tables: Sequence[dict], a: str, b: str, *, with_step: bool = False, n_boot: int = 1000
) -> TestResult:
    """:func:`pooled_partial` of ``a`` and ``b`` with its 95 % block-bootstrap interval."""
    mats = [run_matrix(t, a, b) for t in tables]
    return block_bootstrap_ci(
        [m for m in mats if len(m)],
        lambda ms: pooled_partial(ms, with_step=with_step),
        block=BLOCK,
        n_boot=n_boot,
        generator=np.random.default_rng(25),
    )


def with_lr_ci(tables: Sequence[dict], a: str, *, n_boot: int = 1000) -> TestResult:
    """:func:`pooled_with_lr` of ``a`` with its 95 % block-bootstrap interval."""
    mats = [run_matrix(t, a, a) for t in tables]
    return block_bootstrap_ci(
        [m for m in mats if len(m)],
        pooled_with_lr,
        block=BLOCK,
        n_boot=n_boot,
        generator=np.random.default_rng(25),
    )


def per_run_partial(tables: dict[str, dict], a: str, b: str) -> dict[str, float]:
    """The partial correlation (LR partialled out) within each run alone."""
    return {n: pooled_partial([run_matrix(t, a, b)]) for n, t in tables.items()}
