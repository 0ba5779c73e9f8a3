"""The Super-Convergence secant estimate (Eq. 8), its spacing conventions, and its noise null.

Smith & Topin, *Super-Convergence* (arXiv 1708.07120), §5, Eq. 8 estimates the LR from three
iterates θ_i, θ_{i+s}, θ_{i+2s} of SGD with LR ε, with no gradient or Hessian product:

    ε* = E · Σ|θ_{i+s} − θ_i| / Σ|2θ_{i+s} − θ_i − θ_{i+2s}|,

where the factor E depends on the spacing convention (``scale``):

* ``"per_step"``: E = s·ε. s plain-SGD steps move θ by ≈ −sε g, so the iterates look like single
  steps of LR sε and ε* estimates the *per-step* LR: on f = aθ²/2 it is 1/a · sεa/(1 − (1 − εa)^s),
  → 1/a as sεa → 0. The library's default (comparable with the LR in use at any spacing).
* ``"paper"``: E = ε, the single-step LR, as the authors' script does with iterates s apart (their
  long run used s = 10). It is exactly s times smaller than ``"per_step"`` on the same iterates.

The noise null. If the steps were pure minibatch noise through heavy-ball momentum μ, Eq. 8 in the
paper's convention would return ε·c(μ, s) whatever the curvature (c(μ, 1) = √(1/(2(1 − μ))),
2.236 at μ = 0.9; :func:`hessian_lr.lr.noise.noise_null`). :func:`secant_lr` reports the ratio
``noise_ratio`` = ε*_paper / (ε·c(μ, s)) when ``momentum`` is given (the same in both
conventions), and :func:`null_band` decides from a window of recent ratios whether they are
indistinguishable from 1 (``LREstimator`` does this for every secant estimate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from ..curvature.hessian import NonFiniteError
from ..curvature.linop import params_to_vector
from .result import LRResult
from .rules import NONFINITE_LOSS, NORMS, ZERO_CURVATURE, ZERO_STEP, secant_rule

__all__ = [
    "INDISTINGUISHABLE_FROM_NOISE",
    "SCALES",
    "NullBand",
    "SecantResult",
    "nonfinite_secant",
    "null_band",
    "secant_lr",
    "with_null_band",
]

#: Spacing conventions of Eq. 8 with iterates s steps apart (see the module docstring).
SCALES = ("per_step", "paper")
_NAN = float("nan")


class CurvatureError(ValueError):
    """No step size is implied: non-positive curvature, a zero gradient or a zero step."""


@dataclass(frozen=True)
class SecantResult(LRResult):
    """The Super-Convergence secant estimate (Eq. 8) from three iterates; see :func:`secant_lr`.

    Attributes:
        lr: the estimate in the chosen ``norm`` and ``scale``; ``nan`` when flagged.
        raw_lr: the formula's value (same norm and scale) regardless of flags.
        lr_l1: E·Σ|Δ₁| / Σ|Δ₁ − Δ₂| (the paper's global estimate, unflagged), generalized to
            two LRs as in :func:`secant_lr`. lr_l2: the L2 variant.
        curvature: Δ₁ᵀw / ‖Δ₁‖² with w ≈ HΔ₁ the gradient change: the Rayleigh quotient of H along
            the step (1/LR units); ≤ 0 raises ``negative_curvature``.
        step_l1: Σ|Δ₁| (parameter units). step_norm: ‖Δ₁‖₂.
        lr_used: ε of the first span; lr_next: ε of the second.
        steps: s, optimizer steps between consecutive iterates.
        norm: ``"l1"`` or ``"l2"``. scale: ``"per_step"`` or ``"paper"``.
        flags: ``zero_step``, ``zero_curvature``, ``negative_curvature``, ``overflow``,
            ``nonfinite_loss``, ``indistinguishable_from_noise`` (:func:`with_null_band`); any
            flag makes ``lr`` nan.
        seconds: wall-clock time.
        momentum: μ given for the noise null (``nan`` when not given).
        noise_null: c(μ, s) (paper convention) or ``nan``.
        noise_ratio: raw estimate in the paper's convention / (ε·c(μ, s)); 1 = pure noise.
        noise_band: (low, high) confidence band of the recent window's mean ratio, or None
            (filled by ``LREstimator``; see :func:`null_band`).
        indistinguishable_from_noise: whether that band reaches the null (None: not tested).
        per_weight: (N,) float64 per-weight ε*_j, ``nan`` where the denominator is 0, or None.
        method: ``"secant"``.
        num_hvps: 0 (the trajectory only).
    """

    lr_l1: float
    lr_l2: float
    curvature: float
    step_l1: float
    step_norm: float
    lr_used: float
    lr_next: float
    steps: int
    norm: str
    per_weight: torch.Tensor | None = field(default=None, repr=False, compare=False)
    method: str = "secant"
    raw_lr: float = _NAN
    scale: str = "per_step"
    momentum: float = _NAN
    noise_null: float = _NAN
    noise_ratio: float = _NAN
    noise_band: tuple[float, float] | None = None
    indistinguishable_from_noise: bool | None = None


def _flatten(theta: torch.Tensor | Sequence[torch.Tensor], name: str) -> torch.Tensor:
    if isinstance(theta, torch.Tensor):
        return theta.detach().reshape(-1)
    if isinstance(theta, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in theta):
        return params_to_vector([t.detach() for t in theta])
    raise TypeError(f"{name} must be a tensor or a list of parameter tensors, got {type(theta)}")


def _shapes(theta: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    if isinstance(theta, torch.Tensor):
        return [tuple(theta.shape)]
    return [tuple(t.shape) for t in theta]


def _check_lr(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite learning rate, got {value}")
    return value


def _iterates(theta_prev: Any, theta_curr: Any, theta_next: Any) -> list[torch.Tensor]:
    named = (("theta_prev", theta_prev), ("theta_curr", theta_curr), ("theta_next", theta_next))
    xs = [_flatten(t, n).to(torch.float64) for n, t in named]
    kinds = {isinstance(t, torch.Tensor) for _, t in named}
    shapes = [_shapes(t) for _, t in named]
    # Same kind (all flat tensors or all lists): shapes must agree; mixed: sizes must agree.
    if (len(kinds) == 1 and not shapes[0] == shapes[1] == shapes[2]) or not (
        xs[0].numel() == xs[1].numel() == xs[2].numel()
    ):
        raise ValueError(
            f"iterate shapes differ: theta_prev {shapes[0]}, theta_curr {shapes[1]}, "
            f"theta_next {shapes[2]}"
        )
    xs = [x.to(xs[0].device) for x in xs]
    for x, (name, _) in zip(xs, named):
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"secant_lr: {name} holds NaN or inf (a diverged run)")
    return xs


def _noise_fields(momentum: float | None, steps: int, nesterov: bool, dampening: float) -> float:
    if momentum is None:
        return _NAN
    from .noise import noise_null  # the null's closed form (lr/noise.py)

    return noise_null(float(momentum), steps, nesterov=nesterov, dampening=dampening)


def secant_lr(
    theta_prev: torch.Tensor | Sequence[torch.Tensor],
    theta_curr: torch.Tensor | Sequence[torch.Tensor],
    theta_next: torch.Tensor | Sequence[torch.Tensor],
    lr: float,
    *,
    lr_next: float | None = None,
    steps: int = 1,
    scale: Literal["per_step", "paper"] = "per_step",
    norm: Literal["l1", "l2"] = "l1",
    momentum: float | None = None,
    nesterov: bool = False,
    dampening: float = 0.0,
    per_weight: bool = False,
    strict: bool = False,
) -> SecantResult:
    """The Super-Convergence secant LR estimate (Smith & Topin 2017, §5, Eq. 8) from 3 iterates.

    With Δ₁ = θ_curr − θ_prev and Δ₂ = θ_next − θ_curr, each span of s = ``steps`` SGD steps at
    LR ε, the gradient change along the step is w = (Δ₁ − Δ₂)/E ≈ H Δ₁ and

        per weight  ε*_j = E Δ₁_j / (Δ₁_j − Δ₂_j),
        global L1   ε*   = E Σ|Δ₁| / Σ|Δ₁ − Δ₂|            (the paper's choice),
        global L2   ε*   = E ‖Δ₁‖ / ‖Δ₁ − Δ₂‖,

    with E = sε (``scale="per_step"``, the default: an estimate of the per-step LR) or E = ε
    (``scale="paper"``, the authors' convention for spaced iterates); the two differ by exactly s.
    For s = 1 they coincide, and on f = aθ²/2 with plain SGD the estimate is exactly 1/a. When
    the LR differs between the spans (``lr_next``), w = Δ₁/E₁ − Δ₂/E₂ and ε* = Σ|Δ₁|/Σ|w|.

    Momentum: the paper derives Eq. 8 for plain SGD and applies it under momentum 0.9. Pass the
    optimizer's ``momentum`` (and ``nesterov``/``dampening``) to get ``noise_ratio``: the estimate
    over what pure minibatch noise through that momentum would give, ε·c(μ, s)
    (:func:`hessian_lr.lr.noise.noise_null`); near 1 the estimate measures noise, not curvature.

    Args:
        theta_prev: θ_i; a flat tensor (any shape, flattened) or a list of parameter tensors.
        theta_curr: θ_{i+s}, like ``theta_prev``.
        theta_next: θ_{i+2s}, like ``theta_prev``.
        lr: ε, the per-step LR applied from ``theta_prev`` to ``theta_curr`` (> 0).
        lr_next: the per-step LR from ``theta_curr`` to ``theta_next``; default ``lr``.
        steps: s, optimizer steps between consecutive iterates (≥ 1).
        scale: ``"per_step"`` (E = sε) or ``"paper"`` (E = ε).
        norm: ``"l1"`` (the paper) or ``"l2"``; selects ``lr``.
        momentum: μ for the noise null (None: no null ratio).
        nesterov: the optimizer uses Nesterov momentum (for the null).
        dampening: PyTorch SGD's dampening (for the null).
        per_weight: also return the per-weight vector ε*_j (float64).
        strict: raise :class:`CurvatureError` instead of flagging a zero step or zero curvature.

    Returns:
        A :class:`SecantResult`, computed in float64. Any flag makes ``lr`` nan; ``raw_lr``,
        ``lr_l1`` and ``lr_l2`` keep the formula's values.

    Raises:
        ValueError: shape mismatch, a non-positive LR, ``steps`` < 1, an unknown norm or scale.
        NonFiniteError: an iterate holds NaN or inf.
        CurvatureError: with ``strict=True``, a zero step or identical steps.

    Example:
        >>> import torch
        >>> a, eps = 4.0, 0.1  # f = a θ²/2, plain SGD: θ ← θ − ε a θ
        >>> t0 = torch.tensor([1.0], dtype=torch.float64)
        >>> t1 = t0 - eps * a * t0
        >>> t2 = t1 - eps * a * t1
        >>> round(secant_lr(t0, t1, t2, eps).lr, 12)  # 1/a
        0.25
    """
    t0 = time.perf_counter()
    if norm not in NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    eps1 = _check_lr("lr", lr)
    eps2 = eps1 if lr_next is None else _check_lr("lr_next", lr_next)
    x0, x1, x2 = _iterates(theta_prev, theta_curr, theta_next)
    null = _noise_fields(momentum, steps, nesterov, dampening)

    k = steps if scale == "per_step" else 1
    d1, d2 = x1 - x0, x2 - x1
    # w = Δ₁/E₁ − Δ₂/E₂ = (Δ₁ − (ε₁/ε₂) Δ₂)/E₁: one division by E₁ at the end (no overflow
    # from a tiny LR inside the vector).
    rule = secant_rule(d1, d1 - (eps1 / eps2) * d2, norm=norm)
    e1 = k * eps1
    lr_l1, lr_l2, raw = (e1 * v for v in (rule.lr_l1, rule.lr_l2, rule.raw_lr))
    flags = list(rule.flags)
    if not flags and not (math.isfinite(raw) and raw > 0):
        flags.append("overflow")
    if strict and (ZERO_STEP in flags or ZERO_CURVATURE in flags):
        what = "did not move (zero step)" if ZERO_STEP in flags else "took identical steps"
        raise CurvatureError(
            f"secant_lr: the iterates {what}; no curvature is seen, so no LR is implied"
        )
    vec = None
    if per_weight:
        w = d1 - (eps1 / eps2) * d2
        vec = torch.where(w != 0, e1 * d1 / torch.where(w != 0, w, 1.0), _NAN)
    paper_raw = raw / k  # the paper's convention (E = ε) whatever the scale
    return SecantResult(
        lr=_NAN if flags else raw,
        raw_lr=raw,
        lr_l1=lr_l1,
        lr_l2=lr_l2,
        curvature=rule.curvature / e1,
        step_l1=rule.step_l1,
        step_norm=rule.step_norm,
        lr_used=eps1,
        lr_next=eps2,
        steps=steps,
        norm=norm,
        scale=scale,
        flags=tuple(flags),
        seconds=time.perf_counter() - t0,
        per_weight=vec,
        momentum=_NAN if momentum is None else float(momentum),
        noise_null=null,
        noise_ratio=paper_raw / (eps1 * null) if math.isfinite(null) else _NAN,
    )


# ------------------------------------------------------------------------------ the null band
@dataclass(frozen=True)
class NullBand:
    """A confidence band for the mean estimate/null ratio of a window (see :func:`null_band`).

    Attributes:
        center: geometric mean of the window's ratios.
        low: lower end of the band. high: upper end.
        n: number of finite positive ratios used.
        indistinguishable: the band reaches the null's tolerance interval [1/(1+tol), 1+tol].
        level: the band's coverage. tol: the equivalence margin. block: bootstrap block length.
    """

    center: float
    low: float
    high: float
    n: int
    indistinguishable: bool
    level: float
    tol: float
    block: int


def null_band(
    ratios: Sequence[float] | torch.Tensor,
    *,
    level: float = 0.95,
    tol: float = 0.1,
    num_resamples: int = 400,
    block: int | None = None,
    generator: torch.Generator | None = None,
) -> NullBand:
    """Moving-block bootstrap band of the window's mean ratio, and whether it reaches the null.

    Successive secant estimates are autocorrelated (they share iterates and the momentum buffer),
    so the band comes from a moving-block bootstrap (Künsch 1989): blocks of ``block`` consecutive
    log-ratios (default ⌈n^(1/3)⌉) drawn with replacement until n values, the geometric mean of
    each resample, and the percentile band at ``level``. The estimates are *indistinguishable from
    noise* when the band reaches [1/(1 + tol), 1 + tol]: the margin ``tol`` absorbs the null's own
    approximations (the L1 form is exact for Gaussian block sums, the start-up transient, a
    finite number of weights), so a long window of estimates at ~1.02 still reads as noise.

    Args:
        ratios: estimate / (ε·c(μ, s)) values; non-finite or non-positive ones are dropped.
        level: coverage of the band, in (0, 1).
        tol: relative equivalence margin around 1 (≥ 0).
        num_resamples: bootstrap resamples.
        block: block length (default ⌈n^(1/3)⌉).
        generator: random source (default: a fresh generator seeded with 0 -- never the global
            RNG).

    Returns:
        A :class:`NullBand`.

    Raises:
        ValueError: fewer than 2 usable ratios, or a bad argument.

    Example:
        >>> band = null_band([0.98, 1.03, 1.01, 0.97, 1.02, 1.0])
        >>> band.indistinguishable
        True
        >>> null_band([9.0, 11.0, 10.0, 10.5, 9.5]).indistinguishable
        False
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be positive, got {num_resamples}")
    r = torch.as_tensor(ratios, dtype=torch.float64).reshape(-1)
    r = r[torch.isfinite(r) & (r > 0)]
    n = int(r.numel())
    if n < 2:
        raise ValueError(f"null_band needs at least 2 finite positive ratios, got {n}")
    b = max(1, math.ceil(n ** (1 / 3))) if block is None else int(block)
    if not 1 <= b <= n:
        raise ValueError(f"block must be in [1, {n}], got {block}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    logs = r.log()
    nblocks = math.ceil(n / b)
    # Drawn on the generator's device (a CUDA generator works too), used on the CPU.
    starts = torch.randint(
        0, n - b + 1, (num_resamples, nblocks), generator=gen, device=gen.device
    ).cpu()
    idx = (starts.unsqueeze(-1) + torch.arange(b)).reshape(num_resamples, -1)[:, :n]
    means = logs[idx].mean(dim=1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    margin = math.log1p(tol)
    return NullBand(
        center=math.exp(float(logs.mean())),
        low=math.exp(lo),
        high=math.exp(hi),
        n=n,
        indistinguishable=bool(lo <= margin and hi >= -margin),
        level=level,
        tol=tol,
        block=b,
    )


#: The flag of a secant estimate whose noise band reaches the null (lr nan, EMA skips it).
INDISTINGUISHABLE_FROM_NOISE = "indistinguishable_from_noise"

#: Fewest finite ratios before :func:`with_null_band` runs the test.
MIN_NULL_WINDOW = 5


def with_null_band(
    res: SecantResult,
    window: Any,
    *,
    tol: float = 0.1,
    generator: torch.Generator | None = None,
) -> SecantResult:
    """Append ``res.noise_ratio`` to ``window`` (a deque) and fill the band and the noise flag.

    The band is :func:`null_band` of the window's ratios; with fewer than ``MIN_NULL_WINDOW``
    ratios, or without a null (no momentum given), ``res`` is returned unchanged (flag None).
    When the band reaches the null the estimate gets the flag ``indistinguishable_from_noise``
    and ``lr = nan`` (``raw_lr`` keeps the formula's value): like every flag, it is not an LR,
    and ``LREstimator``'s EMA (hence ``CurvatureLR``) skips it.
    """
    if math.isfinite(res.noise_ratio) and res.noise_ratio > 0:
        window.append(res.noise_ratio)
    if len(window) < MIN_NULL_WINDOW or not math.isfinite(res.noise_null):
        return res
    band = null_band(list(window), tol=tol, generator=generator)
    extra = {}
    if band.indistinguishable and INDISTINGUISHABLE_FROM_NOISE not in res.flags:
        # an estimate that measures noise is not an LR: flagged, lr nan (raw_lr keeps the value)
        extra = dict(lr=_NAN, flags=(*res.flags, INDISTINGUISHABLE_FROM_NOISE))
    return replace(
        res,
        noise_band=(band.low, band.high),
        indistinguishable_from_noise=band.indistinguishable,
        **extra,
    )


def nonfinite_secant(lr: float, steps: int, norm: str, scale: str) -> SecantResult:
    """The flagged result for iterates that hold NaN or inf (``nonfinite_loss``, lr nan)."""
    nan = float("nan")
    return SecantResult(
        lr=nan, lr_l1=nan, lr_l2=nan, curvature=nan, step_l1=nan, step_norm=nan, lr_used=lr,
        lr_next=lr, steps=steps, norm=norm, scale=scale, flags=(NONFINITE_LOSS,),
    )  # fmt: skip
