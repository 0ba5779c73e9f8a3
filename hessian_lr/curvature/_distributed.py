"""Curvature operators over a ``torch.distributed`` process group (data parallel).

Each rank holds its shard of the data (any size, also none); a product is the all-reduced,
sample-weighted sum Σ_ranks Σ_b c_b M_b V, divided by the global Σ c_b for a mean, so the
operator is the Hessian of the objective over the union of the shards -- on every rank, the same
numbers. The parameters are replicated (a plain model or a ``DistributedDataParallel`` wrapper,
whose underlying module is used: no DDP hook fires).

One pass costs two collectives: a status all-reduce of (Σ c_b, a scalar such as the loss, error
flags), then the all-reduce of the (N, k) result. The status round makes failures collective: a
rank whose local pass raises (a NaN loss, a bad batch) still joins it, and then every rank
raises -- the failing one its own error, the others :class:`RemoteRankError` -- instead of the
others waiting forever in the data all-reduce. A rank that dies outright is only seen through
the process group's timeout (``torch.distributed.init_process_group(timeout=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "resolve_group",
    "unwrap_model",
    "RemoteRankError",
    "reduce_pass",
    "check_replicated",
    "agree_any",
]


class RemoteRankError(RuntimeError):
    """Another rank of the process group raised during a collective pass."""


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def resolve_group(process_group: Any) -> Any | None:
    """The group to reduce over: ``"auto"`` = the default group if initialized with > 1 rank."""
    if process_group is None:
        return None
    if not torch.distributed.is_available():
        if process_group == "auto":
            return None
        raise ValueError("process_group given but torch.distributed is not available")
    dist = _dist()
    if process_group == "auto":
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return None
        return dist.group.WORLD
    if not dist.is_initialized():
        raise ValueError("process_group given but torch.distributed is not initialized")
    return process_group


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` (or ``DataParallel``) wrapper holds."""
    wrappers = (nn.DataParallel,)
    if torch.distributed.is_available():
        from torch.nn.parallel import DistributedDataParallel

        wrappers = (*wrappers, DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def _comm_device(group: Any, device: torch.device) -> torch.device:
    backend = _dist().get_backend(group)
    return device if backend != "gloo" else torch.device("cpu")


def check_replicated(params: list[torch.Tensor], group: Any, device: torch.device) -> None:
    """Refuse parameters that differ across ranks (each rank would have another Hessian)."""
    dist = _dist()
    with torch.no_grad():
        local = torch.stack(
            [
                sum(p.detach().double().sum() for p in params),
                sum(p.detach().double().norm() for p in params),
            ]
        ).to(_comm_device(group, device))
        both = torch.cat([local, -local])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    hi, lo = both[:2], -both[2:]
    scale = hi.abs().clamp_min(1e-300)
    if bool(((hi - lo).abs() > 1e-9 * scale).any()):
        raise ValueError(
            "the parameters differ across ranks: every rank needs the same θ (wrap the model in "
            "DistributedDataParallel, or broadcast the parameters from rank 0 before building "
            "the operator)"
        )


def agree_any(flag: bool, group: Any, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    t = torch.tensor([float(flag)], dtype=torch.float64, device=_comm_device(group, device))
    _dist().all_reduce(t, group=group)
    return bool(t.item() > 0)


def reduce_pass(
    local: Callable[[], tuple[torch.Tensor | None, float, float]],
    shape: tuple[int, ...],
    like: torch.Tensor,
    group: Any,
) -> tuple[torch.Tensor | None, float, float]:
    """Run ``local() -> (Σ c_b x_b or None, Σ c_b, Σ c_b s_b)`` and sum it over the group.

    Errors raised by ``local`` on any rank make every rank raise (see the module docstring).
    """
    from ._dataloop import NonFiniteError

    dist = _dist()
    error: BaseException | None = None
    out, total, scalar = None, 0.0, 0.0
    try:
        out, total, scalar = local()
    except Exception as err:  # noqa: BLE001 - re-raised below, after the status round
        error = err
    status = torch.tensor(
        [
            total,
            scalar,
            float(isinstance(error, NonFiniteError)),
            float(error is not None and not isinstance(error, NonFiniteError)),
        ],
        dtype=torch.float64,
        device=_comm_device(group, like.device),
    )
    dist.all_reduce(status, group=group)
    nonfinite, other = int(status[2]), int(status[3])
    if error is not None:
        raise error
    if nonfinite or other:
        cls = NonFiniteError if nonfinite else RemoteRankError
        raise cls(
            f"{nonfinite + other} other rank(s) of the process group raised during this pass "
            f"({'a NaN/inf loss or product' if nonfinite else 'see their error'}); every rank "
            "stops here"
        )
    if out is None:
        out = like.new_zeros(shape)
    comm = _comm_device(group, out.device)
    buf = out if out.device == comm else out.to(comm)
    dist.all_reduce(buf, group=group)
    if buf is not out:
        out.copy_(buf)
    return out, float(status[0]), float(status[1])
