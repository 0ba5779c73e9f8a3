"""Hessian-vector products on one batch, one plain function per back end, in ONE table.

A product is ``product(f, V) -> H_b V``: ``f`` is the batch's objective as the operator hands it
over (a :class:`BatchObjective`: the loss as a function of θ, the current θ, and helpers), V has
shape (N, k). Everything around it -- the data loop and batch weights, model evaluation (modes,
attention kernels, tied and unused parameters, dtypes), caches and their invalidation, chunks of
V, the symmetry probe -- belongs to the operator base (``_base.py``). A new back end is one
function added to :data:`PRODUCTS`; :data:`BACKENDS` (what ``HessianOperator(backend=...)``
accepts) is derived from it.

Back ends (methods notes §1):

* ``forward_over_reverse``: ``torch.func.jvp`` of ``torch.func.grad`` (Pearlmutter 1994); k
  columns through ``torch.func.vmap``. Least memory.
* ``double_backward``: ``torch.autograd.grad(g·v)`` on a gradient built with
  ``create_graph=True``; the operator may keep that first-order graph across products (the
  fastest exact product on CPU). Parameters the loss does not reach, or whose gradient is
  constant, have zero rows and columns.
* ``finite_difference``: Hessian-free (Martens 2010), as in Super-Convergence (Smith & Topin
  2017) §5: ``(g(θ+δv) − g(θ−δv))/2δ`` (central) or ``(g(θ+δv) − g(θ))/δ`` (forward), with
  δ = ``fd_eps``·max(1, ‖θ‖)/‖v‖. Needs only first derivatives, so it is also the fallback for
  models whose second derivatives autograd gets wrong (the operator's symmetry probe). On ReLU
  networks the gradient has kinks: measure it against an exact back end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch.func import grad, jvp, vmap

from .linop import params_to_vector

__all__ = [
    "PRODUCTS",
    "EXACT",
    "BACKENDS",
    "BatchObjective",
    "FirstOrderGraph",
    "forward_over_reverse",
    "double_backward",
    "finite_difference",
    "fd_truncation_error",
]

Params = tuple[torch.Tensor, ...]
#: Use ``is_grads_batched`` for k > 1 columns on the CPU too (off: a column loop measured 1.2x
#: faster there; tests switch it on to cover the GPU path).
BATCHED_ON_CPU = False


class FirstOrderGraph(NamedTuple):
    """θ leaves and the gradient of one batch's loss with its graph (``create_graph=True``)."""

    theta: Params  # leaves
    live: list[tuple[int, torch.Tensor]]  # (position, gradient with graph) that depend on θ
    loss: float
    grad: torch.Tensor  # (N,) detached, zeros for unused parameters


class BatchObjective(Protocol):
    """What a product sees of one batch (built by the operator, see ``_base.py``)."""

    fd_scheme: str  # "central" or "forward"
    fd_eps: float  # relative finite-difference step

    def loss(self, theta: Params) -> torch.Tensor:
        """L_b(θ), a scalar, for parameter tensors θ (model evaluation included)."""

    def theta(self) -> Params:
        """The current θ: fresh copies, detached, in the compute dtype."""

    def split(self, v: torch.Tensor) -> list[torch.Tensor]:
        """(..., N) -> parameter-shaped views (..., *p.shape)."""

    def graph(self) -> FirstOrderGraph:
        """The batch's first-order graph (cached by the operator where allowed)."""


def forward_over_reverse(f: BatchObjective, V: torch.Tensor) -> torch.Tensor:
    """H_b V by ``jvp(grad(L_b))``; k > 1 columns vmapped."""
    theta = f.theta()
    grad_fn = grad(f.loss)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return params_to_vector(jvp(grad_fn, (theta,), (tuple(f.split(v)),))[1])

    if V.shape[1] == 1:
        return hvp(V[:, 0]).unsqueeze(1)
    return vmap(hvp, in_dims=1, out_dims=1)(V)


def double_backward(f: BatchObjective, V: torch.Tensor) -> torch.Tensor:
    """H_b V by differentiating g·v through the batch's (cached) first-order graph."""
    theta, live = f.graph()[:2]
    k = V.shape[1]
    if not live:  # no gradient depends on the parameters: H_b = 0
        return V.new_zeros(V.shape)
    outputs = [g for _, g in live]
    if k == 1 or (V.device.type == "cpu" and not BATCHED_ON_CPU):
        # On CPU, is_grads_batched (vmap over the backward) measured 1.2x slower than a loop
        # over the columns on the cached graph (benchmarks/bench_curvature.py).
        cols = []
        for j in range(k):
            vs = f.split(V[:, j])
            cols.append(params_to_vector(_grad(outputs, theta, [vs[i] for i, _ in live])))
        return cols[0].unsqueeze(1) if k == 1 else torch.stack(cols, dim=1)
    vs = f.split(V.T)  # tensors of shape (k, *p.shape)
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
) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(
        outputs,
        inputs,
        grad_outputs=grad_outputs,
        retain_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )


def finite_difference(f: BatchObjective, V: torch.Tensor) -> torch.Tensor:
    """H_b V ≈ gradient differences along each column (central or forward)."""
    theta = f.theta()
    theta_norm = float(params_to_vector(theta).norm())
    grad_fn = grad(f.loss)

    def g_at(direction: torch.Tensor, delta: float) -> torch.Tensor:
        shifted = tuple(t + delta * d for t, d in zip(theta, f.split(direction)))
        return params_to_vector(grad_fn(shifted))

    cols = []
    g0 = None
    for j in range(V.shape[1]):
        v = V[:, j]
        v_norm = float(v.norm())
        if v_norm == 0.0:
            cols.append(torch.zeros_like(v))
            continue
        delta = f.fd_eps * max(1.0, theta_norm) / v_norm
        if f.fd_scheme == "central":
            cols.append((g_at(v, delta) - g_at(v, -delta)) / (2 * delta))
        else:
            if g0 is None:
                g0 = params_to_vector(grad_fn(theta))
            cols.append((g_at(v, delta) - g0) / delta)
    return torch.stack(cols, dim=1)


def fd_truncation_error(op_exact: Any, op_fd: Any, v: torch.Tensor) -> float:
    """Relative error ‖H_fd v − H v‖ / ‖H v‖ of a finite-difference operator vs an exact one."""
    exact = op_exact @ v
    approx = op_fd @ v
    denom = float(exact.norm())
    return float((approx - exact).norm()) / (denom if denom > 0 else math.inf)


Product = Callable[[BatchObjective, torch.Tensor], torch.Tensor]

#: Back end name -> per-batch product: the one place a back end is registered.
PRODUCTS: dict[str, Product] = {
    "forward-over-reverse": forward_over_reverse,
    "double-backward": double_backward,
    "finite-difference": finite_difference,
}
#: Back ends exact up to rounding (their symmetry is probed; the others' is approximate).
EXACT: frozenset[str] = frozenset({"forward-over-reverse", "double-backward"})
#: What ``HessianOperator(backend=...)`` accepts: ``"auto"`` and every registered back end.
BACKENDS: tuple[str, ...] = ("auto", *PRODUCTS)
