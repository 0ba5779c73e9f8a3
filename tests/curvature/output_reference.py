"""Dense float64 references for the GGN and the Fisher, built independently of the operators.

* GGN: J_b = ``jacrev`` of the batch's flattened outputs w.r.t. the flat parameters, the loss
  Hessian w.r.t. the outputs by ``jacfwd(jacrev(loss))`` (never the library's closed forms),
  G = Σ_b c_b J_bᵀ H_b J_b / Σ_b c_b (mean) or Σ_b J_bᵀ H_b J_b (sum).
* Empirical Fisher: the per-sample gradients ∇ℓₙ as the rows of ``jacrev`` of the vector of
  per-sample losses ℓₙ(θ) = c_b L_b(z with every row but n detached) (the loss's own reduction,
  so no per-loss formula), F = Σₙ ∇ℓₙ∇ℓₙᵀ / Σ_b c_b (mean) or without the division (sum).

Models are copied to float64 and put in the zoo's modes (eval everywhere, BatchNorm in
``bn_mode``), under the math attention kernel, as ``zoo.reference_objective`` does.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacfwd, jacrev
from torch.utils._pytree import tree_flatten, tree_unflatten
from zoo import DT, Case, _cast, _count, _twice_differentiable, unique_params

__all__ = ["dense_ggn", "dense_empirical_fisher", "reference_setup"]


def reference_setup(case: Case, bn_mode: str = "eval", names: list[str] | None = None):
    """(model copy, names, flat θ0, fixed params, split fn, batches, counts)."""
    model = copy.deepcopy(case.model).to(DT)
    for m in model.modules():
        m.training = False
        if bn_mode == "train" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.training, m.track_running_stats = True, False
    named = dict(unique_params(model))
    names = list(named) if names is None else names
    sel = [named[n].detach() for n in names]
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}

    def params(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(flat, [p.numel() for p in sel])
        return {**fixed, **{n: t.view_as(p) for n, t, p in zip(names, pieces, sel)}}

    batches = [_cast(b, DT) for b in case.batches()]
    counts = [_count(case, b) for b in batches]
    theta = torch.cat([p.reshape(-1) for p in sel])
    return model, names, theta, params, batches, counts


def _loss(case: Case, out: Any, targets: Any) -> torch.Tensor:
    if type(case.loss_fn) is nn.MSELoss and case.loss_fn.reduction == "mean":
        return ((out - targets) ** 2).sum() / out.numel()
    return case.loss_fn(out, targets)


def _batch_ggn(case: Case, model: nn.Module, params, theta: torch.Tensor, batch) -> torch.Tensor:
    inputs, targets = batch
    out0 = functional_call(model, params(theta), (inputs,), tie_weights=True)
    leaves, spec = tree_flatten(out0)
    shapes = [t.shape for t in leaves]

    def flat_out(flat: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, params(flat), (inputs,), tie_weights=True)
        return torch.cat([t.reshape(-1) for t in tree_flatten(out)[0]])

    def loss_of(zvec: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(zvec, [s.numel() for s in shapes])
        z = tree_unflatten([p.view(s) for p, s in zip(pieces, shapes)], spec)
        return _loss(case, z, targets)

    J = jacrev(flat_out)(theta)  # (P, N)
    Hz = jacfwd(jacrev(loss_of))(flat_out(theta).detach())  # (P, P)
    return J.T @ Hz @ J


def dense_ggn(case: Case, bn_mode: str = "eval", names: list[str] | None = None) -> torch.Tensor:
    """The float64 GGN of the case's objective (mean over counted elements, or the sum)."""
    model, names, theta, params, batches, counts = reference_setup(case, bn_mode, names)
    G = torch.zeros(theta.numel(), theta.numel(), dtype=DT)
    for batch, c in zip(batches, counts):
        if case.reduction == "mean" and c == 0:
            continue
        with _twice_differentiable():
            G += (c if case.reduction == "mean" else 1.0) * _batch_ggn(
                case, model, params, theta, batch
            )
    return G / sum(counts) if case.reduction == "mean" else G


def _per_sample_gradients(
    case: Case, model: nn.Module, params, theta: torch.Tensor, batch, scale: float
) -> torch.Tensor:
    """(B, N): rows ∇ℓₙ, ℓₙ = scale · L_b with every output row but n detached."""
    inputs, targets = batch
    B = tree_flatten(functional_call(model, params(theta), (inputs,)))[0][0].shape[0]

    def per_sample(flat: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, params(flat), (inputs,), tie_weights=True)
        leaves, spec = tree_flatten(out)
        losses = []
        for n in range(B):
            kept = []
            for t in leaves:
                row = torch.zeros(B, dtype=torch.bool)
                row[n] = True
                row = row.view(B, *([1] * (t.ndim - 1)))
                kept.append(torch.where(row, t, t.detach()))
            losses.append(scale * _loss(case, tree_unflatten(kept, spec), targets))
        return torch.stack(losses)

    return jacrev(per_sample)(theta)


def dense_empirical_fisher(
    case: Case, bn_mode: str = "eval", names: list[str] | None = None
) -> torch.Tensor:
    """The float64 empirical Fisher Σₙ ∇ℓₙ∇ℓₙᵀ (/ Σ_b c_b for a mean), ℓₙ per leading index."""
    model, names, theta, params, batches, counts = reference_setup(case, bn_mode, names)
    F = torch.zeros(theta.numel(), theta.numel(), dtype=DT)
    for batch, c in zip(batches, counts):
        if case.reduction == "mean" and c == 0:
            continue
        scale = c if case.reduction == "mean" else 1.0
        with _twice_differentiable():
            G = _per_sample_gradients(case, model, params, theta, batch, scale)
        F += G.T @ G
    return F / sum(counts) if case.reduction == "mean" else F
