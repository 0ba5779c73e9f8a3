"""One update of the range test: forward/backward (local or over a group), step, evaluation.

The loop in :mod:`.range_test` calls these once per rung of the ladder; :mod:`._group` holds
the collectives used when the test runs over a process group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..curvature._batches import move_to_device
from ._batches import Cycle, batch_size, cast_floating, split_batch
from ._group import RangeGroup, local_is_empty
from .config import RangeTestConfig
from .evaluation import autocast_context, evaluate

__all__: list[str] = []


@dataclass
class _Records:
    """Per-update and held-out records, filled by the loop."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_lrs: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_accs: list[float | None] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    stop_reason: str | None = None
    num_updates: int = 0


@dataclass
class _Context:
    """What the loop works on (fixed during the run)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., torch.Tensor]
    closure: bool
    device: torch.device
    scaler: Any
    input_dtype: torch.dtype | None
    opt_params: list[torch.Tensor]
    val: Any
    group: RangeGroup


def _evaluate(ctx: _Context, cfg: RangeTestConfig) -> tuple[float, float | None]:
    """Held-out (loss, accuracy): local, or all-reduced over the ranks of a group."""
    model = ctx.group.inner if ctx.group.active else ctx.model  # no DDP collectives
    ev, err = None, None
    try:
        if not (ctx.group.active and local_is_empty(ctx.val)):
            ev = evaluate(
                model, ctx.val, ctx.loss_fn, closure=ctx.closure, device=ctx.device,
                amp_dtype=cfg.amp_dtype, input_dtype=ctx.input_dtype,
            )  # fmt: skip
    except Exception as e:
        if not ctx.group.active:
            raise
        err = e
    return ctx.group.evaluation(ev, err or ctx.group.pending)


def _micro_loss(ctx: _Context, cfg: RangeTestConfig, stream: Cycle) -> tuple[torch.Tensor, int]:
    """Forward pass of the next micro-batch: (scalar loss, its sample count)."""
    batch = cast_floating(move_to_device(next(stream), ctx.device), ctx.input_dtype)
    with autocast_context(ctx.device, cfg.amp_dtype):
        if ctx.closure:
            n = batch_size(batch)
            loss = ctx.loss_fn(ctx.model, batch)
        else:
            inputs, targets = split_batch(batch)
            n = batch_size((targets,))
            loss = ctx.loss_fn(ctx.model(inputs), targets)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor (the mean loss)")
    if ctx.group.active and n == 0:
        raise ValueError("an empty micro-batch: every rank needs samples in each update")
    return loss, n


def _forward_backward(ctx: _Context, cfg: RangeTestConfig, stream: Cycle) -> tuple[float, float]:
    """Accumulated gradient of one update; (mean loss, unscaled gradient norm).

    Under a process group the loss is the global sample-weighted mean and the gradient that of
    the concatenated batch (:mod:`._group`).
    """
    ctx.model.train()
    ctx.optimizer.zero_grad()
    total: Any = 0.0
    k = cfg.accumulation_steps
    with torch.enable_grad():
        for _ in range(k):
            if not ctx.group.active:
                loss = _micro_loss(ctx, cfg, stream)[0] / k
                total = total + loss.detach()  # the model's dtype, as torch-lr-finder
            else:
                loss, n, err = None, 0, None
                try:
                    loss, n = _micro_loss(ctx, cfg, stream)
                except Exception as e:
                    err = e
                local = 0.0 if loss is None else float(loss.detach())
                factor, mean = ctx.group.weigh(n, local, err)
                loss = loss * factor / k  # type: ignore[operator]
                total += mean / k
            (ctx.scaler.scale(loss) if ctx.scaler is not None else loss).backward()
    ctx.group.sum_grads(ctx.opt_params)
    if ctx.scaler is not None and ctx.scaler.is_enabled():  # float64: scaled norms overflow
        gnorm = _grad_norm(ctx.opt_params, torch.float64) / float(ctx.scaler.get_scale())
    else:
        gnorm = _grad_norm(ctx.opt_params)
    return float(total), gnorm


def _stop_reason(
    i: int, lr: float, raw: float, gnorm: float, sm: float, best: float, cfg: RangeTestConfig,
    scaler: Any,
) -> str | None:  # fmt: skip
    if not math.isfinite(raw):
        return f"non-finite loss ({raw}) at update {i} (lr={lr:.6g})"
    if not math.isfinite(gnorm) and scaler is None:
        return f"non-finite gradient norm at update {i} (lr={lr:.6g})"
    if sm - best > (cfg.diverge_factor - 1.0) * abs(best):
        return (
            f"diverged at update {i} (lr={lr:.6g}): smoothed loss {sm:.6g} > "
            f"{cfg.diverge_factor:g} × best {best:.6g}"
        )
    return None


def _optimizer_step(ctx: _Context, i: int, gnorm: float, rec: _Records) -> None:
    if ctx.scaler is None:
        ctx.optimizer.step()
        rec.num_updates += 1
        return
    scale = float(ctx.scaler.get_scale())
    ctx.scaler.step(ctx.optimizer)  # skipped by the scaler when the gradients are not finite
    ctx.scaler.update()
    if ctx.scaler.is_enabled() and float(ctx.scaler.get_scale()) < scale:  # it backed off
        rec.skipped.append(i)
    else:
        rec.num_updates += 1


def _grad_norm(params: Sequence[torch.Tensor], dtype: torch.dtype | None = None) -> float:
    norms = [
        torch.linalg.vector_norm(p.grad.detach(), dtype=dtype).double()
        for p in params
        if p.grad is not None
    ]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))
