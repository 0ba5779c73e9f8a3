"""Pure learning-rate rules: functions of (g, Hg, λ, steps, momentum) that return an LR.

Every curvature LR estimate in this package is one of the formulas below applied to vectors that a
:class:`~hessian_lr.curvature.HessianOperator` (or any linear operator) produced. Keeping them free
of models and data makes each rule testable on a plain matrix (``DenseOperator``) with a known
answer, and lets new estimates reuse them. Methods notes §3; Smith & Topin, *Super-Convergence*
(arXiv 1708.07120), §5, Eq. 8; Cohen et al. 2021 (edge of stability).

* :func:`quadratic_lr`: ε* = gᵀg / gᵀHg, the minimiser of the local quadratic along −g.
* :func:`secant_hvp_lr`: ε* = Σ|g| / Σ|Hg| (L1) or ‖g‖ / ‖Hg‖ (L2).
* :func:`sharpness_lrs`: 1/λ_max, 2/λ_max and (2 + 2β)/λ_max (heavy-ball momentum β).
* :func:`secant_rule`: ε* = Σ|s| / Σ|w| for a parameter move s and the gradient change w ≈ Hs it
  caused -- the core of Eq. 8 (w from three iterates) and of the same-batch secant (w measured on
  one batch).

Flags (strings in ``flags``): an estimate carrying any flag has ``lr = nan``; the formula's value,
where it exists, stays in ``raw_lr`` (e.g. the paper's secant value when the step saw negative
curvature), so nothing is lost and nothing wrong is silently used.

* ``negative_curvature``: gᵀHg ≤ 0, λ_max ≤ 0, or sᵀw ≤ 0 (secant): no positive curvature seen.
* ``zero_gradient``: g = 0 (0/0). ``zero_step`` / ``zero_curvature`` (secant): s = 0 / w = 0.
* ``overflow``: a sum or the ratio is not representable (inf/NaN from finite inputs).
* ``nonfinite_loss`` and ``not_converged`` are raised by the callers (estimate, estimator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "FLAGS",
    "NEGATIVE_CURVATURE",
    "NONFINITE_LOSS",
    "NOT_CONVERGED",
    "OVERFLOW",
    "ZERO_CURVATURE",
    "ZERO_GRADIENT",
    "ZERO_STEP",
    "GradientStats",
    "RuleResult",
    "SecantRule",
    "SharpnessLRs",
    "gradient_stats",
    "quadratic_lr",
    "secant_hvp_lr",
    "secant_rule",
    "sharpness_lrs",
]

NEGATIVE_CURVATURE = "negative_curvature"
ZERO_GRADIENT = "zero_gradient"
NONFINITE_LOSS = "nonfinite_loss"
NOT_CONVERGED = "not_converged"
ZERO_STEP = "zero_step"
ZERO_CURVATURE = "zero_curvature"
OVERFLOW = "overflow"
FLAGS = (
    NEGATIVE_CURVATURE,
    ZERO_GRADIENT,
    NONFINITE_LOSS,
    NOT_CONVERGED,
    ZERO_STEP,
    ZERO_CURVATURE,
    OVERFLOW,
)
NORMS = ("l1", "l2")
_NAN = float("nan")


@dataclass(frozen=True)
class RuleResult:
    """An LR from one rule.

    Attributes:
        lr: the estimate (> 0), or ``nan`` when ``flags`` is not empty.
        raw_lr: the formula's value regardless of flags (``nan`` where it is undefined, e.g. 0/0).
        flags: why ``lr`` is ``nan`` (see the module docstring); empty when all is well.
    """

    lr: float
    raw_lr: float
    flags: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number (then ``flags`` is empty)."""
        return math.isfinite(self.lr) and self.lr > 0


def _result(raw: float, flags: list[str]) -> RuleResult:
    if not flags and not (math.isfinite(raw) and raw > 0):
        flags.append(OVERFLOW if not math.isfinite(raw) else NEGATIVE_CURVATURE)
    return RuleResult(lr=_NAN if flags else raw, raw_lr=raw, flags=tuple(flags))


def _ratio(num: float, den: float) -> float:
    """num/den with 0/0 = nan, x/0 = inf (then flagged by the caller)."""
    if den == 0.0:
        return _NAN if num == 0.0 else math.inf
    return num / den


