"""Stability thresholds of GD, heavy ball, Nesterov, Adam and RMSprop; preconditioned sharpness.

On a quadratic with Hessian H (and, for adaptive methods, a *frozen* diagonal preconditioner P),
each optimizer is a linear recurrence per eigen-direction of P⁻¹H (P = I for SGD) with eigenvalue
λ; it converges iff η λ < c, a constant of the hyper-parameters. The sharpness that matters is
λ_max(P⁻¹H) and the threshold on it is c/η (Cohen et al. 2021, "Gradient descent on neural
networks typically occurs at the edge of stability", ICLR; Cohen et al. 2022, "Adaptive gradient
methods at the edge of stability", arXiv 2207.14484). With a = ηλ:

* GD, x⁺ = (1 − a) x: |1 − a| < 1 ⇔ a < 2, so c = 2.
* Heavy ball (torch SGD, momentum β, dampening τ): after the first step the buffer is
  b⁺ = β b + (1 − τ) g, so x⁺ = x − η(1 − τ)λ x + β(x − x⁻): z² − (1 + β − a')z + β = 0 with
  a' = (1 − τ)a. Both roots lie inside the unit circle iff 0 < a' < 2 + 2β (the root z = −1
  appears at a' = 2 + 2β; |z₁z₂| = β < 1), so c = (2 + 2β)/(1 − τ).
* Nesterov (torch SGD, ``nesterov=True``: b⁺ = βb + g, x⁺ = x − η(g + βb⁺)); in the look-ahead
  form x⁺ = (1 − a)(1 + β)x − (1 − a)βx⁻: z² − (1 − a)(1 + β)z + (1 − a)β = 0. At z = −1:
  1 + (1 − a)(1 + 2β) = 0 ⇔ a = (2 + 2β)/(1 + 2β), where |z₁z₂| = β/(1 + 2β) < 1; z = 1 would
  need a = 0. So c = (2 + 2β)/(1 + 2β) (= 2 at β = 0, → 4/3 as β → 1).
* Adam / AdamW (β₁, frozen P = diag(√v̂ + ε), bias correction of m ignored, i.e. late in
  training): m⁺ = β₁m + (1 − β₁)g, x⁺ = x − ηP⁻¹m⁺ is heavy ball on P⁻¹H with LR (1 − β₁)η and
  momentum β₁, so c = (2 + 2β₁)/(1 − β₁) (38 at β₁ = 0.9: the threshold 38/η). Decoupled weight
  decay multiplies x by (1 − ηλ_wd) ≈ 1 and is ignored.
* RMSprop (α, momentum μ, frozen P = diag(√v + ε), centered: √(v − m²) + ε): b⁺ = μb + P⁻¹g,
  x⁺ = x − ηb⁺, heavy ball on P⁻¹H with LR η: c = 2 + 2μ.

Which P: that of the step the optimizer takes next from the measured batch, the batch's
gradient folded into v before the division as torch does (``update`` uses the same P; issue
22 chose this so that the two methods describe one step; the last step's P, without the current
gradient, was up to 4.9× apart early in RMSprop). Cohen et al. 2022 likewise measure the P of
the step being taken.

Assumptions: a quadratic model (H constant over the step), a frozen preconditioner (P changes
slowly next to the iterates), coupled weight decay's λ_wd·I in H neglected (λ_wd ≪ λ_max). The
thresholds are tested by running each optimizer on a quadratic at η just below/above c/λ.

Parameter groups with different LRs η_g: the recurrence runs on L^{1/2} H L^{1/2} with
L = diag(η_g/P_i); it is written as η̄·λ_max(Q⁻¹H) with Q_i = P_i η̄/η_g and η̄ the weighted mean
LR. All groups must share the momentum/β₁ (else c is not one number).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.lanczos import lanczos
from ..curvature.linop import params_to_vector, vector_to_params
from ..curvature.preconditioned import PreconditionedOperator
from ._optim import _group_of, _reference_lr, _scalar, optimizer_parameters
from .direction import next_preconditioner
from .options import CurvatureOptions, as_options, rejects_operator_keywords
from .result import LRResult
from .secant import CurvatureError

__all__ = [
    "StabilityThreshold",
    "PreconditionedSharpness",
    "gd_threshold",
    "heavy_ball_threshold",
    "nesterov_threshold",
    "adam_threshold",
    "rmsprop_threshold",
    "stability_threshold",
    "preconditioner_diagonal",
    "preconditioned_sharpness",
    "preconditioned_sharpness_from_operator",
]

_NAN = float("nan")
# No progress bar inside a measurement (the solver shows one after a few seconds by default),
# and stop on the eigenvalue error bound (λ_max is what is wanted; fewer products than the
# residual rule for the same accuracy of λ) where the solver offers these options.
_LANCZOS_PARAMS = inspect.signature(lanczos).parameters
_QUIET = {k: v for k, v in (("progress", False), ("stop", "eigenvalue")) if k in _LANCZOS_PARAMS}
KINDS = ("gd", "heavy_ball", "nesterov", "adam", "rmsprop")


def _check(name: str, value: float, low: float, high: float, *, closed: bool = True) -> float:
    value = float(value)
    ok = low <= value < high if closed else low < value < high
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name} must be in [{low}, {high}), got {value}")
    return value


def _per_lr(c: float, lr: float) -> float:
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite learning rate, got {lr}")
    return c / lr


def gd_threshold(lr: float) -> float:
    """2/η: gradient descent on a quadratic is stable iff λ_max < 2/η.

    >>> gd_threshold(0.1)
    20.0
    """
    return _per_lr(2.0, lr)


def heavy_ball_threshold(lr: float, momentum: float, dampening: float = 0.0) -> float:
    """(2 + 2β)/((1 − τ)η): heavy-ball (torch SGD) stability limit on λ_max.

    >>> round(heavy_ball_threshold(0.1, 0.9), 12)
    38.0
    """
    beta = _check("momentum", momentum, 0.0, 1.0)
    tau = _check("dampening", dampening, 0.0, 1.0)
    return _per_lr((2.0 + 2.0 * beta) / (1.0 - tau), lr)


def nesterov_threshold(lr: float, momentum: float) -> float:
    """(2 + 2β)/((1 + 2β)η): Nesterov momentum's stability limit on λ_max (module docstring).

    >>> round(nesterov_threshold(1.0, 0.5), 12)  # 3/2
    1.5
    """
    beta = _check("momentum", momentum, 0.0, 1.0)
    return _per_lr((2.0 + 2.0 * beta) / (1.0 + 2.0 * beta), lr)


def adam_threshold(lr: float, beta1: float) -> float:
    """(2 + 2β₁)/((1 − β₁)η): Adam's limit on λ_max(P⁻¹H), frozen P (Cohen et al. 2022).

    >>> round(adam_threshold(1.0, 0.9), 12)
    38.0
    """
    beta1 = _check("beta1", beta1, 0.0, 1.0)
    return _per_lr((2.0 + 2.0 * beta1) / (1.0 - beta1), lr)


def rmsprop_threshold(lr: float, momentum: float = 0.0) -> float:
    """(2 + 2μ)/η: RMSprop's limit on λ_max(P⁻¹H) with momentum μ, frozen P."""
    mu = _check("momentum", momentum, 0.0, 1.0)
    return _per_lr(2.0 + 2.0 * mu, lr)


