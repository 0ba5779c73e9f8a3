"""Pieces shared by the framework adapters: observer factories and record flattening."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..observe import Observer

__all__ = ["ObserverSpec", "build_observers", "flatten_metrics", "current_lr", "unwrap_optimizer"]

#: An observer, or a factory ``f(model, optimizer) -> Observer`` called once the framework has
#: built the optimizer (observers such as ``LREstimator`` need it at construction).
ObserverSpec = Observer | Callable[[nn.Module, torch.optim.Optimizer | None], Observer]


def build_observers(
    specs: Iterable[ObserverSpec], model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> list[Observer]:
    """Resolve factories into observers (instances pass through).

    Raises:
        TypeError: a factory returned something that is not an ``Observer``.
    """
    out: list[Observer] = []
    for spec in specs:
        obs = spec if isinstance(spec, Observer) else spec(model, optimizer)
        if not isinstance(obs, Observer):
            raise TypeError(
                f"an observer factory returned {type(obs).__name__}; it must return a "
                "hessian_lr.observe.Observer (e.g. an LREstimator)"
            )
        out.append(obs)
    return out


def flatten_metrics(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten a (nested) record into ``{"a/b/c": float}`` for scalar loggers.

    Booleans become 0/1; numbers (also 0-d tensors) are kept, including nan and inf (loggers
    show gaps); strings, lists and None are dropped, since scalar loggers cannot take them.

    Example:
        >>> flatten_metrics({"estimates": {"quadratic": {"lr": 0.5, "flags": []}}, "step": 3})
        {'estimates/quadratic/lr': 0.5, 'step': 3.0}
    """
    out: dict[str, float] = {}

    def visit(obj: Any, key: str) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                visit(v, f"{key}/{k}" if key else str(k))
        elif isinstance(obj, bool):
            out[key] = float(obj)
        elif isinstance(obj, (int, float)):
            out[key] = float(obj)
        elif isinstance(obj, torch.Tensor) and obj.numel() == 1:
            out[key] = float(obj)

    visit(record, prefix.rstrip("/"))
    return out


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside a framework wrapper (accelerate's ``AcceleratedOptimizer``...).

    Such wrappers subclass ``Optimizer`` without initialising it, so hooks cannot be registered
    on them; the wrapped optimizer is what steps the parameters.
    """
    seen = 0
    while optimizer is not None and hasattr(optimizer, "optimizer") and seen < 5:
        inner = optimizer.optimizer
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


def current_lr(optimizer: torch.optim.Optimizer | None) -> float | None:
    """The LR of parameter group 0, or None without an optimizer."""
    if optimizer is None or not optimizer.param_groups:
        return None
    lr = optimizer.param_groups[0].get("lr")
    return None if lr is None else float(lr)


def finite_only(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop nan/inf values (some loggers reject them)."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def state_of(observers: Sequence[Observer]) -> dict[str, Any]:
    """``{"<index>:<name>": observer.state_dict()}`` for a checkpoint."""
    return {f"{i}:{obs.name}": obs.state_dict() for i, obs in enumerate(observers)}


def load_state_into(observers: Sequence[Observer], state: Mapping[str, Any]) -> None:
    """Restore :func:`state_of` output into observers built in the same order.

    Raises:
        ValueError: the checkpoint was written by a different list of observers.
    """
    keys = [f"{i}:{obs.name}" for i, obs in enumerate(observers)]
    if sorted(keys) != sorted(state):
        raise ValueError(
            f"checkpoint holds observer states {sorted(state)}, but the callback has {keys}: "
            "build the callback with the same observers, in the same order, to resume"
        )
    for key, obs in zip(keys, observers):
        obs.load_state_dict(state[key])
