"""F16's statistics: leave-one-model-out calibration, factor error with a paired bootstrap CI, ρ.

Fixed before any F16 result existed (issue 24; ``experiments/f16_lr_that_works.py``):

* a cell is one (model, optimizer, seed) with a measured η_max and, per estimator, a value E;
* the constant k of an estimator for a model m is fitted on the *other training* models' cells:
  log k = mean log(η_max/E) (a geometric mean); a held-out model uses k fitted on every training
  model; the error of a cell is |log(η_max/(k·E))|; an estimator that returned nothing in a cell
  (flagged, not converged, never crossed) has error +∞ there (it did not predict);
* factor error = exp(median error); 95 % CI from ``RESAMPLES`` bootstrap resamples of the cells
  (seed ``SEED``; the same resampled cell indices for every estimator of an optimizer: paired);
* Spearman ρ(E, η_max) across the cells where E exists (scipy.stats.spearmanr);
* "predicts" = factor error ≤ ``FACTOR`` AND ρ ≥ ``RHO`` AND held-out within ``FACTOR``
  (held-out models' factor error; where none was run, every left-out model's factor error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

FACTOR = 2.0
RHO = 0.8
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Fit:
    """One estimator × optimizer: per-cell errors and the summary numbers."""

    estimator: str
    errors: tuple[float, ...]  # |log(η_max/(k·E))| per cell (inf: no estimate), cell order
    factor: float  # exp(median error)
    ci: tuple[float, float]  # bootstrap 95 % CI of the factor
    rho: float
    heldout_factor: float  # held-out models' factor error, or the worst left-out model's
    heldout_kind: str  # "held-out models" or "worst left-out model"
    per_model_k: dict[str, float]  # geometric mean of η_max/E per model
    n: int

    @property
    def predicts(self) -> bool:
        return self.factor <= FACTOR and self.rho >= RHO and self.heldout_factor <= FACTOR


def _value(cell: dict, estimator: str) -> float | None:
    v = cell["values"].get(estimator)
    return float(v) if v is not None and math.isfinite(v) and v > 0 else None


def _log_k(cells: Sequence[dict], estimator: str) -> float | None:
    logs = [math.log(c["eta_max"] / v) for c in cells if (v := _value(c, estimator)) is not None]
    return float(np.mean(logs)) if logs else None


def errors(cells: Sequence[dict], estimator: str) -> list[float]:
    """Leave-one-model-out errors per cell (cells: ``model``, ``heldout``, ``eta_max``,
    ``values``)."""
    train = [c for c in cells if not c["heldout"]]
    out = []
    for c in cells:
        fit_on = train if c["heldout"] else [d for d in train if d["model"] != c["model"]]
        log_k, v = _log_k(fit_on, estimator), _value(c, estimator)
        if log_k is None or v is None:
            out.append(math.inf)
        else:
            out.append(abs(math.log(c["eta_max"]) - log_k - math.log(v)))
    return out


def factor(errs: Sequence[float]) -> float:
    return math.exp(float(np.median(errs))) if len(errs) else math.nan


def resamples(n: int) -> np.ndarray:
    """(RESAMPLES, n) cell indices, the same for every estimator (paired)."""
    return np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))


def bootstrap_ci(errs: Sequence[float], idx: np.ndarray) -> tuple[float, float]:
    e = np.asarray(errs, dtype=float)
    meds = np.sort(np.exp(np.median(e[idx], axis=1)))  # inf (no estimate) sorts last
    lo, hi = (meds[int(q * (len(meds) - 1))] for q in (0.025, 0.975))  # lower-rank percentiles
    return float(lo), float(hi)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], idx: np.ndarray) -> tuple:
    """95 % CI of median(a) − median(b) over the same resampled cells (log units)."""
    ea, eb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore"):
        d = np.median(ea[idx], axis=1) - np.median(eb[idx], axis=1)
    d = d[~np.isnan(d)]  # inf − inf: both missed; ±inf stays (one of them missed)
    if not d.size:
        return (math.nan, math.nan)
    d = np.sort(d)
    return float(d[int(0.025 * (len(d) - 1))]), float(d[int(0.975 * (len(d) - 1))])


def fit(cells: Sequence[dict], estimator: str, idx: np.ndarray | None = None) -> Fit:
    """Every statistic of one estimator over the cells of one optimizer."""
    errs = errors(cells, estimator)
    idx = resamples(len(cells)) if idx is None else idx
    pairs = [(v, c["eta_max"]) for c in cells if (v := _value(c, estimator)) is not None]
    rho = float(spearmanr(*zip(*pairs)).statistic) if len(pairs) >= 3 else math.nan
    held = [e for c, e in zip(cells, errs) if c["heldout"]]
    if held:
        heldout, kind = factor(held), "held-out models"
    else:
        models = sorted({c["model"] for c in cells})
        per = [factor([e for c, e in zip(cells, errs) if c["model"] == m]) for m in models]
        heldout, kind = (max(per) if per else math.nan), "worst left-out model"
    per_model = {}
    for m in sorted({c["model"] for c in cells}):
        lk = _log_k([c for c in cells if c["model"] == m], estimator)
        if lk is not None:
            per_model[m] = math.exp(lk)
    return Fit(
        estimator, tuple(errs), factor(errs), bootstrap_ci(errs, idx), rho if rho == rho else
        math.nan, heldout, kind, per_model, len(cells),
    )  # fmt: skip


def calibration_constant(cells: Sequence[dict], estimator: str) -> float | None:
    """k fitted on every training model's cells (for the finder: η_max ≈ k·E)."""
    lk = _log_k([c for c in cells if not c["heldout"]], estimator)
    return None if lk is None else math.exp(lk)