@dataclass(frozen=True)
class StabilityThreshold:
    """When an optimizer is stable on the local quadratic: η̄·λ_max(Q⁻¹H) < ``constant``.

    Attributes:
        kind: ``"gd"``, ``"heavy_ball"``, ``"nesterov"``, ``"adam"`` or ``"rmsprop"``.
        constant: c (dimensionless): 2, (2 + 2β)/(1 − τ), (2 + 2β)/(1 + 2β), (2 + 2β₁)/(1 − β₁),
            2 + 2μ.
        lr: η̄, the LR in use (parameter-count-weighted mean over the groups).
        threshold: c/η̄, the sharpness (units 1/LR) at the edge of stability; ``inf`` at η̄ = 0.
        momentum: β, β₁ or μ (0 for GD).
        preconditioned: whether the sharpness is that of P⁻¹H (Adam, RMSprop) or of H.
        optimizer: the optimizer's class name.
    """

    kind: str
    constant: float
    lr: float
    threshold: float
    momentum: float
    preconditioned: bool
    optimizer: str = ""


def _shared(groups: Sequence[dict], key: str, default: Any) -> Any:
    values = {repr(g.get(key, default)) for g in groups}
    if len(values) > 1:
        raise ValueError(
            f"the parameter groups differ in {key!r} ({sorted(values)}); the stability threshold "
            "is one number only when they agree: pass params= to select one group"
        )
    return groups[0].get(key, default)


