"""The learning-rate range test (Smith 2017, CLR §3.3; Smith & Topin 2017, Super-Convergence §3).

One short training run with the learning rate rising linearly (or exponentially) from a small to
a large value, recording the training loss (raw and smoothed) and, when held-out data is given,
the held-out loss and accuracy against the LR. The run stops when the loss diverges, and the
model, the optimizer, the BatchNorm buffers, the module modes and every RNG are restored
bit-identically afterwards (also when an exception interrupts the run).

Conventions (those of fastai and torch-lr-finder, so the curves are comparable):

* **Ladder.** Update ``i`` (0-based) of ``n = num_steps`` uses
  ``lr_i = start + (i / (n − 1)) · (end − start)`` (``"linear"``) or
  ``lr_i = start · (end / start) ** (i / (n − 1))`` (``"exp"``): both end points are included.
  This is torch-lr-finder's ``LinearLR`` / ``ExponentialLR`` exactly (same floating-point
  expression), so the same run gives bit-identical losses.
* **Pairing.** Record ``i`` pairs ``lr_i`` with the loss of the batch(es) whose gradient update
  ``i`` applies with ``lr_i`` (the loss at the parameters *before* that update). Held-out metrics
  evaluated after update ``i`` are paired with ``lr_i`` too.
* **Several parameter groups** are scaled proportionally: group ``j`` gets
  ``lr_i · lr_j⁰ / lr_0⁰`` (its initial ratio to group 0 is kept); the recorded LR is group 0's.
  With equal initial LRs (the usual case) every group gets the same LR.
* **Smoothing** is the bias-corrected exponential moving average of the raw loss
  ``a_i = β a_{i−1} + (1 − β) x_i``, ``s_i = a_i / (1 − β^{i+1})`` (β = ``smoothing``; 0 = raw).
* **Divergence**: the run stops at the first record whose loss is non-finite, or whose smoothed
  loss exceeds ``diverge_factor`` × the best (lowest) smoothed loss so far; for a best loss ≤ 0
  the test reads ``s − best > (diverge_factor − 1)·|best|``, the same rule for positive losses.
  The update of the stopping record is not applied.

Suggestions (``RangeTestSuggestions``; every rule is documented on :func:`suggest_lrs`):
``max_lr`` at the held-out accuracy peak (else the held-out loss minimum, else the smoothed
training-loss minimum), ``base_lr`` = ``max_lr``/3 (CLR) and ``max_lr``/4 (SC), the steepest
descent of the smoothed loss in log-LR (fastai, torch-lr-finder), flags when the curve is flat,
did not diverge, or the rules disagree by more than 10×, and the width of the accuracy plateau
(a wide high plateau is the sign of super-convergence, SC §3).

Curvature cross-check (``curvature_check=True``): before training, on the batch(es) of the
first update, λ_max of the training-loss Hessian by Lanczos and the quadratic-model step
gᵀg/gᵀHg along −g (methods notes §3, via ``hessian_lr.estimate.estimate_lr``): plain gradient
descent is unstable above 2/λ_max (Cohen et al. 2021), so on a quadratic the range test must
diverge right after the ladder crosses 2/λ_max.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..curvature.hessian import move_to_device
from ..records import to_jsonable
from ..rng import get_rng_state, set_rng_state

__all__ = [
    "CurvatureCheck",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "lr_range_test",
    "lr_ramp",
    "suggest_lrs",
]

Batch = Any
RAMPS = ("linear", "exp")


# ----------------------------------------------------------------------------- the ladder
def lr_ramp(
    start_lr: float, end_lr: float, num_steps: int, *, ramp: Literal["linear", "exp"] = "linear"
) -> np.ndarray:
    """The range test's LR ladder: (num_steps,) float64, both end points included.

    ``lr_i = start + (i/(n−1))·(end − start)`` (linear) or ``start·(end/start)^(i/(n−1))``
    (exp), the expressions of torch-lr-finder's schedulers.

    Example:
        >>> lr_ramp(0.0, 1.0, 5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    _check_ladder(start_lr, end_lr, num_steps, ramp)
    n = num_steps - 1
    if ramp == "linear":
        return np.array([start_lr + (i / n) * (end_lr - start_lr) for i in range(num_steps)])
    return np.array([start_lr * (end_lr / start_lr) ** (i / n) for i in range(num_steps)])


def _check_ladder(start_lr: float, end_lr: float, num_steps: int, ramp: str) -> None:
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS}, got {ramp!r}")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 2:
        raise ValueError(
            f"num_steps must be an integer ≥ 2 (the ladder has two ends), got {num_steps}"
        )
    if not (math.isfinite(start_lr) and math.isfinite(end_lr)):
        raise ValueError(f"start_lr and end_lr must be finite, got {start_lr} and {end_lr}")
    if ramp == "exp" and not start_lr > 0:
        raise ValueError(f"the exp ramp needs start_lr > 0 (log scale), got {start_lr}")
    if start_lr < 0:
        raise ValueError(f"start_lr must be ≥ 0, got {start_lr}")
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be larger than start_lr, got {start_lr} → {end_lr}")


