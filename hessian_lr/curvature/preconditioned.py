"""A diagonally preconditioned curvature operator P^{-1/2} H P^{-1/2} (preconditioned sharpness).

An adaptive optimizer steps θ ← θ − η P⁻¹ m with a diagonal preconditioner P (Adam:
P = diag(√v̂ + ε)). On the local quadratic its stability is governed by the eigenvalues of P⁻¹H
(Cohen et al. 2022, "Adaptive gradient methods at the edge of stability", arXiv 2207.14484).
P⁻¹H is not symmetric, but it is similar to the symmetric S = P^{-1/2} H P^{-1/2}
(P⁻¹H = P^{-1/2} S P^{1/2}), so both have the same real eigenvalues -- the generalized
eigenvalues of the pencil (H, P), H u = λ P u -- and an eigenvector w of S gives u = P^{-1/2} w.
Lanczos, power iteration and the trace estimators run on S unchanged: one product with H per
product with S.

Imports nothing from ``lr``, ``schedules`` or ``training``.
"""

from __future__ import annotations

import contextlib

import torch

from ._solver_utils import check_operator
from .linop import LinearOperator

__all__ = ["PreconditionedOperator"]


class PreconditionedOperator(LinearOperator):
    """S = P^{-1/2} H P^{-1/2} for a positive diagonal P, wrapping any operator H with ``@``.

    ``S @ v = p^{-1/2} ⊙ (H @ (p^{-1/2} ⊙ v))``. The eigenvalues of S are those of P⁻¹H; use
    :meth:`to_original` to turn an eigenvector of S into one of P⁻¹H.

    Args:
        op: a symmetric (N, N) operator with ``shape``, ``dtype``, ``device`` and ``op @ v``
            (``HessianOperator``, ``DenseOperator``, ...). Not modified.
        diagonal: (N,) the diagonal of P, every entry positive. ``+inf`` marks a coordinate that
            does not move (scale 0: it drops out of the pencil and contributes eigenvalue 0).
            Converted to the operator's dtype and device (a copy).

    Raises:
        TypeError: ``op`` is not an operator or ``diagonal`` not a tensor.
        ValueError: a shape mismatch, or a diagonal entry that is ≤ 0 or NaN.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> H = DenseOperator(torch.diag(torch.tensor([2.0, 8.0], dtype=torch.float64)))
        >>> S = PreconditionedOperator(H, torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> S.to_dense().diagonal().tolist()  # eigenvalues of P⁻¹H: 2/1 and 8/4
        [2.0, 2.0]
    """

    def __init__(self, op: object, diagonal: torch.Tensor) -> None:
        n = check_operator(op)
        if not isinstance(diagonal, torch.Tensor):
            raise TypeError(
                f"diagonal must be a torch.Tensor of shape ({n},), got {type(diagonal).__name__}"
            )
        if diagonal.ndim != 1 or diagonal.shape[0] != n:
            raise ValueError(
                f"diagonal has shape {tuple(diagonal.shape)}; the operator is {tuple(op.shape)}, "
                f"so it must have shape ({n},)"
            )
        p = diagonal.detach().to(device=op.device, dtype=op.dtype).clone()
        if bool(torch.isnan(p).any()) or bool(torch.isneginf(p).any()):
            raise ValueError("diagonal holds NaN or -inf; the preconditioner must be positive")
        if not bool((p > 0).all()):
            raise ValueError(
                f"diagonal must be positive (min {float(p.min()):.3e}); a preconditioner "
                "diag(√v̂ + ε) with ε > 0 always is"
            )
        super().__init__(n, op.dtype, op.device)
        self.op = op
        self.diagonal = p
        self._frozen = torch.isinf(p)
        self._scale = torch.where(self._frozen, 0.0, p.rsqrt())

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        s = self._scale.unsqueeze(1)
        return s * (self.op @ (s * V))

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._scale * (self.op @ (self._scale * v))

    def to_original(self, w: torch.Tensor) -> torch.Tensor:
        """Eigenvector(s) w of S (shape (N,) or (N, k)) -> u = P^{-1/2} w of P⁻¹H (unnormalized)."""
        return (self._scale if w.ndim == 1 else self._scale.unsqueeze(1)) * w

    def from_original(self, u: torch.Tensor) -> torch.Tensor:
        """A vector u in parameter coordinates -> w = P^{1/2} u (e.g. to warm-start Lanczos)."""
        s = torch.where(self._frozen, 0.0, self.diagonal.sqrt())
        return (s if u.ndim == 1 else s.unsqueeze(1)) * u

    def solving(self) -> contextlib.AbstractContextManager[None]:
        """The wrapped operator's solver context (its model checks, once per solve)."""
        inner = getattr(self.op, "solving", None)
        return inner() if callable(inner) else contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"PreconditionedOperator(N={self.shape[0]}, op={self.op!r})"
