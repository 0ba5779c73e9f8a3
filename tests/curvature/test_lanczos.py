"""Lanczos on symmetric matrices with known spectra (float64), against numpy eigh and ARPACK."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from spectra import NaNOperator, NonSquare, gen, spectrum_op

from hessian_lr.curvature.lanczos import LanczosResult, lanczos
from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.power import power_iteration

SPECTRA = {
    "indefinite": np.concatenate([[-9.0, 12.0, 10.5, -8.0], np.linspace(-4, 6, 196)]),
    "negative": np.concatenate([[-30.0, -25.0, -24.0], np.linspace(-10, -0.1, 147)]),
    # a Hessian-like spectrum: a few outliers, a bulk clustered near zero
    "clustered": np.concatenate(
        [[50.0, 20.0, 10.0, -1.0], np.random.default_rng(0).normal(0, 1e-2, 246)]
    ),
}


def expected(w: np.ndarray, k: int, which: str) -> np.ndarray:
    if which == "LA":
        return np.sort(w)[::-1][:k]
    if which == "SA":
        return np.sort(w)[:k]
    return w[np.argsort(-np.abs(w))][:k]


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("name", list(SPECTRA))
def test_eigenpairs_match_eigh(name, which):
    op, A = spectrum_op(SPECTRA[name], seed=1)
    tol = 1e-8
    res = lanczos(op, k=3, which=which, tol=tol, max_iter=A.shape[0], generator=gen(1))
    assert isinstance(res, LanczosResult)
    assert res.converged
    w = np.linalg.eigvalsh(A)
    want = expected(w, 3, which)
    np.testing.assert_allclose(res.eigenvalues.numpy(), want, rtol=1e-9, atol=1e-9)
    # Ritz vectors satisfy the residual test and the reported residuals are the true ones
    V = res.eigenvectors.numpy()
    theta = res.eigenvalues.numpy()
    true_resid = np.linalg.norm(A @ V - V * theta, axis=0)
    assert np.all(true_resid <= tol * np.abs(theta) + 1e-12)
    np.testing.assert_allclose(res.residuals.numpy(), true_resid, rtol=1e-3, atol=1e-12)
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-10)


def test_default_tolerance_and_order():
    op, A = spectrum_op(SPECTRA["indefinite"], seed=2)
    w = np.linalg.eigvalsh(A)
    la = lanczos(op, k=4, generator=gen(2))  # defaults: which="LA", tol=1e-6
    assert la.eigenvalues.dtype == torch.float64 and la.residuals.shape == (4,)
    assert la.eigenvectors.shape == (200, 4) and la.eigenvectors.dtype == torch.float64
    np.testing.assert_allclose(la.eigenvalues.numpy(), np.sort(w)[::-1][:4], rtol=1e-6)
    assert np.all(np.diff(la.eigenvalues.numpy()) <= 0)
    sa = lanczos(op, k=2, which="SA", generator=gen(2))
    assert np.all(np.diff(sa.eigenvalues.numpy()) >= 0)
    lm = lanczos(op, k=3, which="LM", generator=gen(2), return_eigenvectors=False)
    np.testing.assert_allclose(lm.eigenvalues.numpy(), [12.0, 10.5, -9.0], rtol=1e-6)
    assert lm.eigenvectors is None


def test_agrees_with_arpack_eigsh():
    op, A = spectrum_op(SPECTRA["clustered"], seed=3)
    for which in ("LA", "SA"):
        ref = scipy.sparse.linalg.eigsh(op.to_scipy(), k=5, which=which, tol=1e-12)[0]
        res = lanczos(op, k=5, which=which, tol=1e-8, max_iter=250, generator=gen(3))
        np.testing.assert_allclose(np.sort(res.eigenvalues.numpy()), np.sort(ref), atol=1e-9)


def test_degenerate_top_eigenvalue():
    # A triple top eigenvalue with a clear gap: Lanczos from one vector sees one copy in exact
    # arithmetic; the others enter through rounding and converge because the gap is large.
    lam = np.concatenate([[10.0, 10.0, 10.0], np.linspace(0.0, 5.0, 197)])
    op, A = spectrum_op(lam, seed=4)
    one = lanczos(op, k=1, tol=1e-10, generator=gen(4))
    assert one.eigenvalues[0].item() == pytest.approx(10.0, rel=1e-12)
    U = np.linalg.eigh(A)[1][:, -3:]
    v = one.eigenvectors.numpy()[:, 0]
    assert np.linalg.norm(U @ (U.T @ v)) == pytest.approx(1.0, abs=1e-9)  # in the eigenspace
    three = lanczos(op, k=3, tol=1e-10, max_iter=200, generator=gen(4))
    np.testing.assert_allclose(three.eigenvalues.numpy(), [10.0, 10.0, 10.0], rtol=1e-10)
    V = three.eigenvectors.numpy()
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-8)


def test_start_vector_in_invariant_subspace_still_finds_the_top():
    # v0 an exact eigenvector: β_1 = 0, the run restarts from a random orthogonal vector and must
    # not accept the exact (but wrong) Ritz value of the first block.
    lam = np.linspace(1.0, 10.0, 100)
    op, A = spectrum_op(lam, seed=5)
    U = np.linalg.eigh(A)[1]
    for column, which, want in [
        (50, "LA", 10.0),
        (99, "LA", 10.0),
        (50, "LM", 10.0),
        (50, "SA", 1.0),
    ]:
        v0 = torch.from_numpy(U[:, column].copy())
        res = lanczos(op, v0=v0, which=which, tol=1e-10, generator=gen(5))
        assert res.converged
        assert res.eigenvalues[0].item() == pytest.approx(want, rel=1e-10), (column, which)


def test_multiple_of_identity_ends_at_once():
    # every step breaks down (β = 0); a random block that breaks down holds every distinct
    # eigenvalue, so the run may stop: k matvecs for k eigenpairs
    op = DenseOperator(2.5 * torch.eye(40, dtype=torch.float64))
    for k in (1, 3):
        res = lanczos(op, k=k, generator=gen())
        assert res.converged and res.num_matvecs == k
        np.testing.assert_allclose(res.eigenvalues.numpy(), 2.5, rtol=1e-14)
        np.testing.assert_allclose(res.eigenvectors.T @ res.eigenvectors, np.eye(k), atol=1e-12)


def test_warm_start_needs_fewer_matvecs():
    # tracking λ_max during training: the Hessian moved a little since the last call, whose top
    # eigenvector is the warm start
    lam = np.concatenate([[1.0, 0.95], np.linspace(0, 0.9, 298)])
    op, A = spectrum_op(lam, seed=6)
    u = np.linalg.eigh(A)[1][:, -1]
    rng = np.random.default_rng(7)
    E = rng.standard_normal(A.shape)
    E = E + E.T
    E *= 1e-3 / np.linalg.norm(E, 2)
    moved = DenseOperator(torch.from_numpy(A + E))
    w = np.linalg.eigvalsh(A + E)
    cold = lanczos(moved, tol=1e-8, generator=gen(6))
    warm = lanczos(moved, tol=1e-8, v0=torch.from_numpy(u), generator=gen(6))
    assert cold.converged and warm.converged
    assert warm.eigenvalues[0].item() == pytest.approx(w[-1], rel=1e-12)
    # issue 22: a warm start is mixed with a random vector and certified like a cold one (no
    # eigenvalue may hide beyond the warm direction), so it no longer saves products (was ≤ 0.7×)
    assert warm.num_matvecs <= cold.num_matvecs + 2, (warm.num_matvecs, cold.num_matvecs)
    # a matrix of previous eigenvectors (N, j) is accepted as a warm start for top-j
    U2 = torch.from_numpy(np.linalg.eigh(A)[1][:, -2:].copy())
    two = lanczos(moved, k=2, tol=1e-8, v0=U2, generator=gen(6))
    np.testing.assert_allclose(two.eigenvalues.numpy(), w[::-1][:2], rtol=1e-12)


def test_several_times_fewer_matvecs_than_power_iteration():
    # small gap λ2/λ1 = 0.98: power iteration's error falls like 0.98^(2t)
    lam = np.concatenate([[1.0, 0.98], np.linspace(0, 0.9, 298)])
    op, A = spectrum_op(lam, seed=8)
    target = 1e-8  # relative error of λ_max both must reach
    pw = power_iteration(op, tol=1e-12, max_iter=5000, generator=gen(8))
    lz = lanczos(op, tol=1e-6, generator=gen(8))
    assert abs(pw.eigenvalues[0].item() - 1.0) <= target
    assert abs(lz.eigenvalues[0].item() - 1.0) <= target
    assert pw.num_matvecs >= 2 * lz.num_matvecs, (pw.num_matvecs, lz.num_matvecs)


def test_matvec_count_stops_at_convergence():
    op, A = spectrum_op(SPECTRA["clustered"], seed=9)
    before = op.num_matvecs
    res = lanczos(op, k=2, tol=1e-6, generator=gen(9))
    assert res.num_matvecs == op.num_matvecs - before == res.num_steps
    # the same run with a Krylov dimension one smaller must be unconverged: no step was wasted
    with pytest.warns(RuntimeWarning, match="max_iter"):
        short = lanczos(op, k=2, tol=1e-6, max_iter=res.num_steps - 1, generator=gen(9))
    assert not short.converged and short.num_matvecs == res.num_steps - 1


def test_full_space_is_exact():
    op, A = spectrum_op(np.arange(1.0, 13.0), seed=10)
    res = lanczos(op, k=12, which="SA", generator=gen(10))
    assert res.converged and res.num_steps == 12
    np.testing.assert_allclose(res.eigenvalues.numpy(), np.arange(1.0, 13.0), rtol=1e-12)


def test_float32_operator_terminates():
    op, A = spectrum_op(SPECTRA["clustered"], seed=11)
    op32 = DenseOperator(torch.from_numpy(A).float())
    res = lanczos(op32, k=3, tol=1e-9, generator=gen(11))  # below float32 precision
    assert res.converged
    assert res.eigenvectors.dtype == torch.float32
    np.testing.assert_allclose(res.eigenvalues.numpy(), [50.0, 20.0, 10.0], rtol=1e-5)


def test_bad_inputs():
    op, _ = spectrum_op(np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="k must be"):
        lanczos(op, k=6)
    with pytest.raises(ValueError, match="k must be"):
        lanczos(op, k=0)
    with pytest.raises(ValueError, match="tol must be positive"):
        lanczos(op, tol=-1e-3)
    with pytest.raises(ValueError, match="which"):
        lanczos(op, which="BE")
    with pytest.raises(ValueError, match="max_iter"):
        lanczos(op, k=3, max_iter=2)
    with pytest.raises(ValueError, match="v0"):
        lanczos(op, v0=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="zero"):
        lanczos(op, v0=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        lanczos(NonSquare())
    with pytest.raises(ValueError, match="NaN"):
        lanczos(NaNOperator())