# ----------------------------------------------------------------------------- result types
@dataclass(frozen=True)
class RangeTestSuggestion:
    """One suggested learning rate.

    Attributes:
        lr: the suggested LR (in group 0's units), or None when the rule has no answer.
        rule: how it was chosen (``"val_accuracy_peak"``, ``"val_loss_minimum"``,
            ``"smoothed_loss_minimum"``, ``"max_lr/3"``, ``"max_lr/4"``, ``"steepest_descent"``).
        step: the update index (0-based record) the LR belongs to, or None.
        flags: caveats: ``"flat"`` (the curve hardly varies: no information),
            ``"no_divergence"`` (end_lr was reached: the true maximum may be higher),
            ``"rules_disagree"`` (the peak/minimum rule and the steepest rule differ > 10×),
            ``"at_edge"`` (the chosen point is the first or last of its curve),
            ``"no_descent"`` (the smoothed loss never fell: no steepest-descent point).
    """

    lr: float | None
    rule: str
    step: int | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RangeTestSuggestions:
    """The suggestions of a range test (see :func:`suggest_lrs` for the exact rules).

    Attributes:
        max_lr: the upper bound for a cyclical / one-cycle schedule.
        base_lr_third: ``max_lr / 3`` (CLR §3.3).
        base_lr_quarter: ``max_lr / 4`` (CLR §3.3, SC §3).
        steepest: the LR of the steepest descent of the smoothed loss in log-LR.
        plateau_lrs: (low, high) LR of the contiguous stretch around the accuracy peak where the
            held-out accuracy stays ≥ (1 − ``plateau_tol``) × peak; None without accuracy.
        plateau_ratio: high / low of that stretch (``inf`` when it starts at LR 0): a wide high
            plateau (large ratio) signals super-convergence potential (SC §3, Fig. 2).
    """

    max_lr: RangeTestSuggestion
    base_lr_third: RangeTestSuggestion
    base_lr_quarter: RangeTestSuggestion
    steepest: RangeTestSuggestion
    plateau_lrs: tuple[float, float] | None = None
    plateau_ratio: float | None = None

    def as_dict(self) -> dict[str, RangeTestSuggestion]:
        """{name: suggestion} for the four LR suggestions."""
        return {
            "max_lr": self.max_lr,
            "base_lr_third": self.base_lr_third,
            "base_lr_quarter": self.base_lr_quarter,
            "steepest": self.steepest,
        }


