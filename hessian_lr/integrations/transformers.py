"""Hugging Face ``Trainer`` callback: the secant estimate and its noise null, and HVP estimates.

``TrainerCallback`` hooks see the model and the optimizer but not the batch, so the callback
offers what needs no batch -- the Super-Convergence secant (Eq. 8) from the weight trajectory,
with its ratio to the momentum-noise null -- and, on a held batch you pass, the HVP-based
estimates (``quadratic``, ``secant_hvp``, ``sharpness``, ...)::

    from hessian_lr.integrations.transformers import HessianLRTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds)
    HessianLRTrainerCallback(every=10, held_batch=batch).attach(trainer)
    trainer.train()

``attach`` adds the callback and gives it the trainer, so records are logged through
``Trainer.log`` (every reporting integration -- TensorBoard, W&B, ... -- receives them, and they
appear in ``trainer.state.log_history``). The held batch is a dict of tensors for
``model(**batch)``; the loss is ``output.loss`` (so it must contain ``labels``). Estimator state
is written next to each Trainer checkpoint (``hessian_lr_callback.pt`` in ``checkpoint-N/``) and
read back when training resumes from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from ..lr.estimator import LREstimator
from ..lr.options import CurvatureOptions, as_options
from ..observe import Observer, StepContext, run_observers
from ._common import (
    build_observers,
    current_lr,
    flatten_metrics,
    load_state_into,
    state_of,
    unwrap_optimizer,
)

__all__ = ["HessianLRTrainerCallback", "hf_loss"]

STATE_FILE = "hessian_lr_callback.pt"


def hf_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The loss of a Hugging Face model on a dict batch: ``model(**batch).loss``."""
    out = model(**batch)
    loss = out.loss if hasattr(out, "loss") else out["loss"]
    if loss is None:
        raise ValueError("model(**held_batch).loss is None: the held batch needs 'labels'")
    return loss


class HessianLRTrainerCallback(transformers.TrainerCallback):
    """hessian_lr estimates every ``every`` optimizer steps of a Hugging Face ``Trainer``.

    Args:
        every: k, estimate every k optimizer steps (the secant from step 2k on).
        secant: run the batch-free secant estimate (with its noise-null ratio and flag).
        held_batch: a dict batch for the HVP methods (moved to the model's device), or None.
        hvp_methods: methods computed on ``held_batch`` (ignored without it).
        estimator_kwargs: extra keyword arguments for both ``LREstimator`` instances (with
            ``curvature=CurvatureOptions(...)``: the held-batch one sets ``closure=True``).
        observers: further observers or factories ``f(model, optimizer)``; they get
            ``StepContext.batch = held_batch``.
        log_prefix: prefix of the logged names.
    """

    def __init__(
        self,
        *,
        every: int = 10,
        secant: bool = True,
        held_batch: Mapping[str, torch.Tensor] | None = None,
        hvp_methods: Sequence[str] = ("quadratic",),
        estimator_kwargs: Mapping[str, Any] | None = None,
        observers: Sequence[Any] = (),
        log_prefix: str = "hessian_lr/",
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not secant and held_batch is None and not observers:
            raise ValueError("nothing to do: enable secant, pass held_batch, or observers")
        self.every = every
        self.secant = secant
        self.held_batch = dict(held_batch) if held_batch is not None else None
        self.hvp_methods = tuple(hvp_methods)
        self.estimator_kwargs = dict(estimator_kwargs or {})
        self.specs = list(observers)
        self.log_prefix = log_prefix
        self.observers: list[Observer] | None = None
        self.history: list[dict[str, Any]] = []
        self._trainer: transformers.Trainer | None = None
        self._batch_on_device: Mapping[str, torch.Tensor] | None = None

    def attach(self, trainer: transformers.Trainer) -> HessianLRTrainerCallback:
        """Add this callback to ``trainer`` and log through its ``log``; returns ``self``."""
        trainer.add_callback(self)
        self._trainer = trainer
        return self

    # -- building -------------------------------------------------------------------------
    def _held_curvature(self) -> CurvatureOptions:
        """``estimator_kwargs``' curvature options with ``closure=True`` (the loss is hf_loss)."""
        return replace(as_options(self.estimator_kwargs.get("curvature")), closure=True)

    def _build(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        obs: list[Any] = []
        if self.secant:
            obs.append(
                LREstimator(
                    model,
                    methods=("secant",),
                    every=self.every,
                    optimizer=optimizer,
                    **self.estimator_kwargs,
                )
            )
        if self.held_batch is not None and self.hvp_methods:
            obs.append(
                _HeldBatchEstimator(
                    LREstimator(
                        model,
                        methods=self.hvp_methods,
                        every=self.every,
                        loss_fn=hf_loss,
                        optimizer=optimizer,
                        **{**self.estimator_kwargs, "curvature": self._held_curvature()},
                    )
                )
            )
        self.observers = build_observers([*obs, *self.specs], model, optimizer)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Build the observers; resume their state from ``checkpoint-<global_step>``."""
        if self.observers is None:
            self._build(model, unwrap_optimizer(optimizer))
        if self.held_batch is not None:
            device = next(model.parameters()).device
            self._batch_on_device = {k: v.to(device) for k, v in self.held_batch.items()}
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        if state.global_step > 0 and ckpt.exists():
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
            load_state_into(self.observers, saved)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        """After each optimizer step: run the due observers and log their records."""
        if self.observers is None:
            return
        step = state.global_step - 1
        optimizer = unwrap_optimizer(optimizer)
        ctx = StepContext(
            step=step,
            model=model,
            optimizer=optimizer,
            batch=self._batch_on_device,
            lr=current_lr(optimizer),
            total_steps=state.max_steps or None,
        )
        record = run_observers(self.observers, ctx, last=step + 1 == state.max_steps)
        if not record:
            return
        self.history.append({"step": step, **record})
        metrics = flatten_metrics(record, self.log_prefix)
        if metrics and self._trainer is not None:
            self._trainer.log(metrics)

    def on_save(self, args, state, control, **kwargs):
        """Write the observers' state into the checkpoint folder the Trainer just saved."""
        if self.observers is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            tmp = folder / f".{STATE_FILE}.{os.getpid()}.tmp"
            torch.save(state_of(self.observers), tmp)
            os.replace(tmp, folder / STATE_FILE)

    def on_train_end(self, args, state, control, **kwargs):
        """Close the observers' files."""
        for obs in self.observers or ():
            obs.close()


class _HeldBatchEstimator(Observer):
    """An ``LREstimator`` observing a fixed held batch instead of the (unseen) training batch."""

    def __init__(self, estimator: LREstimator) -> None:
        self.estimator = estimator
        self.name = "held_batch_" + estimator.name
        self.every = 1

    def should_run(self, step: int, *, last: bool = False) -> bool:  # noqa: D102
        return self.estimator.should_run(step, last=last)

    def observe(self, ctx: StepContext) -> Mapping[str, Any] | None:  # noqa: D102
        rec = self.estimator.observe(ctx)
        return {f"held_{k}": v for k, v in (rec or {}).items()}

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return self.estimator.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        self.estimator.load_state_dict(state)

    def close(self) -> None:  # noqa: D102
        self.estimator.close()
