"""Curvature along the optimizer's own update: the GeN learning rate η* = −gᵀd / dᵀHd.

Every other estimate assumes a step along −g. Momentum SGD, Nesterov, Adam, AdamW and RMSprop
step along a direction d built from their state (momentum buffers, moment estimates). This module
computes that direction from the optimizer's state *without stepping and without changing it*,
then the LR that minimises the local quadratic model of the loss along it:

    f(θ + η d) ≈ f(θ) + η gᵀd + ½ η² dᵀHd   is smallest at   η* = −gᵀd / dᵀHd,

the "GeN" rule (Bu & Xu 2024, "Automatic gradient descent with generalized Newton's method",
arXiv 2407.02772), with g and H the gradient and Hessian of the mean loss on the batch, and
dᵀHd/‖d‖² the curvature the step actually sees. Cost: one gradient and one HVP.

Convention: d is the update **per unit learning rate**, signed as a step: the optimizer is about to
move θ by η·d (so a descent direction has gᵀd < 0, and plain SGD has d = −g). Hence η* is an
**absolute** LR, directly comparable with the LR in use; ``lr_multiplier`` = η*/η is the factor on
the current LR. Parameter groups with different LRs: the step is Δ = Σ_g η_g d_g and d = Δ/η̄ with
η̄ the parameter-count-weighted mean LR of the groups (the LR ``LREstimator`` reports), so η* is
again on the scale of η̄ and ``lr_multiplier`` scales every group's LR alike.

The gradient the optimizer would fold into its state is taken to be g, the batch gradient at the
current parameters. Exact formulas (the same as ``torch.optim``'s single-tensor code paths) for
``SGD`` (momentum, dampening, Nesterov, coupled weight decay, maximize), ``Adam`` / ``AdamW`` (bias
correction, coupled or decoupled weight decay, amsgrad) and ``RMSprop`` (centered, momentum, weight
decay); any other optimizer (and subclasses, which may change ``step``) goes through a generic
fallback that steps a throwaway float64 copy of the optimizer and its parameters and reads the
difference, with every global RNG preserved.

Weight decay is part of d (it moves θ), but η* and the curvature are those of the *loss*
``loss_fn``: the L2 term's own curvature (wd·‖d‖²) is not added.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.linop import params_to_vector, vector_to_params
from ..rng import preserved_rng
from ._optim import _group_of, _reference_lr, _scalar, optimizer_parameters
from .defaults import DEFAULT_BN_MODE

__all__ = [
    "UpdateDirection",
    "UpdateEstimate",
    "update_direction",
    "update_lr",
    "update_lr_from_operator",
    "optimizer_parameters",
    "ZERO_UPDATE",
    "NOT_DESCENT",
]

ZERO_UPDATE = "zero_update"
NOT_DESCENT = "not_descent"
_NEGATIVE_CURVATURE = "negative_curvature"  # the flag names of hessian_lr.lr.estimate
_NONFINITE_LOSS = "nonfinite_loss"
_DIRECTIONS = ("auto", "analytic", "generic")
_NAN = float("nan")


def _curvature_error(message: str) -> Exception:
    from .estimate import CurvatureError  # lazy: estimate.py dispatches to this module

    return CurvatureError(message)


# --------------------------------------------------------------------------------- directions
def _sgd_step(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
    """−(the update torch.optim.SGD applies per unit LR), float64."""
    theta = p.detach().double()
    if group.get("maximize", False):
        g = -g
    wd = _scalar(group.get("weight_decay", 0.0))
    if wd != 0:
        g = g + wd * theta
    mu = _scalar(group.get("momentum", 0.0))
    if mu != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            b = g
        else:
            b = mu * buf.detach().double() + (1.0 - _scalar(group.get("dampening", 0.0))) * g
        g = g + mu * b if group.get("nesterov", False) else b
    return -g


def _adam_step(
    p: torch.Tensor, g: torch.Tensor, state: dict, group: dict, decoupled_default: bool
) -> torch.Tensor:
    """The Adam/AdamW step per unit LR, float64 (torch's formula with bias correction)."""
    theta = p.detach().double()
    if group.get("maximize", False):
        g = -g
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    eps = _scalar(group["eps"])
    wd = _scalar(group.get("weight_decay", 0.0))
    decoupled = bool(group.get("decoupled_weight_decay", decoupled_default))
    if wd != 0 and not decoupled:
        g = g + wd * theta
    t = (_scalar(state["step"]) if "step" in state else 0.0) + 1.0
    zero = torch.zeros_like(g)
    m = state["exp_avg"].detach().double() if "exp_avg" in state else zero
    m = beta1 * m + (1.0 - beta1) * g
    d = -(m / (1.0 - beta1**t)) / _adam_denominator(g, state, beta2, eps, t, group)
    if wd != 0 and decoupled:
        d = d - wd * theta
    return d


def _adam_denominator(
    g: torch.Tensor, state: dict, beta2: float, eps: float, t: float, group: dict
) -> torch.Tensor:
    """√v̂_t + ε with v_t = β₂ v_{t−1} + (1 − β₂) g² (amsgrad: the running maximum)."""
    zero = torch.zeros_like(g)
    v = state["exp_avg_sq"].detach().double() if "exp_avg_sq" in state else zero
    v = beta2 * v + (1.0 - beta2) * g * g
    if group.get("amsgrad", False):
        vmax = state["max_exp_avg_sq"].detach().double() if "max_exp_avg_sq" in state else zero
        v = torch.maximum(vmax, v)
    return v.sqrt() / math.sqrt(1.0 - beta2**t) + eps


def next_preconditioner(
    optimizer: torch.optim.Optimizer, p: torch.Tensor, g: torch.Tensor, group: dict
) -> torch.Tensor | None:
    """The diagonal P (float64, p's shape) of the step Adam/RMSprop takes next with gradient g.

    torch updates the second moment with the current gradient *before* dividing by it, so the
    step the optimizer takes from this batch is −η m̂/P with P built from v_t, g included (the
    same P as :func:`update_direction`). None for other optimizers.
    """
    g = g.detach().double()
    if group.get("maximize", False):
        g = -g
    state = optimizer.state.get(p, {})
    wd = _scalar(group.get("weight_decay", 0.0))
    if isinstance(optimizer, torch.optim.Adam):
        decoupled = bool(
            group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW))
        )
        if wd != 0 and not decoupled:
            g = g + wd * p.detach().double()
        t = (_scalar(state["step"]) if "step" in state else 0.0) + 1.0
        beta2, eps = _scalar(group["betas"][1]), _scalar(group["eps"])
        return _adam_denominator(g, state, beta2, eps, t, group)
    if isinstance(optimizer, torch.optim.RMSprop):
        if wd != 0:
            g = g + wd * p.detach().double()
        return _rmsprop_denominator(g, state, group)
    return None


