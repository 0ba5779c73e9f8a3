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

BatchNorm: every estimate uses ``hessian_lr.lr.defaults.DEFAULT_BN_MODE`` ("train", batch
statistics: the loss SGD descends) unless ``bn_mode=`` is given, and records ``bn_mode``.
Randomness (the Lanczos start) comes from ``generator`` or a fresh one seeded with ``seed``
(recorded); global RNGs are restored around every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn

from ..curvature._batches import first_tensor, is_single_batch
from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.linop import params_to_vector
from ..rng import preserved_rng
from .defaults import DEFAULT_BN_MODE
from .methods import (
    HVP_METHODS,
    METHOD_TABLE,
    METHODS,
    OPTIMIZER_METHODS,
    EstimateContext,
    check_options,
)
from .result import LREstimate
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
    "METHOD_TABLE",
    "OPTIMIZER_METHODS",
    "SecantResult",
    "check_options",
    "estimate_lr",
    "estimate_lrs",
    "secant_lr",
]

_NAN = float("nan")


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
    process_group: Any = None,
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

    _check_not_empty(batch, closure, process_group)
    extra_kw = dict(operator_options or {})
    if process_group is not None:
        extra_kw.setdefault("process_group", process_group)
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
    process_group: Any = None,
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
        process_group: the ``torch.distributed`` group ``batch`` is sharded over (every rank
            passes its shard and calls with the same arguments): None auto-detects an
            initialized default group, ``False`` keeps the estimate on this rank's batch. The
            products are all-reduced, so every rank gets the same estimate, that of the union
            of the shards; a ``DistributedDataParallel`` model is unwrapped.

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
        process_group=process_group,
    )[method]
    return replace(est, seconds=time.perf_counter() - t0)
