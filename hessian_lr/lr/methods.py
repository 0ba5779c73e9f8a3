"""The methods of ``estimate_lr``: one dispatch table, method name -> function of an operator.

Each function takes one shared Hessian operator (:class:`EstimateContext`) and returns a result;
it applies a pure rule from :mod:`hessian_lr.lr.rules` to the operator's gradient and
products; adding a method is one entry in :data:`METHOD_TABLE` (the optimizer-aware ``update`` and
``preconditioned_sharpness`` live in :mod:`hessian_lr.lr.update` / :mod:`hessian_lr.lr.stability`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..curvature.hessian import HessianOperator
from ..curvature.lanczos import lanczos
from ..curvature.linop import params_to_vector
from . import rules
from .result import LREstimate
from .rules import (
    NEGATIVE_CURVATURE,
    NORMS,
    NOT_CONVERGED,
    ZERO_CURVATURE,
    ZERO_GRADIENT,
    ZERO_STEP,
)
from .secant import CurvatureError
from .stability import preconditioned_sharpness_from_operator
from .update import update_lr_from_operator

__all__ = [
    "EstimateContext",
    "HVP_METHODS",
    "METHODS",
    "METHOD_TABLE",
    "OPTIMIZER_METHODS",
    "check_options",
]

_NAN = float("nan")


@dataclass
class EstimateContext:
    """What a method of :func:`estimate_lrs` may use: one operator and shared products.

    A method is a function ``fn(ctx) -> LREstimate`` (or any result with ``lr``, ``raw_lr``,
    ``flags``, ``ok``, ``num_hvps``, ``seconds``, ``as_dict()``) registered in ``METHOD_TABLE``;
    ``ctx.gradient()`` and ``ctx.hg()`` are computed once and shared between methods.
    """

    op: HessianOperator
    norm: str = "l1"
    momentum: float = 0.0
    lanczos_tol: float = 1e-2
    lanczos_max_iter: int | None = None
    v0: torch.Tensor | None = None
    warm_starts: dict[str, torch.Tensor] = field(default_factory=dict)
    strict: bool = False
    on_nonfinite: str = "raise"
    generator: torch.Generator | None = None
    optimizer: torch.optim.Optimizer | None = None
    theta_prev: torch.Tensor | None = None
    _grad: tuple[float, torch.Tensor] | None = None
    _hg: torch.Tensor | None = None

    def gradient(self) -> tuple[float, torch.Tensor]:
        """(mean loss, g) at the current parameters (computed once)."""
        if self._grad is None:
            self._grad = self.op.gradient()
        return self._grad

    def hg(self) -> torch.Tensor:
        """H g (one HVP, computed once)."""
        if self._hg is None:
            self._hg = self.op @ self.gradient()[1]
        return self._hg

    @property
    def space(self) -> Any:
        """The operator's ``vector_space`` (sharded vectors: reductions over the shards)."""
        return getattr(self.op, "vector_space", None)

    def common(self) -> dict[str, Any]:
        """Loss and gradient fields shared by every estimate."""
        loss, g = self.gradient()
        s = rules.gradient_stats(g, space=self.space)
        return dict(loss=loss, grad_norm=s.grad_norm, grad_l1=s.g_l1)


def _strict_check(ctx: EstimateContext, flags: Sequence[str], gHg: float = _NAN) -> None:
    if not ctx.strict:
        return
    if ZERO_GRADIENT in flags:
        raise CurvatureError("the gradient is zero (a stationary point): gᵀg/gᵀHg is 0/0")
    if NEGATIVE_CURVATURE in flags:
        raise CurvatureError(
            f"gᵀHg = {gHg:.3e} ≤ 0: no positive curvature along the gradient, so the quadratic "
            "model has no minimiser along −g"
        )


def _gradient_rule(ctx: EstimateContext, method: str) -> LREstimate:
    loss, g = ctx.gradient()
    s = rules.gradient_stats(g, space=ctx.space)
    if not s.gg > 0:
        _strict_check(ctx, (ZERO_GRADIENT,))
        return LREstimate(lr=_NAN, method=method, flags=(ZERO_GRADIENT,), **ctx.common())
    hg = ctx.hg()
    if method == "quadratic":
        res = rules.quadratic_lr(g, hg, space=ctx.space)
    else:
        res = rules.secant_hvp_lr(g, hg, ctx.norm, space=ctx.space)
    st = rules.gradient_stats(g, hg, space=ctx.space)
    _strict_check(ctx, res.flags, st.gHg)
    return LREstimate(
        lr=res.lr,
        method=method,
        raw_lr=res.raw_lr,
        gHg=st.gHg,
        hg_norm=st.hg_norm,
        hg_l1=st.hg_l1,
        curvature=st.gHg / st.gg,
        norm=ctx.norm if method == "secant_hvp" else None,
        flags=res.flags,
        num_hvps=1,
        num_gradients=1,
        **ctx.common(),
    )


def _quadratic(ctx: EstimateContext) -> LREstimate:
    return _gradient_rule(ctx, "quadratic")


def _secant_hvp(ctx: EstimateContext) -> LREstimate:
    return _gradient_rule(ctx, "secant_hvp")


