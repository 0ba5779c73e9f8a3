"""The GeN rule along the optimizer's update: hand-built states on quadratics, torch's own step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.lr import CurvatureOptions
from hessian_lr.lr.direction import update_direction
from hessian_lr.lr.update import NOT_DESCENT, ZERO_UPDATE, update_lr
from hessian_lr.rng import get_rng_state

DT = torch.float64


class Quadratic(nn.Module):
    """f(θ) = ½ θᵀAθ − bᵀθ over θ = (w.flatten(), c): two parameter tensors, known H = A."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.w = nn.Parameter(theta[:4].reshape(2, 2).clone())
        self.c = nn.Parameter(theta[4:].clone())

    def theta(self) -> torch.Tensor:
        return torch.cat([self.w.reshape(-1), self.c])

    def forward(self) -> torch.Tensor:
        t = self.theta()
        return 0.5 * t @ self.A @ t - self.b @ t


def quad_loss(model: nn.Module, batch: object) -> torch.Tensor:
    return model()


BATCH = (torch.zeros(1, dtype=DT),)
CLOSURE = CurvatureOptions(closure=True)  # the quadratics take loss_fn(model, batch)


def make_quadratic(seed: int = 0, indefinite: bool = False) -> Quadratic:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=DT))
    lam = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 9.0], dtype=DT)
    if indefinite:
        lam[0] = -4.0
    A = Q @ torch.diag(lam) @ Q.T
    A = 0.5 * (A + A.T)
    return Quadratic(
        A, torch.randn(7, generator=g, dtype=DT), torch.randn(7, generator=g, dtype=DT)
    )


def gradient(model: Quadratic) -> np.ndarray:
    A, b, t = (x.detach().numpy() for x in (model.A, model.b, model.theta()))
    return A @ t - b


def split(v: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(v[:4].reshape(2, 2)), torch.tensor(v[4:])]


def rand(seed: int, positive: bool = False) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(7)
    return np.abs(v) + 0.1 if positive else v


def gen_rule(model: Quadratic, d: np.ndarray) -> float:
    """−gᵀd / dᵀAd, by hand."""
    g, A = gradient(model), model.A.numpy()
    return float(-(g @ d) / (d @ A @ d))


def set_state(opt: torch.optim.Optimizer, model: Quadratic, **vectors: np.ndarray) -> None:
    for key, v in vectors.items():
        for p, part in zip((model.w, model.c), split(v)):
            opt.state[p][key] = part.clone()


# ------------------------------------------------------------------ the hand-built cases
def test_sgd_plain_is_quadratic_rule():
    model = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g, A = gradient(model), model.A.numpy()
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.lr == pytest.approx(g @ g / (g @ A @ g), rel=1e-12)
    assert est.lr_multiplier == pytest.approx(est.lr / 0.05, rel=1e-12)
    assert est.cosine == pytest.approx(1.0, rel=1e-12)
    assert est.source == "sgd" and est.num_hvps == 1 and est.flags == ()


def test_momentum_sgd_hand_state():
    model = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.2)
    buf = rand(1)
    set_state(opt, model, momentum_buffer=buf)
    d = -(0.9 * buf + 0.8 * gradient(model))
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.lr == pytest.approx(gen_rule(model, d), rel=1e-12)
    assert est.curvature == pytest.approx(d @ model.A.numpy() @ d / (d @ d), rel=1e-12)


def test_nesterov_with_weight_decay_hand_state():
    model = make_quadratic()
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1
    )
    buf = rand(2)
    set_state(opt, model, momentum_buffer=buf)
    g = gradient(model) + 0.1 * model.theta().detach().numpy()  # coupled weight decay
    b = 0.8 * buf + g
    d = -(g + 0.8 * b)
    assert update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE).lr == pytest.approx(
        gen_rule(model, d), rel=1e-12
    )


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_and_adamw_hand_state(cls):
    model = make_quadratic()
    b1, b2, eps, wd, lr, step = 0.9, 0.99, 1e-3, 0.05, 0.01, 7
    opt = cls(model.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    m, v = gradient(model) + 0.5 * rand(3), rand(4, positive=True)  # a descent direction
    set_state(opt, model, exp_avg=m, exp_avg_sq=v)
    for p in model.parameters():
        opt.state[p]["step"] = torch.tensor(float(step))
    theta = model.theta().detach().numpy()
    g = gradient(model)
    if cls is torch.optim.Adam:  # coupled L2
        g = g + wd * theta
    m1 = b1 * m + (1 - b1) * g
    v1 = b2 * v + (1 - b2) * g * g
    t = step + 1
    d = -(m1 / (1 - b1**t)) / (np.sqrt(v1 / (1 - b2**t)) + eps)
    if cls is torch.optim.AdamW:  # decoupled: θ ← θ(1 − ηλ) − η m̂/(√v̂ + ε)
        d = d - wd * theta
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.ok and est.lr == pytest.approx(gen_rule(model, d), rel=1e-10)
    assert est.source == cls.__name__.lower()


# ---------------------------------------------- analytic d == torch's own step, many configurations
CONFIGS = [
    (torch.optim.SGD, dict(lr=0.1)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.7, nesterov=True, maximize=True)),
    (torch.optim.Adam, dict(lr=0.01)),
    (torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1, betas=(0.8, 0.9))),
    (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    (torch.optim.RMSprop, dict(lr=0.01)),
    (torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)),
]


