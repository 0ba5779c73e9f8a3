"""Result types of the LR range test: records, suggestions and the curvature cross-check.

Frozen dataclasses with a JSON round trip (``to_dict`` / ``from_dict``); the rules that fill
:class:`RangeTestSuggestions` are in :mod:`hessian_lr.range_test.suggest`, the cross-check in
:mod:`hessian_lr.range_test.crosscheck`, the figure in :mod:`hessian_lr.range_test.plot`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..records import to_jsonable

__all__ = ["CurvatureCheck", "RangeTestResult", "RangeTestSuggestion", "RangeTestSuggestions"]


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
        bn_mode: the BatchNorm mode of the Hessian (``"train"``: batch statistics, ``"eval"``:
            running statistics); see ``hessian_lr.lr.defaults.DEFAULT_BN_MODE``.
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
    bn_mode: str | None = None


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
    ``skipped_updates`` lists the records whose step a ``GradScaler`` skipped (non-finite scaled
    gradients while it calibrates its scale; mixed precision only).
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
    skipped_updates: tuple[int, ...] = ()

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
            skipped_updates=tuple(int(x) for x in d.get("skipped_updates", ())),
        )

    def plot(self, ax: Any = None, *, show_raw: bool = True) -> Any:
        """Draw the curves on ``ax`` (a new Figure's axes if None); returns the loss axes.

        See :func:`hessian_lr.range_test.plot.plot_range_test`, which returns the Figure.
        """
        from .plot import draw_range_test

        return draw_range_test(self, ax, show_raw=show_raw)


def _json_float(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _float_or_inf(x: Any) -> float:
    return math.inf if x is None else float(x)