def _sharpness(ctx: EstimateContext) -> LREstimate:
    h0 = ctx.op.num_hvps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = lanczos(
            ctx.op,
            k=1,
            which="LA",
            tol=ctx.lanczos_tol,
            max_iter=ctx.lanczos_max_iter,
            v0=ctx.warm_starts.get("sharpness", ctx.v0),
            generator=ctx.generator,
            stop="eigenvalue",  # stop on the eigenvalue's error bound (residual²/gap), issue 17
            progress=False,  # inside training loops: no bars in the logs
        )
    for w in caught:  # the solver's "not converged" warning becomes the flag
        if not (issubclass(w.category, RuntimeWarning) and "lanczos" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    lam = float(res.eigenvalues[0])
    sh = rules.sharpness_lrs(lam, ctx.momentum)
    if ctx.strict and NEGATIVE_CURVATURE in sh.flags:
        raise CurvatureError(
            f"sharpness: λ_max = {lam:.3e} ≤ 0, the Hessian has no positive curvature, so no "
            "step size is implied"
        )
    flags = ([] if res.converged else [NOT_CONVERGED]) + list(sh.flags)
    void = dict(lr_newton=_NAN, lr_stable=_NAN, lr_stable_momentum=_NAN) if flags else {}
    return LREstimate(
        lr=_NAN if flags else sh.lr_newton,
        method="sharpness",
        raw_lr=1.0 / lam if lam != 0 else _NAN,
        lambda_max=lam,
        curvature=lam,
        residual=float(res.residuals[0]),
        **{
            "lr_newton": sh.lr_newton,
            "lr_stable": sh.lr_stable,
            "lr_stable_momentum": sh.lr_stable_momentum,
            **void,
        },
        momentum=ctx.momentum,
        num_hvps=ctx.op.num_hvps - h0,
        num_gradients=1,
        flags=tuple(flags),
        eigenvector=res.eigenvectors[:, 0].detach(),
        **ctx.common(),
    )


def _secant_same_batch(ctx: EstimateContext) -> LREstimate:
    if ctx.theta_prev is None:
        raise ValueError(
            "method 'secant_same_batch' needs theta_prev=: the parameters before the last step "
            "(a flat vector or a list of tensors in the operator's parameter order)"
        )
    loss, g = ctx.gradient()
    theta = params_to_vector([p.detach() for p in ctx.op.params]).to(g.dtype)
    prev = ctx.theta_prev.to(theta.device, theta.dtype).reshape(-1)
    if prev.numel() != theta.numel():
        raise ValueError(f"theta_prev has {prev.numel()} entries, the parameters {theta.numel()}")
    _, g_prev = ctx.op.gradient_at(prev.to(ctx.op.device, ctx.op.dtype))
    rule = rules.secant_rule(theta - prev, g - g_prev, norm=ctx.norm)
    if ctx.strict and (ZERO_STEP in rule.flags or ZERO_CURVATURE in rule.flags):
        raise CurvatureError(f"secant_same_batch: flags {list(rule.flags)}; no LR is implied")
    return LREstimate(
        lr=rule.lr,
        method="secant_same_batch",
        raw_lr=rule.raw_lr,
        curvature=rule.curvature,
        step_norm=rule.step_norm,
        norm=ctx.norm,
        flags=rule.flags,
        num_gradients=2,
        details={"lr_l1": rule.lr_l1, "lr_l2": rule.lr_l2, "step_l1": rule.step_l1},
        **ctx.common(),
    )


def _optimizer_of(ctx: EstimateContext, method: str) -> torch.optim.Optimizer:
    if ctx.optimizer is None:
        raise ValueError(
            f"method {method!r} reads the optimizer's state: pass optimizer=... (the optimizer "
            "that trains the model)"
        )
    return ctx.optimizer


def _update(ctx: EstimateContext) -> Any:
    return update_lr_from_operator(
        ctx.op,
        _optimizer_of(ctx, "update"),
        ctx.op.params,
        strict=ctx.strict,
        on_nonfinite=ctx.on_nonfinite,
    )


def _preconditioned_sharpness(ctx: EstimateContext) -> Any:
    return preconditioned_sharpness_from_operator(
        ctx.op,
        _optimizer_of(ctx, "preconditioned_sharpness"),
        ctx.op.params,
        lanczos_tol=ctx.lanczos_tol,
        lanczos_max_iter=ctx.lanczos_max_iter,
        v0=ctx.warm_starts.get("preconditioned_sharpness"),
        strict=ctx.strict,
        on_nonfinite=ctx.on_nonfinite,
        generator=ctx.generator,
    )


#: Method name -> ``fn(ctx) -> result``. Adding a method is one entry here.
METHOD_TABLE: dict[str, Callable[[EstimateContext], Any]] = {
    "quadratic": _quadratic,
    "secant_hvp": _secant_hvp,
    "sharpness": _sharpness,
    "secant_same_batch": _secant_same_batch,
    "update": _update,
    "preconditioned_sharpness": _preconditioned_sharpness,
}
#: Methods that read the optimizer's state (``optimizer=`` required).
OPTIMIZER_METHODS = ("update", "preconditioned_sharpness")
#: Methods that need the model and a batch; ``secant`` needs iterates only.
HVP_METHODS = tuple(METHOD_TABLE)
METHODS = ("secant", *HVP_METHODS)


def check_options(norm: str, momentum: float, lanczos_tol: float, on_nonfinite: str) -> None:
    """Validate the options shared by ``estimate_lr``, ``estimate_lrs`` and ``LREstimator``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not lanczos_tol > 0:
        raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
