"""P^{-1/2} H P^{-1/2}: dense form, generalized eigenvalues (scipy), eigenvectors, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.preconditioned import PreconditionedOperator

DT = torch.float64


def _pencil(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n))
    A = B @ B.T / n - 0.3 * np.eye(n)  # indefinite, top eigenvalue positive
    p = np.exp(rng.uniform(-3, 1, size=n))  # a preconditioner spanning 4 decades
    return 0.5 * (A + A.T), p


def test_dense_form_and_products():
    A, p = _pencil()
    S = PreconditionedOperator(DenseOperator(torch.tensor(A)), torch.tensor(p))
    expected = A / np.sqrt(np.outer(p, p))
    np.testing.assert_allclose(S.to_dense().numpy(), expected, rtol=1e-13, atol=1e-15)
    V = torch.randn(12, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose((S @ V).numpy(), expected @ V.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose((S @ V[:, 0]).numpy(), expected @ V[:, 0].numpy(), rtol=1e-12)


def test_lanczos_equals_generalized_eigenvalues():
    A, p = _pencil(40, seed=3)
    S = PreconditionedOperator(DenseOperator(torch.tensor(A)), torch.tensor(p))
    res = lanczos(S, k=2, tol=1e-12, generator=torch.Generator().manual_seed(0))
    ref = scipy.linalg.eigh(A, np.diag(p), eigvals_only=True)  # ascending
    np.testing.assert_allclose(res.eigenvalues.numpy(), ref[::-1][:2], rtol=1e-8)
    u = S.to_original(res.eigenvectors[:, 0]).numpy()  # A u = λ P u
    lam = float(res.eigenvalues[0])
    np.testing.assert_allclose(A @ u, lam * p * u, atol=1e-8 * np.abs(lam * p * u).max())
    w = S.from_original(torch.tensor(u))
    np.testing.assert_allclose(w.numpy(), res.eigenvectors[:, 0].numpy(), atol=1e-12)


def test_float32_operator_takes_float64_diagonal():
    A, p = _pencil()
    S = PreconditionedOperator(DenseOperator(torch.tensor(A, dtype=torch.float32)), torch.tensor(p))
    assert S.dtype == torch.float32 and S.diagonal.dtype == torch.float32
    np.testing.assert_allclose(
        S.to_dense().numpy(), A / np.sqrt(np.outer(p, p)), rtol=1e-5, atol=1e-6
    )


def test_infinite_entries_freeze_coordinates():
    A, p = _pencil(10, seed=5)
    frozen = np.array([1, 4, 7])
    p_inf = p.copy()
    p_inf[frozen] = np.inf
    S = PreconditionedOperator(DenseOperator(torch.tensor(A)), torch.tensor(p_inf))
    keep = np.setdiff1d(np.arange(10), frozen)
    dense = S.to_dense().numpy()
    assert np.all(dense[frozen] == 0) and np.all(dense[:, frozen] == 0)
    sub = A[np.ix_(keep, keep)] / np.sqrt(np.outer(p[keep], p[keep]))
    np.testing.assert_allclose(dense[np.ix_(keep, keep)], sub, rtol=1e-13)
    res = lanczos(S, k=1, tol=1e-12, generator=torch.Generator().manual_seed(0))
    ref = scipy.linalg.eigh(A[np.ix_(keep, keep)], np.diag(p[keep]), eigvals_only=True)[-1]
    assert float(res.eigenvalues[0]) == pytest.approx(ref, rel=1e-8)
    w = S.from_original(torch.ones(10, dtype=DT))
    assert torch.isfinite(w).all() and bool((w[frozen] == 0).all())


def test_diagonal_is_copied():
    A, p = _pencil()
    d = torch.tensor(p)
    S = PreconditionedOperator(DenseOperator(torch.tensor(A)), d)
    before = S.to_dense()
    d.mul_(10.0)
    assert torch.equal(S.to_dense(), before)


@pytest.mark.parametrize(
    "diag,err,match",
    [
        (torch.ones(5, dtype=DT), ValueError, "must have shape"),
        (torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=DT), ValueError, "positive"),
        (torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=DT), ValueError, "positive"),
        (torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=DT), ValueError, "NaN"),
        (torch.tensor([1.0, -float("inf"), 1.0, 1.0], dtype=DT), ValueError, "NaN or -inf"),
        ([1.0, 1.0, 1.0, 1.0], TypeError, "torch.Tensor"),
    ],
)
def test_bad_diagonal(diag, err, match):
    with pytest.raises(err, match=match):
        PreconditionedOperator(DenseOperator(torch.eye(4, dtype=DT)), diag)


def test_not_an_operator():
    with pytest.raises(TypeError, match="linear operator"):
        PreconditionedOperator(np.eye(3), torch.ones(3, dtype=DT))
