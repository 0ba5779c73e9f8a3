"""The range test's figure: loss (and held-out metrics) against the LR, suggestions marked.

matplotlib is imported lazily (only when a figure is drawn) and ``pyplot`` is never used, so this
works headless and touches no global figure state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .result import RangeTestResult

__all__ = ["draw_range_test", "plot_range_test"]


def plot_range_test(result: RangeTestResult, *, show_raw: bool = True) -> Any:
    """A new matplotlib ``Figure`` with the range test's curves (see :func:`draw_range_test`).

    Args:
        result: a :class:`~hessian_lr.range_test.result.RangeTestResult`.
        show_raw: also draw the raw (unsmoothed) training loss.

    Returns:
        The ``matplotlib.figure.Figure`` (save it with ``fig.savefig(path)``).
    """
    return draw_range_test(result, None, show_raw=show_raw).figure


def draw_range_test(result: RangeTestResult, ax: Any = None, *, show_raw: bool = True) -> Any:
    """Smoothed (and raw) training loss, held-out loss and accuracy vs LR, suggestions marked.

    Log x axis for the exp ramp, linear for the linear ramp (as in CLR Fig. 3 / SC Fig. 2).
    Held-out accuracy goes on a twin y axis. Vertical lines: max_lr (solid), base_lr /3 and
    /4 (dashed), steepest descent (dotted), 2/λ_max and gᵀg/gᵀHg from the curvature check.
    No ``pyplot`` state is touched when ``ax`` is given; without one a new ``Figure`` is made.

    Returns:
        The loss axes (``ax.figure`` is the figure).
    """
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(6, 4), layout="constrained").add_subplot()
    log_x = result.config.get("ramp") == "exp"
    lrs = np.asarray(result.lrs, dtype=float)
    sm = np.asarray(result.smoothed_losses, dtype=float)
    raw = np.asarray(result.losses, dtype=float)
    if show_raw and len(lrs):
        ax.plot(lrs, raw, color="0.8", lw=0.7, label="train loss (raw)")
    ax.plot(lrs, sm, color="C0", lw=1.6, label="train loss (smoothed)")
    if result.val_steps:
        ax.plot(result.val_lrs, result.val_losses, "o-", color="C1", ms=3, lw=1, label="val loss")
    finite = sm[np.isfinite(sm)]
    vals = np.asarray(result.val_losses, dtype=float)
    vals = vals[np.isfinite(vals)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if vals.size:
            lo, hi = min(lo, float(vals.min())), max(hi, float(vals.min()))
        factor = float(result.config.get("diverge_factor", 4.0))
        cap = lo + (factor - 1.0) * abs(lo) * 1.25 if math.isfinite(factor) else hi
        top = min(hi, cap) if cap > lo else hi
        pad = 0.05 * (top - lo) if top > lo else max(abs(lo), 1.0) * 0.05
        ax.set_ylim(lo - pad, top + pad)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if log_x:
        ax.set_xscale("log")
    handles, labels = ax.get_legend_handles_labels()
    legend_ax = ax
    accs = [a for a in result.val_accuracies if a is not None and math.isfinite(a)]
    if accs:
        ax2 = ax.twinx()
        xs = [lr for lr, a in zip(result.val_lrs, result.val_accuracies) if a is not None]
        ys = [a for a in result.val_accuracies if a is not None]
        ax2.plot(xs, ys, "s-", color="C2", ms=3, lw=1, label="val accuracy")
        ax2.set_ylabel("accuracy")
        legend_ax = ax2  # drawn on top of ax
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    _mark_lines(result, ax, log_x, handles, labels)
    if len(lrs) > 1:
        ax.set_xlim(float(lrs[0]), float(lrs[-1]))
    legend_ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.9)
    return ax


def _mark_lines(result: RangeTestResult, ax: Any, log_x: bool, handles: list, labels: list) -> None:
    """Vertical lines at the suggestions and the cross-check's 2/λ_max and gᵀg/gᵀHg."""
    marks = [
        (result.suggestions.max_lr, "C3", "-", "max_lr"),
        (result.suggestions.base_lr_third, "C3", "--", "max_lr/3"),
        (result.suggestions.base_lr_quarter, "C3", (0, (2, 2)), "max_lr/4"),
        (result.suggestions.steepest, "C4", ":", "steepest"),
    ]
    for s, color, style, name in marks:
        if s.lr is not None and (s.lr > 0 or not log_x):
            line = ax.axvline(s.lr, color=color, ls=style, lw=1.2)
            handles.append(line)
            labels.append(f"{name} = {s.lr:.3g}")
    c = result.curvature
    if c is not None:
        for value, style, name in (
            (c.two_over_lambda, "-.", "2/λ_max"),
            (c.quadratic_lr, (0, (1, 3)), "gᵀg/gᵀHg"),
        ):
            if value is not None and value > 0:
                line = ax.axvline(value, color="k", ls=style, lw=1.0)
                handles.append(line)
                labels.append(f"{name} = {value:.3g}")
