"""The range test over a process group: global losses, sample weights, agreed failures.

Under ``torch.distributed`` every rank runs the same ladder on its own shard of each update's
batches. For every micro-batch one small all-reduce (:class:`~hessian_lr.curvature.distributed.
Reducer`) carries the rank's sample count ``n_r``, its summed loss ``n_r·L_r`` and a failure
flag, *before* the backward pass:

* the recorded loss is the global mean ``Σ_r n_r L_r / Σ_r n_r`` (identical on every rank, so
  smoothing and the stop decision are too);
* the local loss is scaled by ``n_r / Σ n`` before ``backward``: a
  ``DistributedDataParallel`` model averages gradients over its ``p`` ranks, so the factor is
  ``p·n_r / Σ n``; a plain replicated model gets its gradients summed here, after the last
  micro-batch. Either way the update is that of one process on the concatenated batch, also
  for shards of unequal size;
* a rank whose batch or forward pass raised joins the collective with the flag set, and every
  rank raises (the failing one its own error) before anyone enters DDP's gradient all-reduce.

Held-out metrics are all-reduced the same way (sample-weighted loss, correct counts); the model
is evaluated through the module inside DDP, so no collective depends on how many held-out
batches a rank holds (a rank may hold none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..curvature.distributed import Reducer, resolve_process_group, unwrap_ddp

__all__: list[str] = []


def _is_ddp(model: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


class RangeGroup:
    """The collectives of one distributed range test (None-safe: ``reducer`` may be absent).

    Args:
        model: the model the test trains (a DDP wrapper or a plain replicated module).
        process_group: None (auto-detect the default group), False (local), or a group.
    """

    def __init__(self, model: nn.Module, process_group: Any) -> None:
        group = resolve_process_group(process_group)
        self.reducer: Reducer | None = None if group is None else Reducer(group)
        self.ddp = _is_ddp(model)
        self.inner = unwrap_ddp(model)
        self.world_size = 1 if self.reducer is None else self.reducer.world_size
        self.pending: BaseException | None = None  # a local failure not yet announced

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 of the group (or there is no group)."""
        return self.reducer is None or self.reducer.rank == 0

    @property
    def active(self) -> bool:
        """Whether losses and gradients are reduced over several ranks."""
        return self.reducer is not None

    def check(self, error: BaseException | None = None) -> None:
        """Raise everywhere if this rank (``error`` or a pending one) or another rank failed."""
        error = error or self.pending
        self.pending = None
        if self.reducer is None:
            if error is not None:
                raise error
            return
        self.reducer.barrier_check(error)

    def weigh(self, n: int, loss: float, error: BaseException | None) -> tuple[float, float]:
        """(factor for the local loss before backward, global mean loss) of one micro-batch."""
        error = error or self.pending
        self.pending = None
        if self.reducer is None:
            if error is not None:
                raise error
            return 1.0, loss
        _, (total, loss_sum) = self.reducer.sum_([], [n, n * loss], error=error)
        if total <= 0:
            raise ValueError("no rank has a sample in this micro-batch")
        factor = n / total * (self.world_size if self.ddp else 1)
        return factor, loss_sum / total

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Sum the gradients of a plain (not DDP) model over the ranks, in place."""
        if self.reducer is None or self.ddp:
            return
        has = [0.0 if p.grad is None else 1.0 for p in params]
        _, present = self.reducer.sum_([], has)
        live = [p for p, h in zip(params, present) if h > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        summed, _ = self.reducer.sum_([p.grad for p in live])
        for p, g in zip(live, summed):
            p.grad.copy_(g)

    def evaluation(self, local: Any, error: BaseException | None) -> tuple[float, float | None]:
        """Global (mean loss, accuracy or None) from each rank's ``Evaluation`` (None: no data)."""
        if self.reducer is None:
            if error is not None:
                raise error
            return local.loss, local.accuracy
        n = 0 if local is None else local.num_samples
        loss_sum = 0.0 if local is None else n * local.loss
        acc = None if local is None else local.accuracy
        correct = 0.0 if acc is None else round(acc * n)
        scalars = [n, loss_sum, correct, float(local is not None), float(acc is not None)]
        _, (n_all, l_all, c_all, ranks, acc_ranks) = self.reducer.sum_([], scalars, error=error)
        if n_all <= 0:
            raise ValueError("the held-out data is empty on every rank: it gave no batch")
        return l_all / n_all, (c_all / n_all if acc_ranks == ranks else None)


def local_is_empty(val: Any) -> bool:
    """Whether a rank's held-out data is known to be empty (a sized container of length 0)."""
    try:
        return len(val) == 0
    except TypeError:
        return False