@dataclass(frozen=True)
class CurvatureCheck:
    """Curvature of the training loss at the start of the range test (first update's batch).

    Attributes:
        lambda_max: largest Hessian eigenvalue (Lanczos), or None when the check failed.
        two_over_lambda: 2/λ_max, the gradient-descent stability bound; None when λ_max ≤ 0.
        momentum_bound: (2 + 2β)/λ_max for heavy-ball SGD with momentum β > 0 (Cohen et al.
            2021), else None.
        quadratic_lr: gᵀg/gᵀHg, the minimiser of the local quadratic model along −g; None
            when gᵀHg ≤ 0 (negative curvature along the gradient).
        loss: the loss at the start; grad_norm: ‖g‖; g_hg: gᵀHg.
        lanczos_converged: whether Lanczos met its tolerance.
        num_hvps: Hessian-vector products spent; seconds: wall-clock time.
        flags: ``"nonpositive_lambda_max"``, ``"negative_curvature_along_gradient"``,
            ``"zero_gradient"``, ``"not_converged"``, ``"failed"``.
        error: the error message when the check failed (the range test itself went on).
    """

    lambda_max: float | None
    two_over_lambda: float | None
    momentum_bound: float | None
    quadratic_lr: float | None
    loss: float | None
    grad_norm: float | None
    g_hg: float | None
    lanczos_converged: bool
    num_hvps: int
    seconds: float
    flags: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class RangeTestResult:
    """Records of one LR range test, its suggestions and the curvature cross-check.

    Per-update records (length = number of records, the stopping record included):
    ``lrs`` (LR applied, group 0), ``losses`` (raw training loss, mean over the accumulated
    micro-batches), ``smoothed_losses`` (bias-corrected EMA), ``grad_norms`` (‖g‖₂ of the
    accumulated gradient over the optimizer's parameters, before the step).
    Held-out records (every ``val_every`` updates): ``val_steps`` (update index after which the
    model was evaluated), ``val_lrs``, ``val_losses``, ``val_accuracies`` (None entries when
    accuracy is undefined: closure mode or non-classification outputs).

    ``num_updates`` counts optimizer steps actually taken, ``num_batches`` the training batches
    drawn; ``stopped_early``/``stop_reason`` say whether and why the run stopped before the end.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed_losses: tuple[float, ...]
    grad_norms: tuple[float, ...]
    val_steps: tuple[int, ...]
    val_lrs: tuple[float, ...]
    val_losses: tuple[float, ...]
    val_accuracies: tuple[float | None, ...]
    stopped_early: bool
    stop_reason: str | None
    num_updates: int
    num_batches: int
    suggestions: RangeTestSuggestions
    curvature: CurvatureCheck | None
    config: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def stop_step(self) -> int | None:
        """Index of the record at which the run stopped (None when it ran to the end)."""
        return len(self.lrs) - 1 if self.stopped_early else None

    @property
    def max_lr(self) -> float | None:
        """Shortcut for ``suggestions.max_lr.lr``."""
        return self.suggestions.max_lr.lr

    @property
    def steepest_lr(self) -> float | None:
        """Shortcut for ``suggestions.steepest.lr``."""
        return self.suggestions.steepest.lr

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per update (``val_loss``/``val_accuracy`` where evaluated)."""
        val = {s: (l, a) for s, l, a in zip(self.val_steps, self.val_losses, self.val_accuracies)}
        out = []
        for i, (lr, loss, sm, gn) in enumerate(
            zip(self.lrs, self.losses, self.smoothed_losses, self.grad_norms)
        ):
            rec: dict[str, Any] = {
                "step": i,
                "lr": lr,
                "loss": _json_float(loss),
                "smoothed_loss": _json_float(sm),
                "grad_norm": _json_float(gn),
            }
            if i in val:
                rec["val_loss"] = _json_float(val[i][0])
                rec["val_accuracy"] = _json_float(val[i][1])
            out.append(rec)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able Python (non-finite floats become None)."""
        return to_jsonable(dataclasses.asdict(self), inf_as_string=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RangeTestResult:
        """Rebuild a result from :meth:`to_dict` output (non-finite values come back as NaN)."""

        def floats(xs: Iterable[Any]) -> tuple[float, ...]:
            return tuple(math.nan if x is None else float(x) for x in xs)

        def sugg(s: Mapping[str, Any]) -> RangeTestSuggestion:
            return RangeTestSuggestion(s["lr"], s["rule"], s["step"], tuple(s["flags"]))

        s = d["suggestions"]
        plateau = s.get("plateau_lrs")
        ratio = s.get("plateau_ratio")
        suggestions = RangeTestSuggestions(
            max_lr=sugg(s["max_lr"]),
            base_lr_third=sugg(s["base_lr_third"]),
            base_lr_quarter=sugg(s["base_lr_quarter"]),
            steepest=sugg(s["steepest"]),
            plateau_lrs=None if plateau is None else (float(plateau[0]), float(plateau[1])),
            plateau_ratio=None if ratio is None and plateau is None else _float_or_inf(ratio),
        )
        c = d.get("curvature")
        curvature = None
        if c is not None:
            curvature = CurvatureCheck(**{**c, "flags": tuple(c["flags"])})
        return cls(
            lrs=floats(d["lrs"]),
            losses=floats(d["losses"]),
            smoothed_losses=floats(d["smoothed_losses"]),
            grad_norms=floats(d["grad_norms"]),
            val_steps=tuple(int(x) for x in d["val_steps"]),
            val_lrs=floats(d["val_lrs"]),
            val_losses=floats(d["val_losses"]),
            val_accuracies=tuple(None if x is None else float(x) for x in d["val_accuracies"]),
            stopped_early=bool(d["stopped_early"]),
            stop_reason=d["stop_reason"],
            num_updates=int(d["num_updates"]),
            num_batches=int(d["num_batches"]),
            suggestions=suggestions,
            curvature=curvature,
            config=dict(d.get("config", {})),
            seconds=float(d.get("seconds", 0.0)),
        )

    def plot(self, ax: Any = None, *, show_raw: bool = True) -> Any:
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
        log_x = self.config.get("ramp") == "exp"
        lrs = np.asarray(self.lrs, dtype=float)
        sm = np.asarray(self.smoothed_losses, dtype=float)
        raw = np.asarray(self.losses, dtype=float)
        if show_raw and len(lrs):
            ax.plot(lrs, raw, color="0.8", lw=0.7, label="train loss (raw)")
        ax.plot(lrs, sm, color="C0", lw=1.6, label="train loss (smoothed)")
        if self.val_steps:
            ax.plot(self.val_lrs, self.val_losses, "o-", color="C1", ms=3, lw=1, label="val loss")
        finite = sm[np.isfinite(sm)]
        vals = np.asarray(self.val_losses, dtype=float)
        vals = vals[np.isfinite(vals)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            if vals.size:
                lo, hi = min(lo, float(vals.min())), max(hi, float(vals.min()))
            factor = float(self.config.get("diverge_factor", 4.0))
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
        accs = [a for a in self.val_accuracies if a is not None and math.isfinite(a)]
        if accs:
            ax2 = ax.twinx()
            xs = [lr for lr, a in zip(self.val_lrs, self.val_accuracies) if a is not None]
            ys = [a for a in self.val_accuracies if a is not None]
            ax2.plot(xs, ys, "s-", color="C2", ms=3, lw=1, label="val accuracy")
            ax2.set_ylabel("accuracy")
            legend_ax = ax2  # drawn on top of ax
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        marks = [
            (self.suggestions.max_lr, "C3", "-", "max_lr"),
            (self.suggestions.base_lr_third, "C3", "--", "max_lr/3"),
            (self.suggestions.base_lr_quarter, "C3", (0, (2, 2)), "max_lr/4"),
            (self.suggestions.steepest, "C4", ":", "steepest"),
        ]
        for s, color, style, name in marks:
            if s.lr is not None and (s.lr > 0 or not log_x):
                line = ax.axvline(s.lr, color=color, ls=style, lw=1.2)
                handles.append(line)
                labels.append(f"{name} = {s.lr:.3g}")
        c = self.curvature
        if c is not None:
            for value, style, name in (
                (c.two_over_lambda, "-.", "2/λ_max"),
                (c.quadratic_lr, (0, (1, 3)), "gᵀg/gᵀHg"),
            ):
                if value is not None and value > 0:
                    line = ax.axvline(value, color="k", ls=style, lw=1.0)
                    handles.append(line)
                    labels.append(f"{name} = {value:.3g}")
        if len(lrs) > 1:
            ax.set_xlim(float(lrs[0]), float(lrs[-1]))
        legend_ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.9)
        return ax


def _json_float(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _float_or_inf(x: Any) -> float:
    return math.inf if x is None else float(x)


# ----------------------------------------------------------------------------- suggestions
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
      smoothed training loss (with the pairing convention of the module docstring this is the
      first LR whose update no longer lowered the loss: on a quadratic, the first LR above
      2/λ_max).
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
        lrs, smoothed_losses: per-update records (same length).
        val_lrs, val_steps, val_losses, val_accuracies: held-out records (same length; accuracy
            entries may be None).
        stopped_early: whether the run stopped on divergence.
        flat_tol, plateau_tol, disagree_factor, skip_start: the thresholds above.

    Returns:
        A :class:`RangeTestSuggestions`.
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

    # max_lr
    accs = np.array(
        [np.nan if a is None else float(a) for a in val_accuracies] if val_accuracies else [],
        dtype=float,
    )
    vl = np.asarray(val_losses, dtype=float)
    max_flags = list(common)
    max_lr: float | None = None
    max_step: int | None = None
    plateau_lrs: tuple[float, float] | None = None
    plateau_ratio: float | None = None
    acc_ok = np.flatnonzero(np.isfinite(accs)) if accs.size else np.array([], dtype=int)
    vl_ok = np.flatnonzero(np.isfinite(vl))
    if acc_ok.size:
        rule = "val_accuracy_peak"
        j = int(acc_ok[np.argmax(accs[acc_ok])])
        max_lr, max_step = float(val_lrs[j]), steps[j]
        if _relative_variation(accs[acc_ok]) < flat_tol:
            max_flags.append("flat")
        if j in (int(acc_ok[0]), int(acc_ok[-1])):
            max_flags.append("at_edge")
        peak = accs[j]
        threshold = peak - plateau_tol * abs(peak)
        lo = hi = j
        while lo - 1 >= 0 and np.isfinite(accs[lo - 1]) and accs[lo - 1] >= threshold:
            lo -= 1
        while hi + 1 < accs.size and np.isfinite(accs[hi + 1]) and accs[hi + 1] >= threshold:
            hi += 1
        plateau_lrs = (float(val_lrs[lo]), float(val_lrs[hi]))
        plateau_ratio = plateau_lrs[1] / plateau_lrs[0] if plateau_lrs[0] > 0 else math.inf
    elif vl_ok.size:
        rule = "val_loss_minimum"
        j = int(vl_ok[np.argmin(vl[vl_ok])])
        max_lr, max_step = float(val_lrs[j]), steps[j]
        if _relative_variation(vl[vl_ok]) < flat_tol:
            max_flags.append("flat")
        if j in (int(vl_ok[0]), int(vl_ok[-1])):
            max_flags.append("at_edge")
    else:
        rule = "smoothed_loss_minimum"
        if loss_min_idx is not None:
            max_lr, max_step = float(lrs_a[loss_min_idx]), loss_min_idx
            if loss_flat:
                max_flags.append("flat")
            if loss_min_idx in (int(finite[0]), int(finite[-1])):
                max_flags.append("at_edge")

    # steepest descent in log-LR, on the descending part
    st_flags = list(common)
    st_lr: float | None = None
    st_step: int | None = None
    if loss_flat:
        st_flags.append("flat")
    if loss_min_idx is not None:
        usable = finite[(lrs_a[finite] > 0)]
        if usable.size >= 2:
            slope = np.gradient(sm[usable], np.log(lrs_a[usable]))
            skip = min(max(int(skip_start), 0), usable.size // 4)
            eligible = (usable <= loss_min_idx) & (np.arange(usable.size) >= skip)
            if eligible.sum() >= 1 and np.any(slope[eligible] < 0):
                k = int(np.argmin(np.where(eligible, slope, np.inf)))
                st_step = int(usable[k])
                st_lr = float(lrs_a[st_step])
                if k in (skip, usable.size - 1):
                    st_flags.append("at_edge")
            else:
                st_flags.append("no_descent")
        else:
            st_flags.append("no_descent")

    if max_lr is not None and st_lr is not None and max_lr > 0 and st_lr > 0:
        if max(max_lr / st_lr, st_lr / max_lr) > disagree_factor:
            max_flags.append("rules_disagree")
            st_flags.append("rules_disagree")

    mf = tuple(max_flags)
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
        plateau_ratio=plateau_ratio,
    )


# ----------------------------------------------------------------------------- state snapshot
def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    return copy.deepcopy(v)


class _Snapshot:
    """Everything the range test can change, kept to restore it bit-identically.

    Parameters and buffers are restored in place into the *same tensor objects* (the optimizer
    and any other holder of a reference keep working), gradients and optimizer state are put
    back as clones, and module ``training`` flags, the torch (CPU and CUDA), numpy and Python
    RNGs and the generators owned by the data loaders are reset.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, data: Sequence[Any]
    ) -> None:
        self.params: list[tuple[Any, str, torch.Tensor, torch.Tensor]] = []
        self.buffers: list[tuple[nn.Module, str, torch.Tensor | None, torch.Tensor | None]] = []
        seen: set[int] = set()
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    self.params.append((module._parameters, name, p, p.detach().clone()))
                    seen.add(id(p))
            for name, b in module._buffers.items():
                self.buffers.append((module, name, b, None if b is None else b.detach().clone()))
        # Optimizer parameters that do not belong to the model are restored as well.
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    self.params.append(({}, "", p, p.detach().clone()))
                    seen.add(id(p))
        self.grads = {
            id(p): (p, None if p.grad is None else p.grad.detach().clone())
            for _, _, p, _ in self.params
        }
        self.training = [(m, m.training) for m in model.modules()]
        self.optimizer = optimizer
        self.opt_state = {
            p: {k: _clone(v) for k, v in s.items()} for p, s in optimizer.state.items()
        }
        self.opt_groups = [
            {k: _clone(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
        self.rng = get_rng_state()
        self.generators = [(g, g.get_state()) for g in _data_generators(data)]

    @torch.no_grad()
    def restore(self) -> None:
        for holder, name, p, value in self.params:
            if name and holder.get(name) is not p:
                holder[name] = p
            p.copy_(value)
        for p, g in self.grads.values():
            p.grad = None if g is None else g.clone()
        for module, name, b, value in self.buffers:
            if module._buffers.get(name) is not b:
                module._buffers[name] = b
            if b is not None:
                b.copy_(value)
        for module, training in self.training:
            module.training = training
        opt = self.optimizer
        opt.state.clear()
        for p, s in self.opt_state.items():
            opt.state[p] = {k: _clone(v) for k, v in s.items()}
        for group, saved in zip(opt.param_groups, self.opt_groups):
            for k in [k for k in group if k != "params" and k not in saved]:
                del group[k]
            for k, v in saved.items():
                cur = group.get(k)
                if (
                    isinstance(cur, torch.Tensor)
                    and isinstance(v, torch.Tensor)
                    and cur.shape == v.shape
                    and cur.dtype == v.dtype
                ):
                    cur.copy_(v)  # keep the tensor object (e.g. a tensor LR) that others hold
                else:
                    group[k] = _clone(v)
        set_rng_state(self.rng)
        for g, state in self.generators:
            g.set_state(state)


def _data_generators(data: Sequence[Any]) -> list[torch.Generator]:
    """torch.Generators owned by DataLoaders and their samplers (their state advances)."""
    found: dict[int, torch.Generator] = {}
    for d in data:
        if d is None:
            continue
        batch_sampler = getattr(d, "batch_sampler", None)
        for obj in (
            d,
            getattr(d, "sampler", None),
            batch_sampler,
            getattr(batch_sampler, "sampler", None),
        ):
            g = getattr(obj, "generator", None)
            if isinstance(g, torch.Generator):
                found[id(g)] = g
    return list(found.values())


# ----------------------------------------------------------------------------- data handling
def _is_single_batch(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list)) and len(data) > 0 and isinstance(data[0], torch.Tensor)
    ) or isinstance(data, Mapping)


def _batch_size(batch: Batch) -> int:
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, torch.Tensor):
        return int(values.shape[0]) if values.ndim else 1
    for item in values:
        if isinstance(item, torch.Tensor) and item.ndim > 0:
            return int(item.shape[0])
    return 1


