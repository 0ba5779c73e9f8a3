"""Tests for hessian_lr.range_test: the LR range test, its suggestions and its restore."""

from __future__ import annotations

import copy
import json
import math
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessian_lr.range_test import (
    RangeTestResult,
    lr_ramp,
    lr_range_test,
    suggest_lrs,
)

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread avoids thread spinning on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Quadratic(nn.Module):
    """f(θ) = ½ θᵀAθ; ``model(x)`` returns the loss itself (x is ignored)."""

    def __init__(self, A: torch.Tensor, theta0: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta0.clone())
        self.register_buffer("A", A.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.theta @ self.A @ self.theta


def quad_loss(model: nn.Module, batch) -> torch.Tensor:
    return model(batch[0])


DUMMY = (torch.zeros(1), torch.zeros(1))
EIGS = np.array([9.5, 3.0, 1.0, 0.5, 0.2])  # λ_max = 9.5: 2/λ_max = 0.2105…, off the ladder


def make_quadratic() -> tuple[Quadratic, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    A = Q @ np.diag(EIGS) @ Q.T
    A = 0.5 * (A + A.T)
    theta0 = Q @ np.array([1.0, 0.05, 0.05, 0.05, 0.05])  # mostly along the top eigenvector
    return Quadratic(torch.from_numpy(A), torch.from_numpy(theta0)), A, theta0


def reference_gd(A, theta0, lrs, smoothing, factor):
    """Plain GD θ ← θ − lr·Aθ with the documented EMA and stop rule, in numpy float64."""
    theta, losses, avg, best = theta0.copy(), [], 0.0, math.inf
    for i, lr in enumerate(lrs):
        loss = 0.5 * theta @ A @ theta
        losses.append(loss)
        avg = smoothing * avg + (1 - smoothing) * loss
        sm = avg / (1 - smoothing ** (i + 1))
        if sm - best > (factor - 1) * abs(best):
            return np.array(losses), i
        best = min(best, sm)
        theta = theta - lr * (A @ theta)
    return np.array(losses), None


class Net(nn.Module):
    """MLP with BatchNorm and Dropout (RNG use, running stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def classification_data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """A deep copy of everything the range test must restore."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": [m.training for m in model.modules()],
        "opt": copy.deepcopy(optimizer.state_dict()),
    }


def assert_same(a, b, path="state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def rng_draws() -> tuple:
    return (torch.rand(4).tolist(), np.random.rand(3).tolist(), random.random())  # noqa: NPY002


# ----------------------------------------------------------------------------- the ladder


def test_lr_ramp_conventions():
    assert lr_ramp(0.0, 1.0, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    exp = lr_ramp(1e-4, 1.0, 9, ramp="exp")
    assert exp[0] == 1e-4
    np.testing.assert_allclose(exp[-1], 1.0, rtol=1e-14)
    np.testing.assert_allclose(exp[1:] / exp[:-1], 10**0.5, rtol=1e-12)  # geometric: 4 decades
    with pytest.raises(ValueError, match="start_lr > 0"):
        lr_ramp(0.0, 1.0, 5, ramp="exp")
    with pytest.raises(ValueError, match="larger than start_lr"):
        lr_ramp(1.0, 0.5, 5)
    with pytest.raises(ValueError, match="num_steps"):
        lr_ramp(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="ramp"):
        lr_ramp(0.1, 1.0, 5, ramp="cosine")


@pytest.mark.parametrize("ramp", ["linear", "exp"])
def test_applied_lr_follows_the_ramp_and_group_ratios(ramp):
    """The LR the optimizer holds during each update (read inside loss_fn) is the ladder value,
    end points included; a second group keeps its initial ratio (0.1) to group 0."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    opt = torch.optim.SGD(
        [{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 0.1}], lr=1.0
    )
    seen: list[tuple[float, float]] = []

    def loss_fn(m, batch):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        return (m(batch[0]) - batch[1]).pow(2).mean()

    batch = (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64))
    res = lr_range_test(
        model, opt, batch, loss_fn=loss_fn, closure=True, start_lr=1e-3, end_lr=1e-1,
        num_steps=7, ramp=ramp, diverge_factor=math.inf, curvature_check=False,
    )  # fmt: skip
    expected = lr_ramp(1e-3, 1e-1, 7, ramp=ramp)
    assert res.lrs == tuple(expected.tolist())
    assert res.lrs[0] == 1e-3
    np.testing.assert_allclose(res.lrs[-1], 1e-1, rtol=1e-14)
    np.testing.assert_array_equal([s[0] for s in seen], expected)
    np.testing.assert_allclose([s[1] for s in seen], 0.1 * expected, rtol=1e-15)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.1]  # restored
    assert res.config["group_lr_ratios"] == [1.0, 0.1]


# ----------------------------------------------------------------------------- known divergence


def test_quadratic_diverges_right_after_two_over_lambda_max():
    """GD on f = ½θᵀAθ is unstable exactly for lr > 2/λ_max. Linear ladder lr_i = 0.15 + 0.01 i.

    Tolerance of the stop (smoothing 0, factor 4): let k* be the first update with
    lr > 2/λ_max. Before k* every factor |1 − lr·λ_j| < 1, so the loss falls and the best is
    loss_{k*}. The top component then grows by (lr_{k*+j}·λ_max − 1)² per update, with
    lr_{k*}·λ_max = 2 + δ, δ ≥ 0, and lr_{k*+j}·λ_max = 2 + δ + j·h, h = 0.01·9.5 = 0.095.
    The other components (θ0 has 0.05 along them) hold < 5 % of loss_{k*}, so the run stops
    once Π_{j<m} (1 + δ + j h) > 2·√1.05 = 2.05. Worst case δ → 0: Π_{j<m}(1 + j·0.095) =
    1, 1.095, 1.30, 1.67, 2.31 for m = 1…5, so the stop record is within k*+1 … k*+5.
    And the smoothed-loss minimum (the max_lr rule) is record k*: the first LR > 2/λ_max.
    """
    model, A, theta0 = make_quadratic()
    lam_max = float(np.linalg.eigvalsh(A)[-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, DUMMY, loss_fn=quad_loss, closure=True, start_lr=0.15, end_lr=0.45,
        num_steps=31, smoothing=0.0, diverge_factor=4.0,
    )  # fmt: skip
    ladder = lr_ramp(0.15, 0.45, 31)
    k_star = int(np.argmax(ladder > 2 / lam_max))
    assert ladder[k_star - 1] < 2 / lam_max < ladder[k_star]

    # the run and its stop point against the numpy reference
    ref_losses, ref_stop = reference_gd(A, theta0, ladder, 0.0, 4.0)
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-12)
    assert res.stopped_early and res.stop_step == ref_stop
    assert k_star + 1 <= res.stop_step <= k_star + 5
    assert "diverged" in res.stop_reason
    assert res.num_updates == res.stop_step  # the stopping update is not applied

    # max_lr (smoothed-loss minimum) is within one ladder step above 2/λ_max
    s = res.suggestions
    assert s.max_lr.rule == "smoothed_loss_minimum" and s.max_lr.step == k_star
    assert 0 < s.max_lr.lr - 2 / lam_max <= 0.01 + 1e-12
    assert s.base_lr_third.lr == pytest.approx(s.max_lr.lr / 3, rel=1e-15)
    assert s.base_lr_quarter.lr == pytest.approx(s.max_lr.lr / 4, rel=1e-15)
    assert "no_divergence" not in s.max_lr.flags and "flat" not in s.max_lr.flags

    # curvature cross-check at the start: λ_max(A) and gᵀg/gᵀAg at θ0
    c = res.curvature
    assert c is not None and c.error is None and c.lanczos_converged
    assert c.two_over_lambda == pytest.approx(2 / lam_max, rel=1e-6)
    g = A @ theta0
    assert c.quadratic_lr == pytest.approx(g @ g / (g @ A @ g), rel=1e-10)
    assert c.loss == pytest.approx(0.5 * theta0 @ A @ theta0, rel=1e-12)
    assert c.momentum_bound is None and c.flags == ()
    # the model was restored after the test: θ0 again
    np.testing.assert_array_equal(model.theta.detach().numpy(), theta0)


def test_quadratic_with_default_smoothing_matches_reference():
    """Bias-corrected EMA (β = 0.98): the smoothed curve and the stop match the reference;
    the EMA lags, so the stop comes later than with raw losses, but never before k*+1."""
    model, A, theta0 = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, DUMMY, loss_fn=quad_loss, closure=True, start_lr=0.15, end_lr=0.45,
        num_steps=31, curvature_check=False,
    )  # fmt: skip
    ladder = lr_ramp(0.15, 0.45, 31)
    ref_losses, ref_stop = reference_gd(A, theta0, ladder, 0.98, 4.0)
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-12)
    assert res.stop_step == ref_stop is not None
    k_star = int(np.argmax(ladder > 2 / EIGS[0]))
    assert res.stop_step >= k_star + 1
    ema, sm = 0.0, []
    for i, x in enumerate(ref_losses):
        ema = 0.98 * ema + 0.02 * x
        sm.append(ema / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(res.smoothed_losses, sm, rtol=1e-12)
    assert res.smoothed_losses[0] == res.losses[0]  # bias correction: no pull towards 0


def test_momentum_bound_reported_for_heavy_ball():
    model, A, _ = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    res = lr_range_test(
        model, opt, DUMMY, loss_fn=quad_loss, closure=True, start_lr=1e-3, end_lr=0.1,
        num_steps=3,
    )  # fmt: skip
    lam = float(np.linalg.eigvalsh(A)[-1])
    assert res.curvature.momentum_bound == pytest.approx((2 + 2 * 0.9) / lam, rel=1e-6)


# ----------------------------------------------------------------------------- restore


def _consuming_loss(outputs, targets):
    np.random.rand()  # noqa: NPY002 -- the test must restore numpy's and Python's RNGs too
    random.random()
    return nn.functional.cross_entropy(outputs, targets)


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_restore_is_bit_identical(opt_name):
    """Parameters, gradients, BN running stats and num_batches_tracked, optimizer state and LRs,
    module flags and the torch/numpy/Python RNGs and the loader's generator are as before: the
    RNG draws after the test equal those of a run that never did it."""

    def setup():
        torch.manual_seed(0)
        np.random.seed(0)  # noqa: NPY002
        random.seed(0)
        model = Net()
        if opt_name == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        loader = DataLoader(
            classification_data(), batch_size=16, shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        for x, y in list(loader)[:2]:  # existing optimizer state, BN stats and gradients
            opt.zero_grad()
            _consuming_loss(model(x), y).backward()
            opt.step()
        model.body[3].eval()  # mixed module flags
        return model, opt, loader

    model, opt, loader = setup()
    before = full_state(model, opt)
    gen_state = loader.generator.get_state()
    res = lr_range_test(
        model, opt, loader, loss_fn=_consuming_loss, start_lr=1e-4, end_lr=10.0, num_steps=20,
        ramp="exp", val_data=DataLoader(classification_data(32, seed=1), batch_size=16),
        val_every=4,
    )  # fmt: skip
    assert res.num_updates >= 8  # the test did train (BN stats, momentum, RNG all moved)
    assert_same(full_state(model, opt), before)
    assert torch.equal(loader.generator.get_state(), gen_state)
    after_test = rng_draws()

    model2, opt2, _ = setup()  # the same history without the range test
    assert_same(full_state(model2, opt2), before)
    assert after_test == rng_draws()

    # the same run with restore=False leaves a different state: the comparison above is not vacuous
    model3, opt3, loader3 = setup()
    lr_range_test(
        model3, opt3, loader3, loss_fn=_consuming_loss, start_lr=1e-4, end_lr=10.0,
        num_steps=20, ramp="exp", restore=False, curvature_check=False,
    )  # fmt: skip
    s3 = full_state(model3, opt3)
    assert not torch.equal(
        s3["buffers"]["body.1.running_mean"], before["buffers"]["body.1.running_mean"]
    )
    assert not torch.equal(s3["params"]["body.0.weight"], before["params"]["body.0.weight"])
    assert rng_draws() != after_test


def test_restore_after_an_exception():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = classification_data().tensors
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    before = full_state(model, opt)
    torch_rng = torch.get_rng_state()
    calls = {"n": 0}

    def failing_loss(outputs, targets):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(outputs, targets)

    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(
            model, opt, loader, loss_fn=failing_loss, end_lr=1.0, num_steps=20,
            curvature_check=False,
        )  # fmt: skip
    assert calls["n"] == 6  # five updates ran before the failure
    assert_same(full_state(model, opt), before)
    assert torch.equal(torch.get_rng_state(), torch_rng)


# ------------------------------------------------------------ flags, accumulation, validation


def test_flat_curve_is_flagged():
    """A loss that barely depends on the parameters: every suggestion carries "flat" and
    "no_divergence" (the end of the ladder was reached)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(outputs, targets):
        return 1.0 + 1e-6 * outputs.pow(2).mean()

    data = [(torch.randn(8, 4), torch.zeros(8)) for _ in range(3)]
    res = lr_range_test(
        model, opt, data, loss_fn=loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=30, ramp="exp",
        curvature_check=False,
    )  # fmt: skip
    assert not res.stopped_early and res.stop_reason is None and len(res.lrs) == 30
    for s in res.suggestions.as_dict().values():
        assert "no_divergence" in s.flags, s
    for name in ("max_lr", "base_lr_third", "base_lr_quarter", "steepest"):
        assert "flat" in getattr(res.suggestions, name).flags


def _reference_run(model, opt, batches, lrs, *, accumulation, val=None, val_every=1):
    """A plain loop with the documented conventions, for comparison."""
    losses, vals, it = [], [], iter(batches * 10)
    for i, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        opt.zero_grad()
        total = 0.0
        for _ in range(accumulation):
            xb, yb = next(it)
            loss = nn.functional.cross_entropy(model(xb), yb) / accumulation
            loss.backward()
            total += loss.item()
        losses.append(total)
        opt.step()
        if val is not None and (i + 1) % val_every == 0:
            model.eval()
            with torch.no_grad():
                out = model(val[0])
                vals.append(
                    (
                        nn.functional.cross_entropy(out, val[1]).item(),
                        (out.argmax(1) == val[1]).double().mean().item(),
                    )
                )
    return losses, vals


def test_accumulation_counts_updates():
    """7 updates × 3 micro-batches: 21 batches drawn (the list of 5 is cycled), 7 optimizer
    steps (Adam's step counter), losses = mean of the micro-batch losses of a plain loop."""
    ds = classification_data(80)
    batches = [(ds.tensors[0][i : i + 16], ds.tensors[1][i : i + 16]) for i in range(0, 80, 16)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    batches = [(x.double(), y) for x, y in batches]
    ref_model = copy.deepcopy(model)
    drawn = {"n": 0}

    def counting():
        while True:
            for b in batches:
                drawn["n"] += 1
                yield b

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    res = lr_range_test(
        model, opt, counting(), loss_fn=nn.CrossEntropyLoss(), start_lr=1e-3, end_lr=1e-1,
        num_steps=7, accumulation_steps=3, restore=False, diverge_factor=math.inf,
        curvature_check=False,
    )  # fmt: skip
    assert res.num_updates == 7 and res.num_batches == 21 and drawn["n"] == 21
    assert all(int(s["step"]) == 7 for s in opt.state.values())
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=1e-3)
    ref_losses, _ = _reference_run(
        ref_model, ref_opt, batches, lr_ramp(1e-3, 1e-1, 7), accumulation=3
    )
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-12)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_validation_every_k_updates():
    ds = classification_data(64)
    batches = [(ds.tensors[0][i : i + 16], ds.tensors[1][i : i + 16]) for i in range(0, 64, 16)]
    val = classification_data(40, seed=3).tensors
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    ref_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, batches, loss_fn=nn.CrossEntropyLoss(), start_lr=1e-2, end_lr=1.0,
        num_steps=10, val_data=[(val[0][:24], val[1][:24]), (val[0][24:], val[1][24:])],
        val_every=3, diverge_factor=math.inf, curvature_check=False,
    )  # fmt: skip
    assert res.val_steps == (2, 5, 8)
    assert res.val_lrs == tuple(res.lrs[i] for i in (2, 5, 8))
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    ref_losses, ref_vals = _reference_run(
        ref_model, ref_opt, batches, lr_ramp(1e-2, 1.0, 10), accumulation=1, val=val, val_every=3
    )
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-6)
    np.testing.assert_allclose(res.val_losses, [v[0] for v in ref_vals], rtol=1e-5)
    np.testing.assert_allclose(res.val_accuracies, [v[1] for v in ref_vals], rtol=1e-12)
    assert res.suggestions.max_lr.rule == "val_accuracy_peak"
    j = int(np.argmax(res.val_accuracies))
    assert res.max_lr == res.val_lrs[j] and res.suggestions.max_lr.step == res.val_steps[j]
    assert model.training  # restored