def _sums(x: torch.Tensor) -> tuple[float, float, float]:
    """(Σ|x|, ‖x‖₂, scale) in float64, computed on x/scale so that large entries do not overflow.

    The true values are Σ|x| = l1·scale and ‖x‖ = l2·scale; ``scale`` = max|x| (1 for x = 0).
    """
    x = x.detach().to(torch.float64).reshape(-1)
    m = float(x.abs().max()) if x.numel() else 0.0
    if m == 0.0 or not math.isfinite(m):
        return (0.0, 0.0, 1.0) if m == 0.0 else (math.inf, math.inf, 1.0)
    y = x / m
    return float(y.abs().sum()), float(torch.linalg.vector_norm(y)), m


def _sharded_stats(g: torch.Tensor, hg: torch.Tensor | None, space: Any) -> GradientStats:
    """:func:`gradient_stats` of sharded vectors: local partial sums, one reduction."""
    g64 = g.detach().to(torch.float64).reshape(-1)
    h64 = g64 if hg is None else hg.detach().to(torch.float64).reshape(-1)
    if h64.shape != g64.shape:
        raise ValueError(f"g and Hg must have the same size, got {g64.numel()} and {h64.numel()}")
    parts = torch.stack([g64 @ g64, g64.abs().sum(), g64 @ h64, h64.abs().sum(), h64 @ h64])
    gg, g_l1, gh, h_l1, hh = space.reduce(parts).tolist()
    if hg is None:
        gh = h_l1 = hh = _NAN
    return GradientStats(gg, g_l1, math.sqrt(gg), gh, h_l1, math.sqrt(hh))


@dataclass(frozen=True)
class GradientStats:
    """Float64 reductions of g and Hg that the gradient rules need.

    Attributes:
        gg: gᵀg. g_l1: Σ|g|. grad_norm: ‖g‖₂. gHg: gᵀHg. hg_l1: Σ|Hg|. hg_norm: ‖Hg‖₂.
    """

    gg: float
    g_l1: float
    grad_norm: float
    gHg: float
    hg_l1: float
    hg_norm: float


def gradient_stats(
    g: torch.Tensor, hg: torch.Tensor | None = None, *, space: Any = None
) -> GradientStats:
    """Reductions of g (N,) and Hg (N,) in float64 (Hg-fields ``nan`` when ``hg`` is None).

    ``space``: the operator's ``vector_space`` when g and Hg are this rank's shards of sharded
    vectors (an FSDP2 model): the sums are then reduced over the shards.
    """
    if space is not None and getattr(space, "sharded", False):
        return _sharded_stats(g, hg, space)
    g64 = g.detach().to(torch.float64).reshape(-1)
    gg = float(g64 @ g64)
    stats = dict(gg=gg, g_l1=float(g64.abs().sum()), grad_norm=math.sqrt(gg))
    if hg is None:
        return GradientStats(gHg=_NAN, hg_l1=_NAN, hg_norm=_NAN, **stats)
    h64 = hg.detach().to(torch.float64).reshape(-1)
    if h64.shape != g64.shape:
        raise ValueError(f"g and Hg must have the same size, got {g64.numel()} and {h64.numel()}")
    return GradientStats(
        gHg=float(g64 @ h64),
        hg_l1=float(h64.abs().sum()),
        hg_norm=float(torch.linalg.vector_norm(h64)),
        **stats,
    )


def quadratic_lr(g: torch.Tensor, hg: torch.Tensor, *, space: Any = None) -> RuleResult:
    """ε* = gᵀg / gᵀHg: the step along −g that minimises the local quadratic model.

    Args:
        g: the gradient (N,).
        hg: the Hessian-vector product H g (N,).
        space: the operator's ``vector_space`` for sharded vectors (see :func:`gradient_stats`).

    Returns:
        A :class:`RuleResult`; ``zero_gradient`` when g = 0, ``negative_curvature`` when
        gᵀHg ≤ 0 (the quadratic has no minimiser along −g).

    Example:
        >>> import torch
        >>> H = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> g = torch.tensor([1.0, 1.0], dtype=torch.float64)
        >>> quadratic_lr(g, H @ g).lr  # (1 + 1) / (1 + 4)
        0.4
    """
    s = gradient_stats(g, hg, space=space)
    if not s.gg > 0:
        return RuleResult(_NAN, _NAN, (ZERO_GRADIENT,))
    raw = _ratio(s.gg, s.gHg)
    return _result(raw, [NEGATIVE_CURVATURE] if not s.gHg > 0 else [])