def _warm_up(opt: torch.optim.Optimizer, model: nn.Module, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    for p in model.parameters():
        p.grad = None


def _torch_step(model: nn.Module, opt: torch.optim.Optimizer, grads: list) -> list[torch.Tensor]:
    m2, o2 = copy.deepcopy((model, opt))
    params2 = list(m2.parameters())
    before = [p.detach().clone() for p in params2]
    for p, gi in zip(params2, grads):
        p.grad = gi.reshape(p.shape).clone()
    o2.step()
    return [p.detach() - b for p, b in zip(params2, before)]


@pytest.mark.parametrize("warm", [0, 3])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_direction_is_torch_step(cls, kw, warm):
    model = make_quadratic(1)
    opt = cls(model.parameters(), **kw)
    _warm_up(opt, model, warm, seed=5)
    params = list(model.parameters())
    grads = split(gradient(model))
    steps = _torch_step(model, opt, grads)
    for mode in ("analytic", "generic"):
        ud = update_direction(opt, params, grads, direction=mode)
        assert ud.lr == kw["lr"]
        for s, d in zip(steps, ud.direction):
            torch.testing.assert_close(d * kw["lr"], s, rtol=1e-9, atol=1e-13)


def test_param_groups_with_different_lrs():
    model = make_quadratic(2)
    opt = torch.optim.SGD(
        [{"params": [model.w], "lr": 0.3}, {"params": [model.c], "lr": 0.1}], momentum=0.5
    )
    _warm_up(opt, model, 2, seed=1)
    eta_bar = (4 * 0.3 + 3 * 0.1) / 7
    delta = torch.cat([s.reshape(-1) for s in _torch_step(model, opt, split(gradient(model)))])
    d = (delta / eta_bar).numpy()
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.lr_in_use == pytest.approx(eta_bar, rel=1e-14)
    assert est.lr == pytest.approx(gen_rule(model, d), rel=1e-10)
    assert est.lr_multiplier * eta_bar == pytest.approx(est.lr, rel=1e-14)


def test_zero_lr_group_does_not_move():
    model = make_quadratic(2)
    opt = torch.optim.SGD([{"params": [model.w], "lr": 0.0}, {"params": [model.c], "lr": 0.2}])
    ud = update_direction(opt, list(model.parameters()), split(gradient(model)))
    assert float(ud.direction[0].abs().max()) == 0.0
    torch.testing.assert_close(ud.direction[1], -split(gradient(model))[1] * (0.2 / ud.lr))


def test_parameters_outside_the_optimizer_get_zero_direction():
    model = make_quadratic(2)
    opt = torch.optim.SGD([model.c], lr=0.1, momentum=0.9)
    g = split(gradient(model))
    for mode in ("analytic", "generic"):
        ud = update_direction(opt, [model.w, model.c], g, direction=mode)
        assert torch.equal(ud.direction[0], torch.zeros(2, 2, dtype=DT))
        torch.testing.assert_close(ud.direction[1], -g[1])
    with pytest.raises(ValueError, match="none of the parameters"):
        update_direction(opt, [model.w], g[:1])


def test_generic_fallback_nadam_matches_its_step():
    model = make_quadratic(3)
    opt = torch.optim.NAdam(model.parameters(), lr=0.02)
    _warm_up(opt, model, 2, seed=2)
    delta = torch.cat([s.reshape(-1) for s in _torch_step(model, opt, split(gradient(model)))])
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.source == "generic"
    assert est.lr == pytest.approx(gen_rule(model, (delta / 0.02).numpy()), rel=1e-9)
    with pytest.raises(TypeError, match="no exact update formula"):
        update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE, direction="analytic")


