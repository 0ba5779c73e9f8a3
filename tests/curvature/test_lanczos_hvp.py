"""Lanczos on a real Hessian operator (tanh MLP, float64) against ARPACK and the dense Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from torch import nn

hvp = pytest.importorskip("hessian_lr.curvature.hessian")

from hessian_lr.curvature import lanczos, spectral_density  # noqa: E402
from hessian_lr.curvature.power import power_iteration  # noqa: E402
from hessian_lr.curvature.trace import hutchpp_trace  # noqa: E402


@pytest.fixture(scope="module")
def mlp_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randn(32, 3, dtype=torch.float64)
    op = hvp.HessianOperator(model, nn.MSELoss(), (x, y))
    H = op.to_dense().numpy()
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    return op, H


@pytest.mark.parametrize("which, k", [("LA", 3), ("SA", 2), ("LM", 3)])
def test_lanczos_on_hessian_matches_eigsh_and_eigh(mlp_hessian, which, k):
    op, H = mlp_hessian
    w = np.linalg.eigvalsh(H)  # ascending; the Hessian of a tanh MLP is indefinite
    ref = scipy.sparse.linalg.eigsh(op.to_scipy(), k=k, which=which, tol=1e-12)[0]
    res = lanczos(
        op,
        k=k,
        which=which,
        tol=1e-8,
        max_iter=op.shape[0],
        generator=torch.Generator().manual_seed(1),
    )
    assert res.converged
    got = res.eigenvalues.numpy()
    scale = np.abs(w).max()
    if which == "LA":
        want = w[::-1][:k]
    elif which == "SA":
        want = w[:k]
    else:
        want = w[np.argsort(-np.abs(w))][:k]
    np.testing.assert_allclose(got, want, atol=1e-9 * scale)
    np.testing.assert_allclose(np.sort(got), np.sort(ref), atol=1e-9 * scale)
    V = res.eigenvectors.numpy()
    resid = np.linalg.norm(H @ V - V * got, axis=0)
    assert np.all(resid <= 1e-8 * np.abs(got) + 1e-12 * scale)


def test_other_solvers_on_hessian(mlp_hessian):
    op, H = mlp_hessian
    w = np.linalg.eigvalsh(H)
    g = torch.Generator().manual_seed(2)
    top = w[np.argmax(np.abs(w))]
    pw = power_iteration(op, tol=1e-10, max_iter=3000, generator=g)
    assert pw.eigenvalues[0].item() == pytest.approx(top, rel=1e-6)
    sd = spectral_density(op, num_steps=op.shape[0], generator=g)
    assert np.trapezoid(sd.density, sd.grid) == pytest.approx(1.0)
    assert sd.nodes.max() == pytest.approx(w[-1], rel=1e-9)
    tr = hutchpp_trace(op, num_matvecs=3 * op.shape[0], generator=g)
    assert tr.estimate == pytest.approx(np.trace(H), rel=1e-9, abs=1e-12)
