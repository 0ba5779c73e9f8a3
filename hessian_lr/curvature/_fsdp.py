"""What the sharded operator needs to know about an FSDP2 model, in one place.

FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps each parameter as a ``Shard(0)`` DTensor;
its forward all-gathers a unit's parameters, its backward reduce-scatters the unit's gradients
into the sharded ``.grad``, divided by the data-parallel size (or by a factor the user set with
``set_gradient_divide_factor``). The per-group switches read and set here are private
attributes of ``FSDPParamGroup`` (torch 2.5 -- 2.13); every access is checked, so a torch
version without them fails here with a message rather than deep inside a product.

* :func:`is_sharded` -- whether a model has DTensor parameters (the sharded route).
* :func:`shard_layout` -- per parameter: the local shard and the global range it covers.
* :class:`FSDPSwitches` -- gradient sync on, reshard after backward, for the operator's own
  passes, restored afterwards; the divide factor the reduce-scatter applies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .distributed import Reducer

__all__ = ["is_sharded", "dtensor_class", "shard_layout", "FSDPSwitches", "fsdp_modules"]

_SWITCHES = ("reduce_grads", "all_reduce_grads", "reshard_after_backward")


def dtensor_class() -> type | None:
    """``torch.distributed.tensor.DTensor``, or None where torch has no DTensor."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    return DTensor


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is a module with DTensor parameters (FSDP2, tensor parallel)."""
    cls = dtensor_class()
    if cls is None or not isinstance(model, nn.Module):
        return False
    return any(isinstance(p, cls) for p in model.parameters())


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that ``fully_shard`` wrapped."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def shard_layout(
    names: Sequence[str], params: Sequence[torch.Tensor], reducer: Reducer
) -> tuple[list[torch.Tensor], list[tuple[int, int]], int]:
    """(local shards, [(global start, length)], N) of Shard(0) DTensor parameters.

    Rank r's shard of parameter i covers the flat range that starts after the shards of ranks
    < r (Shard(0) keeps rows in rank order); the ranks' local sizes are exchanged once (one
    collective) and checked to add up to each parameter's size.
    """
    from torch.distributed.tensor import Shard

    locals_, sizes, offsets, total = [], [], [], 0
    for name, p in zip(names, params):
        if tuple(p.placements) != (Shard(0),):
            raise ValueError(
                f"parameter {name!r} has placements {tuple(p.placements)}: the sharded Hessian "
                "supports FSDP2's one-dimensional Shard(0) layout only (HSDP and tensor "
                "parallelism remain, see docs/fsdp.md)"
            )
        with torch.no_grad():
            local = p.to_local()
        locals_.append(local)
        sizes.append(local.numel())
        offsets.append(total)
        total += p.numel()
    world, rank = reducer.world_size, reducer.rank
    table = torch.zeros(world, len(params), dtype=torch.float64)
    table[rank] = torch.tensor(sizes, dtype=torch.float64)
    table = reducer.sum_([table])[0][0].round().long()
    full = torch.tensor([p.numel() for p in params])
    bad = [n for n, a, b in zip(names, table.sum(0).tolist(), full.tolist()) if a != b]
    if bad:
        raise ValueError(f"the shards of {bad} do not add up to the parameters' sizes")
    before = table[:rank].sum(0).tolist() if rank > 0 else [0] * len(params)
    pieces = [(off + int(b), n) for off, b, n in zip(offsets, before, sizes)]
    return locals_, pieces, total


class FSDPSwitches:
    """The FSDP units of a model and their gradient-reduction switches.

    Args:
        model: the ``fully_shard``-wrapped model.
        group_size: the shard group's size (FSDP's default divide factor).
    """

    def __init__(self, model: nn.Module, group_size: int) -> None:
        self.groups = []
        for m in fsdp_modules(model):
            state = m._get_fsdp_state()
            groups = getattr(state, "_fsdp_param_groups", None)
            if groups is None:  # older torch: one group per unit
                group = getattr(state, "_fsdp_param_group", None)
                groups = [] if group is None else [group]
            self.groups.extend(groups)
        for g in self.groups:
            missing = [s for s in (*_SWITCHES, "gradient_divide_factor") if not hasattr(g, s)]
            if missing:
                raise RuntimeError(
                    f"this torch's FSDP2 parameter groups lack {missing}: the sharded Hessian "
                    "cannot control gradient reduction (tested with torch 2.13)"
                )
        factors = {g.gradient_divide_factor for g in self.groups}
        if len(factors) > 1:
            raise ValueError(
                f"the FSDP units divide gradients by different factors {factors}: set one "
                "factor with model.set_gradient_divide_factor(...)"
            )
        factor = factors.pop() if factors else None
        #: FSDP's reduce-scatter returns Σ_ranks g_r / divide.
        self.divide = float(group_size if factor is None else factor)

    @contextmanager
    def syncing(self) -> Iterator[None]:
        """Gradients reduce-scattered and parameters resharded after each backward; restored."""
        saved = [tuple(getattr(g, s) for s in _SWITCHES) for g in self.groups]
        try:
            for g in self.groups:
                for s in _SWITCHES:
                    setattr(g, s, True)
            yield
        finally:
            for g, values in zip(self.groups, saved):
                for s, v in zip(_SWITCHES, values):
                    setattr(g, s, v)
