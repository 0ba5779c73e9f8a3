"""Issue 29: a solve reads device values on the host only at its checks.

A test double patches every way a tensor reaches the host (``.item()``, ``.tolist()``,
``float(t)``, ``bool(t)``, ``int(t)``, ``.cpu()``, ``.numpy()``) and records each such read made
outside the seam ``hessian_lr.curvature._host.read``; the seam counts its own calls. The contract
on a ``HessianOperator``: no read outside the seam, and reads per solve ≤ ⌈products / k⌉ + a
constant (fingerprint on entry and exit, the finite flag, the start vector's norm, the symmetry
probe of a first product). Results: those of the per-step loop (check_every=1), and the dense
float64 Hessian's eigenvalues (jacfwd of grad over functional_call).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from spectra import gen, spectrum_op
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.curvature import _host
from hessian_lr.curvature._power_deferred import window_reads
from hessian_lr.curvature.density import spectral_density
from hessian_lr.curvature.hessian import HessianOperator, NonFiniteError
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.power import power_iteration
from hessian_lr.curvature.trace import hutchinson_trace

CONSTANT = 5  # entry + exit fingerprint, finite flag, start-vector norm, symmetry probe
RAW = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__", "cpu", "numpy")


class ReadCounter:
    """Counts host reads: through the seam (``seam``) and around it (``raw``, with the method)."""

    def __enter__(self) -> ReadCounter:
        self.raw: list[str] = []
        self._saved = {name: getattr(torch.Tensor, name) for name in RAW}
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, self._wrap(name, fn))
        self._start = _host.reads()
        return self

    def _wrap(self, name, fn):
        def counted(t, *args, **kwargs):
            if not _host.in_read():
                self.raw.append(name)
            return fn(t, *args, **kwargs)

        return counted

    def __exit__(self, *exc) -> None:
        self.seam = _host.reads() - self._start
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, fn)


def _mlp_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(32, 4, dtype=torch.float64, generator=gen(1))
    y = torch.randint(0, 3, (32,), generator=gen(2))
    loss_fn = nn.CrossEntropyLoss()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(vec):
        parts = torch.split(vec, [math.prod(s) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, parts, shapes)}
        return loss_fn(functional_call(model, params, (x,)), y)

    H = jacfwd(grad(f))(theta).numpy()
    op = HessianOperator(model, loss_fn, (x, y), backend="double-backward")
    op @ torch.ones(op.shape[0], dtype=torch.float64)  # symmetry probe and write check, once
    return op, np.linalg.eigvalsh((H + H.T) / 2)


@pytest.fixture(scope="module")
def problem():
    return _mlp_problem()


def _checks(spent: int, check_every) -> int:
    last, n = 0, 0
    while last < spent:
        last, n = _host.check_schedule(last, check_every), n + 1
    return n


@pytest.mark.parametrize("check_every", [4, 8, "auto"])
def test_lanczos_reads_at_checks_only(problem, check_every):
    op, lam = problem
    eager = lanczos(op, k=2, tol=1e-8, check_every=1, generator=gen(0))
    with ReadCounter() as every_step:
        lanczos(op, k=2, tol=1e-8, check_every=1, generator=gen(0))
    assert every_step.seam >= eager.num_steps  # the per-step loop: at least one read a step
    with ReadCounter() as c:
        res = lanczos(op, k=2, tol=1e-8, check_every=check_every, generator=gen(0))
    assert c.raw == []
    assert c.seam <= _checks(res.num_matvecs, check_every) + CONSTANT, c.seam
    assert c.seam < every_step.seam
    assert res.converged and res.num_steps == eager.num_steps
    np.testing.assert_allclose(res.eigenvalues.numpy(), eager.eigenvalues.numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.eigenvalues.numpy(), lam[::-1][:2], rtol=1e-8)
    extra = res.num_matvecs - res.num_steps
    if check_every == "auto":  # fewer than 5 % extra products (at least one check per step)
        assert extra < max(1.0, _host.AUTO_FRACTION * res.num_steps), extra
    else:
        assert 0 <= extra < check_every


def test_slq_reads_do_not_grow_with_steps(problem):
    op, lam = problem
    kw = dict(num_probes=4, batch_size=2, num_steps=30)
    eager = spectral_density(op, check_every=1, generator=gen(3), **kw)
    with ReadCounter() as c:
        sd = spectral_density(op, check_every=1000, generator=gen(3), **kw)
    assert c.raw == [] and c.seam <= 2 * 2 + CONSTANT, c.seam  # per batch: v0 norm + one read
    np.testing.assert_allclose(sd.nodes, eager.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sd.weights, eager.weights, rtol=1e-7, atol=1e-12)
    assert sd.num_matvecs == eager.num_matvecs == 4 * 30
    # the quadrature's first moment is vᵀHv/‖v‖²: its mean estimates tr H / N
    assert sd.expectation(lambda x: x) * op.shape[0] == pytest.approx(lam.sum(), rel=0.5)


def test_power_iteration_reads_in_windows(problem):
    op, lam = problem
    eager = power_iteration(op, tol=1e-6, max_iter=2000, check_every=1, generator=gen(4))
    with ReadCounter() as c:
        res = power_iteration(op, tol=1e-6, max_iter=2000, check_every=8, generator=gen(4))
    assert c.raw == []
    assert c.seam <= window_reads(res.num_matvecs, 8) + CONSTANT, c.seam
    assert res.num_iterations == eager.num_iterations and res.converged
    assert res.num_iterations <= res.num_matvecs < res.num_iterations + 8
    torch.testing.assert_close(res.eigenvalues, eager.eigenvalues, rtol=0, atol=0)
    torch.testing.assert_close(res.eigenvectors, eager.eigenvectors, rtol=0, atol=0)
    assert res.eigenvalues[0].item() == pytest.approx(lam[-1], rel=1e-5)


def test_hutchinson_reads_once_per_estimate(problem):
    op, lam = problem
    with ReadCounter() as c:
        res = hutchinson_trace(op, num_probes=24, batch_size=4, generator=gen(5))
    assert c.raw == [] and c.seam <= 1 + CONSTANT, c.seam  # was one read per block of probes
    assert abs(res.estimate - lam.sum()) <= 5 * res.std_error


class _NaNAfter(DenseOperator):
    """A dense operator whose products turn NaN from the ``bad``-th product on."""

    def __init__(self, A: torch.Tensor, bad: int) -> None:
        super().__init__(A)
        self.bad, self.calls = bad, 0

    def _matmat(self, V):
        self.calls += 1
        out = super()._matmat(V)
        return out * float("nan") if self.calls >= self.bad else out

    def _matvec(self, v):
        return self._matmat(v.unsqueeze(1)).squeeze(1)


def test_nonfinite_step_is_recovered_exactly():
    _, A = spectrum_op(np.linspace(1.0, 2.0, 60), seed=1)
    A = torch.from_numpy(A)
    with pytest.raises(ValueError, match="NaN .* at Lanczos step 7;"):
        lanczos(_NaNAfter(A, 7), check_every=4, max_iter=40, generator=gen(0))
    with pytest.raises(ValueError, match="NaN .* at iteration 6;"):
        power_iteration(_NaNAfter(A, 6), check_every=8, tol=1e-14, generator=gen(0))


def test_operator_finite_checks_are_read_once_with_their_index(problem):
    op, _ = problem
    ok = torch.ones(3, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"check 2 of 3"):
        with op.solving():
            op._check_finite("a Hessian-vector product", ok, defer=True)
            op._check_finite("a Hessian-vector product", ok * float("inf"), defer=True)
            op._check_finite("a Hessian-vector product", ok * float("nan"), defer=True)
    log = _host.FiniteLog()
    for t in (ok, ok, ok * float("nan")):
        log.add("x", t)
    reads = _host.reads()
    assert log.first_failure() == (2, "x") and _host.reads() == reads + 1


def test_breakdowns_are_rolled_back_to_the_per_step_result():
    # every step of a multiple of the identity breaks down: restarts replay exactly
    op = DenseOperator(2.5 * torch.eye(40, dtype=torch.float64))
    for k in (1, 3):
        res = lanczos(op, k=k, check_every=4, generator=gen())
        assert res.converged and res.num_steps == k
        np.testing.assert_allclose(res.eigenvalues.numpy(), 2.5, rtol=1e-14)
    # 3 distinct eigenvalues: each SLQ probe's Krylov space is exhausted after 3 steps
    lam = np.repeat([-1.0, 2.0, 5.0], [10, 20, 30])
    op, _ = spectrum_op(lam, seed=4)
    kw = dict(num_probes=2, num_steps=10, batch_size=2)
    for reorth in ("semi", "full"):
        eager = spectral_density(op, check_every=1, reorth=reorth, generator=gen(4), **kw)
        sd = spectral_density(op, check_every=4, reorth=reorth, generator=gen(4), **kw)
        np.testing.assert_allclose(sd.nodes[:, :3], [[-1, 2, 5]] * 2, atol=1e-10)
        np.testing.assert_allclose(sd.weights, eager.weights, atol=1e-12)
        assert np.all(sd.weights[:, 3:] == 0) and sd.num_matvecs == 2 * 4  # found at step 4


def test_check_every_is_validated():
    op = DenseOperator(torch.eye(5, dtype=torch.float64))
    for bad in (0, -2, 1.5, "often", True):
        with pytest.raises(ValueError, match="check_every"):
            lanczos(op, check_every=bad)
