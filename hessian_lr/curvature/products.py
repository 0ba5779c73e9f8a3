"""One Hessian-vector product per back end, on one batch: the only thing a back end writes.

Each function here is ``product(op, index, batch, V) -> H_b V`` for the loss ``L_b`` of one
batch and V of shape (N, k), in the style of curvlinops' per-batch ``_matmat_batch``: the
``HessianOperator`` (``hessian.py``) owns everything around it -- the data loop and the weighting
of batches, BatchNorm modes and attention kernels, parameter selection and tying, dtypes,
caches, chunking of V -- and picks the function from ``PRODUCTS`` by name. ``op`` provides:
``op._theta()`` (the parameters, detached, in the compute dtype), ``op._loss(theta, batch)``,
``op._split(v)`` (a flat vector as parameter-shaped views), ``op._first_order_graph(index,
batch)`` and the finite-difference settings ``op.fd_scheme``, ``op.fd_eps``.

Back ends (methods notes §1):

* ``forward_over_reverse``: ``torch.func.jvp`` of ``torch.func.grad`` over ``functional_call``
  (Pearlmutter 1994); k columns through ``torch.func.vmap``. Least memory.
* ``double_backward``: ``torch.autograd.grad(g·v)`` on a gradient built with
  ``create_graph=True``; the first-order graph can be reused across products (the fastest exact
  product on CPU). Parameters the loss does not reach, or whose gradient is constant, have zero
  rows and columns.
* ``finite_difference``: Hessian-free (Martens 2010), as in Super-Convergence (Smith & Topin
  2017) §5: ``(g(θ+δv) − g(θ−δv))/2δ`` (central) or ``(g(θ+δv) − g(θ))/δ`` (forward), with
  δ = ``fd_eps``·max(1, ‖θ‖)/‖v‖. On ReLU networks the gradient has kinks: measure it against
  an exact back end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.func import grad, jvp, vmap

from .linop import params_to_vector

if TYPE_CHECKING:  # pragma: no cover
    from .hessian import HessianOperator

__all__ = ["PRODUCTS", "forward_over_reverse", "double_backward", "finite_difference"]

Batch = Any
#: Use ``is_grads_batched`` for k > 1 columns on the CPU too (off: a column loop measured 1.2x
#: faster there; tests switch it on to cover the GPU path).
BATCHED_ON_CPU = False


def forward_over_reverse(
    op: HessianOperator, index: int, batch: Batch, V: torch.Tensor
) -> torch.Tensor:
    """H_b V by ``jvp(grad(L_b))``; k > 1 columns vmapped."""
    theta = op._theta()
    grad_fn = grad(lambda th: op._loss(th, batch))

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return params_to_vector(jvp(grad_fn, (theta,), (tuple(op._split(v)),))[1])

    if V.shape[1] == 1:
        return hvp(V[:, 0]).unsqueeze(1)
    return vmap(hvp, in_dims=1, out_dims=1)(V)


def double_backward(op: HessianOperator, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
    """H_b V by differentiating g·v through the (cached) first-order graph of batch ``index``."""
    graph = op._first_order_graph(index, batch)
    theta, live = graph.theta, graph.live
    k = V.shape[1]
    if not live:  # no gradient depends on the parameters: H_b = 0
        return V.new_zeros(V.shape)
    outputs = [g for _, g in live]
    if k == 1 or (V.device.type == "cpu" and not BATCHED_ON_CPU):
        # On CPU, is_grads_batched (vmap over the backward) measured 1.2x slower than a loop
        # over the columns on the cached graph (benchmarks/bench_curvature.py).
        cols = []
        for j in range(k):
            vs = op._split(V[:, j])
            hj = _grad(outputs, theta, [vs[i] for i, _ in live])
            cols.append(params_to_vector(hj))
        return cols[0].unsqueeze(1) if k == 1 else torch.stack(cols, dim=1)
    vs = op._split(V.T)  # tensors of shape (k, *p.shape)
    try:
        hv = torch.autograd.grad(
            outputs,
            theta,
            grad_outputs=[vs[i] for i, _ in live],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
    except RuntimeError:  # an op without a batching rule: one column at a time
        cols = [
            params_to_vector(_grad(outputs, theta, [vs[i][j] for i, _ in live])) for j in range(k)
        ]
        return torch.stack(cols, dim=1)
    # Unused inputs: None (materialize_grads would give zeros without the batch dimension).
    flat = [V.new_zeros(k, t.numel()) if h is None else h.reshape(k, -1) for h, t in zip(hv, theta)]
    return torch.cat(flat, dim=1).T


def _grad(
    outputs: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    *,
    batched: bool = False,
) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(
        outputs,
        inputs,
        grad_outputs=grad_outputs,
        retain_graph=True,
        allow_unused=True,
        materialize_grads=True,
        is_grads_batched=batched,
    )


def finite_difference(
    op: HessianOperator, index: int, batch: Batch, V: torch.Tensor
) -> torch.Tensor:
    """H_b V ≈ gradient differences along each column (central or forward)."""
    theta = op._theta()
    theta_norm = float(params_to_vector(theta).norm())
    grad_fn = grad(lambda th: op._loss(th, batch))

    def g_at(direction: torch.Tensor, delta: float) -> torch.Tensor:
        shifted = tuple(t + delta * d for t, d in zip(theta, op._split(direction)))
        return params_to_vector(grad_fn(shifted))

    cols = []
    g0 = None
    for j in range(V.shape[1]):
        v = V[:, j]
        v_norm = float(v.norm())
        if v_norm == 0.0:
            cols.append(torch.zeros_like(v))
            continue
        delta = op.fd_eps * max(1.0, theta_norm) / v_norm
        if op.fd_scheme == "central":
            cols.append((g_at(v, delta) - g_at(v, -delta)) / (2 * delta))
        else:
            if g0 is None:
                g0 = params_to_vector(grad_fn(theta))
            cols.append((g_at(v, delta) - g0) / delta)
    return torch.stack(cols, dim=1)


#: Back end name -> per-batch product. ``HessianOperator`` looks the name up here.
PRODUCTS: dict[str, Callable[[HessianOperator, int, Batch, torch.Tensor], torch.Tensor]] = {
    "forward-over-reverse": forward_over_reverse,
    "double-backward": double_backward,
    "finite-difference": finite_difference,
}
