"""Jᵀ M J V on one batch: one JVP, an output-space matrix M, one VJP (GGN and Fisher products).

J is the Jacobian of the model's outputs on one batch w.r.t. the selected parameters and M an
output-space matrix applied by ``middle(outputs, targets, JV) -> M·JV`` (JV of shape
(k, *outputs.shape), any output pytree). Two back ends, named as the Hessian's:

* ``sandwich_func`` (``"forward-over-reverse"``): ``torch.func.jvp`` for JV (k columns
  vmapped) and the ``torch.func.vjp`` closure of one forward pass for JᵀW. Cost per column:
  one forward-mode pass and one backward pass (Schraudolph 2002).
* ``sandwich_autograd`` (``"double-backward"``): plain autograd on one forward graph and the
  graph of Jᵀu for a dummy cotangent u; JV by the double-VJP trick (Jv = ∂/∂u (Jᵀu)·v,
  Townsend 2017), so any model autograd can run works, recurrent kernels included. On one batch
  both graphs are built once and reused by every product (as the Hessian's first-order graph):
  per column one backward through the Jᵀu graph for JV and one backward for JᵀW.

The model evaluation is the operator base's ``_predict`` (the shadow module in the operator's
BN/dropout modes, math attention, tied and fixed parameters, copied buffers), so the outputs
are exactly those the Hessian operator's loss sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

import torch
from torch.func import jvp, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ._evaluation import _SharedSwitch
from .linop import params_to_vector

__all__ = [
    "model_outputs",
    "split_batch",
    "sandwich_func",
    "sandwich_autograd",
    "jacobian_graph",
    "JacobianGraph",
    "SANDWICHES",
]

Batch = Any
Middle = Callable[[Any, Any, Any], Any]


def split_batch(batch: Batch) -> tuple[Any, Any]:
    """(inputs, targets), or a ValueError that says what a Jacobian-based operator needs."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            "a batch must be (inputs, targets): the GGN and the Fisher need the model's outputs "
            "and the loss as a function of them (closure=True is not supported)"
        )
    return batch[0], batch[1]


def model_outputs(op: Any, theta: Sequence[torch.Tensor], batch: Batch) -> Any:
    """The model's outputs on the batch's inputs at parameters ``theta`` (the base's ``_predict``).

    The shadow module in the operator's modes, tied and fixed parameters, copied buffers.
    """
    return op._predict(theta, batch)[0]


#: reference-counted across threads, like the base's math-kernel switch
_MHA_OFF = _SharedSwitch()


@contextmanager
def _fastpath_flag_off() -> Iterator[None]:
    mha = torch.backends.mha
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def _mha_fastpath_off() -> AbstractContextManager:
    """``nn.MultiheadAttention``'s fused inference path off during a JVP (no forward-mode AD).

    Under ``torch.func.jvp`` alone no tensor requires grad, so eval-mode attention modules would
    take the fused path, which has no forward-mode AD. The flag is process-wide: it is switched
    while any JVP needs it and restored by the last one (other threads' inference meanwhile runs
    the unfused path: the same numbers, slower).
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        return nullcontext()
    return _MHA_OFF(_fastpath_flag_off)


def _detach(tree: Any) -> Any:
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def sandwich_func(
    op: Any, index: int, batch: Batch, V: torch.Tensor, middle: Middle
) -> torch.Tensor:
    """Jᵀ M J V by ``torch.func``: V (N, k) -> (N, k)."""
    _, targets = split_batch(batch)
    theta = op._theta()

    def f(th: tuple[torch.Tensor, ...]) -> Any:
        return model_outputs(op, th, batch)

    out, vjp_fn = vjp(f, theta)
    out = _detach(out)

    def jv(v: torch.Tensor) -> Any:
        with _mha_fastpath_off():
            return jvp(f, (theta,), (tuple(op._split(v)),))[1]

    def jtw(w: Any) -> torch.Tensor:
        return params_to_vector(vjp_fn(w)[0])

    if V.shape[1] == 1:
        JV = tree_map(lambda t: t.unsqueeze(0), jv(V[:, 0]))
        W = middle(out, targets, JV)
        return jtw(tree_map(lambda t: t[0], W)).unsqueeze(1)
    JV = vmap(jv, in_dims=1)(V)
    W = middle(out, targets, JV)
    return vmap(jtw, in_dims=0, out_dims=1)(W)


class JacobianGraph(NamedTuple):
    """One batch's forward graph and the linear map u -> Jᵀu built on it (create_graph)."""

    theta: tuple[torch.Tensor, ...]
    leaves: list[Any]  # the flattened outputs (with graph)
    spec: Any
    diff: list[int]  # positions of differentiable output leaves
    u: list[torch.Tensor]  # dummy cotangents, one per differentiable leaf
    live: list[tuple[int, torch.Tensor]]  # (parameter position, Jᵀu) that depend on u


def jacobian_graph(op: Any, batch: Batch) -> JacobianGraph:
    """Build the graph of the outputs and of Jᵀu (u a dummy cotangent) for one batch."""
    theta = tuple(t.requires_grad_(True) for t in op._theta())
    leaves, spec = tree_flatten(model_outputs(op, theta, batch))
    diff = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.requires_grad]
    u = [torch.zeros_like(leaves[i], requires_grad=True) for i in diff]
    live: list[tuple[int, torch.Tensor]] = []
    if diff:
        g = torch.autograd.grad(
            [leaves[i] for i in diff], theta, u, create_graph=True, allow_unused=True
        )
        live = [(p, gp) for p, gp in enumerate(g) if gp is not None and gp.requires_grad]
    return JacobianGraph(theta, leaves, spec, diff, u, live)


def sandwich_autograd(
    op: Any, index: int, batch: Batch, V: torch.Tensor, middle: Middle
) -> torch.Tensor:
    """Jᵀ M J V by autograd on one forward graph (cached per batch by ``op._jacobian_graph``)."""
    _, targets = split_batch(batch)
    graph = op._jacobian_graph(index, batch)
    leaves, diff = graph.leaves, graph.diff
    out = tree_unflatten(leaves, graph.spec)
    k = V.shape[1]
    JV_leaves = [
        torch.zeros((k, *t.shape), dtype=t.dtype, device=t.device)
        if isinstance(t, torch.Tensor)
        else t
        for t in leaves
    ]
    for j in range(k if graph.live else 0):
        vs = op._split(V[:, j])
        cols = torch.autograd.grad(
            [gp for _, gp in graph.live],
            graph.u,
            [vs[p] for p, _ in graph.live],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        for i, c in zip(diff, cols):
            JV_leaves[i][j] = c
    W = middle(_detach(out), targets, tree_unflatten(JV_leaves, graph.spec))
    W_leaves, _ = tree_flatten(W)
    if not diff:
        return V.new_zeros(V.shape)
    cols = []
    for j in range(k):
        hj = torch.autograd.grad(
            [leaves[i] for i in diff],
            graph.theta,
            [W_leaves[i][j] for i in diff],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        cols.append(params_to_vector(hj))
    return torch.stack(cols, dim=1)


#: back-end name -> sandwich product (the names of ``HessianOperator``'s back ends).
SANDWICHES: dict[str, Callable[[Any, int, Batch, torch.Tensor, Middle], torch.Tensor]] = {
    "forward-over-reverse": sandwich_func,
    "double-backward": sandwich_autograd,
}