class _Cycle:
    """Batches of ``data`` forever: re-iterates a DataLoader/list when it runs out; a one-shot
    iterator is replayed from the batches it gave. ``peek(k)`` looks ahead without consuming."""

    def __init__(self, data: Any) -> None:
        if _is_single_batch(data):
            data = [data]
        elif not isinstance(data, Iterable):
            raise TypeError(
                f"train_data must be a DataLoader, an iterable of batches or one batch, got "
                f"{type(data).__name__}"
            )
        self._data = data
        self._one_shot = isinstance(data, Iterator)
        self._seen: list[Batch] = []
        self._it: Iterator[Batch] = iter(data)
        self._ahead: list[Batch] = []
        self.drawn = 0

    def _pull(self) -> Batch:
        try:
            batch = next(self._it)
        except StopIteration:
            if self._one_shot:  # replay what the one-shot iterator gave
                self._data, self._one_shot = self._seen, False
            self._it = iter(self._data)
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("train_data is empty: it gave no batch") from None
            return batch
        if self._one_shot:
            self._seen.append(batch)
        return batch

    def peek(self, k: int) -> list[Batch]:
        while len(self._ahead) < k:
            self._ahead.append(self._pull())
        return self._ahead[:k]

    def __next__(self) -> Batch:
        self.drawn += 1
        if self._ahead:
            return self._ahead.pop(0)
        return self._pull()


