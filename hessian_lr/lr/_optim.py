"""Reading an optimizer's parameter groups: which parameters move, and the LR in use.

Shared by :mod:`hessian_lr.lr.update` and :mod:`hessian_lr.lr.stability` (issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["optimizer_parameters"]


def _scalar(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _group_of(optimizer: torch.optim.Optimizer) -> dict[int, int]:
    """id(parameter) -> index of its parameter group."""
    if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "state"):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}


def optimizer_parameters(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    *,
    moving_only: bool = False,
) -> list[str]:
    """Names of the model's trainable parameters that ``optimizer`` updates (model order).

    Args:
        model: the network.
        optimizer: the optimizer; parameters it does not hold are left out (they do not move).
        params: optionally restrict to these parameters (tensors or names).
        moving_only: also leave out parameters whose group has LR 0.

    Raises:
        ValueError: no trainable parameter of the model is in the optimizer (or in ``params``).
    """
    group_of = _group_of(optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        params = list(params)
        wanted = {p if isinstance(p, str) else id(p) for p in params}
        named = [(n, p) for n, p in named if n in wanted or id(p) in wanted]
    names = [n for n, p in named if id(p) in group_of]
    if moving_only:
        lrs = [_scalar(g["lr"]) for g in optimizer.param_groups]
        names = [n for n, p in named if id(p) in group_of and lrs[group_of[id(p)]] != 0]
    if not names:
        raise ValueError(
            "none of the model's trainable parameters is updated by the optimizer"
            + (" with a non-zero LR" if moving_only else "")
            + "; pass the optimizer that trains this model"
        )
    return names


def _reference_lr(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    moving_only: bool = False,
) -> float:
    """Parameter-count-weighted mean LR of the groups holding ``params`` (others are skipped).

    Raises:
        ValueError: no parameter of ``params`` is in the optimizer (with ``moving_only``: at a
            non-zero LR).
    """
    group_of = _group_of(optimizer)
    lrs = [_scalar(g["lr"]) for g in optimizer.param_groups]
    held = [(p, lrs[group_of[id(p)]]) for p in params if id(p) in group_of]
    if moving_only:
        held = [(p, lr) for p, lr in held if lr != 0]
    if not held:
        raise ValueError(
            "none of the parameters is updated by the optimizer"
            + (" at a non-zero LR" if moving_only else "")
            + "; pass the optimizer that trains them"
        )
    used = [lr for _, lr in held]
    if len(set(used)) == 1:  # one LR: exactly that (no rounding from the weighted mean)
        return used[0]
    total = sum(p.numel() for p, _ in held)
    return sum(p.numel() * lr for p, lr in held) / total
