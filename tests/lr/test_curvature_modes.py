"""The curvature-set training modes (issue 27): values, guard, overhead, state, checkpoint."""

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.lr import stability_lr, update_direction_lr
from hessian_lr.range_test import find_then_onecycle

DT = torch.float64


def problem(seed=0, n=32, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT) * torch.linspace(0.5, 2.0, d, dtype=DT)
    y = torch.randn(n, 1, generator=g, dtype=DT)
    model = nn.Linear(d, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=DT))
    return model, (x, y)


def hessian(x):
    """H of mean (w·x − y)²: 2 XᵀX / n (independent of w)."""
    return (2.0 * x.T @ x / x.shape[0]).numpy()


def train(model, opt, sched, batch, steps, lrs=None):
    loss_fn = nn.MSELoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(batch[0]), batch[1]).backward()
        opt.step()
        sched.estimator.step(batch if sched.estimator.due else None)
        sched.step()
        if lrs is not None:
            lrs.append(opt.param_groups[0]["lr"])


UNBOUNDED = dict(ema_alpha=1.0, max_increase=math.inf, max_decrease=0.0)


def test_stability_mode_holds_fraction_of_heavy_ball_threshold():
    model, batch = problem()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = stability_lr(model, nn.MSELoss(), opt, fraction=0.5, measure_every=3,
                         lanczos_tol=1e-10, **UNBOUNDED)  # fmt: skip
    lrs = []
    train(model, opt, sched, batch, 6, lrs)
    lam = np.linalg.eigvalsh(hessian(batch[0]))[-1]
    assert lrs[:2] == [1e-3, 1e-3]  # the optimizer's LR until the first estimate
    assert lrs[2] == pytest.approx(0.5 * 3.8 / lam, rel=1e-6)  # c = 2 + 2β
    assert lrs[5] == pytest.approx(0.5 * 3.8 / lam, rel=1e-6)


def test_stability_mode_is_preconditioned_for_adamw():
    model, batch = problem(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.999), weight_decay=0.0)
    sched = stability_lr(model, nn.MSELoss(), opt, fraction=1.0, measure_every=2,
                         lanczos_tol=1e-10, **UNBOUNDED)  # fmt: skip
    train(model, opt, sched, batch, 2)
    state = opt.state[model.weight]
    x, y = batch[0].numpy(), batch[1].numpy().flatten()
    w = model.weight.detach().flatten().numpy()
    g = 2 * x.T @ (x @ w - y) / len(y)
    t = int(state["step"]) + 1  # the preconditioner of the next step, with g folded into v
    v = 0.999 * state["exp_avg_sq"].flatten().numpy() + 0.001 * g**2
    p = np.sqrt(v / (1 - 0.999**t)) + opt.param_groups[0]["eps"]  # √v̂ + ε (Cohen et al. 2022)
    h = hessian(batch[0])
    lam = np.linalg.eigvalsh(h / np.sqrt(np.outer(p, p)))[-1]  # λ(P^-1/2 H P^-1/2) = λ(P⁻¹H)
    c = (2 + 2 * 0.8) / (1 - 0.8)
    assert opt.param_groups[0]["lr"] == pytest.approx(c / lam, rel=1e-6)


def test_update_mode_is_gen_eta_for_plain_sgd():
    model, batch = problem(2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = update_direction_lr(model, nn.MSELoss(), opt, fraction=0.8, measure_every=1,
                                **UNBOUNDED)  # fmt: skip
    opt.zero_grad()
    nn.MSELoss()(model(batch[0]), batch[1]).backward()
    opt.step()
    w = model.weight.detach().flatten().numpy()
    x, y = batch[0].numpy(), batch[1].numpy().flatten()
    g = 2 * x.T @ (x @ w - y) / len(y)  # gradient at the post-step θ; d = −g
    eta = g @ g / (g @ hessian(batch[0]) @ g)
    sched.estimator.step(batch)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.8 * eta, rel=1e-9)


@pytest.mark.parametrize("factory", [stability_lr, update_direction_lr])
def test_guard_bounds_each_move_to_x2_up_and_x05_down(factory):
    for lr0, binding in ((1e-6, 2.0), (50.0, 0.5)):  # far below / far above the target
        model, batch = problem(3)
        opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.9)
        sched = factory(model, nn.MSELoss(), opt, measure_every=2, ema_alpha=1.0)
        lrs = [lr0]
        train(model, opt, sched, batch, 8, lrs)
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert all(0.5 - 1e-12 <= r <= 2.0 + 1e-12 for r in ratios), ratios
        assert ratios[1] == pytest.approx(binding)  # the guard binds at the first estimate