def _val_batches(val_data: Any) -> Any:
    if val_data is None:
        return None
    if _is_single_batch(val_data):
        return [val_data]
    if isinstance(val_data, Iterator):  # one-shot: keep the batches for every evaluation
        return list(val_data)
    return val_data


# ----------------------------------------------------------------------------- the test
def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: Any,
    *,
    loss_fn: Callable[..., torch.Tensor],
    start_lr: float = 1e-5,
    end_lr: float,
    num_steps: int,
    ramp: Literal["linear", "exp"] = "linear",
    val_data: Any = None,
    val_every: int = 1,
    accumulation_steps: int = 1,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    device: torch.device | str | None = None,
    closure: bool = False,
    restore: bool = True,
    curvature_check: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> RangeTestResult:
    """Run the LR range test (CLR §3.3, SC §3) and restore everything afterwards.

    Conventions (ladder, pairing of LR and loss, parameter groups, smoothing, divergence) are in
    the module docstring; the suggestion rules in :func:`suggest_lrs`.

    Args:
        model: the network; trained in train mode during the test.
        optimizer: any ``torch.optim.Optimizer`` over (some of) the model's parameters; its LRs
            are overwritten by the ladder (groups keep their initial ratios to group 0).
        train_data: a DataLoader, an iterable of batches, or one batch (used at every update);
            re-iterated when it runs out before ``num_steps`` updates (a one-shot iterator is
            replayed from the batches it gave, which are kept in memory for that).
        loss_fn: ``loss_fn(outputs, targets)`` → scalar mean loss, or with ``closure=True``
            ``loss_fn(model, batch)`` → scalar (for dict batches or models with internal losses).
        start_lr, end_lr: the ladder's ends (``end_lr > start_lr``; exp needs ``start_lr > 0``).
        num_steps: optimizer updates (≥ 2); each consumes ``accumulation_steps`` batches.
        ramp: ``"linear"`` (Smith's range test) or ``"exp"`` (fastai's).
        val_data: held-out batches (a DataLoader, a list, or one batch), evaluated in eval mode
            without gradients after every ``val_every``-th update (updates val_every,
            2·val_every, …): mean loss and top-1 accuracy (outputs (B, C), integer targets
            (B,); None otherwise or with ``closure=True``).
        val_every: the evaluation interval in updates.
        accumulation_steps: micro-batches per update; each micro-loss is divided by it before
            ``backward`` (the recorded loss is their mean).
        smoothing: β of the bias-corrected EMA, in [0, 1) (0: no smoothing).
        diverge_factor: stop when the smoothed loss exceeds this × the best (> 1; ``math.inf``
            disables the rule; non-finite losses always stop the run).
        device: where batches are moved; default the device of the model's parameters (the
            model itself is never moved: move it first).
        closure: see ``loss_fn``.
        restore: restore parameters, buffers, gradients, optimizer state and LRs, module modes
            and RNG states (torch CPU/CUDA, numpy, random, DataLoader generators) afterwards,
            also on an exception. With ``restore=False`` the trained state is left.
        curvature_check: before training, on the first update's batches, compute λ_max
            (Lanczos, relative residual 1e-3, ≤ 100 HVPs) and gᵀg/gᵀHg of the training loss
            with :func:`hessian_lr.estimate.estimate_lr` (BatchNorm with batch statistics,
            Dropout off; the model is not changed); a failure is reported on the result
            (``curvature.flags == ("failed",)`` and a ``RuntimeWarning``), not raised.
        generator: random source for the Lanczos start vector; default a private generator
            seeded 0 (the global RNG is never drawn from, so the curvature check does not change
            the training run).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`RangeTestResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> res = lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(),
        ...                     start_lr=1e-3, end_lr=1.0, num_steps=20, ramp="exp")
        >>> len(res.lrs), res.lrs[0], round(res.lrs[-1], 12)
        (20, 0.001, 1.0)
    """
    t_start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    _check_ladder(start_lr, end_lr, num_steps, ramp)
    for name, value in (("val_every", val_every), ("accumulation_steps", accumulation_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if not diverge_factor > 1.0:
        raise ValueError(
            f"diverge_factor must be > 1 (or math.inf to disable), got {diverge_factor}"
        )

    params = list(model.parameters())
    model_device = params[0].device if params else torch.device("cpu")
    device = model_device if device is None else torch.device(device)
    wrong = [p.device for p in params if p.device != device]
    if wrong:
        raise ValueError(
            f"the model's parameters live on {wrong[0]}, not on device={device}; move the model "
            "(and create the optimizer) first: the range test never moves the model"
        )
    init_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    if init_lrs[0] > 0:
        ratios = [lr / init_lrs[0] for lr in init_lrs]
    elif all(lr == init_lrs[0] for lr in init_lrs):
        ratios = [1.0] * len(init_lrs)
    else:
        raise ValueError(
            f"parameter group 0 has LR {init_lrs[0]} but others differ ({init_lrs}): the range "
            "test scales groups by their ratio to group 0, so give group 0 a positive LR"
        )
    ladder = lr_ramp(start_lr, end_lr, num_steps, ramp=ramp)
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    val_batches = _val_batches(val_data)
    if val_batches is not None and isinstance(val_batches, list) and not val_batches:
        raise ValueError("val_data is empty: it gave no batch")
    # Snapshot first: creating a DataLoader iterator draws from the RNGs.
    snapshot = _Snapshot(model, optimizer, [train_data, val_data]) if restore else None
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    grad_norms: list[float] = []
    val_steps: list[int] = []
    val_lrs: list[float] = []
    val_losses: list[float] = []
    val_accs: list[float | None] = []
    stop_reason: str | None = None
    num_updates = 0
    curvature: CurvatureCheck | None = None
    try:
        stream = _Cycle(train_data)
        if curvature_check:
            first = [move_to_device(b, device) for b in stream.peek(accumulation_steps)]
            curvature = _curvature_check(model, optimizer, loss_fn, first, closure, generator)

        avg, best = 0.0, math.inf
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=num_steps, desc="LR range test")
        try:
            for i in range(num_steps):
                lr = float(ladder[i])
                for group, r in zip(optimizer.param_groups, ratios):
                    if isinstance(group["lr"], torch.Tensor):
                        group["lr"].fill_(lr * r)
                    else:
                        group["lr"] = lr * r
                model.train()
                optimizer.zero_grad()
                total: torch.Tensor | None = None
                with torch.enable_grad():
                    for _ in range(accumulation_steps):
                        batch = move_to_device(next(stream), device)
                        if closure:
                            loss = loss_fn(model, batch)
                        else:
                            inputs, targets = _split(batch)
                            loss = loss_fn(model(inputs), targets)
                        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                            raise ValueError("loss_fn must return a scalar tensor (the mean loss)")
                        loss = loss / accumulation_steps
                        loss.backward()
                        total = loss.detach() if total is None else total + loss.detach()
                raw = float(total)
                gnorm = _grad_norm(opt_params)
                avg = smoothing * avg + (1.0 - smoothing) * raw
                sm = avg / (1.0 - smoothing ** (i + 1))
                lrs.append(lr)
                losses.append(raw)
                smoothed.append(sm)
                grad_norms.append(gnorm)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(lr=f"{lr:.3g}", loss=f"{sm:.4g}")
                if not math.isfinite(raw):
                    stop_reason = f"non-finite loss ({raw}) at update {i} (lr={lr:.6g})"
                    break
                if not math.isfinite(gnorm):
                    stop_reason = f"non-finite gradient norm at update {i} (lr={lr:.6g})"
                    break
                if sm - best > (diverge_factor - 1.0) * abs(best):
                    stop_reason = (
                        f"diverged at update {i} (lr={lr:.6g}): smoothed loss {sm:.6g} > "
                        f"{diverge_factor:g} × best {best:.6g}"
                    )
                    break
                best = min(best, sm)
                optimizer.step()
                num_updates += 1
                if val_batches is not None and (i + 1) % val_every == 0:
                    vloss, vacc = _evaluate(model, val_batches, loss_fn, closure, device)
                    val_steps.append(i)
                    val_lrs.append(lr)
                    val_losses.append(vloss)
                    val_accs.append(vacc)
        finally:
            if bar is not None:
                bar.close()
    finally:
        if snapshot is not None:
            snapshot.restore()

    suggestions = suggest_lrs(
        lrs,
        smoothed,
        val_lrs=val_lrs,
        val_steps=val_steps,
        val_losses=val_losses,
        val_accuracies=val_accs,
        stopped_early=stop_reason is not None,
    )
    config = {
        "start_lr": float(start_lr),
        "end_lr": float(end_lr),
        "num_steps": num_steps,
        "ramp": ramp,
        "accumulation_steps": accumulation_steps,
        "smoothing": float(smoothing),
        "diverge_factor": float(diverge_factor),
        "val_every": val_every if val_data is not None else None,
        "group_lr_ratios": ratios,
        "optimizer": type(optimizer).__name__,
        "restored": restore,
    }
    return RangeTestResult(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed_losses=tuple(smoothed),
        grad_norms=tuple(grad_norms),
        val_steps=tuple(val_steps),
        val_lrs=tuple(val_lrs),
        val_losses=tuple(val_losses),
        val_accuracies=tuple(val_accs),
        stopped_early=stop_reason is not None,
        stop_reason=stop_reason,
        num_updates=num_updates,
        num_batches=len(lrs) * accumulation_steps,
        suggestions=suggestions,
        curvature=curvature,
        config=config,
        seconds=time.perf_counter() - t_start,
    )


def _split(batch: Batch) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "a batch must be (inputs, targets[, ...]); for other structures pass closure=True "
            "and loss_fn(model, batch)"
        )
    return batch[0], batch[1]


