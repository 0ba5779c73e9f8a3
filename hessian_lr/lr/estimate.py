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
* ``update`` / ``preconditioned_sharpness`` (need ``optimizer=``): the optimizer-aware estimates of
  :mod:`hessian_lr.lr.update` and :mod:`hessian_lr.lr.stability` (issue 15), same dispatch.

The method functions live in :mod:`hessian_lr.lr.methods` (``METHOD_TABLE``: adding a method is
one entry); the formulas in :mod:`hessian_lr.lr.rules`.

Flags (``LREstimate.flags``; strings from :mod:`hessian_lr.lr.rules`): any flag makes ``lr`` nan
and keeps the formula's value (where one exists) in ``raw_lr``. ``negative_curvature`` (gᵀHg ≤ 0,
λ_max ≤ 0, or Δθᵀ Δg ≤ 0), ``zero_gradient``, ``zero_step``/``zero_curvature`` (same-batch
secant), ``overflow``, ``nonfinite_loss`` (with ``on_nonfinite="flag"``; the default raises
:class:`~hessian_lr.curvature.NonFiniteError`) and ``not_converged`` (Lanczos stopped above
``lanczos_tol``: ``lambda_max`` and ``residual`` keep the last Ritz value, ``lr`` is nan).

How the operator is built (back end, BatchNorm mode, parameters, closure form, process group,
...) is one :class:`~hessian_lr.lr.CurvatureOptions` (``curvature=``). BatchNorm: every estimate
uses ``DEFAULT_BN_MODE`` ("train", batch statistics: the loss SGD descends) unless
``CurvatureOptions(bn_mode="eval")`` is given, and records ``bn_mode``.
Randomness (the Lanczos start) comes from ``generator`` or a fresh one seeded with ``seed``
(recorded); global RNGs are restored around every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn

from ..curvature._batches import first_tensor, is_single_batch
from ..curvature.hessian import NonFiniteError
from ..curvature.linop import params_to_vector
from ..rng import preserved_rng
from .methods import (
    HVP_METHODS,
    METHOD_TABLE,
    EstimateContext,
    check_options,
)
from .options import CurvatureOptions, as_options, rejects_operator_keywords
from .result import LREstimate
from .rules import NONFINITE_LOSS

__all__ = ["estimate_lr", "estimate_lrs"]

_NAN = float("nan")
#: The methods defined for every curvature matrix (``CurvatureOptions.matrix``, issue 26); the
#: others are defined on the Hessian only.
MATRIX_METHODS = ("quadratic", "sharpness")


def _check_matrix(matrix: str, methods: Sequence[str]) -> None:
    other = [m for m in methods if m not in MATRIX_METHODS]
    if matrix != "hessian" and other:
        raise ValueError(
            f"curvature matrix {matrix!r} is supported by the methods {MATRIX_METHODS}; "
            f"{other} are defined on the Hessian (use curvature='hessian' for them)"
        )


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


def _check_not_empty(batch: Any, closure: bool, process_group: Any) -> None:
    """An empty batch is named as such (its mean loss 0/0 would read as a diverged run).

    Under a process group a rank may hold an empty shard (the others carry the data).
    """
    dist = torch.distributed
    if process_group not in (None, False) or (dist.is_available() and dist.is_initialized()):
        return
    if not is_single_batch(batch, closure=closure):
        return
    t = first_tensor(batch)
    if t is not None and t.shape[0] == 0:
        raise ValueError(
            f"the batch is empty (its first tensor has shape {tuple(t.shape)}): there is no "
            "loss to differentiate. Check the data (a filter that kept nothing, a split of "
            "size 0, a last batch cut to 0 examples)"
        )


