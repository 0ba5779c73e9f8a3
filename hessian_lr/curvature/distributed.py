"""Curvature over ``torch.distributed``: sums across ranks that every rank agrees on.

A product of the Hessian operator over a process group is the all-reduced, sample-weighted sum
of the ranks' local products, so the operator is exactly the Hessian of the mean (or summed)
loss over the union of all shards (a rank may hold no samples). Everything here is a thin layer
over ``torch.distributed`` collectives; nothing is home-made transport.

Failure protocol. Every collective carries one extra element, the number of ranks whose local
work raised. A rank whose local product fails (a NaN loss, a bad batch) still joins the
collective with zeros and the flag set, then every rank raises: the failing one its own error,
the others :class:`DistributedCurvatureError` naming the failed ranks and their messages. No rank
is left waiting in a collective the others will never reach. A rank that dies outright (killed,
segfault) is detected by the backend: gloo raises on the closed connection at once, NCCL after
the process group's ``timeout`` (``init_process_group(timeout=...)``; default 10 min for NCCL,
30 min for gloo): set it to bound the wait.

Rank agreement. Solvers draw their random start vectors and probes on every rank from the same
generator state only if the caller seeds it so; :meth:`Reducer.agree_` broadcasts such tensors
from rank 0 so that all ranks run the same Krylov recurrence, compute the same scalars and stop
at the same iteration (no rank may leave a solver loop early: that would deadlock the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "DistributedCurvatureError",
    "Reducer",
    "resolve_process_group",
    "unwrap_ddp",
]


class DistributedCurvatureError(RuntimeError):
    """Another rank's local curvature work failed; this rank stops with it."""


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def resolve_process_group(process_group: Any = None) -> Any | None:
    """The group to reduce over: an explicit group, the initialized default group, or None.

    ``process_group=None`` (or ``"auto"``) auto-detects: the default group when
    ``torch.distributed`` is initialized with more than one rank, else no reduction. ``False``
    turns reduction off (each rank then has its own local operator). Any other value is used as
    the group.
    """
    if process_group is False:
        return None
    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(
                f"process_group must be None/'auto' (default group), False (local) or a "
                f"torch.distributed group, got {process_group!r}"
            )
        process_group = None
    dist = _dist()
    if not dist.is_available() or not dist.is_initialized():
        if process_group not in (None, False):
            raise ValueError("process_group given but torch.distributed is not initialized")
        return None
    group = dist.group.WORLD if process_group is None else process_group
    if process_group is None and dist.get_world_size(group) == 1:
        return None
    return group


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` (products never run DDP's hooks)."""
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(model, DistributedDataParallel):
        model = model.module
    return model


class Reducer:
    """Collectives of one process group, with the failure flag piggybacked on each one.

    Args:
        group: a ``torch.distributed`` process group (from :func:`resolve_process_group`).
    """

    def __init__(self, group: Any) -> None:
        dist = _dist()
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.bytes_communicated = 0
        self.num_collectives = 0

    def __repr__(self) -> str:
        return f"Reducer(rank={self.rank}, world_size={self.world_size}, backend={self.backend})"

    # -- the one primitive ------------------------------------------------------------------
    def sum_(
        self,
        tensors: Sequence[torch.Tensor],
        scalars: Sequence[float] = (),
        *,
        error: BaseException | None = None,
    ) -> tuple[list[torch.Tensor], list[float]]:
        """All-reduce (sum) tensors and scalars in ONE collective; raise on every rank on failure.

        ``tensors`` must have the same shapes on every rank (their dtype is kept; they are
        packed into one float64 buffer for the reduction, so sums are exact to float64
        round-off on every rank and bitwise identical across ranks). ``error``: this rank's
        local exception, if its local work failed (then zeros are contributed).

        Returns:
            (summed tensors, summed scalars), identical on every rank.

        Raises:
            The local ``error`` on the failing rank, DistributedCurvatureError on the others.
        """
        dist = _dist()
        dev = self._device(tensors)
        sizes = [t.numel() for t in tensors]
        buf = torch.zeros(sum(sizes) + len(scalars) + 1, dtype=torch.float64, device=dev)
        if error is None:
            pos = 0
            for t, n in zip(tensors, sizes):
                buf[pos : pos + n] = t.detach().reshape(-1).to(dev, torch.float64)
                pos += n
            if scalars:
                buf[pos : pos + len(scalars)] = torch.tensor(
                    [float(s) for s in scalars], dtype=torch.float64
                )
        else:
            buf[-1] = 1.0
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        self.bytes_communicated += buf.numel() * buf.element_size()
        self.num_collectives += 1
        failed = int(round(float(buf[-1])))
        if failed:
            self._raise_everywhere(error, failed)
        out, pos = [], 0
        for t, n in zip(tensors, sizes):
            out.append(buf[pos : pos + n].reshape(t.shape).to(t.device, t.dtype))
            pos += n
        sc = buf[pos : pos + len(scalars)].tolist()
        return out, sc

    def _device(self, tensors: Sequence[torch.Tensor]) -> torch.device:
        """Where the packed buffer lives: the CPU for gloo, the GPU for NCCL (also scalars)."""
        if self.backend == "gloo":
            return torch.device("cpu")
        if tensors:
            return tensors[0].device
        if self.backend == "nccl":  # NCCL reduces CUDA tensors only
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")  # e.g. "cpu:gloo,cuda:nccl" routes CPU tensors to gloo

    def _raise_everywhere(self, error: BaseException | None, failed: int) -> None:
        dist = _dist()
        msgs: list[Any] = [None] * self.world_size
        mine = None if error is None else f"{type(error).__name__}: {error}"
        dist.all_gather_object(msgs, mine, group=self.group)
        if error is not None:
            raise error
        detail = "; ".join(f"rank {r}: {m}" for r, m in enumerate(msgs) if m is not None)
        raise DistributedCurvatureError(
            f"{failed} of {self.world_size} ranks failed during a distributed curvature "
            f"product, so every rank stops ({detail})"
        )

    # -- conveniences ------------------------------------------------------------------------
    def agree_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Broadcast ``tensor`` from rank ``src`` in place (random starts, probes) and return it."""
        dist = _dist()
        if self.backend == "gloo" and tensor.device.type != "cpu":
            tmp = tensor.detach().cpu()
            dist.broadcast(tmp, src=src, group=self.group)
            tensor.copy_(tmp)
        else:
            dist.broadcast(tensor, src=src, group=self.group)
        self.bytes_communicated += tensor.numel() * tensor.element_size()
        self.num_collectives += 1
        return tensor

    def sum_float(self, value: float) -> float:
        """The sum of one float over the ranks."""
        return self.sum_([], [value])[1][0]

    def barrier_check(self, error: BaseException | None = None) -> None:
        """Raise on every rank if any rank passes an error (a zero-payload collective)."""
        self.sum_([], [], error=error)
