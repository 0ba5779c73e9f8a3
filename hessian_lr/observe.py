"""The observer contract: measure on a schedule, return a record, never perturb training.

Cockpit-style instruments for any training loop (Schneider et al. 2021, "Cockpit"). A loop calls,
after each optimizer step::

    ctx = StepContext(step=t, model=model, optimizer=opt, batch=batch, loss=loss, lr=lr)
    for obs in observers:
        if obs.should_run(t, last=t + 1 == total):
            record.update(obs.observe(ctx) or {})

``LREstimator``, the curvature probe, evaluation, user callbacks and the integrations' callbacks
are all observers, so a new diagnostic is a new class, not a change to the loop. Observers must
leave the model (parameters, buffers, modes, ``.grad``), the optimizer and every global RNG as they
found them: :func:`run_observers` restores the global RNGs around each call as a second line of
defence, and the tests train with and without each observer and compare the weights bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .rng import preserved_rng

__all__ = ["StepContext", "Observer", "CallbackObserver", "run_observers"]


@dataclass
class StepContext:
    """What an observer may look at after optimizer step ``step``.

    Attributes:
        step: 0-based index of the update just taken (the model has had ``step + 1`` updates).
        model: the network, in the mode the loop trains it in.
        optimizer: the optimizer that took the step (its state must not be changed), or None.
        batch: the batch the step trained on (inputs and targets, on the model's device), or None.
        loss: the training loss of that batch before the update (float), or None.
        lr: the LR applied by that step (parameter group 0), or None.
        loss_fn: ``loss_fn(outputs, targets)`` of the run, or None.
        total_steps: the run's length, when known.
    """

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    batch: Any = None
    loss: float | None = None
    lr: float | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    total_steps: int | None = None


class Observer:
    """Base class: ``should_run`` → ``observe`` → a record (a flat JSON-able mapping).

    Subclasses set ``name`` and ``every`` and implement :meth:`observe`. The default schedule runs
    after every ``every``-th update (steps ``every - 1, 2 every - 1, ...``) and, when
    ``at_last`` is set, after the last one; ``every = 0`` turns the observer off. Stateful
    observers override :meth:`state_dict` / :meth:`load_state_dict` so that a resumed run
    continues exactly.
    """

    name: str = "observer"
    every: int = 1
    at_last: bool = False

    def should_run(self, step: int, *, last: bool = False) -> bool:
        """Whether to observe after update ``step`` (0-based); ``last`` marks the run's end."""
        if self.every <= 0:
            return False
        return (step + 1) % self.every == 0 or (last and self.at_last)

    def observe(self, ctx: StepContext) -> Mapping[str, Any] | None:  # pragma: no cover
        """Measure and return the record's new keys (or None)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The observer's state for a checkpoint (tensors and plain Python values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release files or handles (called once, at the end of the run)."""


class CallbackObserver(Observer):
    """Wrap ``fn(step, model, record)`` (the runner's old ``callback``) as an observer.

    ``fn`` may add keys to ``record`` in place; it is called after every update.
    """

    name = "callback"

    def __init__(self, fn: Callable[[int, nn.Module, dict], None], *, every: int = 1) -> None:
        self.fn = fn
        self.every = every

    def observe(self, ctx: StepContext) -> Mapping[str, Any] | None:  # noqa: D102
        record: dict[str, Any] = {}
        self.fn(ctx.step, ctx.model, record)
        return record


def run_observers(
    observers: Iterable[Observer], ctx: StepContext, *, last: bool = False
) -> dict[str, Any]:
    """Call each due observer on ``ctx`` with the global RNGs preserved; merge their records.

    Raises:
        ValueError: two observers wrote the same key in one step.
    """
    out: dict[str, Any] = {}
    for obs in observers:
        if not obs.should_run(ctx.step, last=last):
            continue
        with preserved_rng():
            rec = obs.observe(ctx)
        for key, value in (rec or {}).items():
            if key in out:
                raise ValueError(f"observers wrote the same record key {key!r} at step {ctx.step}")
            out[key] = value
    return out
