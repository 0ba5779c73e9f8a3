"""The EdgeOfStability observer: dense references, no side effects on training, resume, plot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.lr.eos import EdgeOfStability, plot_edge_of_stability
from hessian_lr.lr.update import update_lr
from hessian_lr.observe import StepContext, run_observers

DT = torch.float64


def _setup(opt_name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    x, y = torch.randn(24, 4, dtype=DT), torch.randint(0, 3, (24,))
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99))
    return model, opt, nn.CrossEntropyLoss(), (x, y)


def _dense_hessian(model: nn.Module, loss_fn, batch) -> np.ndarray:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t):
        parts = dict(zip(names, [c.reshape(s) for c, s in zip(t.split(sizes), shapes)]))
        return loss_fn(functional_call(model, parts, (batch[0],)), batch[1])

    return jacfwd(grad(f))(theta).numpy()


def _train(model, opt, loss_fn, batch, steps, observers=()):
    records = []
    for t in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        ctx = StepContext(
            step=t,
            model=model,
            optimizer=opt,
            batch=batch,
            loss=loss.item(),
            lr=0.0,
            loss_fn=loss_fn,
        )
        rec = {"step": t, **run_observers(observers, ctx, last=t == steps - 1)}
        records.append(rec)
    return records


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_records_match_dense_references(opt_name):
    model, opt, loss_fn, batch = _setup(opt_name)
    obs = EdgeOfStability(every=3, lanczos_tol=1e-10, update=True)
    records = _train(model, opt, loss_fn, batch, 6, [obs])
    assert [("eos_sharpness" in r) for r in records] == [False, False, True] * 2
    rec = records[-1]
    H = _dense_hessian(model, loss_fn, batch)
    raw = np.linalg.eigvalsh(H)[-1]
    if opt_name == "sgd":
        assert rec["eos_sharpness"] == pytest.approx(raw, rel=1e-8)
        assert rec["eos_kind"] == "heavy_ball" and not rec["eos_preconditioned"]
        assert rec["eos_threshold"] == pytest.approx(3.8 / 0.05, rel=1e-12)
        assert "eos_raw_sharpness" not in rec
    else:
        v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
        # issue 22: the P of the next step, the batch's gradient at θ folded into v first
        gs = torch.autograd.grad(loss_fn(model(batch[0]), batch[1]), list(model.parameters()))
        g = torch.cat([x.reshape(-1) for x in gs]).detach()
        v = 0.99 * v + 0.01 * g * g
        P = np.sqrt(v.numpy() / (1 - 0.99**7)) + 1e-8
        lam = scipy.linalg.eigh(H, np.diag(P), eigvals_only=True)[-1]
        assert rec["eos_sharpness"] == pytest.approx(lam, rel=1e-8)
        assert rec["eos_raw_sharpness"] == pytest.approx(raw, rel=1e-8)
        assert rec["eos_kind"] == "adam" and rec["eos_preconditioned"]
        assert rec["eos_threshold"] == pytest.approx(38.0 / 0.01, rel=1e-12)
    assert rec["eos_lr_x_sharpness"] == pytest.approx(rec["eos_lr"] * rec["eos_sharpness"])
    assert rec["eos_ratio"] == pytest.approx(rec["eos_sharpness"] / rec["eos_threshold"])
    assert rec["eos_bn_mode"] == "train" and rec["eos_num_hvps"] > 0
    assert rec["eos_update_lr"] == pytest.approx(update_lr(model, loss_fn, batch, opt).lr, rel=1e-9)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_training_is_bit_identical_with_and_without_the_observer(opt_name):
    runs = []
    for observers in ([], [EdgeOfStability(every=2, update=True)]):
        model, opt, loss_fn, batch = _setup(opt_name, seed=1)
        _train(model, opt, loss_fn, batch, 5, observers)
        runs.append((model, opt, torch.get_rng_state()))
    (m0, o0, r0), (m1, o1, r1) = runs
    for p, q in zip(m0.parameters(), m1.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(m0.parameters(), m1.parameters()):
        for key, value in o0.state[p].items():
            assert torch.equal(value, o1.state[q][key]) if value is not None else True
    assert torch.equal(r0, r1)


def test_state_dict_round_trip_resumes_exactly():
    model, opt, loss_fn, batch = _setup("adam")
    obs = EdgeOfStability(every=2)
    _train(model, opt, loss_fn, batch, 4, [obs])
    state = copy.deepcopy(obs.state_dict())
    assert state["v_pre"] is not None and state["v_raw"] is not None
    m2, o2 = copy.deepcopy((model, opt))
    ctx1 = StepContext(step=5, model=model, optimizer=opt, batch=batch, loss_fn=loss_fn)
    a = obs.observe(ctx1)
    fresh = EdgeOfStability(every=2)
    fresh.load_state_dict(state)
    ctx2 = StepContext(step=5, model=m2, optimizer=o2, batch=batch, loss_fn=loss_fn)
    b = fresh.observe(ctx2)
    for key in ("eos_sharpness", "eos_raw_sharpness", "eos_num_hvps"):
        assert a[key] == b[key]


def test_fixed_measurement_batch_and_errors():
    model, opt, loss_fn, batch = _setup("sgd")
    probe = (batch[0][:8], batch[1][:8])
    obs = EdgeOfStability(every=1, loss_fn=loss_fn, batch=probe, lanczos_tol=1e-10)
    _train(model, opt, loss_fn, batch, 1)
    rec = obs.observe(StepContext(step=0, model=model, optimizer=opt))
    H = _dense_hessian(model, loss_fn, probe)
    assert rec["eos_sharpness"] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)
    with pytest.raises(ValueError, match="needs the optimizer"):
        obs.observe(StepContext(step=0, model=model))
    with pytest.raises(ValueError, match="loss_fn and a batch"):
        EdgeOfStability().observe(StepContext(step=0, model=model, optimizer=opt))
    with pytest.raises(ValueError, match="every"):
        EdgeOfStability(every=-1)


def test_plot_from_records():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    model, opt, loss_fn, batch = _setup("adam")
    records = _train(model, opt, loss_fn, batch, 4, [EdgeOfStability(every=2)])
    fig = plot_edge_of_stability(records, title="adam")
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # preconditioned, raw, threshold
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [r["eos_sharpness"] for r in records[1::2]])
    with pytest.raises(ValueError, match="eos_sharpness"):
        plot_edge_of_stability([{"step": 0}])
