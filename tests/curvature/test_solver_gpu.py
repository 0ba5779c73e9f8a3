"""The solvers on a CUDA DenseOperator give the CPU's numbers (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import gen, spectrum_op

from hessian_lr.curvature.density import spectral_density
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.power import power_iteration
from hessian_lr.curvature.trace import trace_estimate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
LAM = np.concatenate([[30.0, 20.0, 10.0, -4.0], np.random.default_rng(0).normal(0, 1, 296)])


def _ops():
    cpu, A = spectrum_op(LAM, seed=0)
    return cpu, DenseOperator(torch.from_numpy(A).cuda()), A


@pytest.mark.parametrize("stop", ["residual", "eigenvalue"])
def test_lanczos_and_power_on_cuda(stop):
    cpu, gpu, A = _ops()
    a = lanczos(cpu, k=3, tol=1e-8, stop=stop, generator=gen(1))
    b = lanczos(gpu, k=3, tol=1e-8, stop=stop, generator=gen(1))  # CPU generator, CUDA op
    assert b.converged and b.eigenvectors.device.type == "cuda"
    np.testing.assert_allclose(b.eigenvalues.numpy(), a.eigenvalues.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.eigenvalues.numpy(), [30.0, 20.0, 10.0], rtol=1e-8)
    p = power_iteration(
        gpu, tol=1e-8, max_iter=2000, generator=torch.Generator("cuda").manual_seed(0)
    )
    assert p.converged and p.eigenvalues[0].item() == pytest.approx(30.0, rel=1e-8)


def test_trace_density_and_bfloat16_on_cuda():
    cpu, gpu, A = _ops()
    for method in ("xtrace", "hutch++", "hutchinson"):
        a = trace_estimate(cpu, 30, method=method, generator=gen(2))
        b = trace_estimate(gpu, 30, method=method, batch_size=8, generator=gen(2))
        assert b.estimate == pytest.approx(a.estimate, rel=1e-9, abs=1e-9)
    sd = spectral_density(gpu, num_probes=4, num_steps=40, batch_size=4, generator=gen(3))
    assert sd.nodes.max() == pytest.approx(30.0, rel=1e-8)
    bf = DenseOperator(torch.from_numpy(A).to(torch.bfloat16).cuda())
    res = lanczos(bf, tol=5e-2, generator=gen(4))
    assert res.low_precision and res.converged and res.num_steps > 2
    assert res.eigenvalues[0].item() == pytest.approx(30.0, rel=5e-2)
