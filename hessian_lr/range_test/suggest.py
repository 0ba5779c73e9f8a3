"""Learning-rate suggestions from range-test curves (CLR §3.3, SC §3, fastai's steepest rule).

Pure functions of the recorded curves (no model, no optimizer), so every rule is testable on a
hand-made curve. The rules are documented on :func:`suggest_lrs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .result import RangeTestSuggestion, RangeTestSuggestions

__all__ = ["suggest_lrs"]


def _relative_variation(values: np.ndarray) -> float:
    scale = max(float(np.abs(values).max()), np.finfo(float).tiny)
    return float(values.max() - values.min()) / scale


def suggest_lrs(
    lrs: Sequence[float],
    smoothed_losses: Sequence[float],
    *,
    val_lrs: Sequence[float] = (),
    val_steps: Sequence[int] = (),
    val_losses: Sequence[float] = (),
    val_accuracies: Sequence[float | None] = (),
    stopped_early: bool = False,
    flat_tol: float = 0.01,
    plateau_tol: float = 0.05,
    disagree_factor: float = 10.0,
    skip_start: int = 10,
) -> RangeTestSuggestions:
    """LR suggestions from range-test curves (CLR §3.3, SC §3, fastai's steepest rule).

    Rules:

    * ``max_lr``: the LR of the first maximum of the held-out accuracy; without accuracy, of the
      first minimum of the held-out loss; without held-out data, of the first minimum of the
      smoothed training loss (with the range test's pairing convention this is the first LR
      whose update no longer lowered the loss: on a quadratic, the first LR above 2/λ_max).
    * ``base_lr_third`` / ``base_lr_quarter``: ``max_lr``/3 and ``max_lr``/4.
    * ``steepest``: the LR of the most negative d(smoothed loss)/d(ln LR) (``numpy.gradient``
      on the non-uniform log-LR grid, LR > 0 only) among the records up to the smoothed-loss
      minimum (the descending part; what follows is divergence), skipping the first
      min(``skip_start``, n/4) of them: the bias-corrected EMA averages only a few losses there
      and its noise would win (torch-lr-finder skips 10 as well).
    * flags: ``"flat"`` when the curve a rule used varies by less than ``flat_tol`` relative to
      its largest magnitude ((max − min)/max|·|); ``"no_divergence"`` on every suggestion when the
      run was not stopped early; ``"rules_disagree"`` on all when ``max_lr`` and ``steepest``
      differ by more than ``disagree_factor``; ``"at_edge"`` when the chosen point is the first
      or last point of its curve.
    * plateau: the contiguous run of held-out records around the accuracy peak with accuracy
      ≥ (1 − ``plateau_tol``)·peak; ``plateau_ratio`` = its highest / lowest LR.

    Args:
        lrs: per-update LRs.
        smoothed_losses: per-update smoothed training losses (same length as ``lrs``).
        val_lrs: held-out records' LRs.
        val_steps: held-out records' update indices (same length as ``val_lrs``, or empty).
        val_losses: held-out losses (same length as ``val_lrs``).
        val_accuracies: held-out accuracies (same length, None entries allowed, or empty).
        stopped_early: whether the run stopped on divergence.
        flat_tol: see ``"flat"`` above.
        plateau_tol: see plateau above.
        disagree_factor: see ``"rules_disagree"`` above.
        skip_start: records skipped by the steepest rule.

    Returns:
        A :class:`~hessian_lr.range_test.result.RangeTestSuggestions`.
    """
    lrs_a = np.asarray(lrs, dtype=float)
    sm = np.asarray(smoothed_losses, dtype=float)
    if lrs_a.shape != sm.shape:
        raise ValueError(f"lrs and smoothed_losses differ in length: {lrs_a.shape} vs {sm.shape}")
    n_val = len(val_lrs)
    if not (len(val_losses) == n_val and len(val_accuracies) in (0, n_val)):
        raise ValueError("val_lrs, val_losses and val_accuracies must have the same length")
    steps = list(val_steps) if len(val_steps) == n_val else [None] * n_val
    common: list[str] = [] if stopped_early else ["no_divergence"]

    finite = np.flatnonzero(np.isfinite(sm))
    loss_min_idx = int(finite[np.argmin(sm[finite])]) if finite.size else None
    loss_flat = finite.size > 0 and _relative_variation(sm[finite]) < flat_tol

    accs = np.array(
        [np.nan if a is None else float(a) for a in val_accuracies] if val_accuracies else [],
        dtype=float,
    )
    rule, max_lr, max_step, max_flags, plateau = _max_lr_rule(
        lrs_a, sm, finite, loss_min_idx, loss_flat, val_lrs, steps, accs,
        np.asarray(val_losses, dtype=float), flat_tol, plateau_tol,
    )  # fmt: skip
    st_lr, st_step, st_flags = _steepest_rule(lrs_a, sm, finite, loss_min_idx, skip_start)
    if loss_flat:
        st_flags.insert(0, "flat")
    max_flags = common + max_flags
    st_flags = common + st_flags
    if max_lr is not None and st_lr is not None and max_lr > 0 and st_lr > 0:
        if max(max_lr / st_lr, st_lr / max_lr) > disagree_factor:
            max_flags.append("rules_disagree")
            st_flags.append("rules_disagree")

    mf = tuple(max_flags)
    plateau_lrs = plateau[0] if plateau else None
    return RangeTestSuggestions(
        max_lr=RangeTestSuggestion(max_lr, rule, max_step, mf),
        base_lr_third=RangeTestSuggestion(
            None if max_lr is None else max_lr / 3, "max_lr/3", max_step, mf
        ),
        base_lr_quarter=RangeTestSuggestion(
            None if max_lr is None else max_lr / 4, "max_lr/4", max_step, mf
        ),
        steepest=RangeTestSuggestion(st_lr, "steepest_descent", st_step, tuple(st_flags)),
        plateau_lrs=plateau_lrs,
        plateau_ratio=plateau[1] if plateau else None,
    )


def _max_lr_rule(
    lrs_a: np.ndarray,
    sm: np.ndarray,
    finite: np.ndarray,
    loss_min_idx: int | None,
    loss_flat: bool,
    val_lrs: Sequence[float],
    steps: list[int | None],
    accs: np.ndarray,
    vl: np.ndarray,
    flat_tol: float,
    plateau_tol: float,
) -> tuple[str, float | None, int | None, list[str], Any]:
    """(rule, max_lr, step, flags, ((plateau_lo, plateau_hi), ratio) or None)."""
    flags: list[str] = []
    max_lr: float | None = None
    max_step: int | None = None
    plateau = None
    acc_ok = np.flatnonzero(np.isfinite(accs)) if accs.size else np.array([], dtype=int)
    vl_ok = np.flatnonzero(np.isfinite(vl))
    if acc_ok.size:
        rule = "val_accuracy_peak"
        j = int(acc_ok[np.argmax(accs[acc_ok])])
        max_lr, max_step = float(val_lrs[j]), steps[j]
        if _relative_variation(accs[acc_ok]) < flat_tol:
            flags.append("flat")
        if j in (int(acc_ok[0]), int(acc_ok[-1])):
            flags.append("at_edge")
        peak = accs[j]
        threshold = peak - plateau_tol * abs(peak)
        lo = hi = j
        while lo - 1 >= 0 and np.isfinite(accs[lo - 1]) and accs[lo - 1] >= threshold:
            lo -= 1
        while hi + 1 < accs.size and np.isfinite(accs[hi + 1]) and accs[hi + 1] >= threshold:
            hi += 1
        lows = (float(val_lrs[lo]), float(val_lrs[hi]))
        plateau = (lows, lows[1] / lows[0] if lows[0] > 0 else math.inf)
    elif vl_ok.size:
        rule = "val_loss_minimum"
        j = int(vl_ok[np.argmin(vl[vl_ok])])
        max_lr, max_step = float(val_lrs[j]), steps[j]
        if _relative_variation(vl[vl_ok]) < flat_tol:
            flags.append("flat")
        if j in (int(vl_ok[0]), int(vl_ok[-1])):
            flags.append("at_edge")
    else:
        rule = "smoothed_loss_minimum"
        if loss_min_idx is not None:
            max_lr, max_step = float(lrs_a[loss_min_idx]), loss_min_idx
            if loss_flat:
                flags.append("flat")
            if loss_min_idx in (int(finite[0]), int(finite[-1])):
                flags.append("at_edge")
    return rule, max_lr, max_step, flags, plateau


def _steepest_rule(
    lrs_a: np.ndarray, sm: np.ndarray, finite: np.ndarray, loss_min_idx: int | None, skip_start: int
) -> tuple[float | None, int | None, list[str]]:
    """(lr, step, flags) of the steepest descent of the smoothed loss in log-LR."""
    flags: list[str] = []
    if loss_min_idx is None:
        return None, None, flags
    usable = finite[(lrs_a[finite] > 0)]
    if usable.size < 2:
        return None, None, ["no_descent"]
    slope = np.gradient(sm[usable], np.log(lrs_a[usable]))
    skip = min(max(int(skip_start), 0), usable.size // 4)
    eligible = (usable <= loss_min_idx) & (np.arange(usable.size) >= skip)
    if not (eligible.sum() >= 1 and np.any(slope[eligible] < 0)):
        return None, None, ["no_descent"]
    k = int(np.argmin(np.where(eligible, slope, np.inf)))
    step = int(usable[k])
    if k in (skip, usable.size - 1):
        flags.append("at_edge")
    return float(lrs_a[step]), step, flags
