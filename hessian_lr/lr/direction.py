"""The step an optimizer is about to take, per unit LR, read from its state without stepping.

Momentum SGD, Nesterov, Adam, AdamW and RMSprop step along a direction d built from their state
(momentum buffers, moment estimates). :func:`update_direction` computes d **per unit learning
rate, signed as a step** (the optimizer is about to move θ by η·d; plain SGD has d = −g), with
the same formulas as ``torch.optim``'s single-tensor code paths for ``SGD`` (momentum,
dampening, Nesterov, coupled weight decay, maximize), ``Adam`` / ``AdamW`` (bias correction,
coupled or decoupled weight decay, amsgrad) and ``RMSprop`` (centered, momentum, weight decay);
any other optimizer (and subclasses, which may change ``step``) goes through a generic fallback
that steps a throwaway float64 copy of the optimizer and its parameters and reads the
difference, with every global RNG preserved. Parameter groups with different LRs: the step is
Δ = Σ_g η_g d_g and d = Δ/η̄ with η̄ the parameter-count-weighted mean LR of the groups.
:mod:`hessian_lr.lr.update` turns d into the GeN learning rate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..rng import preserved_rng
from ._optim import _group_of, _reference_lr, _scalar

__all__ = ["UpdateDirection", "update_direction"]

_DIRECTIONS = ("auto", "analytic", "generic")


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
