"""Stochastic Lanczos quadrature (spectral_density) against dense eigenvalues (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import NaNOperator, gen, spectrum_op

from hessian_lr.curvature._solver_utils import rademacher
from hessian_lr.curvature.density import SpectralDensity, spectral_density

# A Hessian-like spectrum: outliers (one negative) and a bulk around zero.
HESSIAN_LIKE = np.concatenate(
    [[40.0, 25.0, 10.0, -3.0], np.random.default_rng(0).normal(0, 0.5, 296)]
)


@pytest.fixture(scope="module")
def slq():
    op, A = spectrum_op(HESSIAN_LIKE, seed=0)
    before = op.num_matvecs
    sd = spectral_density(op, num_probes=20, num_steps=60, batch_size=10, generator=gen(1))
    return sd, A, op.num_matvecs - before


def test_shapes_weights_and_work(slq):
    sd, A, used = slq
    assert isinstance(sd, SpectralDensity)
    assert sd.nodes.shape == sd.weights.shape == (20, 60)
    assert sd.grid.shape == sd.density.shape == (1000,)
    assert sd.num_matvecs == used == 20 * 60 and sd.dim == 300
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(sd.weights >= 0)
    w = np.linalg.eigvalsh(A)
    # Ritz values lie inside the spectrum, and the extreme ones are found to high accuracy
    assert sd.nodes.min() >= w[0] - 1e-9 and sd.nodes.max() <= w[-1] + 1e-9
    assert sd.nodes.max() == pytest.approx(w[-1], rel=1e-10)
    assert sd.nodes.min() == pytest.approx(w[0], rel=1e-10)


def test_density_integrates_to_one_and_matches_broadened_eigenvalues(slq):
    sd, A, _ = slq
    assert np.trapezoid(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-12)
    assert np.all(sd.density >= 0)
    # default sigma is 1 % of the node range; the grid spans [min - 3σ, max + 3σ]
    w = np.linalg.eigvalsh(A)
    assert sd.sigma == pytest.approx(0.01 * (w[-1] - w[0]), rel=1e-8)
    assert sd.grid[0] == pytest.approx(sd.nodes.min() - 3 * sd.sigma)
    assert sd.grid[-1] == pytest.approx(sd.nodes.max() + 3 * sd.sigma)
    # the exact density broadened with the same sigma, on the same grid
    z = (sd.grid[:, None] - w[None, :]) / sd.sigma
    exact = np.exp(-0.5 * z**2).sum(axis=1)
    exact /= np.trapezoid(exact, sd.grid)
    assert np.trapezoid(np.abs(sd.density - exact), sd.grid) <= 0.05


def test_cdf_close_to_empirical_cdf_of_eigenvalues(slq):
    sd, A, _ = slq
    w = np.sort(np.linalg.eigvalsh(A))
    x = np.linspace(w[0] - 1, w[-1] + 1, 4001)
    empirical = np.searchsorted(w, x, side="right") / w.size
    kolmogorov = np.max(np.abs(sd.cdf(x) - empirical))
    assert kolmogorov <= 0.05
    assert sd.cdf(w[-1] + 1) == pytest.approx(1.0) and sd.cdf(w[0] - 1) == 0.0


def test_trace_and_moments(slq):
    sd, A, _ = slq
    per_probe = sd.dim * np.sum(sd.weights * sd.nodes, axis=1)
    se = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
    assert sd.trace() == pytest.approx(per_probe.mean())
    assert abs(sd.trace() - np.trace(A)) <= 4 * se
    # tr(A²)/N: the quadrature is exact for polynomials of degree < 2m, so only probe noise
    second = sd.expectation(np.square)
    assert second == pytest.approx(np.sum(A**2) / A.shape[0], rel=0.1)


def test_gauss_quadrature_exact_for_low_degree_polynomials():
    # for one probe v, Σ w_i θ_i^p = vᵀA^p v exactly for p < 2m
    op, A = spectrum_op(np.linspace(-2, 3, 80), seed=2)
    sd = spectral_density(op, num_steps=5, probe="gaussian", generator=gen(2))
    v = torch.randn(80, dtype=torch.float64, generator=gen(2)).numpy()
    v /= np.linalg.norm(v)
    for p in range(10):
        ref = v @ np.linalg.matrix_power(A, p) @ v
        assert sd.expectation(lambda x, p=p: x**p) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_batching_probes_gives_the_same_quadrature():
    op, _ = spectrum_op(HESSIAN_LIKE[:100], seed=3)
    one = spectral_density(op, num_probes=4, num_steps=20, batch_size=1, generator=gen(3))
    four = spectral_density(op, num_probes=4, num_steps=20, batch_size=4, generator=gen(3))
    np.testing.assert_allclose(one.nodes, four.nodes, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(one.weights, four.weights, rtol=1e-7, atol=1e-12)


def test_invariant_subspace_pads_with_zero_weights():
    # 3 distinct eigenvalues: every probe's Krylov space is exhausted after 3 steps
    lam = np.repeat([-1.0, 2.0, 5.0], [10, 20, 30])
    op, _ = spectrum_op(lam, seed=4)
    sd = spectral_density(op, num_probes=2, num_steps=10, batch_size=2, generator=gen(4))
    assert sd.num_matvecs == 2 * 3
    np.testing.assert_allclose(sd.nodes[:, :3], [[-1, 2, 5]] * 2, atol=1e-10)
    assert np.all(sd.weights[:, 3:] == 0)
    np.testing.assert_allclose(sd.weights[:, :3].mean(axis=0), [1 / 6, 2 / 6, 3 / 6], atol=0.15)


def test_probes_that_finish_early_do_not_disturb_the_others():
    # the shared Lanczos loop, run on probes side by side: one probe is an eigenvector (its
    # Krylov space is exhausted after one step), the other runs on; both must equal solo runs
    from hessian_lr.curvature._krylov import lanczos_run as _lanczos_run

    op, A = spectrum_op(np.linspace(-1.0, 2.0, 40), seed=6)
    u = torch.from_numpy(np.linalg.eigh(A)[1][:, 7].copy())
    r = torch.randn(40, dtype=torch.float64, generator=gen(6))
    both = _lanczos_run(op, torch.stack([u, r]), 12)
    assert both.steps.tolist() == [1, 12] and both.num_matvecs == 13
    for i, v in enumerate([u, r]):
        solo = _lanczos_run(op, v.unsqueeze(0), 12)
        m = int(solo.steps[0])
        np.testing.assert_allclose(both.alpha[i, :m], solo.alpha[0, :m], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(both.beta[i, :m], solo.beta[0, :m], rtol=1e-12, atol=1e-12)
    assert both.alpha[0, 0] == pytest.approx(np.linalg.eigvalsh(A)[7], rel=1e-12)


def test_custom_grid_and_sigma():
    op, A = spectrum_op(np.linspace(0, 1, 50), seed=5)
    grid = np.linspace(-0.5, 1.5, 801)
    sd = spectral_density(op, num_steps=50, sigma=0.05, grid=grid, generator=gen(5))
    assert sd.sigma == 0.05 and np.array_equal(sd.grid, grid)
    assert np.trapezoid(sd.density, grid) == pytest.approx(1.0, abs=1e-12)
    # num_steps = N: the nodes are the eigenvalues, and the density is their weighted mixture
    np.testing.assert_allclose(np.sort(sd.nodes[0]), np.linalg.eigvalsh(A), atol=1e-10)
    z = (grid[:, None] - sd.nodes[0][None, :]) / 0.05
    mixture = np.exp(-0.5 * z**2) @ sd.weights[0] / (0.05 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(sd.density, mixture / np.trapezoid(mixture, grid), atol=1e-12)
    with pytest.warns(RuntimeWarning, match="under-resolved"):
        spectral_density(op, num_steps=10, sigma=1e-4, num_grid=50, generator=gen(5))


def test_bad_inputs():
    op, _ = spectrum_op(np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="num_probes"):
        spectral_density(op, num_probes=0)
    with pytest.raises(ValueError, match="num_steps"):
        spectral_density(op, num_steps=0)
    with pytest.raises(ValueError, match="sigma"):
        spectral_density(op, sigma=0.0)
    with pytest.raises(ValueError, match="grid"):
        spectral_density(op, grid=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="probe"):
        spectral_density(op, probe="uniform")
    with pytest.raises(ValueError, match="NaN"):
        spectral_density(NaNOperator())
    with pytest.raises(ValueError, match="NaN"):
        spectral_density(NaNOperator(), num_probes=2, batch_size=2)


def test_plot_draws_the_density_line(slq):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sd, _, _ = slq
    fig = sd.plot()
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        (line,) = fig.axes[0].get_lines()
        np.testing.assert_array_equal(line.get_xdata(), sd.grid)
        np.testing.assert_allclose(
            line.get_ydata(), np.maximum(sd.density, 1e-12 * sd.density.max())
        )
        assert fig.axes[0].get_yscale() == "log"
        fig2, ax = plt.subplots()
        assert sd.plot(ax=ax, log=False, color="k") is fig2
        np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), sd.density)
    finally:
        plt.close("all")


def test_progress_bar_on_off(capsys):
    op, _ = spectrum_op(np.linspace(0, 1, 40), seed=7)
    spectral_density(op, num_steps=10, generator=gen(0), progress=True)
    assert "spectral_density" in capsys.readouterr().err
    spectral_density(op, num_steps=10, generator=gen(0), progress=False)
    spectral_density(op, num_steps=10, generator=gen(0))  # auto: a fast run prints nothing
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress"):
        spectral_density(op, num_steps=10, progress="yes")


def test_progress_bar_auto_appears_on_slow_runs(capsys, monkeypatch):
    from hessian_lr.curvature import _solver_utils

    monkeypatch.setattr(_solver_utils, "PROGRESS_AFTER_S", 0.0)  # every run counts as slow
    op, _ = spectrum_op(np.linspace(0, 1, 40), seed=7)
    spectral_density(op, num_steps=10, generator=gen(0))
    assert "spectral_density" in capsys.readouterr().err


def test_without_reorthogonalization_the_quadrature_keeps_its_moments():
    """reorth="none": no basis is kept, yet each probe's quadrature matches vᵀHᵏv (Greenbaum)."""
    op, A = spectrum_op(HESSIAN_LIKE, seed=0)
    sd = spectral_density(op, num_probes=3, num_steps=60, reorth="none", generator=gen(5))
    ref = spectral_density(op, num_probes=3, num_steps=60, generator=gen(5))
    assert sd.num_matvecs == 3 * 60
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=1e-12)
    # Same probes (same generator state): the quadratures' moments agree with vᵀAᵏv for k ≤ 9
    # relative to ‖A‖ᵏ, the quantity an m-point Gauss rule reproduces up to k = 2m − 1.
    V = rademacher((3, A.shape[0]), op, gen(5)).double().numpy()  # the solver's probes
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    norm = np.abs(HESSIAN_LIKE).max()
    for i in range(3):
        for k in range(1, 10):
            exact = V[i] @ np.linalg.matrix_power(A, k) @ V[i] / norm**k
            for quad in (sd, ref):
                got = (quad.weights[i] * quad.nodes[i] ** k).sum() / norm**k
                assert got == pytest.approx(exact, abs=1e-10)
    # The extreme eigenvalues are still found; converged outliers may repeat ("ghosts").
    w = np.linalg.eigvalsh(A)
    assert sd.nodes.max() == pytest.approx(w[-1], rel=1e-10)
    assert sd.nodes.min() == pytest.approx(w[0], rel=1e-10)


def test_reorth_choices_agree_on_the_density_and_bad_choice_is_named():
    op, A = spectrum_op(HESSIAN_LIKE, seed=0)
    w = np.linalg.eigvalsh(A)
    grid = np.linspace(w[0] - 2, w[-1] + 2, 2000)
    z = (grid[:, None] - w[None, :]) / 0.5
    exact = np.exp(-0.5 * z**2).sum(axis=1)
    exact /= np.trapezoid(exact, grid)
    for reorth in ("semi", "full", "none"):
        sd = spectral_density(
            op, num_probes=20, num_steps=40, sigma=0.5, grid=grid, reorth=reorth, generator=gen(1)
        )
        assert np.trapezoid(np.abs(sd.density - exact), grid) <= 0.1, reorth
    with pytest.raises(ValueError, match="reorth"):
        spectral_density(op, num_steps=5, reorth="partial")
