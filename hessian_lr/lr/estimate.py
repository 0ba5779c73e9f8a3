"""Learning-rate estimates from local curvature: ``estimate_lr`` and ``estimate_lrs``.

What learning rate does the curvature at the current parameters support? ``estimate_lr`` builds
one :class:`~hessian_lr.curvature.HessianOperator` on the batch and applies a rule from
:mod:`hessian_lr.lr.rules` (methods notes §3):

* ``quadratic``: ε* = gᵀg / gᵀHg, the minimiser of the local quadratic along −g. 1 gradient, 1 HVP.
* ``secant_hvp``: ε* = Σ|g| / Σ|Hg| (L1) or ‖g‖/‖Hg‖ (L2): Eq. 8 of Super-Convergence (Smith &
  Topin 2017, §5) with an exact HVP instead of two noisy gradients. 1 gradient, 1 HVP.
* ``sharpness``: 1/λ_max (Lanczos), with 2/λ_max (gradient-descent stability) and (2 + 2β)/λ_max
  (heavy-ball momentum β; Cohen et al. 2021). 5-10 HVPs.
* ``secant_same_batch``: ε* = Σ|Δθ| / Σ|Δg| with Δθ = θ − θ_prev the step actually taken and
  Δg = g(θ; B) − g(θ_prev; B) both on the *same* batch B: Eq. 8's gradient change without the
  batch-to-batch noise (a finite-difference HVP along the step; 2 gradients, no HVP). Equal to
  Σ|g|/Σ|Hg| for a plain-SGD step on a quadratic; under momentum, Σ|d|/Σ|Hd| along the update d.
* ``secant`` (trajectory only, no model) is :func:`hessian_lr.lr.secant.secant_lr`.

Flags (``LREstimate.flags``; strings from :mod:`hessian_lr.lr.rules`): any flag makes ``lr`` nan
and keeps the formula's value (where one exists) in ``raw_lr``. ``negative_curvature`` (gᵀHg ≤ 0,
λ_max ≤ 0, or Δθᵀ Δg ≤ 0), ``zero_gradient``, ``zero_step``/``zero_curvature`` (same-batch
secant), ``overflow``, ``nonfinite_loss`` (with ``on_nonfinite="flag"``; the default raises
:class:`~hessian_lr.curvature.NonFiniteError`) and ``not_converged`` (Lanczos stopped above
``lanczos_tol``: ``lambda_max`` and ``residual`` keep the last Ritz value, ``lr`` is nan).

BatchNorm: every estimate uses ``hessian_lr.lr.defaults.DEFAULT_BN_MODE`` ("train", batch
statistics: the loss SGD descends) unless ``bn_mode=`` is given, and records ``bn_mode``.
Randomness (the Lanczos start) comes from ``generator`` or a fresh one seeded with ``seed``
(recorded); global RNGs are restored around every call.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.lanczos import lanczos
from ..curvature.linop import params_to_vector
from ..rng import preserved_rng
from . import rules
from .defaults import DEFAULT_BN_MODE
from .rules import (  # noqa: F401 (flag names re-exported for old imports)
    FLAGS,
    NEGATIVE_CURVATURE,
    NONFINITE_LOSS,
    NORMS,
    NOT_CONVERGED,
    OVERFLOW,
    ZERO_CURVATURE,
    ZERO_GRADIENT,
    ZERO_STEP,
)
from .secant import CurvatureError, SecantResult, secant_lr

__all__ = [
    "CurvatureError",
    "FLAGS",
    "HVP_METHODS",
    "LREstimate",
    "METHODS",
    "SecantResult",
    "estimate_lr",
    "estimate_lrs",
    "secant_lr",
]

_NAN = float("nan")


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class LREstimate:
    """A learning-rate estimate from :func:`estimate_lr` and the curvature numbers behind it.

    Attributes:
        lr: the estimate (a positive float), or ``nan`` when ``flags`` is not empty.
            ``quadratic``: gᵀg/gᵀHg; ``secant_hvp``: Σ|g|/Σ|Hg| (L1) or ‖g‖/‖Hg‖ (L2);
            ``sharpness``: 1/λ_max; ``secant_same_batch``: Σ|Δθ|/Σ|Δg|. Units: the LR of
            plain SGD on the loss.
        method: the method's name.
        raw_lr: the formula's value regardless of flags (e.g. 1/λ of an unconverged Ritz value).
        loss: mean loss on the batch at the current parameters.
        grad_norm: ‖g‖₂. grad_l1: Σ|g|.
        gHg: gᵀHg. hg_norm: ‖Hg‖₂. hg_l1: Σ|Hg| (HVP methods).
        curvature: Rayleigh quotient of H along the direction used (gᵀHg/gᵀg, λ_max, or
            Δθᵀ Δg/‖Δθ‖² for the same-batch secant).
        step_norm: ‖Δθ‖₂ (same-batch secant).
        lambda_max: largest Hessian eigenvalue (sharpness). residual: its Ritz residual.
        lr_newton: 1/λ_max. lr_stable: 2/λ_max. lr_stable_momentum: (2 + 2β)/λ_max.
        momentum: the β used for ``lr_stable_momentum``.
        norm: ``"l1"`` / ``"l2"`` for the secant rules, else ``None``.
        num_hvps: Hessian-vector products spent. num_gradients: gradients spent.
        seconds: wall-clock time of the call.
        flags: see the module docstring; empty when all is well.
        backend: the HVP back end that ran.
        bn_mode: the BatchNorm mode of the loss (``"train"`` or ``"eval"``).
        seed: the seed of the call's own generator (``None`` when one was passed).
        details: method-specific numbers (e.g. from optimizer-aware methods).
        eigenvector: (N,) top eigenvector (sharpness), for warm starts; not in ``repr``.
    """

    lr: float
    method: str
    raw_lr: float = _NAN
    loss: float = _NAN
    grad_norm: float = _NAN
    grad_l1: float = _NAN
    gHg: float = _NAN
    hg_norm: float = _NAN
    hg_l1: float = _NAN
    curvature: float = _NAN
    step_norm: float = _NAN
    lambda_max: float = _NAN
    residual: float = _NAN
    lr_newton: float = _NAN
    lr_stable: float = _NAN
    lr_stable_momentum: float = _NAN
    momentum: float = 0.0
    norm: str | None = None
    num_hvps: int = 0
    num_gradients: int = 0
    seconds: float = 0.0
    flags: tuple[str, ...] = ()
    backend: str = ""
    bn_mode: str = DEFAULT_BN_MODE
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    eigenvector: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number (then ``flags`` is empty)."""
        return math.isfinite(self.lr) and self.lr > 0

    def __repr__(self) -> str:
        # Only the numbers this method produced: NaN fields (other methods') are left out.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr or (f.name in ("norm", "seed") and value is None):
                continue
            if f.name == "momentum" and self.method != "sharpness":
                continue
            if f.name == "details" and not value:
                continue
            if f.name != "lr" and isinstance(value, float) and math.isnan(value):
                continue
            parts.append(f"{f.name}={value!r}")
        return f"LREstimate({', '.join(parts)})"

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python fields (no eigenvector), e.g. for JSON records."""
        d = {k: v for k, v in asdict(self).items() if k != "eigenvector"}
        d["flags"] = list(self.flags)
        return d


# ---------------------------------------------------------------------------- the dispatch
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

    def common(self) -> dict[str, Any]:
        """Loss and gradient fields shared by every estimate."""
        loss, g = self.gradient()
        s = rules.gradient_stats(g)
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
    s = rules.gradient_stats(g)
    if not s.gg > 0:
        _strict_check(ctx, (ZERO_GRADIENT,))
        return LREstimate(lr=_NAN, method=method, flags=(ZERO_GRADIENT,), **ctx.common())
    hg = ctx.hg()
    if method == "quadratic":
        res = rules.quadratic_lr(g, hg)
    else:
        res = rules.secant_hvp_lr(g, hg, ctx.norm)
    st = rules.gradient_stats(g, hg)
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
    from .update import update_lr_from_operator  # issue 15 (lr/update.py)

    return update_lr_from_operator(
        ctx.op,
        _optimizer_of(ctx, "update"),
        ctx.op.params,
        strict=ctx.strict,
        on_nonfinite=ctx.on_nonfinite,
    )


def _preconditioned_sharpness(ctx: EstimateContext) -> Any:
    from .stability import preconditioned_sharpness_from_operator  # issue 15

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


def check_options(
    norm: str, momentum: float, lanczos_tol: float, on_nonfinite: str, bn_mode: str
) -> None:
    """Validate the options shared by ``estimate_lr``, ``estimate_lrs`` and ``LREstimator``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not lanczos_tol > 0:
        raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")