def secant_hvp_lr(
    g: torch.Tensor, hg: torch.Tensor, norm: str = "l1", *, space: Any = None
) -> RuleResult:
    """ε* = Σ|g| / Σ|Hg| (L1, Eq. 8's norm) or ‖g‖ / ‖Hg‖ (L2): Eq. 8 with an exact HVP.

    Eq. 8 estimates Σ|g|/Σ|Hg| from the trajectory; this is the same ratio from one exact product.

    Args:
        g: the gradient (N,).
        hg: H g (N,).
        norm: ``"l1"`` or ``"l2"``.
        space: the operator's ``vector_space`` for sharded vectors (see :func:`gradient_stats`).

    Returns:
        A :class:`RuleResult`; flags as :func:`quadratic_lr` (gᵀHg ≤ 0 voids it too: the ratio of
        absolute values would hide a direction of negative curvature).

    Example:
        >>> import torch
        >>> H = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> g = torch.tensor([1.0, 1.0], dtype=torch.float64)
        >>> secant_hvp_lr(g, H @ g).lr  # (1 + 1) / (1 + 4)
        0.4
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    s = gradient_stats(g, hg, space=space)
    if not s.gg > 0:
        return RuleResult(_NAN, _NAN, (ZERO_GRADIENT,))
    raw = _ratio(s.g_l1, s.hg_l1) if norm == "l1" else _ratio(s.grad_norm, s.hg_norm)
    return _result(raw, [NEGATIVE_CURVATURE] if not s.gHg > 0 else [])


@dataclass(frozen=True)
class SharpnessLRs:
    """Step sizes implied by λ_max (all ``nan`` when flagged).

    Attributes:
        lr_newton: 1/λ_max, the Newton step along the sharpest direction.
        lr_stable: 2/λ_max, the stability limit of gradient descent on the local quadratic.
        lr_stable_momentum: (2 + 2β)/λ_max, the limit for heavy-ball momentum β.
        momentum: β.
        flags: ``negative_curvature`` (λ_max ≤ 0) or ``overflow`` (λ_max not finite).
    """

    lr_newton: float
    lr_stable: float
    lr_stable_momentum: float
    momentum: float
    flags: tuple[str, ...] = ()


def sharpness_lrs(lam: float, momentum: float = 0.0) -> SharpnessLRs:
    """1/λ, 2/λ and (2 + 2β)/λ from the top Hessian eigenvalue λ (Cohen et al. 2021).

    Gradient descent on a quadratic with top curvature λ is stable iff ε < 2/λ; heavy-ball
    momentum β moves the bound to (2 + 2β)/λ.

    Args:
        lam: λ_max (1/LR units).
        momentum: heavy-ball β in [0, 1).

    Returns:
        :class:`SharpnessLRs`.

    Example:
        >>> sharpness_lrs(4.0, 0.5).lr_stable_momentum  # (2 + 1) / 4
        0.75
    """
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    lam = float(lam)
    if not math.isfinite(lam):
        return SharpnessLRs(_NAN, _NAN, _NAN, momentum, (OVERFLOW,))
    if not lam > 0:
        return SharpnessLRs(_NAN, _NAN, _NAN, momentum, (NEGATIVE_CURVATURE,))
    vals = (1.0 / lam, 2.0 / lam, (2.0 + 2.0 * momentum) / lam)
    if not all(math.isfinite(v) for v in vals):  # a subnormal λ
        return SharpnessLRs(_NAN, _NAN, _NAN, momentum, (OVERFLOW,))
    return SharpnessLRs(*vals, momentum=momentum)


@dataclass(frozen=True)
class SecantRule:
    """Σ|s|/Σ|w| for a move s and the gradient change w ≈ H s (see :func:`secant_rule`).

    Attributes:
        lr: the estimate in the chosen norm, ``nan`` when flagged.
        raw_lr: the formula's value in the chosen norm regardless of flags.
        lr_l1: Σ|s|/Σ|w| (formula value, unflagged). lr_l2: ‖s‖/‖w‖.
        curvature: sᵀw/‖s‖², the Rayleigh quotient of H along the move (1/LR units).
        step_l1: Σ|s|. step_norm: ‖s‖₂.
        flags: see the module docstring.
    """

    lr: float
    raw_lr: float
    lr_l1: float
    lr_l2: float
    curvature: float
    step_l1: float
    step_norm: float
    flags: tuple[str, ...] = ()


def secant_rule(step: torch.Tensor, grad_change: torch.Tensor, norm: str = "l1") -> SecantRule:
    """ε* = Σ|s| / Σ|w|: the LR whose step s would cause the gradient change w ≈ H s.

    With s = −ε g (plain SGD) and w = H s exactly (a quadratic), this is Σ|g|/Σ|Hg|. Eq. 8 of
    Super-Convergence is this rule with s = θ_{i+1} − θ_i and w = (Δ₁ − Δ₂)/ε from three iterates;
    the same-batch secant measures w = g(θ + s; B) − g(θ; B) on one batch. Sums are taken on
    rescaled vectors, so huge entries do not overflow unless the ratio itself does.

    Args:
        step: s (N,), a parameter move.
        grad_change: w (N,), the gradient change along it (gradient units).
        norm: ``"l1"`` (the paper) or ``"l2"``.

    Returns:
        A :class:`SecantRule` (float64 arithmetic). Flags: ``zero_step`` (s = 0),
        ``zero_curvature`` (w = 0), ``negative_curvature`` (sᵀw ≤ 0), ``overflow`` (a
        non-finite entry or ratio).

    Example:
        >>> import torch
        >>> s = torch.tensor([0.1, -0.2], dtype=torch.float64)
        >>> secant_rule(s, 4.0 * s).lr  # H = 4 I
        0.25
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if step.numel() != grad_change.numel():
        raise ValueError(
            f"step and grad_change sizes differ: {step.numel()} vs {grad_change.numel()}"
        )
    s = step.detach().to(torch.float64).reshape(-1)
    w = grad_change.detach().to(s.device, torch.float64).reshape(-1)
    s_l1, s_l2, s_scale = _sums(s)
    w_l1, w_l2, w_scale = _sums(w)
    flags: list[str] = []
    nan_rule = dict(lr=_NAN, raw_lr=_NAN, lr_l1=_NAN, lr_l2=_NAN)
    if not (math.isfinite(s_l1) and math.isfinite(w_l1)):
        return SecantRule(
            curvature=_NAN, step_l1=_NAN, step_norm=_NAN, flags=(OVERFLOW,), **nan_rule
        )
    step_l1, step_norm = s_l1 * s_scale, s_l2 * s_scale
    if s_l1 == 0.0:
        return SecantRule(
            curvature=_NAN, step_l1=0.0, step_norm=0.0, flags=(ZERO_STEP,), **nan_rule
        )
    if w_l1 == 0.0:
        flags = [ZERO_CURVATURE]
        return SecantRule(
            curvature=0.0, step_l1=step_l1, step_norm=step_norm, flags=tuple(flags), **nan_rule
        )
    ratio = s_scale / w_scale
    lr_l1, lr_l2 = (s_l1 / w_l1) * ratio, (s_l2 / w_l2) * ratio
    # Rayleigh quotient sᵀw/‖s‖² on the scaled vectors: (ŝᵀŵ / ‖ŝ‖²)·(w_scale / s_scale).
    curvature = float((s / s_scale) @ (w / w_scale)) / s_l2**2 * (w_scale / s_scale)
    raw = lr_l1 if norm == "l1" else lr_l2
    if not (math.isfinite(raw) and raw > 0 and math.isfinite(curvature)):
        flags.append(OVERFLOW)
    elif not curvature > 0:
        flags.append(NEGATIVE_CURVATURE)
    return SecantRule(
        lr=_NAN if flags else raw,
        raw_lr=raw,
        lr_l1=lr_l1,
        lr_l2=lr_l2,
        curvature=curvature,
        step_l1=step_l1,
        step_norm=step_norm,
        flags=tuple(flags),
    )
