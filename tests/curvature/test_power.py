"""Power iteration with deflation on symmetric matrices with known spectra (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import NaNOperator, NonSquare, gen, spectrum_op

from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.power import PowerIterationResult, power_iteration


def test_diag_doctest_value():
    op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)))
    res = power_iteration(op, tol=1e-12, generator=gen())
    assert isinstance(res, PowerIterationResult)
    assert res.eigenvalues.dtype == torch.float64 and res.eigenvalues.shape == (1,)
    assert res.eigenvalues[0].item() == pytest.approx(10.0, rel=1e-10)
    assert abs(res.eigenvectors[2, 0].item()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "name, eigenvalues",
    [
        ("indefinite", np.concatenate([[-12.0, 10.0, 8.0], np.linspace(-5, 5, 77)])),
        ("negative", np.concatenate([[-20.0, -15.0, -11.0], np.linspace(-6, -0.5, 57)])),
        ("clustered", np.concatenate([[6.0, 4.0, 3.0], 1.0 + 1e-3 * np.arange(97)])),
    ],
)
def test_top_k_largest_magnitude_matches_eigh(name, eigenvalues):
    op, A = spectrum_op(eigenvalues, seed=1)
    res = power_iteration(op, k=3, which="LM", tol=1e-12, max_iter=2000, generator=gen(1))
    w, U = np.linalg.eigh(A)
    top = np.argsort(-np.abs(w))[:3]
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues.numpy(), w[top], rtol=1e-8)
    V = res.eigenvectors.numpy()
    assert V.shape == (A.shape[0], 3)
    # eigenvectors: unit, aligned with eigh's (up to sign), small residual
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(V * U[:, top], axis=0)), 1.0, atol=1e-6)
    resid = np.linalg.norm(A @ V - V * res.eigenvalues.numpy(), axis=0)
    assert np.all(resid <= 1e-4 * np.abs(res.eigenvalues.numpy()))


def test_degenerate_top_eigenvalue_deflation_finds_every_copy():
    lam = np.concatenate([[10.0, 10.0, 10.0, 5.0], np.linspace(0.0, 2.0, 56)])
    op, A = spectrum_op(lam, seed=2)
    res = power_iteration(op, k=4, tol=1e-12, max_iter=500, generator=gen(2))
    np.testing.assert_allclose(res.eigenvalues.numpy(), [10, 10, 10, 5], rtol=1e-9)
    V = res.eigenvectors.numpy()
    np.testing.assert_allclose(V.T @ V, np.eye(4), atol=1e-8)
    w, U = np.linalg.eigh(A)
    P_top = U[:, -3:] @ U[:, -3:].T  # projector on the 3-dimensional eigenspace of 10
    np.testing.assert_allclose(P_top @ V[:, :3], V[:, :3], atol=1e-6)


def test_largest_algebraic_with_negative_dominant_eigenvalue():
    lam = np.concatenate([[-20.0, 5.0, 4.0], np.linspace(-3, 3, 47)])
    op, A = spectrum_op(lam, seed=3)
    lm = power_iteration(op, k=1, which="LM", tol=1e-12, max_iter=2000, generator=gen(3))
    assert lm.eigenvalues[0].item() == pytest.approx(-20.0, rel=1e-9)
    la = power_iteration(op, k=2, which="LA", tol=1e-13, max_iter=5000, generator=gen(3))
    np.testing.assert_allclose(la.eigenvalues.numpy(), [5.0, 4.0], rtol=1e-8)
    assert la.converged


def test_largest_algebraic_all_negative_and_positive_dominant():
    op, _ = spectrum_op(np.linspace(-10, -1, 40), seed=4)
    la = power_iteration(op, which="LA", tol=1e-13, max_iter=5000, generator=gen(4))
    assert la.eigenvalues[0].item() == pytest.approx(-1.0, rel=1e-8)
    op, _ = spectrum_op(np.concatenate([[9.0, -8.0, 7.0], np.linspace(-2, 2, 37)]), seed=5)
    la = power_iteration(op, k=2, which="LA", tol=1e-13, max_iter=5000, generator=gen(5))
    np.testing.assert_allclose(la.eigenvalues.numpy(), [9.0, 7.0], rtol=1e-8)


def test_one_matvec_per_iteration_and_counters():
    op, _ = spectrum_op(np.concatenate([[5.0, 2.0], np.linspace(0, 1, 48)]), seed=6)
    before = op.num_matvecs
    res = power_iteration(op, k=2, tol=1e-8, generator=gen(6))
    assert res.num_matvecs == op.num_matvecs - before == res.num_iterations
    assert res.seconds >= 0


def test_warm_start_needs_fewer_matvecs():
    lam = np.concatenate([[1.0, 0.9], np.linspace(0, 0.8, 98)])
    op, A = spectrum_op(lam, seed=7)
    cold = power_iteration(op, tol=1e-10, max_iter=2000, generator=gen(7))
    u = torch.from_numpy(np.linalg.eigh(A)[1][:, -1])
    v0 = u + 1e-3 * torch.randn(100, dtype=torch.float64, generator=gen(8))
    warm = power_iteration(op, tol=1e-10, max_iter=2000, v0=v0, generator=gen(7))
    assert warm.eigenvalues[0].item() == pytest.approx(1.0, rel=1e-8)
    # the residual shrinks like 0.9^t: a start 1e-3 off the eigenvector saves log(1e-3)/log(0.9)
    # ≈ 65 iterations of the cold start's ~220
    assert warm.num_matvecs <= cold.num_matvecs - 50, (warm.num_matvecs, cold.num_matvecs)


def test_not_converged_warns():
    op, _ = spectrum_op(np.concatenate([[1.0, 0.999], np.linspace(0, 0.5, 48)]), seed=9)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        res = power_iteration(op, tol=1e-14, max_iter=5, generator=gen())
    assert not res.converged and res.num_matvecs == 5


def test_float32_operator():
    op, A = spectrum_op(np.concatenate([[4.0, 2.0], np.linspace(0, 1, 48)]), seed=10)
    op32 = DenseOperator(torch.from_numpy(A).float())
    res = power_iteration(op32, k=2, tol=1e-6, generator=gen())
    assert res.eigenvectors.dtype == torch.float32
    np.testing.assert_allclose(res.eigenvalues.numpy(), [4.0, 2.0], rtol=1e-4)


def test_bad_inputs():
    op, _ = spectrum_op(np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="k must be"):
        power_iteration(op, k=6)
    with pytest.raises(ValueError, match="k must be"):
        power_iteration(op, k=0)
    with pytest.raises(ValueError, match="tol must be positive"):
        power_iteration(op, tol=0.0)
    with pytest.raises(ValueError, match="which"):
        power_iteration(op, which="SA")
    with pytest.raises(ValueError, match="which"):
        power_iteration(op, which="lm")
    with pytest.raises(ValueError, match="max_iter"):
        power_iteration(op, max_iter=0)
    with pytest.raises(ValueError, match="v0 must have shape"):
        power_iteration(op, v0=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        power_iteration(NonSquare())
    with pytest.raises(TypeError, match="linear operator"):
        power_iteration(np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        power_iteration(NaNOperator())
