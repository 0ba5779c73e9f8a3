"""The learning-rate range test (Smith 2017, CLR §3.3; Smith & Topin 2017, Super-Convergence §3).

One short training run with the learning rate rising linearly (or exponentially) from a small to
a large value, recording the training loss (raw and smoothed) and, when held-out data is given,
the held-out loss and accuracy against the LR. The run stops when the loss diverges, and the
model, the optimizer, the BatchNorm buffers, the module modes, a ``GradScaler`` and every RNG are
restored bit-identically afterwards (also when an exception interrupts the run).

This module holds the ladder and the loop; the pieces live beside it: ``suggest`` (the
suggestion rules, :func:`suggest_lrs`), ``crosscheck`` (λ_max and gᵀg/gᵀHg before the run),
``range_result`` (the result types), ``range_plot`` (the figure), ``evaluation`` (held-out loss
and accuracy), ``_state`` (snapshot and restore), ``_batches`` (cycling the data).

Conventions (those of fastai and torch-lr-finder, so the curves are comparable):

* **Ladder.** Update ``i`` (0-based) of ``n = num_steps`` uses
  ``lr_i = start + (i / (n − 1)) · (end − start)`` (``"linear"``) or
  ``lr_i = start · (end / start) ** (i / (n − 1))`` (``"exp"``): both end points are included.
  This is torch-lr-finder's ``LinearLR`` / ``ExponentialLR`` exactly (same floating-point
  expression), so the same run gives bit-identical losses.
* **Pairing.** Record ``i`` pairs ``lr_i`` with the loss of the batch(es) whose gradient update
  ``i`` applies with ``lr_i`` (the loss at the parameters *before* that update). Held-out metrics
  evaluated after update ``i`` are paired with ``lr_i`` too.
* **Several parameter groups** are scaled proportionally: group ``j`` gets
  ``lr_i · lr_j⁰ / lr_0⁰`` (its initial ratio to group 0 is kept); the recorded LR is group 0's.
  With equal initial LRs (the usual case) every group gets the same LR.
* **Smoothing** is the bias-corrected exponential moving average of the raw loss
  ``a_i = β a_{i−1} + (1 − β) x_i``, ``s_i = a_i / (1 − β^{i+1})`` (β = ``smoothing``; 0 = raw).
* **Divergence**: the run stops at the first record whose loss is non-finite, or whose smoothed
  loss exceeds ``diverge_factor`` × the best (lowest) smoothed loss so far; for a best loss ≤ 0
  the test reads ``s − best > (diverge_factor − 1)·|best|``, the same rule for positive losses.
  The update of the stopping record is not applied.
* **Mixed precision** (as torch-lr-finder's and fastai's finders): ``amp_dtype`` runs forward
  passes under ``torch.autocast``; a ``grad_scaler`` (``torch.amp.GradScaler``) scales the loss,
  skips steps with non-finite scaled gradients (recorded in ``skipped_updates``, not a stop)
  and is restored afterwards; the gradient norm is recorded unscaled. A model whose parameters
  are all float16 or bfloat16 gets its floating-point batch tensors cast to that dtype.

Suggestions (``RangeTestSuggestions``; every rule is documented on :func:`suggest_lrs`):
``max_lr`` at the held-out accuracy peak (else the held-out loss minimum, else the smoothed
training-loss minimum), ``base_lr`` = ``max_lr``/3 (CLR) and ``max_lr``/4 (SC), the steepest
descent of the smoothed loss in log-LR (fastai, torch-lr-finder), flags when the curve is flat,
did not diverge, or the rules disagree by more than 10×, and the width of the accuracy plateau
(a wide high plateau is the sign of super-convergence, SC §3).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..curvature.hessian import move_to_device
from ._batches import Cycle, cast_floating, low_precision_dtype, split_batch, val_batches
from ._state import _Snapshot
from .crosscheck import curvature_check as run_curvature_check
from .crosscheck import resolve_bn_mode
from .evaluation import autocast_context, evaluate
from .range_config import RangeTestConfig, check_ladder
from .range_result import (
    CurvatureCheck,
    RangeTestResult,
    RangeTestSuggestion,
    RangeTestSuggestions,
)
from .suggest import suggest_lrs

__all__ = [
    "CurvatureCheck",
    "RangeTestConfig",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "lr_range_test",
    "lr_ramp",
    "suggest_lrs",
]


# ----------------------------------------------------------------------------- the ladder
def lr_ramp(
    start_lr: float, end_lr: float, num_steps: int, *, ramp: Literal["linear", "exp"] = "linear"
) -> np.ndarray:
    """The range test's LR ladder: (num_steps,) float64, both end points included.

    ``lr_i = start + (i/(n−1))·(end − start)`` (linear) or ``start·(end/start)^(i/(n−1))``
    (exp), the expressions of torch-lr-finder's schedulers.

    Example:
        >>> lr_ramp(0.0, 1.0, 5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    check_ladder(start_lr, end_lr, num_steps, ramp)
    n = num_steps - 1
    if ramp == "linear":
        return np.array([start_lr + (i / n) * (end_lr - start_lr) for i in range(num_steps)])
    return np.array([start_lr * (end_lr / start_lr) ** (i / n) for i in range(num_steps)])


_SETTINGS = frozenset(f.name for f in dataclasses.fields(RangeTestConfig))


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


# ----------------------------------------------------------------------------- the test
def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: Any,
    *,
    loss_fn: Callable[..., torch.Tensor],
    config: RangeTestConfig | None = None,
    val_data: Any = None,
    device: torch.device | str | None = None,
    closure: bool = False,
    generator: torch.Generator | None = None,
    grad_scaler: Any = None,
    **settings: Any,
) -> RangeTestResult:
    """Run the LR range test (CLR §3.3, SC §3) and restore everything afterwards.

    Conventions (ladder, pairing of LR and loss, parameter groups, smoothing, divergence, mixed
    precision) are in the module docstring; the suggestion rules in :func:`suggest_lrs`.

    Args:
        model: the network (with at least one parameter); trained in train mode during the test.
        optimizer: any ``torch.optim.Optimizer`` over (some of) the model's parameters; its LRs
            are overwritten by the ladder (groups keep their initial ratios to group 0).
        train_data: a DataLoader, an iterable of batches, or one batch (used at every update);
            re-iterated when it runs out before ``num_steps`` updates (a one-shot iterator is
            replayed from the batches it gave, which are kept in memory for that).
        loss_fn: ``loss_fn(outputs, targets)`` → scalar mean loss, or with ``closure=True``
            ``loss_fn(model, batch)`` → scalar (for dict batches or models with internal losses).
        config: a :class:`RangeTestConfig`; keywords in ``settings`` override its fields.
        val_data: held-out batches (a DataLoader, a list, or one batch), evaluated after every
            ``val_every``-th update by :func:`~hessian_lr.schedules.evaluation.evaluate` (mean
            loss; top-1 accuracy for (B, C) outputs and integer targets, else None).
        device: where batches are moved; default the device of the model's parameters (the
            model itself is never moved: move it first).
        closure: see ``loss_fn``.
        generator: the cross-check's Lanczos start vector source; default a private generator
            seeded 0 (the global RNG is never drawn from).
        grad_scaler: a ``torch.amp.GradScaler`` for float16 autocast (restored afterwards).
        **settings: any :class:`RangeTestConfig` field by name: ``end_lr`` and ``num_steps``
            (required unless in ``config``), ``start_lr=1e-5``, ``ramp="linear"``,
            ``val_every=1``, ``accumulation_steps=1``, ``smoothing=0.98``,
            ``diverge_factor=4.0``, ``restore=True``, ``curvature_check=True``,
            ``bn_mode=None``, ``amp_dtype=None``, ``progress=False``.

    Returns:
        A :class:`RangeTestResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> res = lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(),
        ...                     start_lr=1e-3, end_lr=1.0, num_steps=20, ramp="exp")
        >>> len(res.lrs), res.lrs[0], round(res.lrs[-1], 12)
        (20, 0.001, 1.0)
    """
    t_start = time.perf_counter()
    cfg = _settings(config, settings)
    ctx, ratios = _prepare(model, optimizer, loss_fn, closure, device, grad_scaler, val_data, cfg)
    ladder = lr_ramp(cfg.start_lr, cfg.end_lr, cfg.num_steps, ramp=cfg.ramp)  # type: ignore[arg-type]
    # Snapshot first: creating a DataLoader iterator draws from the RNGs.
    snapshot = (
        _Snapshot(model, optimizer, [train_data, val_data], grad_scaler) if cfg.restore else None
    )
    rec = _Records()
    curvature: CurvatureCheck | None = None
    try:
        stream = Cycle(train_data)
        if cfg.curvature_check:
            first = [move_to_device(b, ctx.device) for b in stream.peek(cfg.accumulation_steps)]
            first = [cast_floating(b, ctx.input_dtype) for b in first]
            curvature = run_curvature_check(
                model, optimizer, loss_fn, first, closure=closure, generator=generator,
                bn_mode=cfg.bn_mode,
            )  # fmt: skip
        _run_ladder(ctx, cfg, ladder, ratios, stream, rec)
    finally:
        if snapshot is not None:
            snapshot.restore()
    return _result(ctx, cfg, rec, ratios, curvature, val_data, time.perf_counter() - t_start)