def _grad_norm(params: Sequence[torch.Tensor]) -> float:
    norms = [
        torch.linalg.vector_norm(p.grad.detach()).double() for p in params if p.grad is not None
    ]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))


def _evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[..., torch.Tensor],
    closure: bool,
    device: torch.device,
) -> tuple[float, float | None]:
    """Mean held-out loss (weighted by batch size) and top-1 accuracy, in eval mode, no grad."""
    modes = [(m, m.training) for m in model.modules()]
    loss_sum, count, correct, acc_ok = 0.0, 0, 0, not closure
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                batch = move_to_device(batch, device)
                if closure:
                    n = _batch_size(batch)
                    loss = loss_fn(model, batch)
                else:
                    inputs, targets = _split(batch)
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                    n = int(targets.shape[0]) if targets.ndim else 1
                    if (
                        acc_ok
                        and isinstance(outputs, torch.Tensor)
                        and outputs.ndim == 2
                        and targets.ndim == 1
                        and not targets.is_floating_point()
                        and outputs.shape[0] == targets.shape[0]
                    ):
                        correct += int((outputs.argmax(dim=-1) == targets).sum())
                    else:
                        acc_ok = False
                loss_sum += n * float(loss)
                count += n
    finally:
        for m, training in modes:
            m.training = training
    if count == 0:
        raise ValueError("val_data is empty: it gave no batch")
    return loss_sum / count, (correct / count if acc_ok else None)