def stability_threshold(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor] | None = None
) -> StabilityThreshold:
    """The stability threshold of ``optimizer`` at its current hyper-parameters (module docstring).

    Args:
        optimizer: ``torch.optim.SGD`` (plain, heavy ball, Nesterov), ``Adam``, ``AdamW`` or
            ``RMSprop`` (exact type or subclass).
        params: restrict to the groups holding these parameters (default: every group).

    Raises:
        TypeError: another optimizer (no threshold is derived for it).
        ValueError: groups with different momentum / betas.
    """
    group_of = _group_of(optimizer)
    if params is None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
    lr = _reference_lr(optimizer, params, moving_only=True)
    moving = {
        group_of[id(p)]
        for p in params
        if id(p) in group_of and _scalar(optimizer.param_groups[group_of[id(p)]]["lr"]) != 0
    }
    groups = [optimizer.param_groups[i] for i in sorted(moving)]
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD):
        beta = _scalar(_shared(groups, "momentum", 0.0))
        if beta == 0:
            kind, c = "gd", 2.0
        elif _shared(groups, "nesterov", False):
            kind, c = "nesterov", (2.0 + 2.0 * beta) / (1.0 + 2.0 * beta)
        else:
            tau = _scalar(_shared(groups, "dampening", 0.0))
            kind, c = "heavy_ball", (2.0 + 2.0 * beta) / (1.0 - tau)
        pre = False
    elif isinstance(optimizer, torch.optim.Adam):  # AdamW is a subclass
        beta = _scalar(_shared(groups, "betas", (0.9, 0.999))[0])
        kind, c, pre = "adam", (2.0 + 2.0 * beta) / (1.0 - beta), True
    elif isinstance(optimizer, torch.optim.RMSprop):
        beta = _scalar(_shared(groups, "momentum", 0.0))
        kind, c, pre = "rmsprop", 2.0 + 2.0 * beta, True
    else:
        raise TypeError(
            f"no stability threshold is derived for {name}; supported: SGD (with or without "
            "momentum / Nesterov), Adam, AdamW, RMSprop"
        )
    return StabilityThreshold(
        kind=kind,
        constant=c,
        lr=lr,
        threshold=c / lr if lr > 0 else math.inf,
        momentum=beta,
        preconditioned=pre,
        optimizer=name,
    )


def _adam_p(state: dict, group: dict) -> torch.Tensor:
    beta2, eps = _scalar(group["betas"][1]), _scalar(group["eps"])
    v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    bc2 = 1.0 - beta2 ** _scalar(state["step"])
    return v.detach().double().sqrt() / math.sqrt(bc2) + eps


def _rmsprop_p(state: dict, group: dict) -> torch.Tensor:
    v = state["square_avg"].detach().double()
    if group.get("centered", False):
        m = state["grad_avg"].detach().double()
        v = v - m * m
    return v.sqrt() + _scalar(group["eps"])


