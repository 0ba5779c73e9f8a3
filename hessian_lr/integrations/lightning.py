"""PyTorch Lightning callback: hessian_lr observers every k optimizer steps, logged with ``log``.

Re-estimating the LR *during* training (Lightning's own ``Tuner.lr_find`` runs once, before it)::

    from hessian_lr import LREstimator
    from hessian_lr.integrations.lightning import HessianLRCallback

    cb = HessianLRCallback([
        lambda model, opt: LREstimator(model, methods=("secant", "quadratic"), every=10,
                                       loss_fn=nn.CrossEntropyLoss(), optimizer=opt),
    ])
    Trainer(callbacks=[cb], ...).fit(module)

Observers are given as instances or as factories ``f(model, optimizer)`` (resolved in
``on_train_start``, once Lightning has built the optimizer). After every optimizer step (not every
micro-batch under gradient accumulation) the callback builds a ``StepContext`` with the batch just
trained on and runs the due observers. Under gradient accumulation (``accumulate_grad_batches``
> 1) that batch is the list of every micro-batch of the step, a sequence of batches that
``HessianOperator`` averages over (the step's gradient came from all of them, not only the last),
and the loss is their mean; their records are flattened (``estimates/quadratic/lr``)
and logged through ``LightningModule.log`` with ``on_step=True``, so every Lightning logger
(TensorBoard, CSV, W&B, ...) receives them; the raw records are kept in ``callback.history``.
Lightning's ``log`` repeats a callback's last value at later steps until it is logged again, so
the observed step is logged too (``hessian_lr/step``): keep one row per value of it.
The observers' state (EMA, iterates, warm starts) is saved in Lightning checkpoints through
``state_dict`` / ``load_state_dict`` and restored on ``fit(ckpt_path=...)``.

DDP strategy: every rank runs the observers on its own batch (an HVP-based estimate is then the
local batch's; the secant sees the replicated weights, identical on all ranks) and only rank 0
logs (``rank_zero_only=True``). A range-test callback is not provided: Lightning's tuner already
runs the test; :func:`hessian_lr.lr_range_test` can be called on the module and its optimizer
before ``fit`` where a bit-identical in-memory restore or the curvature cross-check is wanted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from ..observe import Observer, StepContext, run_observers
from ._common import (
    ObserverSpec,
    build_observers,
    current_lr,
    flatten_metrics,
    load_state_into,
    state_of,
)

__all__ = ["HessianLRCallback"]


def _loss_of(outputs: Any) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    return None if loss is None else float(torch.as_tensor(loss).detach())


class HessianLRCallback(pl.Callback):
    """Run hessian_lr observers inside ``Trainer.fit`` and log their records.

    Args:
        observers: ``Observer`` instances or factories ``f(model, optimizer) -> Observer``.
        log_prefix: prefix of the logged metric names (``"hessian_lr/estimates/secant/lr"``).
        prog_bar: show the logged values in the progress bar.
        keep_history: keep every record in ``self.history`` (a list of dicts).
    """

    def __init__(
        self,
        observers: Sequence[ObserverSpec],
        *,
        log_prefix: str = "hessian_lr/",
        prog_bar: bool = False,
        keep_history: bool = True,
    ) -> None:
        super().__init__()
        if not observers:
            raise ValueError("HessianLRCallback needs at least one observer (or factory)")
        self.specs = list(observers)
        self.log_prefix = log_prefix
        self.prog_bar = prog_bar
        self.keep_history = keep_history
        self.observers: list[Observer] | None = None
        self.history: list[dict[str, Any]] = []
        self._pending_state: Mapping[str, Any] | None = None
        self._last_step = -1
        self._micro: list[
            tuple[Any, float | None]
        ] = []  # micro-batches since the last optimizer step

    @property
    def state_key(self) -> str:  # noqa: D102
        return "HessianLRCallback"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the observers (the optimizer exists now) and restore checkpointed state."""
        if self.observers is None:
            optimizer = trainer.optimizers[0] if trainer.optimizers else None
            self.observers = build_observers(self.specs, pl_module, optimizer)
        if self._pending_state is not None:
            load_state_into(self.observers, self._pending_state["observers"])
            self._last_step = int(self._pending_state.get("last_step", -1))
            self._pending_state = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """After an optimizer step: run the due observers on the batch just trained on."""
        step = trainer.global_step - 1  # global_step counts optimizer steps taken
        if self.observers is None:
            return
        self._micro.append((batch, _loss_of(outputs)))  # a float: no graph is kept
        if step < 0 or step == self._last_step:
            return  # no optimizer step since the last call (gradient accumulation)
        self._last_step = step
        micro, self._micro = self._micro, []
        if len(micro) > 1:  # the step's gradient came from every micro-batch: measure them all
            batch = [b for b, _ in micro]
            losses = [loss for _, loss in micro]
            outputs = None if None in losses else {"loss": sum(losses) / len(losses)}
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        ctx = StepContext(
            step=step,
            model=pl_module,
            optimizer=optimizer,
            batch=batch,
            loss=None if loss is None else float(torch.as_tensor(loss).detach()),
            lr=current_lr(optimizer),
            total_steps=total,
        )
        record = run_observers(self.observers, ctx, last=total is not None and step + 1 == total)
        if not record:
            return
        if self.keep_history:
            self.history.append({"step": step, **record})
        metrics = flatten_metrics({"step": step, **record}, self.log_prefix)
        if metrics:
            pl_module.log_dict(
                metrics,
                on_step=True,
                on_epoch=False,
                prog_bar=self.prog_bar,
                rank_zero_only=True,
                batch_size=1,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the observers' files."""
        for obs in self.observers or ():
            obs.close()

    def state_dict(self) -> dict[str, Any]:
        """The observers' states (saved by Lightning in every checkpoint)."""
        if self.observers is None:
            return dict(self._pending_state or {})
        return {"observers": state_of(self.observers), "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the state until ``on_train_start`` has built the observers, then restore it."""
        if not state_dict:
            return
        if self.observers is not None:
            load_state_into(self.observers, state_dict["observers"])
            self._last_step = int(state_dict.get("last_step", -1))
        else:
            self._pending_state = state_dict
