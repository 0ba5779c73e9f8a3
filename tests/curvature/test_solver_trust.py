"""Solvers never claim a wrong convergence (issue 11 items 3, 4, 12; issue 10 items 3, 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import gen, spectrum_op

from hessian_lr.curvature.density import spectral_density
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.linop import DenseOperator, LinearOperator
from hessian_lr.curvature.power import power_iteration
from hessian_lr.curvature.trace import hutchinson_trace, xtrace

PAIR = [3.0, -3.0, 1.0, 0.5]


@pytest.mark.parametrize("which", ["LA", "LM"])
def test_power_iteration_never_converges_to_a_wrong_eigenvalue_on_a_pm_pair(which):
    w = np.array(PAIR)
    for seed in range(8):
        op, A = spectrum_op(PAIR, seed=seed)
        with _maybe_warns():
            res = power_iteration(op, which=which, generator=gen(seed))
        lam = res.eigenvalues[0].item()
        if res.converged:  # then it must be right: an eigenvalue, and the wanted one
            assert np.min(np.abs(w - lam)) <= 1e-4 * abs(lam)
            assert lam == pytest.approx(3.0 if which == "LA" else np.abs(lam), rel=1e-4)
            assert abs(lam) == pytest.approx(3.0, rel=1e-4)
    # largest algebraic (the default) separates the pair and converges to 3
    for seed in range(8):
        op, _ = spectrum_op(PAIR, seed=seed)
        res = power_iteration(op, generator=gen(seed))
        assert res.converged and res.eigenvalues[0].item() == pytest.approx(3.0, rel=1e-4)


class _maybe_warns:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_power_lm_on_a_pair_says_so_quickly():
    op, _ = spectrum_op(PAIR, seed=0)
    with pytest.warns(RuntimeWarning, match="opposite sign"):
        res = power_iteration(op, which="LM", generator=gen(0))
    assert not res.converged and res.num_matvecs < 50


def test_power_default_is_largest_algebraic_like_lanczos():
    lam = np.concatenate([[-21.6, 13.1, 9.0], np.linspace(-5, 5, 60)])
    op, _ = spectrum_op(lam, seed=1)
    pw = power_iteration(op, tol=1e-8, max_iter=3000, generator=gen(1))
    lz = lanczos(op, generator=gen(1))
    assert pw.converged
    assert pw.eigenvalues[0].item() == pytest.approx(13.1, rel=1e-7)
    assert lz.eigenvalues[0].item() == pytest.approx(13.1, rel=1e-7)
    lm = power_iteration(op, which="LM", tol=1e-8, max_iter=3000, generator=gen(1))
    assert lm.eigenvalues[0].item() == pytest.approx(-21.6, rel=1e-7)


def test_power_converged_means_small_true_residual():
    rng = np.random.default_rng(5)
    for seed in range(6):
        lam = rng.normal(size=40)
        op, A = spectrum_op(lam, seed=seed)
        for which in ("LA", "LM"):
            res = power_iteration(op, which=which, tol=1e-6, max_iter=300, generator=gen(seed))
            if res.converged:
                v, t = res.eigenvectors.numpy()[:, 0], res.eigenvalues[0].item()
                assert np.linalg.norm(A @ v - t * v) <= 1.01e-6 * abs(t) + 1e-12


# ------------------------------------------------------------------------ low precision
def _low_precision_case():
    rng = np.random.default_rng(0)
    lam = np.concatenate([[1.0, 0.7, 0.5], rng.uniform(-0.2, 0.4, 197)])
    op, A = spectrum_op(lam, seed=3)
    return A, np.linalg.eigvalsh(A)[-1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_lanczos_flags_and_does_not_stop_early(dtype):
    A, top = _low_precision_case()
    op = DenseOperator(torch.from_numpy(A).to(dtype))
    with pytest.warns(RuntimeWarning, match="asks for more"):
        res = lanczos(op, tol=1e-6, generator=gen(1))
    assert res.low_precision and not res.converged
    assert res.num_steps > 4  # the floor does not scale with a 16-bit eps into a 2-step stop
    assert res.eigenvalues[0].item() == pytest.approx(top, rel=2e-2)
    assert res.eigenvectors.dtype == dtype
    ok = lanczos(op, tol=5e-2, generator=gen(1))  # a tolerance the dtype can deliver
    assert ok.converged and ok.low_precision
    assert ok.eigenvalues[0].item() == pytest.approx(top, rel=5e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_power_and_trace(dtype):
    A, top = _low_precision_case()
    op = DenseOperator(torch.from_numpy(A).to(dtype))
    with pytest.warns(RuntimeWarning, match="asks for more"):
        res = power_iteration(op, tol=1e-6, generator=gen(1))
    assert res.low_precision and not res.converged
    assert res.eigenvalues[0].item() == pytest.approx(top, rel=2e-2)
    tr = hutchinson_trace(op, num_probes=20, generator=gen(2))
    assert np.isfinite(tr.estimate)


# ------------------------------------------------------------------------ not one matrix
class _Alternating(LinearOperator):
    """Products alternate between two matrices: data that changes between passes."""

    def __init__(self, A, B):
        super().__init__(A.shape[0], A.dtype, "cpu")
        self.mats, self.calls = (A, B), 0

    def _matmat(self, V):
        self.calls += 1
        return self.mats[self.calls % 2] @ V


@pytest.mark.parametrize("change", [0.3, 1e-3])
def test_lanczos_flags_products_that_are_not_one_matrix(change):
    A, _ = _low_precision_case()
    rng = np.random.default_rng(1)
    E = rng.standard_normal(A.shape)
    E = (E + E.T) / 2
    B = A + change * E / np.linalg.norm(E, 2)
    op = _Alternating(torch.from_numpy(A), torch.from_numpy(B))
    for stop in ("residual", "eigenvalue"):
        with pytest.warns(RuntimeWarning, match="one fixed symmetric matrix"):
            res = lanczos(op, tol=1e-6, stop=stop, generator=gen(0))
        assert not res.converged and res.defect > 1e-6
    fixed = lanczos(DenseOperator(torch.from_numpy(A)), tol=1e-6, generator=gen(0))
    assert fixed.converged and fixed.defect < 1e-12


def test_lanczos_flags_a_non_symmetric_operator():
    A, _ = _low_precision_case()
    N = torch.from_numpy(A + 1e-2 * np.triu(np.ones_like(A)))

    class NonSym(LinearOperator):
        def _matmat(self, V):
            return N @ V

    with pytest.warns(RuntimeWarning, match="not symmetric"):
        res = lanczos(NonSym(A.shape[0], torch.float64, "cpu"), generator=gen(0))
    assert not res.converged


class _SaysItChanges(DenseOperator):
    """An operator that can tell (like a HessianOperator over a shuffling loader)."""

    is_deterministic = None

    def __init__(self, A):
        super().__init__(A)
        self.checked = 0

    def check_deterministic(self):
        self.checked += 1
        return False


def test_every_solver_asks_an_operator_that_can_tell():
    A, _ = _low_precision_case()
    op = _SaysItChanges(torch.from_numpy(A))
    with pytest.warns(RuntimeWarning, match="differ"):
        assert not lanczos(op, generator=gen(0)).converged
    with pytest.warns(RuntimeWarning, match="differ"):
        assert not power_iteration(op, generator=gen(0)).converged
    with pytest.warns(RuntimeWarning, match="differ"):
        spectral_density(op, num_steps=10, generator=gen(0))
    with pytest.warns(RuntimeWarning, match="differ"):
        xtrace(op, num_matvecs=10, generator=gen(0))
    assert op.checked == 4
    op.is_deterministic = True  # a list of batches: fixed, nothing to check
    assert lanczos(op, generator=gen(0)).converged and op.checked == 4


# ------------------------------------------------------------------------ empty inputs
def test_empty_operator_and_zero_columns():
    with pytest.raises(ValueError, match="non-empty"):
        DenseOperator(torch.zeros(0, 0))
    op = DenseOperator(torch.eye(4, dtype=torch.float64))
    out = op @ torch.zeros(4, 0, dtype=torch.float64)
    assert out.shape == (4, 0) and op.num_matvecs == 0
    with pytest.raises(ValueError, match="no columns"):
        lanczos(op, v0=torch.zeros(4, 0, dtype=torch.float64))

    class Empty:
        shape, dtype, device = (0, 0), torch.float64, torch.device("cpu")

        def __matmul__(self, v):
            raise AssertionError("never called")

    for solver in (lanczos, power_iteration, spectral_density, hutchinson_trace, xtrace):
        with pytest.raises(ValueError, match="dimension 0"):
            solver(Empty())