@rejects_operator_keywords
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
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
    seed: int = 0,
    curvature: CurvatureOptions | str | None = None,
) -> dict[str, LREstimate]:
    """Several estimates on one operator: one gradient, at most one Hg, one Lanczos run.

    One :class:`~hessian_lr.curvature.HessianOperator` per call (Hessian of the mean loss over
    ``batch``), built as ``curvature`` says: ``quadratic`` and ``secant_hvp`` cost one gradient
    and one HVP (shared between them), ``sharpness`` a Lanczos run (5-10 HVPs on LeNet-5 at the
    default tolerance; a warm start from the previous eigenvector saves one or two),
    ``secant_same_batch`` two gradients. ``num_hvps`` and ``num_gradients`` of each estimate count
    what that method needs on its own (shared products are counted in each); ``seconds`` is the
    method's own time (with one method, the whole call's). The model, its buffers, ``.grad``,
    train/eval modes and the global RNGs are left as they were.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or with
            ``CurvatureOptions(closure=True)`` ``loss_fn(model, batch)``.
        batch: ``(inputs, targets)``, or an iterable of batches (the Hessian of the mean loss).
        methods: names from ``"quadratic"``, ``"secant_hvp"``, ``"sharpness"``,
            ``"secant_same_batch"`` (see the module docstring), and the optimizer-aware
            ``"update"`` (η* = −gᵀd/dᵀHd along the optimizer's update d) and
            ``"preconditioned_sharpness"`` (λ_max(P⁻¹H), Adam's preconditioner), which need
            ``optimizer`` (:mod:`hessian_lr.lr.update`, :mod:`hessian_lr.lr.stability`).
        norm: ``"l1"`` or ``"l2"`` for ``secant_hvp`` and ``secant_same_batch``.
        momentum: heavy-ball β for ``lr_stable_momentum`` = (2 + 2β)/λ_max, in [0, 1).
        lanczos_tol: relative Ritz residual ‖Hv − λv‖/λ for λ_max (the eigenvalue error is
            typically its square over the spectral gap: 1e-2 gives ~1e-4 on LeNet-5).
        lanczos_max_iter: Krylov dimension cap (default: the solver's).
        v0: (N,) start vector for Lanczos, e.g. the previous ``LREstimate.eigenvector``.
        warm_starts: ``{method: (N,) start vector}`` for the Lanczos-based methods.
        theta_prev: the parameters before the last step (``secant_same_batch``): a flat (N,)
            vector or a list of tensors in the selected parameters' order.
        optimizer: the optimizer in use (``update``, ``preconditioned_sharpness``); its state
            is read, never changed.
        strict: raise :class:`CurvatureError` instead of returning ``nan`` with a
            ``negative_curvature`` / ``zero_gradient`` flag.
        on_nonfinite: ``"raise"`` a ``NonFiniteError`` on a NaN/inf loss, gradient or HVP, or
            ``"flag"``: ``lr = nan`` with ``nonfinite_loss``.
        generator: random source for the Lanczos start vector.
        seed: seed of the call's own generator when ``generator`` is None (recorded).
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`: back
            end, BatchNorm mode, parameters, closure form, process group, chunking, dtype, and
            the matrix: ``"hessian"``, ``"ggn"``, ``"fisher"``, ``"fisher_mc"``, for the
            ``quadratic`` and ``sharpness`` methods; a name alone is
            ``CurvatureOptions(matrix=name)``, recorded as ``LREstimate.curvature_matrix``);
            default ``CurvatureOptions()``. Under a process group every rank passes its shard
            and calls with the same arguments; every rank gets the estimate of the union.

    Returns:
        ``{method: LREstimate}`` in the order of ``methods``.
    """
    t0 = time.perf_counter()
    methods = _resolve_methods(methods)
    opts = as_options(curvature)
    _check_matrix(opts.matrix, methods)
    check_options(norm, momentum, lanczos_tol, on_nonfinite)
    own_seed = seed if generator is None else None
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))

    _check_not_empty(batch, opts.closure, opts.process_group)
    with preserved_rng():
        op = opts.operator(model, loss_fn, batch)
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
        out = _run_methods(ctx, methods)
    extra = dict(
        backend=op.backend, bn_mode=opts.bn_mode, seed=own_seed, curvature_matrix=opts.matrix
    )
    secs = time.perf_counter() - t0
    return {
        m: replace(r, **extra, seconds=secs if len(out) == 1 else r.seconds or secs)
        if isinstance(r, LREstimate)
        else r
        for m, r in out.items()
    }


def _run_methods(ctx: EstimateContext, methods: tuple[str, ...]) -> dict[str, Any]:
    """Each method on the shared context; ``nonfinite_loss`` for all when asked to flag it."""
    out: dict[str, Any] = {}
    try:
        with torch.enable_grad():
            for m in methods:
                t1 = time.perf_counter()
                res = METHOD_TABLE[m](ctx)
                out[m] = replace(res, seconds=time.perf_counter() - t1)
    except NonFiniteError:
        if ctx.on_nonfinite == "raise":
            raise
        out = {
            m: LREstimate(lr=_NAN, method=m, flags=(NONFINITE_LOSS,), backend=ctx.op.backend)
            for m in methods
        }
    finally:
        ctx.op.release_graph()
    return out


@rejects_operator_keywords
def estimate_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any | Iterable[Any],
    *,
    method: str = "quadratic",
    **options: Any,
) -> LREstimate:
    """The learning rate that the curvature of the loss at the current parameters supports.

    :func:`estimate_lrs` of the one ``method``; every other keyword is one of
    :func:`estimate_lrs` (``norm``, ``momentum``, ``lanczos_tol``, ``v0``, ``theta_prev``,
    ``optimizer``, ``strict``, ``on_nonfinite``, ``generator``, ``seed``, ``curvature``, ...).

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
    if "methods" in options:
        raise TypeError("estimate_lr() takes one method=...; use estimate_lrs for several")
    if not isinstance(method, str) or method not in METHOD_TABLE:
        hint = (
            " (secant needs iterates: use secant_lr or LREstimator)" if method == "secant" else ""
        )
        raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}{hint}")
    return estimate_lrs(model, loss_fn, batch, methods=(method,), **options)[method]
