"""Issue 12: the secant's spacing conventions and its momentum-noise null (ratio, band, flag)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.lr import LREstimator, noise_null, null_band, secant_lr
from hessian_lr.rng import get_rng_state

DT = torch.float64


# ------------------------------------------------------------------------- spacing conventions
@pytest.mark.parametrize("k", [1, 3, 10])
def test_paper_and_per_step_differ_by_exactly_k_on_a_hand_made_trajectory(k):
    # Arbitrary iterates (no optimizer behind them): the conventions differ only by the factor.
    t0 = torch.tensor([0.3, -1.2, 2.0, 0.05], dtype=DT)
    t1 = torch.tensor([0.1, -1.0, 1.7, 0.07], dtype=DT)
    t2 = torch.tensor([0.02, -0.9, 1.55, 0.06], dtype=DT)
    for norm in ("l1", "l2"):
        per = secant_lr(t0, t1, t2, 0.05, steps=k, norm=norm, per_weight=True)
        paper = secant_lr(t0, t1, t2, 0.05, steps=k, norm=norm, scale="paper", per_weight=True)
        assert per.lr == pytest.approx(k * paper.lr, rel=1e-15)
        assert per.lr_l1 == pytest.approx(k * paper.lr_l1, rel=1e-15)
        assert per.lr_l2 == pytest.approx(k * paper.lr_l2, rel=1e-15)
        assert torch.allclose(per.per_weight, k * paper.per_weight, rtol=1e-15, atol=0)
        assert paper.scale == "paper" and per.scale == "per_step"
    # By hand: ε Σ|Δ₁| / Σ|Δ₁ − Δ₂|.
    d1, d2 = (t1 - t0).numpy(), (t2 - t1).numpy()
    want = 0.05 * np.abs(d1).sum() / np.abs(d1 - d2).sum()
    assert secant_lr(t0, t1, t2, 0.05, steps=k, scale="paper").lr == pytest.approx(want, rel=1e-14)
    with pytest.raises(ValueError, match="scale"):
        secant_lr(t0, t1, t2, 0.05, scale="authors")


def test_estimator_secant_scale_is_the_functions():
    A = np.diag([1.0, 3.0, 9.0])
    runs = {}
    for scale in ("per_step", "paper"):
        theta = nn.Parameter(torch.tensor([1.0, -1.0, 0.5], dtype=DT))
        model = nn.Module()
        model.theta = theta
        opt = torch.optim.SGD([theta], lr=0.01)
        est = LREstimator(model, methods="secant", every=4, optimizer=opt, secant_scale=scale)
        for _ in range(12):
            opt.zero_grad()
            theta.grad = torch.tensor(A, dtype=DT) @ theta.detach()
            opt.step()
            est.step()
        runs[scale] = [r["estimates"]["secant"] for r in est.history if "secant" in r["estimates"]]
        assert all(r["secant_scale"] == scale for r in est.history)
    assert len(runs["paper"]) == 2
    for per, paper in zip(runs["per_step"], runs["paper"]):
        assert per["lr"] == pytest.approx(4 * paper["lr"], rel=1e-14)
        # The null ratio does not depend on the convention.
        assert per["noise_ratio"] == pytest.approx(paper["noise_ratio"], rel=1e-14)
    with pytest.raises(ValueError, match="secant_scale"):
        LREstimator(model, methods="secant", optimizer=opt, secant_scale="kε")


# ---------------------------------------------------------------------------- the noise null
def noise_iterates(mu, s, n, seed, nesterov=False, burn=200, count=3):
    """θ every s steps of SGD(momentum μ, ε = 1) driven by pure Gaussian noise (no curvature)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(n, dtype=DT)
    theta = torch.zeros(n, dtype=DT)
    out = []
    for t in range(burn + s * (count - 1) + 1):
        if t >= burn and (t - burn) % s == 0:
            out.append(theta.clone())
        noise = torch.randn(n, generator=g, dtype=DT)
        v = mu * v + noise
        theta = theta - ((noise + mu * v) if nesterov else v)
    return out