def _curvature_check(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    batches: list[Batch],
    closure: bool,
    generator: torch.Generator | None,
) -> CurvatureCheck:
    """λ_max (Lanczos) and gᵀg/gᵀHg of the training loss on the first update's batches,
    by :func:`hessian_lr.estimate.estimate_lr` (methods ``sharpness`` and ``quadratic``)."""
    t0 = time.perf_counter()
    group = optimizer.param_groups[0]
    beta = float(group.get("momentum", 0.0) or 0.0)
    heavy_ball = isinstance(optimizer, torch.optim.SGD) and beta > 0 and not group.get("nesterov")
    try:
        from ..lr.estimate import estimate_lr

        in_model = {id(p) for p in model.parameters()}
        params = [
            p
            for g in optimizer.param_groups
            for p in g["params"]
            if p.requires_grad and id(p) in in_model
        ]
        if not params:
            raise ValueError("the optimizer holds no trainable parameter of the model")
        kw: dict[str, Any] = {
            "params": params,
            "bn_mode": "train",  # the loss the range test descends: batch statistics
            "closure": closure,
        }
        data = batches[0] if len(batches) == 1 else batches
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        sharp = estimate_lr(
            model, loss_fn, data, method="sharpness", lanczos_tol=1e-3, lanczos_max_iter=100,
            momentum=beta if heavy_ball else 0.0, generator=gen, **kw,
        )  # fmt: skip
        quad = estimate_lr(model, loss_fn, data, method="quadratic", **kw)
    except Exception as err:  # a diagnostic: report, never abort the range test
        warnings.warn(f"range test curvature check failed: {err}", RuntimeWarning, stacklevel=3)
        return CurvatureCheck(
            lambda_max=None,
            two_over_lambda=None,
            momentum_bound=None,
            quadratic_lr=None,
            loss=None,
            grad_norm=None,
            g_hg=None,
            lanczos_converged=False,
            num_hvps=0,
            seconds=time.perf_counter() - t0,
            flags=("failed",),
            error=f"{type(err).__name__}: {err}",
        )
    lam = float(sharp.lambda_max)
    ghg = float(quad.gHg)
    flags = []
    two = momentum_bound = None
    if lam > 0:
        two = 2.0 / lam
        if heavy_ball:
            momentum_bound = (2.0 + 2.0 * beta) / lam
    else:
        flags.append("nonpositive_lambda_max")
    quadratic = float(quad.lr) if math.isfinite(quad.lr) and quad.lr > 0 else None
    if not ghg > 0:  # nan when the gradient is zero: no step implied either
        flags.append("negative_curvature_along_gradient" if ghg <= 0 else "zero_gradient")
    converged = "not_converged" not in sharp.flags
    if not converged:
        flags.append("not_converged")
    return CurvatureCheck(
        lambda_max=lam,
        two_over_lambda=two,
        momentum_bound=momentum_bound,
        quadratic_lr=quadratic,
        loss=float(quad.loss),
        grad_norm=float(quad.grad_norm),
        g_hg=ghg if math.isfinite(ghg) else None,
        lanczos_converged=converged,
        num_hvps=int(sharp.num_hvps + quad.num_hvps),
        seconds=time.perf_counter() - t0,
        flags=tuple(flags),
    )
