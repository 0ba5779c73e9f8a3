"""The learning-rate range test (Smith 2017, CLR §3.3; Smith & Topin 2017, Super-Convergence §3).

One short training run with the learning rate rising linearly (or exponentially) from a small to
a large value, recording the training loss (raw and smoothed) and, when held-out data is given,
the held-out loss and accuracy against the LR. The run stops when the loss diverges, and the
model, the optimizer, the BatchNorm buffers, the module modes, a ``GradScaler`` and every RNG are
restored bit-identically afterwards (also when an exception interrupts the run).

This module holds the ladder and the loop; the pieces live beside it: ``suggest`` (the
suggestion rules, :func:`suggest_lrs`), ``crosscheck`` (λ_max and gᵀg/gᵀHg before the run),
``result`` (the result types), ``plot`` (the figure), ``config`` (the knobs), ``evaluation``
(held-out loss and accuracy), ``_state`` (snapshot and restore), ``_batches`` (cycling the data).

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
* **Distributed** (``torch.distributed``; :mod:`._group`): under an initialized process group
  (auto-detected, or ``process_group=``) each rank trains on its shard of every update's
  batches. The ladder is the same on every rank; the recorded loss is the sample-weighted mean
  over the ranks (one all-reduce per micro-batch, before backward), so smoothing, the stop
  decision and the suggestions are identical everywhere; the gradients are those of the
  concatenated batch (a ``DistributedDataParallel`` model syncs them, a plain replicated model
  gets them summed; train-mode BatchNorm normalises each shard by its own statistics, as DDP
  training does without ``SyncBatchNorm``); held-out metrics are all-reduced. Every rank
  restores its own state (the same on every rank when the replicas started equal), and a rank
  that raises makes every rank raise (see :mod:`hessian_lr.curvature.distributed`).
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
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._device import canonical_device
from ..curvature._batches import move_to_device
from ..curvature.distributed import unwrap_ddp
from ._batches import (
    Cycle,
    cast_floating,
    low_precision_dtype,
    val_batches,
)
from ._group import RangeGroup
from ._state import _Snapshot
from ._update import (
    _Context,
    _evaluate,
    _forward_backward,
    _optimizer_step,
    _Records,
    _stop_reason,
)
from .config import RangeTestConfig, check_ladder
from .crosscheck import curvature_check as run_curvature_check
from .crosscheck import resolve_bn_mode
from .result import (
    CurvatureCheck,
    RangeTestResult,
)
from .suggest import suggest_lrs

__all__ = ["lr_range_test", "lr_ramp"]


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
    process_group: Any = None,
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
            ``val_every``-th update by :func:`~hessian_lr.range_test.evaluation.evaluate` (mean
            loss; top-1 accuracy for (B, C) outputs and integer targets, else None).
        device: where batches are moved; default the device of the model's parameters (the
            model itself is never moved: move it first).
        closure: see ``loss_fn``.
        generator: the cross-check's Lanczos start vector source; default a private generator
            seeded 0 (the global RNG is never drawn from).
        grad_scaler: a ``torch.amp.GradScaler`` for float16 autocast (restored afterwards).
        process_group: the ``torch.distributed`` group the ranks share: None auto-detects an
            initialized default group, ``False`` runs each rank on its own. Under a group,
            ``train_data``/``val_data`` are this rank's shards (of any size; a rank may hold
            no held-out batch) and ``model`` a ``DistributedDataParallel`` wrapper or a plain
            replica; see "Distributed" in the module docstring.
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
    group = RangeGroup(model, process_group)
    try:
        ctx, ratios = _prepare(
            model, optimizer, loss_fn, closure, device, grad_scaler, val_data, cfg, group
        )
    except Exception as err:
        group.check(err)  # every rank raises when one rank's inputs are bad
        raise
    group.check()
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
                unwrap_ddp(model), optimizer, loss_fn, first, closure=closure, generator=generator,
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
    group: RangeGroup,
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
    device = model_device if device is None else canonical_device(device)
    wrong = [p.device for p in params if p.device != device]
    if wrong:
        raise ValueError(
            f"the model's parameters live on {wrong[0]}, not on device={device}; move the model "
            "(and create the optimizer) first: the range test never moves the model"
        )
    vb = val_batches(val_data)
    if vb is not None and isinstance(vb, list) and not vb and not group.active:
        raise ValueError("val_data is empty: it gave no batch")
    input_dtype = None if cfg.amp_dtype is not None else low_precision_dtype(model)
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    ctx = _Context(model, optimizer, loss_fn, closure, device, grad_scaler, input_dtype,
                   opt_params, vb, group)  # fmt: skip
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
    if cfg.progress and ctx.group.is_main:  # one bar, from rank 0
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
            try:
                _optimizer_step(ctx, i, gnorm, rec)
            except Exception as err:
                if not ctx.group.active:
                    raise
                ctx.group.pending = err  # announced at the next collective
            if ctx.val is not None and (i + 1) % cfg.val_every == 0:
                loss, acc = _evaluate(ctx, cfg)
                rec.val_steps.append(i)
                rec.val_lrs.append(lr)
                rec.val_losses.append(loss)
                rec.val_accs.append(acc)
        ctx.group.check()
    finally:
        if bar is not None:
            bar.close()


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
    if ctx.group.active:
        config["world_size"] = ctx.group.world_size
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