def test_overhead_is_recorded_in_the_scheduler_state():
    model, batch = problem(4)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = stability_lr(model, nn.MSELoss(), opt, measure_every=2)
    train(model, opt, sched, batch, 7)
    hist = sched.estimator.history
    assert sched.overhead["calls"] == len(hist) == 3
    assert sched.overhead["hvps"] == sum(r["num_hvps"] for r in hist) > 0
    assert sched.overhead["seconds"] == pytest.approx(sum(r["seconds"] for r in hist))
    per = sched.overhead_per_call()
    assert per["hvps"] == pytest.approx(sched.overhead["hvps"] / 3)
    assert "overhead" in sched.state_dict()


@pytest.mark.parametrize("factory", [stability_lr, update_direction_lr])
def test_a_measurement_leaves_model_optimizer_and_rng_untouched(factory):
    torch.manual_seed(0)
    model, batch = problem(5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = factory(model, nn.MSELoss(), opt, measure_every=1)
    opt.zero_grad()
    nn.MSELoss()(model(batch[0]), batch[1]).backward()
    opt.step()
    before = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    grad = model.weight.grad.clone()
    rng = torch.get_rng_state()
    assert sched.estimator.step(batch)  # an estimation step
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(model.weight.grad, grad)
    for a, b in zip(before[0].values(), model.state_dict().values()):
        assert torch.equal(a, b)
    after = opt.state_dict()
    for k, v in before[1]["state"][0].items():
        assert torch.equal(v, after["state"][0][k])
    assert before[1]["param_groups"] == after["param_groups"]


def _build(factory, seed=6):
    model, batch = problem(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, factory(model, nn.MSELoss(), opt, measure_every=3), batch


@pytest.mark.parametrize("factory", [stability_lr, update_direction_lr])
def test_checkpoint_round_trip_continues_bit_identically(factory):
    model, opt, sched, batch = _build(factory)
    train(model, opt, sched, batch, 10)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "est": sched.estimator.state_dict()}, buf)  # fmt: skip
    lrs_a = []
    train(model, opt, sched, batch, 11, lrs_a)
    buf.seek(0)
    ck = torch.load(buf, weights_only=False)
    model2, opt2, sched2, _ = _build(factory, seed=7)  # different weights before the load
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    sched2.load_state_dict(ck["sched"])
    sched2.estimator.load_state_dict(ck["est"])
    lrs_b = []
    train(model2, opt2, sched2, batch, 11, lrs_b)
    assert lrs_a == lrs_b and len(set(lrs_a)) > 1
    assert torch.equal(model.weight, model2.weight)
    assert sched.overhead["calls"] == sched2.overhead["calls"]


def test_find_then_onecycle_is_pytorch_onecycle_at_the_finder_peak():
    model, batch = problem(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    w0 = model.weight.detach().clone()
    sched, res = find_then_onecycle(model, nn.MSELoss(), batch, opt, total_steps=40,
                                    start_lr=1e-4, end_lr=10.0, num_steps=100,
                                    measure_every=2)  # fmt: skip
    assert res.stop_reason == "edge" and torch.equal(model.weight, w0)
    lam = np.linalg.eigvalsh(hessian(batch[0]))[-1]
    assert res.edge_lr == pytest.approx(3.8 / lam, rel=0.2)  # quadratic: λ constant
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    s = sched.schedules[0].step_size
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=res.max_lr, total_steps=40, pct_start=(s + 1) / 40, div_factor=10.0,
        final_div_factor=100.0, three_phase=True, anneal_strategy="linear",
    )  # fmt: skip
    for _ in range(39):
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["momentum"] == pytest.approx(ref_opt.param_groups[0]["momentum"])
        opt.step(), sched.step(), ref_opt.step(), ref.step()


def test_find_then_onecycle_without_an_edge_raises_or_falls_back():
    model, batch = problem(9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kw = dict(total_steps=20, start_lr=1e-6, end_lr=1e-5, num_steps=10, measure_every=2)
    with pytest.raises(ValueError, match="no edge"):
        find_then_onecycle(model, nn.MSELoss(), batch, opt, **kw)
    sched, res = find_then_onecycle(model, nn.MSELoss(), batch, opt, fallback_lr=0.3, **kw)
    assert res.stop_reason == "end_of_ramp" and sched.schedules[0].max_lr == 0.3
    with pytest.raises(ValueError, match="div_factor"):
        find_then_onecycle(model, nn.MSELoss(), batch, opt, div_factor=1.0, **kw)