def test_one_shot_iterator_is_replayed():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    ds = classification_data(32)
    batches = [(ds.tensors[0][i : i + 8], ds.tensors[1][i : i + 8]) for i in range(0, 32, 8)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res_iter = lr_range_test(
        model, opt, iter(batches), loss_fn=nn.CrossEntropyLoss(), end_lr=0.5, num_steps=10,
        diverge_factor=math.inf, curvature_check=False,
    )  # fmt: skip
    res_list = lr_range_test(
        model, opt, batches, loss_fn=nn.CrossEntropyLoss(), end_lr=0.5, num_steps=10,
        diverge_factor=math.inf, curvature_check=False,
    )  # fmt: skip
    assert res_iter.losses == res_list.losses


def test_nonfinite_loss_stops():
    model, _, _ = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, DUMMY, loss_fn=quad_loss, closure=True, start_lr=1.0, end_lr=1e30,
        num_steps=60, ramp="exp", diverge_factor=math.inf, curvature_check=False,
    )  # fmt: skip
    assert res.stopped_early and "non-finite" in res.stop_reason
    assert not math.isfinite(res.losses[-1]) and all(map(math.isfinite, res.losses[:-1]))
    json.dumps(res.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- suggestion rules


def test_steepest_rule_on_a_known_curve():
    """loss = 1 − tanh(ln(lr/0.01)) until it diverges: the slope in ln-LR is most negative at
    lr = 0.01; the minimum (max_lr) is the last point before the divergence."""
    lrs = np.geomspace(1e-4, 1.0, 81)  # 0.01 is a grid point (index 40); 20 points a decade
    base = 1 - np.tanh(np.log(lrs / 1e-2))

    def diverging_at(k):
        loss = base.copy()
        loss[k:] = loss[k - 1] + np.arange(1, 82 - k) ** 2
        return loss

    s = suggest_lrs(lrs, diverging_at(50), stopped_early=True)
    assert s.steepest.lr == pytest.approx(1e-2, rel=1e-12) and s.steepest.step == 40
    assert s.max_lr.lr == lrs[49] and s.max_lr.rule == "smoothed_loss_minimum"
    assert s.steepest.flags == () and s.max_lr.flags == ()  # 10^(9/20) ≈ 2.8× apart
    s = suggest_lrs(lrs, diverging_at(70), stopped_early=True)
    assert s.steepest.step == 40 and s.max_lr.step == 69  # 10^(29/20) ≈ 28× apart: > 10×
    assert "rules_disagree" in s.max_lr.flags and "rules_disagree" in s.steepest.flags
    assert "rules_disagree" in s.base_lr_third.flags
    s = suggest_lrs(lrs, diverging_at(70), stopped_early=False)
    assert "no_divergence" in s.max_lr.flags and "no_divergence" in s.steepest.flags
    # a noisy drop in the first records (a bias-corrected EMA of few losses) is skipped
    noisy = diverging_at(50)
    noisy[:3] += [1.0, 0.5, 0.0]
    assert suggest_lrs(lrs, noisy, stopped_early=True).steepest.step == 40
    assert suggest_lrs(lrs, noisy, stopped_early=True, skip_start=0).steepest.step < 3


def test_accuracy_peak_and_plateau():
    lrs = np.linspace(0.01, 1.0, 100)
    val_steps = list(range(9, 100, 10))
    val_lrs = lrs[val_steps]
    acc = [0.3, 0.6, 0.85, 0.9, 0.88, 0.87, 0.89, 0.6, 0.3, 0.1]
    s = suggest_lrs(
        lrs, np.linspace(2.0, 1.0, 100), val_lrs=val_lrs, val_steps=val_steps,
        val_losses=[1.0] * 10, val_accuracies=acc, stopped_early=True, plateau_tol=0.05,
    )  # fmt: skip
    assert s.max_lr.rule == "val_accuracy_peak" and s.max_lr.lr == val_lrs[3]
    assert s.max_lr.step == val_steps[3]
    # within 5 % of 0.9 (≥ 0.855): indices 3..6 (0.85 at index 2 is below)
    assert s.plateau_lrs == (val_lrs[3], val_lrs[6])
    assert s.plateau_ratio == pytest.approx(val_lrs[6] / val_lrs[3])


def test_val_loss_rule_without_accuracy():
    s = suggest_lrs(
        [0.1, 0.2, 0.3], [1.0, 0.9, 0.8], val_lrs=[0.1, 0.2, 0.3], val_steps=[0, 1, 2],
        val_losses=[1.0, 0.5, 0.7], val_accuracies=[None, None, None],
    )  # fmt: skip
    assert s.max_lr.rule == "val_loss_minimum" and s.max_lr.lr == 0.2
    assert s.plateau_ratio is None and "no_divergence" in s.max_lr.flags


# ----------------------------------------------------------------------------- records, plot


def test_to_dict_round_trip_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    model, _, _ = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, DUMMY, loss_fn=quad_loss, closure=True, start_lr=1e-3, end_lr=1.0,
        num_steps=40, ramp="exp", val_data=DUMMY, val_every=5,
    )  # fmt: skip
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    back = RangeTestResult.from_dict(d)
    assert back.lrs == res.lrs and back.losses == res.losses
    assert back.suggestions == res.suggestions and back.curvature == res.curvature
    recs = res.records()
    assert len(recs) == len(res.lrs) and recs[4]["val_loss"] == res.val_losses[0]
    assert "val_loss" not in recs[3]
    ax = res.plot()
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for a in ax.figure.axes if a.get_legend() for t in a.get_legend().texts]
    assert any(label.startswith("2/λ_max") for label in labels)
    assert any(label.startswith("max_lr =") for label in labels)