# ------------------------------------------------------------------ nothing is changed by a call
def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> tuple:
    params = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    return params, grads, state, get_rng_state()


def _assert_same(a: tuple, b: tuple) -> None:
    for x, y in zip(a[0], b[0]):
        assert torch.equal(x, y)
    for x, y in zip(a[1], b[1]):
        assert (x is None and y is None) or torch.equal(x, y)
    sa, sb = a[2], b[2]
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for key, v in sa["state"][k].items():
            w = sb["state"][k][key]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w
    assert torch.equal(a[3]["torch"], b[3]["torch"])
    assert a[3]["python"] == b[3]["python"]


class NoisySGD(torch.optim.SGD):
    """An SGD subclass that draws from the global RNG in step (generic path)."""

    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(1e-3 * torch.randn_like(p))
        return super().step(closure)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        (torch.optim.AdamW, dict(lr=0.01, amsgrad=True)),
        (torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
        (NoisySGD, dict(lr=0.1, momentum=0.9)),
        (torch.optim.Adagrad, dict(lr=0.1)),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_model_optimizer_rng_bit_identical(cls, kw):
    model = make_quadratic(4)
    opt = cls(model.parameters(), **kw)
    _warm_up(opt, model, 2, seed=3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # wraps opt.step
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    before = _snapshot(model, opt)
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.ok or est.flags
    _assert_same(before, _snapshot(model, opt))
    assert sched.last_epoch == 0 and not getattr(opt, "_opt_called", False)


# ---------------------------------------------------------------------------------- flags
def test_zero_update_flag():
    model = make_quadratic()
    with torch.no_grad():  # θ = 0, b = 0: g = 0 exactly, so plain SGD's d = 0
        model.b.zero_()
        for p in model.parameters():
            p.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.flags == (ZERO_UPDATE,) and math.isnan(est.lr) and est.num_hvps == 0
    from hessian_lr.lr import CurvatureError

    with pytest.raises(CurvatureError, match="zero_update"):
        update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE, strict=True)


def test_not_descent_flag_from_momentum():
    model = make_quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    set_state(opt, model, momentum_buffer=-20.0 * gradient(model))  # buffer points uphill
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert NOT_DESCENT in est.flags and est.gTd > 0 and math.isnan(est.lr) and not est.ok


def test_negative_curvature_flag():
    model = make_quadratic(indefinite=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    A, g = model.A.numpy(), gradient(model)
    u = np.linalg.eigh(A)[1][:, 0]  # eigenvalue −4
    u = u * np.sign(g @ u)
    set_state(opt, model, momentum_buffer=(3.0 * u - g) / 0.9)  # so that d = −3u: descent
    d = -3.0 * u
    est = update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert est.gTd == pytest.approx(g @ d, rel=1e-10) and est.gTd < 0
    assert est.dHd == pytest.approx(-36.0, rel=1e-10)
    assert est.flags == ("negative_curvature",) and math.isnan(est.lr)


# ------------------------------------------------------- a real network against a dense Hessian
def test_adam_on_mlp_against_dense_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    x, y = torch.randn(16, 3, dtype=DT), torch.randint(0, 3, (16,))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    opt.zero_grad()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            parts[n] = t[i : i + k].reshape(s)
            i += k
        return loss_fn(functional_call(model, parts, (x,)), y)

    H = jacfwd(grad(f))(theta)
    g = grad(f)(theta)
    delta = _torch_step(model, opt, [gi for gi in g.split([int(np.prod(s)) for s in shapes])])
    d = torch.cat([s.reshape(-1) for s in delta]) / 0.01
    expected = float(-(g @ d) / (d @ H @ d))
    est = update_lr(model, loss_fn, (x, y), opt)
    assert est.lr == pytest.approx(expected, rel=1e-8)
    assert est.bn_mode == "train"


def test_parameters_outside_the_optimizer_are_left_out():
    model = make_quadratic()
    opt = torch.optim.SGD([model.c], lr=0.1)  # w is not trained
    g = gradient(model)
    d = np.concatenate([np.zeros(4), -g[4:]])
    assert update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE).lr == pytest.approx(
        gen_rule(model, d), rel=1e-12
    )
    other = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="none of the model's trainable parameters"):
        update_lr(model, quad_loss, BATCH, other, curvature=CLOSURE)
    with pytest.raises(ValueError, match="direction must be one of"):
        update_lr(model, quad_loss, BATCH, opt, curvature=CLOSURE, direction="nope")
