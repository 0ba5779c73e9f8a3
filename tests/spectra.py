"""Operators with known spectra, shared by the solver tests."""

from __future__ import annotations

import numpy as np
import torch

from hessian_lr.curvature.linop import DenseOperator, LinearOperator


def spectrum_op(eigenvalues, seed: int = 0) -> tuple[DenseOperator, np.ndarray]:
    """Q diag(λ) Qᵀ with a random orthogonal Q; returns the operator and the dense matrix."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    return DenseOperator(torch.from_numpy(A)), A


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class NaNOperator(LinearOperator):
    """Returns NaN for every product: solvers must name the problem."""

    def __init__(self, n: int = 5) -> None:
        super().__init__(n, torch.float64, "cpu")

    def _matmat(self, V):
        return torch.full_like(V, float("nan"))


class NonSquare:
    """Looks like an operator but is 3 x 4."""

    shape = (3, 4)
    dtype = torch.float64
    device = torch.device("cpu")

    def __matmul__(self, v):
        raise AssertionError("never called")