def preconditioner_diagonal(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    gradient: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """The flat (N,) float64 diagonal Q of the preconditioner, or None for the identity.

    Q_i = P_i · η̄/η_g (module docstring): Adam/AdamW P = √v̂ + ε (v̂ = v/(1 − β₂ᵗ), or the amsgrad
    maximum), RMSprop P = √v + ε (centered √(v − m²) + ε), SGD P = 1. The state after the last
    step is used, or, with ``gradient`` (one tensor per parameter), the preconditioner of the
    step the optimizer takes next from that gradient: torch folds the current gradient into v
    before dividing, so this P is the one :func:`~hessian_lr.lr.update.update_direction` uses
    (:func:`~hessian_lr.lr.direction.next_preconditioner`); early in training the two differ by
    up to ~5× (RMSprop, issue 22). :func:`preconditioned_sharpness` passes the batch's gradient,
    so it and ``update`` describe the same step. A parameter that does not move
    (not in the optimizer, or in a group with LR 0) gets Q_i = ∞ (its coordinates drop out of
    the generalized eigenproblem). None when Q is the identity (SGD, one LR, all moving).

    Raises:
        ValueError: a moving parameter has no optimizer state yet (take a step first), or no
            parameter moves.
    """
    group_of = _group_of(optimizer)
    lr_ref = _reference_lr(optimizer, params, moving_only=True)
    lrs = [_scalar(g["lr"]) for g in optimizer.param_groups]
    lr_of = [lrs[group_of[id(p)]] if id(p) in group_of else 0.0 for p in params]
    if isinstance(optimizer, torch.optim.Adam):
        rule: Callable[[dict, dict], torch.Tensor] | None = _adam_p
    elif isinstance(optimizer, torch.optim.RMSprop):
        rule = _rmsprop_p
    else:
        rule = None
        if len(set(lr_of)) == 1:  # one non-zero LR for every parameter
            return None
    parts = []
    for i, (p, lr) in enumerate(zip(params, lr_of)):
        if lr == 0:
            parts.append(torch.full((p.numel(),), math.inf, dtype=torch.float64, device=p.device))
            continue
        ratio = lr_ref / lr
        if rule is None:
            parts.append(torch.full((p.numel(),), ratio, dtype=torch.float64, device=p.device))
            continue
        group = optimizer.param_groups[group_of[id(p)]]
        if gradient is not None:
            parts.append(next_preconditioner(optimizer, p, gradient[i], group).reshape(-1) * ratio)
            continue
        state = optimizer.state.get(p, {})
        if "step" not in state:
            raise ValueError(
                f"parameter {i} (shape {tuple(p.shape)}) has no {type(optimizer).__name__} state "
                "yet: the preconditioner is defined after the first optimizer step"
            )
        parts.append(rule(state, optimizer.param_groups[group_of[id(p)]]).reshape(-1) * ratio)
    return params_to_vector(parts)


# ------------------------------------------------------------------------ preconditioned sharpness
@dataclass(frozen=True)
class PreconditionedSharpness(LRResult):
    """λ_max of the curvature that governs the optimizer's stability, and its threshold.

    Attributes:
        lr: 1/λ_max (the Newton-like LR along the sharpest preconditioned direction, as
            ``sharpness`` gives 1/λ_max for SGD); ``nan`` when λ_max ≤ 0.
        method: ``"preconditioned_sharpness"``.
        lambda_max: λ_max(Q⁻¹H) (Adam, RMSprop; Q = P for a single LR) or λ_max(H) (SGD).
        residual: Lanczos Ritz residual of ``lambda_max`` (absolute).
        lr_stable: c/λ_max, the largest stable LR for these hyper-parameters.
        threshold: c/η̄, the sharpness at the edge of stability at the LR in use.
        lr_in_use: η̄.
        lr_times_sharpness: η̄·λ_max (compare with ``constant``).
        stability_ratio: η̄·λ_max/c: 1 is the edge of stability, > 1 unstable on the quadratic.
        constant: c (see :class:`StabilityThreshold`).
        kind: ``"gd"``, ``"heavy_ball"``, ``"nesterov"``, ``"adam"``, ``"rmsprop"``.
        momentum: β / β₁ / μ.
        preconditioned: whether P⁻¹H (True) or H (False) was measured.
        optimizer: class name.
        converged: whether Lanczos met ``lanczos_tol``.
        num_hvps: Hessian-vector products spent.
        seconds: wall-clock time.
        flags: ``negative_curvature``, ``not_converged``, ``nonfinite_loss``.
        backend: HVP back end.
        bn_mode: BatchNorm mode of the Hessian.
        eigenvector: the Lanczos vector of the symmetric operator Q^{-1/2}HQ^{-1/2}, for ``v0``
            of the next call (not in ``as_dict``).
    """

    method: str = "preconditioned_sharpness"
    lambda_max: float = _NAN
    residual: float = _NAN
    lr_stable: float = _NAN
    threshold: float = _NAN
    lr_in_use: float = _NAN
    lr_times_sharpness: float = _NAN
    stability_ratio: float = _NAN
    constant: float = _NAN
    kind: str = ""
    momentum: float = 0.0
    preconditioned: bool = False
    optimizer: str = ""
    converged: bool = False
    backend: str = ""
    bn_mode: str | None = None
    eigenvector: torch.Tensor | None = field(default=None, repr=False, compare=False)


def _lanczos_top(op: Any, tol: float, max_iter: int | None, v0: Any, generator: Any) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = lanczos(
            op, k=1, which="LA", tol=tol, max_iter=max_iter, v0=v0, generator=generator, **_QUIET
        )
    for w in caught:  # re-emit what is not Lanczos' own convergence warning (it becomes a flag)
        if not (issubclass(w.category, RuntimeWarning) and "lanczos" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return res


def preconditioned_sharpness_from_operator(
    op: HessianOperator,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
) -> PreconditionedSharpness:
    """:func:`preconditioned_sharpness` on an existing Hessian operator over ``params``.

    Keywords as in :func:`preconditioned_sharpness`. The operator's cached graph is left in place
    (call ``op.release_graph()`` when done).
    """
    t0 = time.perf_counter()
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
    if not lanczos_tol > 0:
        raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol}")
    params = list(params)
    thr = stability_threshold(optimizer, params)
    try:
        grads = None
        if thr.preconditioned:  # the batch's gradient enters the preconditioner (update's P)
            grads = vector_to_params(op.gradient()[1].detach(), params)
    except NonFiniteError:
        if on_nonfinite == "raise":
            raise
        grads = None
    q = preconditioner_diagonal(optimizer, params, gradient=grads)
    sym = op if q is None else PreconditionedOperator(op, q)
    info = dict(
        lr_in_use=thr.lr,
        threshold=thr.threshold,
        constant=thr.constant,
        kind=thr.kind,
        momentum=thr.momentum,
        preconditioned=q is not None and thr.preconditioned,
        optimizer=thr.optimizer,
        backend=str(getattr(op, "backend", "")),
        bn_mode=getattr(op, "bn_mode", None),
    )
    h0 = getattr(op, "num_hvps", None)
    try:
        with torch.enable_grad():
            res = _lanczos_top(sym, lanczos_tol, lanczos_max_iter, v0, generator)
    except NonFiniteError:
        if on_nonfinite == "raise":
            raise
        return PreconditionedSharpness(lr=_NAN, flags=("nonfinite_loss",), **info)
    lam = float(res.eigenvalues[0])
    flags = [] if res.converged else ["not_converged"]
    if not lam > 0:
        flags.append("negative_curvature")
        if strict:
            raise CurvatureError(
                f"preconditioned_sharpness: λ_max = {lam:.3e} ≤ 0, no positive curvature, so "
                "no step size is implied"
            )
    positive = lam > 0
    num_hvps = res.num_matvecs if h0 is None else op.num_hvps - h0
    return PreconditionedSharpness(
        lr=1.0 / lam if positive else _NAN,
        lambda_max=lam,
        residual=float(res.residuals[0]),
        lr_stable=thr.constant / lam if positive else _NAN,
        lr_times_sharpness=thr.lr * lam,
        stability_ratio=thr.lr * lam / thr.constant,
        converged=bool(res.converged),
        num_hvps=int(num_hvps),
        seconds=time.perf_counter() - t0,
        flags=tuple(flags),
        eigenvector=res.eigenvectors[:, 0].detach(),
        **info,
    )


@rejects_operator_keywords
def preconditioned_sharpness(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any,
    optimizer: torch.optim.Optimizer,
    *,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
    curvature: CurvatureOptions | None = None,
) -> PreconditionedSharpness:
    """λ_max(P⁻¹H) for Adam/RMSprop (λ_max(H) for SGD) and the optimizer's stability threshold.

    Lanczos on the symmetric Q^{-1/2} H Q^{-1/2} (:class:`~hessian_lr.curvature.
    preconditioned.PreconditionedOperator`; same eigenvalues as Q⁻¹H), Q the optimizer's frozen
    preconditioner from its state (module docstring). The model, the optimizer and the global
    RNGs are left untouched. Cost: one Lanczos run (≈ 5-15 HVPs at the default tolerance).

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)``, or ``loss_fn(model, batch)`` with
            ``CurvatureOptions(closure=True)``.
        batch: ``(inputs, targets)`` or an iterable of batches.
        optimizer: SGD, Adam, AdamW or RMSprop, after at least one step for Adam/RMSprop.
        lanczos_tol: relative Ritz residual at which λ_max is accepted.
        lanczos_max_iter: Krylov dimension cap (default: the solver's).
        generator: random source for a cold Lanczos start.
        v0: start vector, e.g. the previous result's ``eigenvector``.
        strict: raise ``CurvatureError`` when λ_max ≤ 0 instead of flagging it.
        on_nonfinite: ``"raise"`` or ``"flag"`` a NaN/inf loss or product.
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`; its
            ``bn_mode`` is recorded; ``params`` restricts the parameters, tensors or names;
            those the optimizer does not hold, or holds at LR 0, are left out in any case).

    Returns:
        A :class:`PreconditionedSharpness`.
    """
    curvature = as_options(curvature)
    names = optimizer_parameters(model, optimizer, curvature.params, moving_only=True)
    op = curvature.operator(model, loss_fn, batch, params=names)
    named = dict(model.named_parameters())
    return preconditioned_sharpness_from_operator(
        op,
        optimizer,
        [named[n] for n in names],
        lanczos_tol=lanczos_tol,
        lanczos_max_iter=lanczos_max_iter,
        v0=v0,
        strict=strict,
        on_nonfinite=on_nonfinite,
        generator=generator,
    )
