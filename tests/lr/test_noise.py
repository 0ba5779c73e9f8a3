"""noise_null: c(μ, s) against closed forms, a brute-force filter sum and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hessian_lr.lr import secant_lr
from hessian_lr.lr.noise import noise_null, noise_null_per_step


def _filter_reference(mu: float, s: int, nesterov: bool, d: float, terms: int = 4000) -> float:
    """c from the impulse response h truncated at `terms`, by direct (non-closed-form) sums."""
    a = 1.0 - d
    k = np.arange(terms, dtype=np.float64)
    if nesterov:
        h = a * mu ** (k + 1)
        h[0] = 1.0 + mu * a
    else:
        h = a * mu**k
    # Block sums as filters of the noise: S1 = Σ_{t<s} u_t, S2 = Σ_{s≤t<2s} u_t, with t = 0 at
    # the latest noise index 2s − 1 + terms; coefficients on each noise draw by convolution.
    box1 = np.zeros(2 * s)
    box1[s:] = 1.0  # S1 uses steps 0..s−1 (older), S2 steps s..2s−1 (newer)
    box2 = np.zeros(2 * s)
    box2[:s] = 1.0
    c1 = np.convolve(box1, h)
    c2 = np.convolve(box2, h)
    var1 = float(c1 @ c1)
    var_diff = float((c1 - c2) @ (c1 - c2))
    return math.sqrt(var1 / var_diff)


def _simulate_ratio(mu, s, nesterov, n_weights, gen, *, burn=300, norm="l1"):
    """Eq. 8 (paper convention, ε = 1) on one draw of pure-noise SGD-momentum iterates."""
    v = torch.zeros(n_weights, dtype=torch.float64)
    theta = torch.zeros(n_weights, dtype=torch.float64)
    sigma = torch.rand(n_weights, generator=gen, dtype=torch.float64) + 0.5  # unequal noise scale
    snaps = []
    for t in range(burn + 2 * s + 1):
        g = sigma * torch.randn(n_weights, generator=gen, dtype=torch.float64)
        v = mu * v + g
        step = g + mu * v if nesterov else v
        theta = theta - step
        if t >= burn and (t - burn) % s == 0:
            snaps.append(theta.clone())
    return secant_lr(snaps[0], snaps[1], snaps[2], 1.0, norm=norm).lr


def test_closed_forms():
    for mu in (0.0, 0.3, 0.9, 0.99):
        assert noise_null(mu, 1) == pytest.approx(math.sqrt(1 / (2 * (1 - mu))), rel=1e-12)
    for s in (1, 2, 7, 100):
        assert noise_null(0.0, s) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert noise_null(0.9, 1) == pytest.approx(2.2360679775, rel=1e-10)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("s", [1, 5, 10, 20])
def test_closed_form_equals_filter_sum(mu, s, nesterov):
    ref = _filter_reference(mu, s, nesterov, 0.0)
    assert noise_null(mu, s, nesterov=nesterov) == pytest.approx(ref, rel=1e-9)


def test_dampening_cancels_for_heavy_ball_not_nesterov():
    assert noise_null(0.9, 5, dampening=0.9) == pytest.approx(noise_null(0.9, 5), rel=1e-12)
    damp = noise_null(0.9, 5, nesterov=True, dampening=0.5)
    assert damp == pytest.approx(_filter_reference(0.9, 5, True, 0.5), rel=1e-9)
    assert abs(damp - noise_null(0.9, 5, nesterov=True)) > 1e-3


def test_numpy_scalars_accepted():
    assert noise_null(np.float32(0.9), np.int64(10)) == pytest.approx(noise_null(0.9, 10), rel=1e-6)


def test_per_step_is_spacing_times_paper():
    for s in (1, 3, 10):
        assert noise_null_per_step(0.9, s) == pytest.approx(s * noise_null(0.9, s), rel=1e-14)
        assert noise_null(0.9, s, scale="per_step") == noise_null_per_step(0.9, s)


def test_large_spacing_and_momentum_near_one_are_finite():
    c = noise_null(0.999, 100000)
    assert math.isfinite(c) and c > 0
    # s → ∞: block sums decorrelate, c → 1/√2
    assert noise_null(0.5, 10**7) == pytest.approx(1 / math.sqrt(2), rel=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("s", [1, 5, 10, 20])
def test_simulation_matches_null(mu, s, nesterov):
    """20k weights × 1 draw: the L1 ratio's relative Monte-Carlo s.d. is ≈ 1/√20000 ≈ 0.7 %."""
    gen = torch.Generator().manual_seed(1000 + int(100 * mu) + s + 7 * nesterov)
    burn = int(20 / (1 - mu)) + 10 if mu > 0 else 1
    ratio = _simulate_ratio(mu, s, nesterov, 20000, gen, burn=burn)
    assert ratio == pytest.approx(noise_null(mu, s, nesterov=nesterov), rel=0.04)


def test_simulation_l2_matches_null():
    gen = torch.Generator().manual_seed(5)
    ratio = _simulate_ratio(0.9, 10, False, 20000, gen, burn=200, norm="l2")
    assert ratio == pytest.approx(noise_null(0.9, 10), rel=0.04)


@pytest.mark.parametrize("eps", [5e-4, 1e-3])
def test_noiseless_quadratic_is_far_from_null(eps):
    """Heavy-ball on a noiseless quadratic: Eq. 8 sees curvature, not the null.

    Slow regime: estimate/ε ≈ (1 − μ)/(εa) (a ∈ [0.5, 2]): 50–400 (÷ s in the paper convention),
    far above c(0.9, s) ≤ 2.24.
    """
    gen = torch.Generator().manual_seed(0)
    n, mu = 2000, 0.9
    a = torch.logspace(math.log10(0.5), math.log10(2.0), n, dtype=torch.float64)
    theta = torch.randn(n, generator=gen, dtype=torch.float64)
    v = torch.zeros(n, dtype=torch.float64)
    snaps = []
    for t in range(120):
        v = mu * v + a * theta
        theta = theta - eps * v
        if t >= 60:
            snaps.append(theta.clone())
    for s in (1, 5, 10):
        r = secant_lr(snaps[0], snaps[s], snaps[2 * s], eps).lr / eps
        null = noise_null(mu, s)
        assert abs(math.log(r / null)) > math.log(3.0), (eps, s, r, null)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"momentum": 1.0, "spacing": 1}, ValueError),
        ({"momentum": -0.1, "spacing": 1}, ValueError),
        ({"momentum": float("nan"), "spacing": 1}, ValueError),
        ({"momentum": "0.9", "spacing": 1}, TypeError),
        ({"momentum": 0.9, "spacing": 0}, ValueError),
        ({"momentum": 0.9, "spacing": 2.0}, TypeError),
        ({"momentum": 0.9, "spacing": True}, TypeError),
        ({"momentum": 0.9, "spacing": 1, "dampening": 1.0}, ValueError),
        ({"momentum": 0.9, "spacing": 1, "nesterov": 1}, TypeError),
        ({"momentum": 0.9, "spacing": 1, "scale": "per-step"}, ValueError),
    ],
)
def test_bad_input(kwargs, exc):
    with pytest.raises(exc):
        noise_null(**kwargs)
