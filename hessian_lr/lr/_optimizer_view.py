"""What ``LREstimator`` reads from the optimizer: applied LRs, momentum, caveats, the null's setup.

Read-only views of ``optimizer.param_groups`` restricted to the estimated parameters; nothing here
changes the optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["OptimizerView"]


class OptimizerView:
    """The optimizer's groups as the estimator sees them (``optimizer`` may be None).

    Args:
        optimizer: the training optimizer, or None.
        params: the estimated parameters (tensors).
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, params: Sequence[torch.Tensor]):
        self.optimizer = optimizer
        self._params = list(params)
        self.weights = self._group_weights()

    def _group_weights(self) -> list[int]:
        if self.optimizer is None:
            return []
        ids = {id(p): p.numel() for p in self._params}
        weights = [
            sum(ids.get(id(p), 0) for p in group["params"]) for group in self.optimizer.param_groups
        ]
        if sum(weights) == 0:
            raise ValueError("none of the estimated parameters is in the optimizer's param_groups")
        return weights

    def group_lrs(self) -> list[float]:
        """The LR of every parameter group now."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def weighted_lr(self, lrs: Sequence[float]) -> float:
        """Mean of the groups' LRs weighted by their number of estimated parameters."""
        if len(lrs) != len(self.weights):  # groups were added: recount
            self.weights = self._group_weights()
        return sum(w * lr for w, lr in zip(self.weights, lrs)) / sum(self.weights)

    def active_groups(self) -> list[dict]:
        """The groups that hold estimated parameters."""
        if self.optimizer is None:
            return []
        return [g for g, w in zip(self.optimizer.param_groups, self.weights) if w > 0]

    def momentum(self) -> float:
        """The first active group's ``momentum`` (0 without one, or for Adam-like optimizers)."""
        groups = self.active_groups()
        m = groups[0].get("momentum", 0.0) if groups else 0.0
        return float(m) if isinstance(m, (int, float)) else 0.0

    def caveats(self) -> tuple[str, ...]:
        """Short descriptions of what departs from plain SGD, e.g. ``("momentum=0.9",)``."""
        if self.optimizer is None:
            return ()
        found: list[str] = []
        if not isinstance(self.optimizer, torch.optim.SGD):
            found.append(f"optimizer={type(self.optimizer).__name__}")
        groups = self.active_groups()
        for key in ("momentum", "dampening", "weight_decay"):
            values = sorted({float(g.get(key) or 0.0) for g in groups} - {0.0})
            if values:
                found.append(f"{key}={'/'.join(f'{v:g}' for v in values)}")
        if any(g.get("nesterov", False) for g in groups):
            found.append("nesterov")
        return tuple(found)

    def null_setup(self, momentum: float, explicit: bool) -> dict[str, Any] | None:
        """Momentum, Nesterov and dampening for the secant's noise null; None when undefined.

        The null is that of SGD (heavy ball / Nesterov): for other optimizers it is only used
        when the caller gave ``momentum`` explicitly.
        """
        groups = self.active_groups()
        if self.optimizer is not None and not isinstance(self.optimizer, torch.optim.SGD):
            if not explicit:
                return None
            groups = []
        g0 = groups[0] if groups else {}
        return dict(
            momentum=momentum,
            nesterov=bool(g0.get("nesterov", False)),
            dampening=float(g0.get("dampening", 0.0) or 0.0),
        )