def _rmsprop_denominator(g: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
    """√v_t + ε (centered: √(v_t − m_t²) + ε), the current gradient included."""
    alpha, eps = _scalar(group["alpha"]), _scalar(group["eps"])
    zero = torch.zeros_like(g)
    sq = state["square_avg"].detach().double() if "square_avg" in state else zero
    sq = alpha * sq + (1.0 - alpha) * g * g
    if group.get("centered", False):
        ga = state["grad_avg"].detach().double() if "grad_avg" in state else zero
        ga = alpha * ga + (1.0 - alpha) * g
        return (sq - ga * ga).sqrt() + eps
    return sq.sqrt() + eps


def _rmsprop_step(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
    """The RMSprop step per unit LR, float64."""
    theta = p.detach().double()
    if group.get("maximize", False):
        g = -g
    wd = _scalar(group.get("weight_decay", 0.0))
    if wd != 0:
        g = g + wd * theta
    zero = torch.zeros_like(g)
    avg = _rmsprop_denominator(g, state, group)
    mu = _scalar(group.get("momentum", 0.0))
    if mu > 0:
        buf = state["momentum_buffer"].detach().double() if "momentum_buffer" in state else zero
        return -(mu * buf + g / avg)
    return -(g / avg)


_ANALYTIC: dict[type, Callable[..., torch.Tensor]] = {
    torch.optim.SGD: _sgd_step,
    torch.optim.Adam: lambda p, g, s, grp: _adam_step(p, g, s, grp, False),
    torch.optim.AdamW: lambda p, g, s, grp: _adam_step(p, g, s, grp, True),
    torch.optim.RMSprop: _rmsprop_step,
}


def _generic_steps(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lrs: Sequence[float],
) -> list[torch.Tensor]:
    """Step a float64 throwaway copy of ``optimizer`` at group LRs ``lrs`` (non-zero); Δθ/lr."""
    group_of = _group_of(optimizer)
    position = {
        id(p): (i, j)
        for i, group in enumerate(optimizer.param_groups)
        for j, p in enumerate(group["params"])
    }
    with preserved_rng(), torch.no_grad():
        try:
            clone = copy.deepcopy(optimizer)
        except Exception as err:  # noqa: BLE001 (any failure: say what to do)
            raise TypeError(
                f"update direction: cannot copy {type(optimizer).__name__} for the generic "
                f"fallback ({err}); its update direction is not available"
            ) from err
        clone.__dict__.pop("step", None)  # an LR scheduler's wrapper still bound to the original
        for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
            getattr(clone, hooks, {}).clear()
        for group, lr in zip(clone.param_groups, lrs):
            group["lr"] = lr
            for q in group["params"]:
                q.grad = None
                q.data = q.data.double()
        for st in clone.state.values():
            for key, val in list(st.items()):
                if isinstance(val, torch.Tensor) and val.is_floating_point() and val.ndim > 0:
                    st[key] = val.double()
        copies = []
        for p, g in zip(params, grads):
            i, j = position[id(p)]
            q = clone.param_groups[i]["params"][j]
            q.grad = g.detach().double().reshape(q.shape).clone()
            copies.append((q, q.detach().clone()))
        try:
            type(clone).step(clone)
        except TypeError as err:
            raise TypeError(
                f"update direction: {type(optimizer).__name__}.step() needs arguments (a "
                f"closure?), so the step it is about to take is not defined ({err})"
            ) from err
        return [(q - before) / lrs[group_of[id(p)]] for (q, before), p in zip(copies, params)]


@dataclass(frozen=True)
class UpdateDirection:
    """The step an optimizer is about to take, per unit LR: it moves θ by ``lr · direction``.

    Attributes:
        direction: per-parameter tensors (float64), shaped like the parameters.
        lr: η̄, the parameter-count-weighted mean LR of the groups (0 when every LR is 0).
        source: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` (exact formulas) or
            ``"generic"`` (a throwaway copy was stepped).
    """

    direction: list[torch.Tensor]
    lr: float
    source: str


def update_direction(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    direction: Literal["auto", "analytic", "generic"] = "auto",
) -> UpdateDirection:
    """The update ``optimizer`` would apply to ``params`` given gradients ``grads``, per unit LR.

    Reads the optimizer's state and hyper-parameters and changes nothing (the optimizer, its state,
    the parameters, ``.grad`` and the global RNGs are as before). With per-group LRs η_g the step
    is Σ η_g d_g = η̄·d with η̄ the weighted mean LR (see the module docstring).

    Args:
        optimizer: a ``torch.optim.Optimizer``.
        params: the parameters (a parameter the optimizer does not hold does not move: its
            direction is 0; at least one must be held).
        grads: the gradient of each parameter the step would use (same shapes).
        direction: ``"analytic"`` (exact formulas; SGD, Adam, AdamW, RMSprop only),
            ``"generic"`` (step a float64 copy), or ``"auto"`` (analytic when the optimizer's type
            is exactly one of those, else generic).

    Raises:
        ValueError: mismatched lists, no parameter in the optimizer, unknown ``direction``.
        TypeError: ``"analytic"`` for an unsupported optimizer, or a generic copy that fails.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> opt.state[w]["momentum_buffer"] = torch.tensor([1.0, 0.0])
        >>> update_direction(opt, [w], [torch.tensor([0.5, 0.5])]).direction[0].tolist()
        [-1.4, -0.5]
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    params, grads = list(params), list(grads)
    if len(params) != len(grads) or not params:
        raise ValueError(
            f"params and grads must be non-empty lists of equal length, got {len(params)} "
            f"and {len(grads)}"
        )
    for i, (p, g) in enumerate(zip(params, grads)):
        if g.shape != p.shape and g.numel() != p.numel():
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}, parameter {tuple(p.shape)}")
    lr_ref = _reference_lr(optimizer, params)
    group_of = _group_of(optimizer)
    lrs = [_scalar(g["lr"]) for g in optimizer.param_groups]
    held = [i for i, p in enumerate(params) if id(p) in group_of]  # the others do not move
    all_params, all_grads = params, grads
    params, grads = [all_params[i] for i in held], [all_grads[i] for i in held]
    rule = _ANALYTIC.get(type(optimizer))
    complex_params = any(torch.is_complex(p) for p in params)
    if direction == "analytic" and (rule is None or complex_params):
        raise TypeError(
            f"no exact update formula for {type(optimizer).__name__}"
            + (" with complex parameters" if complex_params else "")
            + " (SGD, Adam, AdamW, RMSprop only); use direction='generic' or 'auto'"
        )
    use_generic = direction == "generic" or rule is None or complex_params
    if lr_ref == 0:  # nothing moves: the direction at unit LRs
        scale = [1.0 for _ in lrs]
    else:  # a group with LR 0 does not move
        scale = [lr / lr_ref for lr in lrs]
    if use_generic:
        steps = _generic_steps(optimizer, params, grads, [lr if lr != 0 else 1.0 for lr in lrs])
        source = "generic"
    else:
        steps = []
        for p, g in zip(params, grads):
            group = optimizer.param_groups[group_of[id(p)]]
            state = optimizer.state.get(p, {})
            steps.append(rule(p, g.detach().double().reshape(p.shape), state, group))
        source = type(optimizer).__name__.lower()
    out = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in all_params]
    for i, s, p in zip(held, steps, params):
        out[i] = s.reshape(p.shape) * scale[group_of[id(p)]]
    return UpdateDirection(direction=out, lr=lr_ref, source=source)


# ----------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class UpdateEstimate:
    """The GeN learning rate along the optimizer's update; see :func:`update_lr`.

    Attributes:
        lr: η* = −gᵀd/dᵀHd, an absolute LR (``nan`` when a flag says none is implied).
        method: ``"update"``.
        raw_lr: −gᵀd/dᵀHd regardless of flags (``nan`` when dᵀHd is 0 or not finite), like
            ``LREstimate.raw_lr``: what ``ema_include_flagged`` feeds the EMA.
        lr_multiplier: η*/η̄, the factor on the LR in use (``nan`` when η̄ = 0).
        lr_in_use: η̄, the parameter-count-weighted mean LR of the optimizer's groups.
        loss: mean loss on the batch.
        grad_norm: ‖g‖₂.
        update_norm: ‖d‖₂ (d per unit LR; parameter units per LR unit).
        gTd: gᵀd (< 0 for a descent direction).
        dHd: dᵀHd.
        curvature: dᵀHd/‖d‖², the Rayleigh quotient of H along the update (units 1/LR).
        cosine: cos∠(−g, d), 1 for a plain gradient step.
        source: how d was computed (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``,
            ``"generic"``).
        optimizer: the optimizer's class name.
        num_hvps: Hessian-vector products (1).
        num_gradients: gradients (1).
        seconds: wall-clock time.
        flags: ``zero_update`` (d = 0), ``not_descent`` (gᵀd ≥ 0: the quadratic's minimum is
            behind), ``negative_curvature`` (dᵀHd ≤ 0), ``nonfinite_loss``.
        backend: the HVP back end.
        bn_mode: the BatchNorm mode of the Hessian.
    """

    lr: float
    method: str = "update"
    raw_lr: float = _NAN
    lr_multiplier: float = _NAN
    lr_in_use: float = _NAN
    loss: float = _NAN
    grad_norm: float = _NAN
    update_norm: float = _NAN
    gTd: float = _NAN
    dHd: float = _NAN
    curvature: float = _NAN
    cosine: float = _NAN
    source: str = ""
    optimizer: str = ""
    num_hvps: int = 0
    num_gradients: int = 0
    seconds: float = 0.0
    flags: tuple[str, ...] = ()
    backend: str = ""
    bn_mode: str | None = None

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number."""
        return math.isfinite(self.lr) and self.lr > 0

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python fields, e.g. for JSON records."""
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


def update_lr_from_operator(
    op: HessianOperator,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    direction: Literal["auto", "analytic", "generic"] = "auto",
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
) -> UpdateEstimate:
    """:func:`update_lr` on an existing Hessian operator (one gradient, one HVP).

    Args:
        op: a :class:`~hessian_lr.curvature.HessianOperator` (``gradient()`` and ``@``) whose
            parameters are ``params``, in that order.
        optimizer: the optimizer; parameters it does not hold have d = 0 (they do not move).
        params: the operator's parameter tensors, in its order.
        direction: as in :func:`update_lr`.
        strict: as in :func:`update_lr`.
        on_nonfinite: as in :func:`update_lr`.

    The operator's cached graph is left in place (call ``op.release_graph()`` when done), so
    that other measurements on the same operator reuse it.
    """
    t0 = time.perf_counter()
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
    params = list(params)
    common = dict(optimizer=type(optimizer).__name__, bn_mode=getattr(op, "bn_mode", None))
    try:
        with torch.enable_grad():
            loss, g = op.gradient()
            ud = update_direction(
                optimizer, params, vector_to_params(g, params), direction=direction
            )
            d64 = params_to_vector([x.reshape(-1) for x in ud.direction])
            g64 = g.detach().double()
            gTd, dd, gg = float(g64 @ d64), float(d64 @ d64), float(g64 @ g64)
            dHd, num_hvps = _NAN, 0
            if dd > 0:
                hd = (op @ d64.to(dtype=op.dtype)).double()
                dHd, num_hvps = float(d64 @ hd), 1
    except NonFiniteError:
        if on_nonfinite == "raise":
            raise
        return UpdateEstimate(lr=_NAN, flags=(_NONFINITE_LOSS,), **common)
    flags: list[str] = []
    if not dd > 0:
        flags.append(ZERO_UPDATE)
    else:
        if not gTd < 0:
            flags.append(NOT_DESCENT)
        if not dHd > 0:
            flags.append(_NEGATIVE_CURVATURE)
    if strict and flags:
        raise _curvature_error(
            f"update_lr: no step size is implied along the optimizer's update ({', '.join(flags)}"
            f"; gᵀd = {gTd:.3e}, dᵀHd = {dHd:.3e})"
        )
    raw = -gTd / dHd if dHd != 0 and math.isfinite(dHd) else _NAN
    lr = _NAN if flags else raw
    return UpdateEstimate(
        lr=lr,
        raw_lr=raw,
        lr_multiplier=lr / ud.lr if ud.lr > 0 else _NAN,
        lr_in_use=ud.lr,
        loss=float(loss),
        grad_norm=math.sqrt(gg),
        update_norm=math.sqrt(dd),
        gTd=gTd,
        dHd=dHd,
        curvature=dHd / dd if dd > 0 else _NAN,
        cosine=-gTd / math.sqrt(gg * dd) if gg > 0 and dd > 0 else _NAN,
        source=ud.source,
        num_hvps=num_hvps,
        num_gradients=1,
        seconds=time.perf_counter() - t0,
        flags=tuple(flags),
        backend=str(getattr(op, "backend", "")),
        **common,
    )


def update_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any,
    optimizer: torch.optim.Optimizer,
    *,
    bn_mode: Literal["eval", "train"] = DEFAULT_BN_MODE,
    backend: str = "auto",
    params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    closure: bool = False,
    direction: Literal["auto", "analytic", "generic"] = "auto",
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
) -> UpdateEstimate:
    """The LR that minimises the local quadratic along the update the optimizer is about to take.

    η* = −gᵀd/dᵀHd (GeN; see the module docstring), d the optimizer's next step per unit LR
    computed from its state with g the gradient on ``batch``. One gradient and one HVP; the model,
    the optimizer (state, hyper-parameters) and the global RNGs are left untouched.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or with ``closure=True``
            ``loss_fn(model, batch)``.
        batch: ``(inputs, targets)`` or an iterable of batches.
        optimizer: the optimizer training ``model`` (its state gives d).
        bn_mode: BatchNorm mode of the Hessian (default ``DEFAULT_BN_MODE``); recorded.
        backend: the HVP back end (``HessianOperator``).
        params: restrict to these parameters (tensors or names); only parameters the optimizer
            holds are used in any case (the others do not move).
        closure: ``loss_fn`` takes ``(model, batch)``.
        direction: ``"auto"``, ``"analytic"`` or ``"generic"`` (see :func:`update_direction`).
        strict: raise :class:`~hessian_lr.lr.estimate.CurvatureError` instead of flagging.
        on_nonfinite: ``"raise"`` a ``NonFiniteError`` or ``"flag"`` it.

    Returns:
        An :class:`UpdateEstimate`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # f(w) = mean (w x - y)², H = 2
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)  # d = −g
        >>> x, y = torch.ones(4, 1), torch.ones(4, 1)
        >>> round(update_lr(model, nn.MSELoss(), (x, y), opt).lr, 6)  # = gᵀg/gᵀHg = 1/2
        0.5
    """
    names = optimizer_parameters(model, optimizer, params)
    op = HessianOperator(
        model, loss_fn, batch, params=names, backend=backend, bn_mode=bn_mode, closure=closure
    )
    named = dict(model.named_parameters())
    return update_lr_from_operator(
        op,
        optimizer,
        [named[n] for n in names],
        direction=direction,
        strict=strict,
        on_nonfinite=on_nonfinite,
    )