def test_input_validation():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))]
    kw = {"loss_fn": nn.MSELoss(), "end_lr": 1.0, "num_steps": 5, "curvature_check": False}
    with pytest.raises(ValueError, match="smoothing"):
        lr_range_test(model, opt, data, smoothing=1.0, **kw)
    with pytest.raises(ValueError, match="diverge_factor"):
        lr_range_test(model, opt, data, diverge_factor=1.0, **kw)
    with pytest.raises(ValueError, match="accumulation_steps"):
        lr_range_test(model, opt, data, accumulation_steps=0, **kw)
    with pytest.raises(ValueError, match="empty"):
        lr_range_test(model, opt, [], **kw)
    with pytest.raises(TypeError, match="optimizer"):
        lr_range_test(model, None, data, **kw)


# ----------------------------------------------------------------------------- torch-lr-finder


def test_same_losses_as_torch_lr_finder():
    """Same seed, model, shuffled loader and linear ramp: torch-lr-finder's raw losses
    (smooth_f=0, no divergence stop) and LRs equal ours bit for bit (its LinearLR gives
    start + (i/(n−1))·(end − start) at iteration i, our ladder)."""
    lr_finder = pytest.importorskip("torch_lr_finder")

    def setup():
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loader = DataLoader(classification_data(), batch_size=16, shuffle=True)
        return model, opt, loader

    n = 15  # more than one epoch of 6 batches: both re-iterate the loader
    model, opt, loader = setup()
    finder = lr_finder.LRFinder(model, opt, nn.CrossEntropyLoss())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder.range_test(
            loader, start_lr=1e-3, end_lr=2.0, num_iter=n, step_mode="linear", smooth_f=0,
            diverge_th=1e9,
        )  # fmt: skip
    theirs = finder.history

    model, opt, loader = setup()
    ours = lr_range_test(
        model, opt, loader, loss_fn=nn.CrossEntropyLoss(), start_lr=1e-3, end_lr=2.0,
        num_steps=n, ramp="linear", diverge_factor=math.inf,
    )  # fmt: skip
    assert len(theirs["loss"]) == n
    assert list(ours.lrs) == theirs["lr"]
    assert list(ours.losses) == theirs["loss"]


def test_curvature_failure_is_reported_not_raised():
    """An optimizer over a parameter outside the model: no curvature (flagged "failed" with a
    warning), the range test still runs, and the foreign parameter is restored too."""
    model, _, _ = make_quadratic()
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)

    def loss_fn(m, batch):
        return m(batch[0]).detach() + (w**2).sum()

    with pytest.warns(RuntimeWarning, match="curvature check failed"):
        res = lr_range_test(
            model, opt, DUMMY, loss_fn=loss_fn, closure=True, start_lr=0.01, end_lr=0.5,
            num_steps=5,
        )  # fmt: skip
    assert res.curvature.flags == ("failed",) and "no trainable parameter" in res.curvature.error
    assert res.curvature.two_over_lambda is None
    assert res.num_updates == 5 and res.losses[1] < res.losses[0]  # it trained w
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64)) and w.grad is None
