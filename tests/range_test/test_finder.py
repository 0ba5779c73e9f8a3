"""find_lr: the edge on quadratics against closed forms, Adam's preconditioned edge against a dense
eigensolver, bit-identical restore, bad inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr import find_lr
from hessian_lr.range_test import LRFinderResult, lr_ramp

DUMMY = (torch.zeros(1), torch.zeros(1))


class Quadratic(nn.Module):
    """f(w) = ½ wᵀAw: Hessian A everywhere."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(torch.linspace(1.0, 2.0, a.shape[0], dtype=torch.float64))


def quad_loss(model: Quadratic, batch) -> torch.Tensor:
    return 0.5 * model.w @ model.a @ model.w


def spd(n: int, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.normal(size=(n, n)))
    return torch.tensor(q @ np.diag(np.geomspace(0.5, 20.0, n)) @ q.T)


def resolution(start: float, end: float, n: int, every: int) -> float:
    """The ramp's LR factor between two measurements."""
    return (end / start) ** (every / (n - 1))


def runs_stably(opt_fn, a: torch.Tensor, lr: float, steps: int = 3000) -> bool:
    model = Quadratic(a)
    opt = opt_fn(model.parameters(), lr)
    for _ in range(steps):
        opt.zero_grad()
        quad_loss(model, None).backward()
        opt.step()
    return float(model.w.detach().norm()) < 1e-3


@pytest.mark.parametrize(
    "opt_fn, constant",
    [
        (lambda p, lr: torch.optim.SGD(p, lr=lr), 2.0),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), 3.8),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5, nesterov=True), 3.0 / 2.0),
    ],
    ids=["gd", "heavy_ball", "nesterov"],
)
def test_edge_is_the_closed_form_threshold_on_a_quadratic(opt_fn, constant):
    a = spd(6, 0)
    lam = float(np.linalg.eigvalsh(a.numpy()).max())
    model = Quadratic(a)
    start, end, n, every = 1e-4, 10.0, 200, 5
    res = find_lr(
        model,
        quad_loss,
        DUMMY,
        opt_fn(model.parameters(), 0.1),
        closure=True,
        start_lr=start,
        end_lr=end,
        num_steps=n,
        measure_every=every,
    )
    edge = constant / lam
    assert res.stop_reason == "edge"
    step = resolution(start, end, n, every)
    assert edge / step <= res.edge_lr <= edge * step
    assert res.edge_lr == pytest.approx(edge, rel=2e-2)  # λ constant: interpolation is exact
    # The closed form itself, independently: just below it converges, just above it does not.
    assert runs_stably(opt_fn, a, 0.97 * edge)
    assert not runs_stably(opt_fn, a, 1.03 * edge)


def test_adam_edge_uses_the_preconditioned_sharpness():
    a = spd(5, 1) * 50.0
    model = Quadratic(a)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, end, n, every = 1e-5, 10.0, 300, 5
    res = find_lr(
        model,
        quad_loss,
        DUMMY,
        opt,
        closure=True,
        start_lr=start,
        end_lr=end,
        num_steps=n,
        measure_every=every,
    )
    assert res.stop_reason == "edge" and res.kind == "adam"
    assert res.constant == pytest.approx(38.0)
    assert not opt.state  # restored: no Adam state
    # Replay the same ramp by hand; λ_max(P⁻¹A) from Adam's state with a dense eigensolver.
    ref = Quadratic(a)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=start)
    for lr in lr_ramp(start, end, n, ramp="exp")[: res.num_steps]:
        ref_opt.param_groups[0]["lr"] = float(lr)
        ref_opt.zero_grad()
        quad_loss(ref, None).backward()
        ref_opt.step()
    st = ref_opt.state[ref.w]
    p = (st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8
    s = (a / p.sqrt()[:, None] / p.sqrt()[None, :]).numpy()
    lam = float(np.linalg.eigvalsh(s).max())
    assert res.sharpness[-1] == pytest.approx(lam, rel=1e-2)
    lr_stop = res.lrs[-1]
    assert res.ratios[-1] == pytest.approx(lr_stop * lam / 38.0, rel=1e-2)
    assert res.measure_lrs[-2] <= res.edge_lr <= lr_stop


def _bn_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )


def _loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
    )


def _state(model, opt, loader):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        {
            k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()}
            for k, s in opt.state_dict()["state"].items()
        },
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
        torch.get_rng_state().clone(),
        loader.generator.get_state().clone(),
    )


def _same(a, b) -> None:
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    assert a[1] == b[1] and a[3] == b[3]
    for p in a[2]:
        for n in a[2][p]:
            x, y = a[2][p][n], b[2][p][n]
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y
    assert torch.equal(a[4], b[4]) and torch.equal(a[5], b[5])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_model_optimizer_and_rng_restored_bit_identically(kind):
    model, loader = _bn_model(), _loader()
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if kind == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    x, y = next(iter(loader))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # some optimizer state to restore
    model.eval()  # a mode the finder must put back
    before = _state(model, opt, loader)
    res = find_lr(
        model,
        nn.CrossEntropyLoss(),
        loader,
        opt,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=60,
        measure_every=5,
    )
    assert res.num_steps > 5 and res.num_hvps > 0
    _same(before, _state(model, opt, loader))


def test_restored_after_an_exception():
    model, loader = _bn_model(), _loader()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = _state(model, opt, loader)
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        find_lr(model, loss_fn, loader, opt, num_steps=50, measure_every=50)
    _same(before, _state(model, opt, loader))


def test_result_is_frozen_flags_no_edge_and_plots():
    a = spd(4, 2)
    model = Quadratic(a)
    res = find_lr(
        model,
        quad_loss,
        DUMMY,
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=True,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=20,
        measure_every=5,
    )
    assert isinstance(res, LRFinderResult)
    assert res.stop_reason == "end_of_ramp" and "no_edge" in res.flags
    assert math.isnan(res.max_lr) and math.isnan(res.edge_lr)
    assert res.num_steps == 20 and len(res.ratios) == 4  # measured after updates 4, 9, 14, 19
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.max_lr = 1.0  # type: ignore[misc]
    import matplotlib

    matplotlib.use("Agg")
    assert res.plot() is not None


def test_calibration_scales_the_suggestion_and_band():
    model = Quadratic(spd(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = find_lr(
        model,
        quad_loss,
        DUMMY,
        opt,
        closure=True,
        start_lr=1e-4,
        end_lr=10.0,
        num_steps=100,
        calibration=(0.5, 3.0),
    )
    assert res.max_lr == pytest.approx(0.5 * res.edge_lr)
    assert res.interval == pytest.approx((res.max_lr / 3.0, res.max_lr * 3.0))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(start_lr=1.0, end_lr=0.1), ValueError, "start_lr < end_lr"),
        (dict(num_steps=1), ValueError, "num_steps"),
        (dict(measure_every=0), ValueError, "measure_every"),
        (dict(calibration=(0.0, 2.0)), ValueError, "calibration"),
    ],
)
def test_bad_settings_are_named(kwargs, error, match):
    model = Quadratic(spd(3, 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        find_lr(model, quad_loss, DUMMY, opt, closure=True, **kwargs)


def test_bad_objects_are_named():
    model = Quadratic(spd(3, 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        find_lr(object(), quad_loss, DUMMY, opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        find_lr(model, quad_loss, DUMMY, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no stability threshold"):
        find_lr(model, quad_loss, DUMMY, torch.optim.Adagrad(model.parameters()), closure=True)
    w = model.w.detach().clone()
    assert torch.equal(model.w, w)
