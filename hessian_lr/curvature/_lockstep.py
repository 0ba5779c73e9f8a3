"""Lockstep passes over the data of an FSDP2 model: every rank takes the same steps.

FSDP's forward all-gathers and its backward reduce-scatters, so every rank must run the same
number of forward/backward steps in a pass, whatever its share of the data. A rank with fewer
batches runs weight-0 steps on a batch it has; a rank without data on a batch lent by another
rank (one ``broadcast_object_list``, once). For a list of batches the number of steps is agreed
once (one collective); for another iterable the ranks agree step by step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ._batches import move_to_device

__all__ = ["LockstepData"]

Batch = Any


class LockstepData:
    """Mixin for a ``DataLoopOperator`` with ``_reducer`` and ``_group``: lockstep passes."""

    _data: Any
    _is_list: bool
    _reducer: Any
    _group: Any
    device: torch.device

    def _plan_steps(self) -> None:
        """For a list of batches: every pass takes max_r len(data_r) steps (one collective)."""
        self._num_steps: int | None = None
        self._filler: Batch | None = None
        if not self._is_list:
            return  # an iterable: ranks agree step by step (``_agreed_steps``)
        world, rank = self._reducer.world_size, self._reducer.rank
        counts = torch.zeros(world, dtype=torch.float64)
        counts[rank] = len(self._data)
        counts = self._reducer.sum_([counts])[0][0]
        if not bool((counts > 0).any()):
            raise ValueError("data is empty on every rank: no batches to evaluate the loss on")
        self._num_steps = int(counts.max())
        if not bool((counts > 0).all()):  # a rank without data runs weight-0 steps on a loan
            src = int(torch.nonzero(counts)[0])
            self._filler = self._lend(src, self._data[0] if rank == src else None)

    def _lockstep(self) -> Iterator[tuple[float, Batch]]:
        """(weight, batch) in steps every rank takes; a rank out of batches runs weight-0 steps."""
        if self._num_steps is None:
            yield from self._agreed_steps()
            return
        done, mine = 0, None
        for _, c, batch in self._batches():
            mine = batch if mine is None else mine
            done += 1
            yield c, batch
        for _ in range(done, self._num_steps):
            if mine is None and self._filler is None:  # every batch here weighs 0
                self._filler = move_to_device(self._data[0], self.device)
            yield 0.0, mine if mine is not None else self._filler

    def _agreed_steps(self) -> Iterator[tuple[float, Batch]]:
        """``_lockstep`` for an iterable of unknown length: one small collective per step."""
        it = self._batches()
        mine: Batch | None = None
        world, rank = self._reducer.world_size, self._reducer.rank
        while True:
            nxt = next(it, None)
            flags = torch.zeros(world, 2, dtype=torch.float64)
            flags[rank, 0] = float(nxt is not None)
            flags[rank, 1] = float(nxt is not None or mine is not None or self._filler is not None)
            flags = self._reducer.sum_([flags])[0][0]
            if not bool(flags[:, 0].any()):
                return
            if not bool(flags[:, 1].all()):  # some rank has never had a batch: lend one
                src = int(torch.nonzero(flags[:, 0])[0])
                self._filler = self._lend(src, None if nxt is None else nxt[2])
            if nxt is not None:
                mine = mine if mine is not None else nxt[2]
                yield nxt[1], nxt[2]
            else:
                yield 0.0, mine if mine is not None else self._filler

    def _lend(self, src: int, batch: Batch | None) -> Batch:
        """Rank ``src``'s ``batch`` on every rank (a collective), to run weight-0 steps on."""
        dist = torch.distributed
        obj = [None]
        if self._reducer.rank == src:
            obj = [move_to_device(batch, torch.device("cpu"))]
        dist.broadcast_object_list(
            obj, src=dist.get_global_rank(self._group, src), group=self._group
        )
        return move_to_device(obj[0], self.device)