def _resolve_methods(methods: Sequence[str]) -> tuple[str, ...]:
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    bad = [m for m in methods if m not in METHOD_TABLE]
    if not methods or bad or len(set(methods)) != len(methods):
        hint = ""
        if "secant" in bad:
            hint = " (secant needs iterates: use secant_lr or LREstimator)"
        raise ValueError(f"methods must be distinct names from {HVP_METHODS}, got {methods}{hint}")
    return methods


def _flat(theta: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor | None:
    if theta is None or isinstance(theta, torch.Tensor):
        return None if theta is None else theta.detach().reshape(-1)
    return params_to_vector([t.detach() for t in theta])


def estimate_lrs(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any | Iterable[Any],
    *,
    methods: Sequence[str] = ("quadratic",),
    norm: Literal["l1", "l2"] = "l1",
    momentum: float = 0.0,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    warm_starts: dict[str, torch.Tensor] | None = None,
    theta_prev: torch.Tensor | Sequence[torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    backend: str = "auto",
    bn_mode: Literal["eval", "train"] | None = None,
    params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    closure: bool = False,
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
    seed: int = 0,
    operator_options: Mapping[str, Any] | None = None,
) -> dict[str, LREstimate]:
    """Several estimates on one operator: one gradient, at most one Hg, one Lanczos run.

    Arguments as :func:`estimate_lr` (``methods`` a sequence of its method names;
    ``warm_starts`` maps a Lanczos-based method to its start vector). ``num_hvps``
    and ``num_gradients`` of each estimate count what that method needs on its own (shared
    products are counted in each). Global RNGs are restored afterwards.

    Returns:
        ``{method: LREstimate}`` in the order of ``methods``.
    """
    t0 = time.perf_counter()
    methods = _resolve_methods(methods)
    bn_mode = DEFAULT_BN_MODE if bn_mode is None else bn_mode
    check_options(norm, momentum, lanczos_tol, on_nonfinite, bn_mode)
    own_seed = seed if generator is None else None
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))

    extra_kw = dict(operator_options or {})
    clash = sorted(set(extra_kw) & {"params", "backend", "bn_mode", "closure"})
    if clash:
        raise ValueError(f"pass {clash} as keywords of their own, not in operator_options")
    with preserved_rng():
        op = HessianOperator(
            model,
            loss_fn,
            batch,
            params=params,
            backend=backend,
            bn_mode=bn_mode,
            closure=closure,
            **extra_kw,
        )
        ctx = EstimateContext(
            op=op,
            norm=norm,
            momentum=momentum,
            lanczos_tol=lanczos_tol,
            lanczos_max_iter=lanczos_max_iter,
            v0=v0,
            warm_starts=dict(warm_starts or {}),
            strict=strict,
            on_nonfinite=on_nonfinite,
            generator=generator,
            optimizer=optimizer,
            theta_prev=_flat(theta_prev),
        )
        out: dict[str, Any] = {}
        try:
            with torch.enable_grad():
                for m in methods:
                    t1 = time.perf_counter()
                    res = METHOD_TABLE[m](ctx)
                    out[m] = replace(res, seconds=time.perf_counter() - t1)
        except NonFiniteError:
            if on_nonfinite == "raise":
                raise
            out = {
                m: LREstimate(lr=_NAN, method=m, flags=(NONFINITE_LOSS,), backend=op.backend)
                for m in methods
            }
        finally:
            op.release_graph()
    extra = dict(backend=op.backend, bn_mode=bn_mode, seed=own_seed)
    secs = time.perf_counter() - t0
    return {
        m: replace(r, **extra, seconds=r.seconds or secs) if isinstance(r, LREstimate) else r
        for m, r in out.items()
    }


