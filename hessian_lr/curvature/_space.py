"""The vector space a solver works in: the seam between the solvers and sharded operators.

Every solver (Lanczos, power iteration, the trace estimators, SLQ) keeps its vectors as torch
tensors whose vector dimension is "this process's part" of R^N. For an ordinary operator that
part is all of R^N (:class:`FullSpace`: every method below is the plain torch call, so the
solvers compute exactly what they computed before this seam existed). For an operator on a
parameter-sharded model (:class:`~hessian_lr.curvature.sharded.ShardedHessianOperator`) it is
the rank's shard, and the same few calls reduce across the shard group
(:class:`~hessian_lr.curvature._shard_space.ShardSpace`). A solver therefore only has to route
each contraction over the vector dimension through ``space.reduce`` (dot products, Gram
coefficients, column sums) or ``space.norm``, draw random vectors with ``_solver_utils.randn`` /
``rademacher`` (which ask the space for its part), and factor tall matrices with ``space.qr``.

The interface (duck-typed; an operator exposes it as ``op.vector_space``):

* ``dim``: N, the length of the full vectors; ``local_size``: this process's part of it.
* ``reduce(t)``: ``t`` holds partial sums over this process's part; returns the sums over R^N.
* ``norm(x, dim=None, keepdim=False)``: the 2-norm over the vector dimension.
* ``dot(u, v)``: uᵀv for two vectors.
* ``qr(Y)``: a thin QR of a tall (part, k) matrix, Q in the same layout, R (k, k) everywhere.
* ``eye(dtype, device)``: this process's rows of the identity, (part, N).
* ``diagonal_sum(P)``: Σ_i P[i, i] for P = (op @ eye) laid out as ``eye``.
* ``randn(lead, generator, dtype, device)`` / ``rademacher(...)``: random vectors (*lead, part).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

__all__ = ["FullSpace", "VectorSpace", "space_of"]


class VectorSpace(Protocol):  # pragma: no cover - an interface
    """What a solver needs from the space its vectors live in (see the module docstring)."""

    dim: int
    local_size: int

    def reduce(self, t: torch.Tensor) -> torch.Tensor: ...
    def norm(self, x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor: ...
    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...
    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class FullSpace:
    """R^N held whole by this process: every call is the plain torch operation."""

    sharded = False

    def __init__(self, n: int) -> None:
        self.dim = self.local_size = int(n)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` unchanged (the sums are already over all of R^N)."""
        return t

    def norm(self, x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
        """``torch.linalg.vector_norm``."""
        return torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``torch.dot``."""
        return torch.dot(u, v)

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.linalg.qr`` (Householder)."""
        return torch.linalg.qr(Y)

    def eye(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The (N, N) identity."""
        return torch.eye(self.dim, dtype=dtype, device=device)

    def diagonal_sum(self, P: torch.Tensor) -> torch.Tensor:
        """Tr P."""
        return torch.diagonal(P).sum()


def space_of(op: object) -> Any:
    """The operator's ``vector_space`` if it has one, else all of R^N (:class:`FullSpace`)."""
    space = getattr(op, "vector_space", None)
    return FullSpace(op.shape[0]) if space is None else space
