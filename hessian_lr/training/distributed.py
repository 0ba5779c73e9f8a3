"""The runner under ``torchrun``: data-parallel training with records from rank 0 only.

Every rank draws the same *global* batch from the run's batch stream (a pure function of the
seed and step), trains on its shard of it (``torch.tensor_split`` into ``world_size`` parts)
with the loss summed over the shard and divided by the global batch size, and the gradients
are summed across ranks (``all_reduce``): the update is that of one process on the whole batch,
up to the order of float additions. BatchNorm normalises each shard with its own statistics
(as ``DistributedDataParallel`` does, without ``SyncBatchNorm``) and the buffers are broadcast
from rank 0 after each update (as DDP's ``broadcast_buffers``).

Only rank 0 takes the run folder's lock and writes ``records.jsonl``, the sinks, ``meta.json``
and the checkpoints; every rank reads the checkpoint on resume. Decisions taken on rank 0 (the
config check, the lock) are broadcast, so every rank raises the same error. Observers run on
every rank with the global batch (so an observer may itself use collectives); their records are
kept from rank 0. A ``callback`` that writes files should do so on rank 0 only
(``torch.distributed.get_rank() == 0``). A rank that fails leaves the others waiting in the
next collective until the process group's timeout (``init_from_env(timeout_s=...)``, default
300 s); ``torchrun`` then stops them all.
"""

from __future__ import annotations

import datetime
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["DistContext", "init_from_env"]

T = TypeVar("T")


def init_from_env(device: str = "auto", *, timeout_s: float = 300.0) -> bool:
    """Start the default process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Backend: NCCL when the run uses CUDA, else gloo.

    Returns:
        Whether this call started the group (then the caller destroys it at the end).
    """
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


@dataclass
class DistContext:
    """Rank, world size and process group of a run (world size 1: a plain single process)."""

    rank: int = 0
    world_size: int = 1
    group: Any = None

    @classmethod
    def detect(cls, group: Any = None) -> DistContext:
        """The default (or given) process group when one is initialized, else a single process."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` without an index becomes this rank's GPU (``LOCAL_RANK``)."""
        if self.active and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give every rank its value, or raise its exception everywhere."""
        if not self.active:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                try:
                    pickle.dumps(err)
                    box[0] = ("error", err)
                except Exception:  # noqa: BLE001 - an exception that cannot travel
                    box[0] = ("error", RuntimeError(f"{type(err).__name__}: {err}"))
        dist.broadcast_object_list(box, src=0, group=self.group)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's part of each batch tensor (first dimension split in ``world_size``)."""
        if not self.active:
            return tensors
        return tuple(torch.tensor_split(t, self.world_size)[self.rank] for t in tensors)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; returns the tensor."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def sum_gradients(self, model: nn.Module) -> None:
        """Sum every parameter's ``.grad`` across ranks (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.sum_(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_module(self, model: nn.Module, *, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank."""
        if not self.active:
            return
        import torch.distributed as dist

        tensors = list(model.buffers()) + ([] if buffers_only else list(model.parameters()))
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0, group=self.group)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            import torch.distributed as dist

            dist.barrier(group=self.group)