@pytest.mark.parametrize(
    ("mu", "s", "nesterov"), [(0.9, 1, False), (0.5, 5, False), (0.9, 1, True)]
)
def test_noise_ratio_is_one_on_pure_noise(mu, s, nesterov):
    th = noise_iterates(mu, s, 20000, seed=1, nesterov=nesterov)
    for scale in ("paper", "per_step"):
        res = secant_lr(*th, 1.0, steps=s, scale=scale, momentum=mu, nesterov=nesterov)
        assert res.noise_null == pytest.approx(noise_null(mu, s, nesterov=nesterov), rel=1e-15)
        # 20k Gaussian weights: the L1 ratio concentrates at c within ~1 %.
        assert res.noise_ratio == pytest.approx(1.0, abs=0.03)
    assert math.isnan(secant_lr(*th, 1.0, steps=s).noise_ratio)  # no momentum given: no null


def test_null_band_is_seeded_and_leaves_global_rng_alone():
    ratios = [1.3, 0.9, 1.1, 1.05, 0.97, 1.2, 0.8]
    before = get_rng_state()
    a = null_band(ratios, generator=torch.Generator().manual_seed(3))
    b = null_band(ratios, generator=torch.Generator().manual_seed(3))
    after = get_rng_state()
    assert a == b and a.low < a.center < a.high and a.indistinguishable
    assert torch.equal(before["torch"], after["torch"])
    assert a.center == pytest.approx(math.exp(np.log(ratios).mean()), rel=1e-14)
    far = null_band([4.0, 4.4, 3.9, 4.2, 4.1, 3.8])
    assert not far.indistinguishable and far.low > 1.1
    with pytest.raises(ValueError, match="at least 2"):
        null_band([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        null_band(ratios, level=1.0)


class NoiseModel(nn.Module):
    """loss = ξ·θ with ξ from the batch: a pure-noise gradient, zero curvature."""

    def __init__(self, n):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=DT))

    def forward(self, xi):
        return xi @ self.theta


def run_estimator(model, loss_of_step, *, lr, momentum, every, steps):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    with pytest.warns(UserWarning, match="momentum") if momentum else _null():
        est = LREstimator(model, methods="secant", every=every, optimizer=opt)
    for t in range(steps):
        opt.zero_grad()
        loss_of_step(t).backward()
        opt.step()
        est.step()
    return [r["estimates"]["secant"] for r in est.history if "secant" in r["estimates"]]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize(("momentum", "every"), [(0.9, 1), (0.9, 5), (0.0, 1)])
def test_null_flag_fires_on_pure_noise(momentum, every):
    n = 2000
    model = NoiseModel(n)
    g = torch.Generator().manual_seed(7)
    xis = torch.randn(40 * every + 150, n, generator=g, dtype=DT)
    recs = run_estimator(
        model, lambda t: model(xis[t]), lr=0.05, momentum=momentum, every=every, steps=len(xis)
    )
    late = recs[-10:]
    assert all(r["indistinguishable_from_noise"] is True for r in late)
    for r in late:
        assert r["noise_null"] == pytest.approx(noise_null(momentum, every), rel=1e-15)
        assert r["noise_ratio"] == pytest.approx(1.0, abs=0.1)
        lo, hi = r["noise_band"]
        assert lo <= 1.1 and hi >= 1 / 1.1
    # Before five ratios exist the test is not run.
    assert recs[0]["indistinguishable_from_noise"] is None


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_null_flag_does_not_fire_on_a_noiseless_quadratic(momentum):
    A = torch.diag(torch.linspace(0.5, 2.0, 50, dtype=DT))
    model = NoiseModel(50)
    with torch.no_grad():
        model.theta.fill_(1.0)
    recs = run_estimator(
        model,
        lambda t: 0.5 * model.theta @ A @ model.theta,
        lr=0.01,
        momentum=momentum,
        every=1,
        steps=40,
    )
    # Under momentum 0.9 the first ~10 estimates are the momentum's ramp-up (growing steps,
    # flagged negative_curvature, ratios sweeping through 1): judge the window after it.
    tested = recs[15:]
    assert len(tested) == 24
    assert all(r["indistinguishable_from_noise"] is False for r in tested)
    assert all(r["noise_ratio"] > 2 for r in tested)  # curvature, far from the null
    assert all(r["noise_band"][0] > 1.1 for r in tested)


def test_no_null_for_adam():
    model = NoiseModel(10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.warns(UserWarning, match="Adam"):
        est = LREstimator(model, methods="secant", every=1, optimizer=opt)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        opt.zero_grad()
        model(torch.randn(10, generator=g, dtype=DT)).backward()
        opt.step()
        est.step()
    last = est.history[-1]["estimates"]["secant"]
    assert last["noise_ratio"] is None and last["indistinguishable_from_noise"] is None
