"""Issue 29 on CUDA: solves under ``torch.cuda.set_sync_debug_mode("error")`` (needs CUDA).

Every synchronization outside the seam ``_host.read`` raises; the seam lifts the mode for its own
reads (``_host.around_reads``), which are counted: ≤ ⌈products / k⌉ + a constant. The results
equal the same solves on the CPU operator.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.curvature import _host
from hessian_lr.curvature.density import spectral_density
from hessian_lr.curvature.hessian import HessianOperator
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.power import power_iteration

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CONSTANT = 5


@contextlib.contextmanager
def _lifted():
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("error")


@contextlib.contextmanager
def _strict():
    start = _host.reads()
    box = {}
    with _host.around_reads(_lifted):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield box
        finally:
            torch.cuda.set_sync_debug_mode(0)
            box["reads"] = _host.reads() - start


def _ops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (64,))
    ops = []
    for dev in ("cpu", "cuda"):
        m = model.to(dev)
        op = HessianOperator(m, nn.CrossEntropyLoss(), (x.to(dev), y.to(dev)))
        op @ torch.ones(op.shape[0], dtype=torch.float64, device=dev)  # probe, write check
        ops.append(op)
        model = model.cpu()
    return ops


def test_lanczos_power_and_slq_do_not_sync_between_checks():
    cpu, gpu = _ops()
    g = lambda: torch.Generator("cuda").manual_seed(0)  # noqa: E731 - drawn on the device
    ref = lanczos(cpu, k=1, tol=1e-8, generator=torch.Generator().manual_seed(0))
    with _strict() as box:
        res = lanczos(gpu, k=1, tol=1e-8, check_every=8, return_eigenvectors=False, generator=g())
    assert box["reads"] <= math.ceil(res.num_matvecs / 8) + CONSTANT
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues.numpy(), ref.eigenvalues.numpy(), rtol=1e-8)
    with _strict() as box:
        pw = power_iteration(gpu, tol=1e-6, max_iter=2000, check_every=16, generator=g())
    assert box["reads"] <= math.ceil(pw.num_matvecs / 16) + CONSTANT
    assert pw.eigenvalues[0].item() == pytest.approx(ref.eigenvalues[0].item(), rel=1e-5)
    with _strict() as box:
        sd = spectral_density(
            gpu, num_probes=2, batch_size=2, num_steps=40, check_every=1000, generator=g()
        )
    assert box["reads"] <= 2 + CONSTANT and sd.num_matvecs == 80
