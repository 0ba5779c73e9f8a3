"""Snapshot and bit-identical restore of everything the range test can change.

Parameters, buffers, gradients, module modes, optimizer state and hyper-parameters, a
``GradScaler``'s scale, the global RNGs (``hessian_lr.rng``) and the generators of DataLoaders.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..rng import get_rng_state, set_rng_state

__all__: list[str] = []


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    return copy.deepcopy(v)


class _Snapshot:
    """Everything the range test can change, kept to restore it bit-identically.

    Parameters and buffers are restored in place into the *same tensor objects* (the optimizer
    and any other holder of a reference keep working), gradients and optimizer state are put
    back as clones, and module ``training`` flags, the torch (CPU and CUDA), numpy and Python
    RNGs and the generators owned by the data loaders are reset.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Sequence[Any],
        grad_scaler: Any = None,
    ) -> None:
        self.params: list[tuple[Any, str, torch.Tensor, torch.Tensor]] = []
        self.buffers: list[tuple[nn.Module, str, torch.Tensor | None, torch.Tensor | None]] = []
        seen: set[int] = set()
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    self.params.append((module._parameters, name, p, p.detach().clone()))
                    seen.add(id(p))
            for name, b in module._buffers.items():
                self.buffers.append((module, name, b, None if b is None else b.detach().clone()))
        # Optimizer parameters that do not belong to the model are restored as well.
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    self.params.append(({}, "", p, p.detach().clone()))
                    seen.add(id(p))
        self.grads = {
            id(p): (p, None if p.grad is None else p.grad.detach().clone())
            for _, _, p, _ in self.params
        }
        self.training = [(m, m.training) for m in model.modules()]
        self.optimizer = optimizer
        self.opt_state = {
            p: {k: _clone(v) for k, v in s.items()} for p, s in optimizer.state.items()
        }
        self.opt_groups = [
            {k: _clone(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
        self.rng = get_rng_state()
        self.generators = [(g, g.get_state()) for g in _data_generators(data)]
        self.scaler = grad_scaler
        self.scaler_state = None if grad_scaler is None else copy.deepcopy(grad_scaler.state_dict())

    @torch.no_grad()
    def restore(self) -> None:
        """Put everything back (in place where others may hold references)."""
        for holder, name, p, value in self.params:
            if name and holder.get(name) is not p:
                holder[name] = p
            p.copy_(value)
        for p, g in self.grads.values():
            p.grad = None if g is None else g.clone()
        for module, name, b, value in self.buffers:
            if module._buffers.get(name) is not b:
                module._buffers[name] = b
            if b is not None:
                b.copy_(value)
        for module, training in self.training:
            module.training = training
        opt = self.optimizer
        opt.state.clear()
        for p, s in self.opt_state.items():
            opt.state[p] = {k: _clone(v) for k, v in s.items()}
        for group, saved in zip(opt.param_groups, self.opt_groups):
            for k in [k for k in group if k != "params" and k not in saved]:
                del group[k]
            for k, v in saved.items():
                cur = group.get(k)
                if (
                    isinstance(cur, torch.Tensor)
                    and isinstance(v, torch.Tensor)
                    and cur.shape == v.shape
                    and cur.dtype == v.dtype
                ):
                    cur.copy_(v)  # keep the tensor object (e.g. a tensor LR) that others hold
                else:
                    group[k] = _clone(v)
        set_rng_state(self.rng)
        for g, state in self.generators:
            g.set_state(state)
        if self.scaler is not None and self.scaler_state:
            self.scaler.load_state_dict(copy.deepcopy(self.scaler_state))


def _data_generators(data: Sequence[Any]) -> list[torch.Generator]:
    """torch.Generators owned by DataLoaders and their samplers (their state advances)."""
    found: dict[int, torch.Generator] = {}
    for d in data:
        if d is None:
            continue
        batch_sampler = getattr(d, "batch_sampler", None)
        for obj in (
            d,
            getattr(d, "sampler", None),
            batch_sampler,
            getattr(batch_sampler, "sampler", None),
        ):
            g = getattr(obj, "generator", None)
            if isinstance(g, torch.Generator):
                found[id(g)] = g
    return list(found.values())
