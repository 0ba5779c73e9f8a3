"""Solvers called without ``generator=`` leave torch's global RNG alone (issue 22, item 7).

Behaviour chosen: a solver without a generator draws from a private CPU generator seeded with
``DEFAULT_SEED`` (``_solver_utils.private_generator``): the global state is untouched, and the
result is the same on every call and the same as passing ``Generator().manual_seed(0)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import gen, spectrum_op
from torch import nn

from hessian_lr.curvature import trace as tr
from hessian_lr.curvature.density import spectral_density
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.power import power_iteration
from hessian_lr.observe import StepContext
from hessian_lr.training.observers import CurvatureProbe

LAM = np.concatenate([[5.0, 3.0, -2.0], np.linspace(-1, 1, 37)])

SOLVERS = {
    "lanczos": lambda op, **kw: lanczos(op, tol=1e-6, **kw).eigenvalues,
    "lanczos_warm": lambda op, **kw: (
        lanczos(op, tol=1e-6, v0=torch.ones(40).double(), **kw).eigenvalues
    ),
    "power": lambda op, **kw: power_iteration(op, tol=1e-4, **kw).eigenvalues,
    "hutchinson": lambda op, **kw: torch.tensor(
        tr.hutchinson_trace(op, num_probes=5, **kw).estimate
    ),
    "hutchpp": lambda op, **kw: torch.tensor(tr.hutchpp_trace(op, num_matvecs=9, **kw).estimate),
    "xtrace": lambda op, **kw: torch.tensor(tr.xtrace(op, num_matvecs=8, **kw).estimate),
    "xnystrace": lambda op, **kw: torch.tensor(
        tr.xnystrace(spectrum_op(np.abs(LAM))[0], num_matvecs=8, **kw).estimate  # PSD only
    ),
    "slq": lambda op, **kw: spectral_density(op, num_steps=8, num_probes=2, **kw).nodes,
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_no_generator_leaves_global_rng_unchanged_and_is_reproducible(name):
    op, _ = spectrum_op(LAM, seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = SOLVERS[name](op)
    assert torch.equal(torch.get_rng_state(), before), f"{name} moved the global RNG"
    torch.manual_seed(999)  # a different global seed must not matter either
    b = SOLVERS[name](op)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # documented default: the same as an explicit generator seeded 0
    c = SOLVERS[name](op, generator=gen(0))
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_seeded_generator_reproducible_and_different_seeds_differ():
    op, _ = spectrum_op(LAM, seed=0)
    a = tr.hutchinson_trace(op, num_probes=5, generator=gen(3)).estimate
    b = tr.hutchinson_trace(op, num_probes=5, generator=gen(3)).estimate
    c = tr.hutchinson_trace(op, num_probes=5, generator=gen(4)).estimate
    assert a == b and a != c


def test_generator_of_wrong_type_is_refused():
    op, _ = spectrum_op(LAM, seed=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        lanczos(op, generator=0)


def test_curvature_probe_outside_train_leaves_global_rng_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    probe = CurvatureProbe(batch, every=1, trace_probes=2)
    before = torch.get_rng_state()
    out = probe.observe(StepContext(step=0, model=model))
    assert torch.equal(torch.get_rng_state(), before)
    assert np.isfinite(out["lambda_max"])
