"""Curvature operators over a ``torch.distributed`` process group (data parallel).

Each rank holds its shard of the data (any size, also none); a product is the all-reduced,
sample-weighted sum Σ_ranks Σ_b c_b M_b V, divided by the global Σ c_b for a mean, so the
operator is the Hessian of the objective over the union of the shards -- on every rank, the same
numbers. The parameters are replicated (a plain model or a ``DistributedDataParallel`` wrapper,
whose underlying module is used: no DDP hook fires).

One pass costs one collective, ``distributed.Reducer.sum_``: the (N, k) result, Σ c_b, a scalar
(the loss) and a failure flag in one float64 buffer (identical bits on every rank). Failures are
collective: a rank whose local pass raises (a NaN loss, a bad batch) still joins with zeros and
the flag, and then every rank raises -- the failing one its own error, the others
``NonFiniteError`` (for a NaN/inf) or ``DistributedCurvatureError`` naming the failed ranks --
instead of waiting forever. A rank that dies outright is seen by the backend (gloo at once, NCCL
after ``init_process_group(timeout=...)``). The construction makes two more collectives, once:
a check that the parameters are the same on every rank, and an agreement on ``check_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .distributed import DistributedCurvatureError, Reducer, resolve_process_group, unwrap_ddp

__all__ = [
    "resolve_group",
    "unwrap_model",
    "reduce_pass",
    "check_replicated",
    "agree_any",
]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def resolve_group(process_group: Any) -> Any | None:
    """The group to reduce over (``distributed.resolve_process_group``'s convention).

    ``None`` or ``"auto"``: the default group if initialized with more than one rank;
    ``False``: none (a local operator); a group: that group.
    """
    return resolve_process_group(process_group)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``DataParallel`` / ``torch.compile`` wrappers (no hooks fire).

    A compiled model (``torch.compile(model)``, an ``OptimizedModule``) is evaluated through its
    original module ``_orig_mod``: compiled graphs have no double backward, and curvature passes
    are few enough that compilation would not pay.
    """
    while True:
        if isinstance(model, nn.DataParallel):
            model = model.module
        elif torch.distributed.is_available() and unwrap_ddp(model) is not model:
            model = unwrap_ddp(model)
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module) and _is_compiled(model):
            model = model._orig_mod
        else:
            return model


def _is_compiled(model: nn.Module) -> bool:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover - torch without dynamo
        return False
    return isinstance(model, OptimizedModule)


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
    reducer: Reducer,
) -> tuple[torch.Tensor | None, float, float]:
    """Run ``local() -> (Σ c_b x_b or None, Σ c_b, Σ c_b s_b)`` and sum it over the group.

    One collective (``Reducer.sum_``: the tensor, the two scalars and the failure flag in one
    float64 buffer). Errors raised by ``local`` on any rank make every rank raise: the failing
    rank its own error, the others :class:`NonFiniteError` when the failure was a NaN/inf
    (so that ``on_nonfinite="flag"`` callers stay in step) or ``DistributedCurvatureError``.
    """
    from ._dataloop import NonFiniteError

    error: BaseException | None = None
    out, total, scalar = None, 0.0, 0.0
    try:
        out, total, scalar = local()
    except Exception as err:  # noqa: BLE001 - re-raised on every rank by the reducer
        error = err
    if out is None or error is not None:
        out = like.new_zeros(shape)
    try:
        (summed,), (total, scalar) = reducer.sum_([out], [total, scalar], error=error)
    except DistributedCurvatureError as err:
        if "NonFiniteError" in str(err):
            raise NonFiniteError(str(err)) from err
        raise
    return summed, total, scalar