def estimate_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any | Iterable[Any],
    *,
    method: str = "quadratic",
    norm: Literal["l1", "l2"] = "l1",
    momentum: float = 0.0,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    theta_prev: torch.Tensor | Sequence[torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    backend: str = "auto",
    bn_mode: Literal["eval", "train"] | None = None,
    params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    closure: bool = False,
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
    seed: int = 0,
    operator_options: Mapping[str, Any] | None = None,
) -> LREstimate:
    """The learning rate that the curvature of the loss at the current parameters supports.

    One :class:`~hessian_lr.curvature.HessianOperator` per call (Hessian of the mean loss over
    ``batch``): ``quadratic`` and ``secant_hvp`` cost one gradient and one HVP, ``sharpness`` a
    Lanczos run (5-10 HVPs on LeNet-5 at the default tolerance; a warm start from the previous
    eigenvector ``v0`` saves one or two), ``secant_same_batch`` two gradients. The model, its
    buffers, ``.grad``, train/eval modes and the global RNGs are left as they were.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or with ``closure=True``
            ``loss_fn(model, batch)``.
        batch: ``(inputs, targets)``, or an iterable of batches (the Hessian of the mean loss).
        method: ``"quadratic"``, ``"secant_hvp"``, ``"sharpness"``, ``"secant_same_batch"``
            (see the module docstring), or the optimizer-aware ``"update"`` (η* = −gᵀd/dᵀHd
            along the optimizer's update d) and ``"preconditioned_sharpness"`` (λ_max(P⁻¹H),
            Adam's preconditioner), which need ``optimizer`` (:mod:`hessian_lr.lr.update`,
            :mod:`hessian_lr.lr.stability`).
        norm: ``"l1"`` or ``"l2"`` for ``secant_hvp`` and ``secant_same_batch``.
        momentum: heavy-ball β for ``lr_stable_momentum`` = (2 + 2β)/λ_max, in [0, 1).
        lanczos_tol: relative Ritz residual ‖Hv − λv‖/λ for λ_max (the eigenvalue error is
            typically its square over the spectral gap: 1e-2 gives ~1e-4 on LeNet-5).
        lanczos_max_iter: Krylov dimension cap (default: the solver's).
        v0: (N,) start vector for Lanczos, e.g. the previous ``LREstimate.eigenvector``.
        theta_prev: the parameters before the last step (``secant_same_batch``): a flat (N,)
            vector or a list of tensors in the selected parameters' order.
        optimizer: the optimizer in use (``update``, ``preconditioned_sharpness``); its state
            is read, never changed.
        backend: the HVP back end (see ``HessianOperator``).
        bn_mode: ``"train"`` or ``"eval"``; default ``DEFAULT_BN_MODE`` (``"train"``).
        params: the parameters (tensors or names) to differentiate; default all trainable.
        closure: ``loss_fn(model, batch)`` form.
        strict: raise :class:`CurvatureError` instead of returning ``nan`` with a
            ``negative_curvature`` / ``zero_gradient`` flag.
        on_nonfinite: ``"raise"`` a ``NonFiniteError`` on a NaN/inf loss, gradient or HVP, or
            ``"flag"``: ``lr = nan`` with ``nonfinite_loss``.
        generator: random source for the Lanczos start vector.
        seed: seed of the call's own generator when ``generator`` is None (recorded).
        operator_options: further ``HessianOperator`` keywords, e.g. ``reduction="sum"``,
            ``single_batch``, ``batch_size_fn``, ``dtype``, ``chunk_size``.

    Returns:
        An :class:`LREstimate`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # f(w) = mean (w x - y)², H = 2 mean x² = 2
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x, y = torch.ones(4, 1), torch.ones(4, 1)
        >>> round(estimate_lr(model, nn.MSELoss(), (x, y), method="quadratic").lr, 6)
        0.5
    """
    if not isinstance(method, str) or method not in METHOD_TABLE:
        hint = (
            " (secant needs iterates: use secant_lr or LREstimator)" if method == "secant" else ""
        )
        raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}{hint}")
    t0 = time.perf_counter()
    est = estimate_lrs(
        model,
        loss_fn,
        batch,
        methods=(method,),
        norm=norm,
        momentum=momentum,
        lanczos_tol=lanczos_tol,
        lanczos_max_iter=lanczos_max_iter,
        v0=v0,
        theta_prev=theta_prev,
        optimizer=optimizer,
        backend=backend,
        bn_mode=bn_mode,
        params=params,
        closure=closure,
        strict=strict,
        on_nonfinite=on_nonfinite,
        generator=generator,
        seed=seed,
        operator_options=operator_options,
    )[method]
    return replace(est, seconds=time.perf_counter() - t0)