def _settings(config: RangeTestConfig | None, settings: dict[str, Any]) -> RangeTestConfig:
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise TypeError(
            f"lr_range_test() got unexpected keyword argument(s) {unknown}; settings are "
            f"{sorted(_SETTINGS)}"
        )
    if config is None:
        return RangeTestConfig(**settings)
    if not isinstance(config, RangeTestConfig):
        raise TypeError(f"config must be a RangeTestConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **settings) if settings else config


def _prepare(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    closure: bool,
    device: torch.device | str | None,
    grad_scaler: Any,
    val_data: Any,
    cfg: RangeTestConfig,
) -> tuple[_Context, list[float]]:
    """Check the inputs; the loop's context and the groups' LR ratios to group 0."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    params = list(model.parameters())
    if not any(p.requires_grad for p in params):
        raise ValueError(
            "the model has no trainable parameter: a range test needs something to train "
            f"({type(model).__name__} has {len(params)} parameters, none with requires_grad)"
        )
    if grad_scaler is not None and not all(
        hasattr(grad_scaler, a) for a in ("scale", "step", "update", "state_dict")
    ):
        raise TypeError(f"grad_scaler must be a torch.amp.GradScaler, got {type(grad_scaler)}")
    model_device = params[0].device
    device = model_device if device is None else torch.device(device)
    wrong = [p.device for p in params if p.device != device]
    if wrong:
        raise ValueError(
            f"the model's parameters live on {wrong[0]}, not on device={device}; move the model "
            "(and create the optimizer) first: the range test never moves the model"
        )
    vb = val_batches(val_data)
    if vb is not None and isinstance(vb, list) and not vb:
        raise ValueError("val_data is empty: it gave no batch")
    input_dtype = None if cfg.amp_dtype is not None else low_precision_dtype(model)
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    ctx = _Context(model, optimizer, loss_fn, closure, device, grad_scaler, input_dtype,
                   opt_params, vb)  # fmt: skip
    return ctx, _group_ratios(optimizer)


def _group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    init_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    if init_lrs[0] > 0:
        return [lr / init_lrs[0] for lr in init_lrs]
    if all(lr == init_lrs[0] for lr in init_lrs):
        return [1.0] * len(init_lrs)
    raise ValueError(
        f"parameter group 0 has LR {init_lrs[0]} but others differ ({init_lrs}): the range "
        "test scales groups by their ratio to group 0, so give group 0 a positive LR"
    )


def _run_ladder(
    ctx: _Context,
    cfg: RangeTestConfig,
    ladder: np.ndarray,
    ratios: Sequence[float],
    stream: Cycle,
    rec: _Records,
) -> None:
    """The training loop: one record per update, until the end or divergence."""
    avg, best = 0.0, math.inf
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.num_steps, desc="LR range test")
    try:
        for i, lr in enumerate(float(x) for x in ladder):
            for group, r in zip(ctx.optimizer.param_groups, ratios):
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr * r)
                else:
                    group["lr"] = lr * r
            raw, gnorm = _forward_backward(ctx, cfg, stream)
            avg = cfg.smoothing * avg + (1.0 - cfg.smoothing) * raw
            sm = avg / (1.0 - cfg.smoothing ** (i + 1))
            rec.lrs.append(lr)
            rec.losses.append(raw)
            rec.smoothed.append(sm)
            rec.grad_norms.append(gnorm)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.3g}", loss=f"{sm:.4g}")
            rec.stop_reason = _stop_reason(i, lr, raw, gnorm, sm, best, cfg, ctx.scaler)
            if rec.stop_reason is not None:
                break
            best = min(best, sm)
            _optimizer_step(ctx, i, gnorm, rec)
            if ctx.val is not None and (i + 1) % cfg.val_every == 0:
                ev = evaluate(
                    ctx.model, ctx.val, ctx.loss_fn, closure=ctx.closure, device=ctx.device,
                    amp_dtype=cfg.amp_dtype, input_dtype=ctx.input_dtype,
                )  # fmt: skip
                rec.val_steps.append(i)
                rec.val_lrs.append(lr)
                rec.val_losses.append(ev.loss)
                rec.val_accs.append(ev.accuracy)
    finally:
        if bar is not None:
            bar.close()


def _forward_backward(ctx: _Context, cfg: RangeTestConfig, stream: Cycle) -> tuple[float, float]:
    """Accumulated gradient of one update; (mean loss, unscaled gradient norm)."""
    ctx.model.train()
    ctx.optimizer.zero_grad()
    total: torch.Tensor | None = None
    k = cfg.accumulation_steps
    with torch.enable_grad():
        for _ in range(k):
            batch = cast_floating(move_to_device(next(stream), ctx.device), ctx.input_dtype)
            with autocast_context(ctx.device, cfg.amp_dtype):
                if ctx.closure:
                    loss = ctx.loss_fn(ctx.model, batch)
                else:
                    inputs, targets = split_batch(batch)
                    loss = ctx.loss_fn(ctx.model(inputs), targets)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor (the mean loss)")
            loss = loss / k
            (ctx.scaler.scale(loss) if ctx.scaler is not None else loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
    if ctx.scaler is not None and ctx.scaler.is_enabled():  # float64: scaled norms overflow
        gnorm = _grad_norm(ctx.opt_params, torch.float64) / float(ctx.scaler.get_scale())
    else:
        gnorm = _grad_norm(ctx.opt_params)
    return float(total), gnorm  # type: ignore[arg-type]


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


def _result(
    ctx: _Context,
    cfg: RangeTestConfig,
    rec: _Records,
    ratios: list[float],
    curvature: CurvatureCheck | None,
    val_data: Any,
    seconds: float,
) -> RangeTestResult:
    suggestions = suggest_lrs(
        rec.lrs,
        rec.smoothed,
        val_lrs=rec.val_lrs,
        val_steps=rec.val_steps,
        val_losses=rec.val_losses,
        val_accuracies=rec.val_accs,
        stopped_early=rec.stop_reason is not None,
    )
    config = {
        **cfg.record(),
        "val_every": cfg.val_every if val_data is not None else None,
        "group_lr_ratios": ratios,
        "optimizer": type(ctx.optimizer).__name__,
        "restored": cfg.restore,
    }
    if cfg.curvature_check:
        config["bn_mode"] = resolve_bn_mode(cfg.bn_mode)
    if cfg.amp_dtype is not None or ctx.scaler is not None:
        config["amp_dtype"] = None if cfg.amp_dtype is None else str(cfg.amp_dtype)
        config["grad_scaler"] = ctx.scaler is not None
    if ctx.input_dtype is not None:
        config["input_dtype"] = str(ctx.input_dtype)
    return RangeTestResult(
        lrs=tuple(rec.lrs),
        losses=tuple(rec.losses),
        smoothed_losses=tuple(rec.smoothed),
        grad_norms=tuple(rec.grad_norms),
        val_steps=tuple(rec.val_steps),
        val_lrs=tuple(rec.val_lrs),
        val_losses=tuple(rec.val_losses),
        val_accuracies=tuple(rec.val_accs),
        stopped_early=rec.stop_reason is not None,
        stop_reason=rec.stop_reason,
        num_updates=rec.num_updates,
        num_batches=len(rec.lrs) * cfg.accumulation_steps,
        suggestions=suggestions,
        curvature=curvature,
        config=config,
        seconds=seconds,
        skipped_updates=tuple(rec.skipped),
    )
