"""Stability thresholds (formulas, divergence on quadratics) and preconditioned sharpness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from hessian_lr.curvature.hessian import HessianOperator
from hessian_lr.lr import CurvatureOptions
from hessian_lr.lr.stability import (
    adam_threshold,
    gd_threshold,
    heavy_ball_threshold,
    nesterov_threshold,
    preconditioned_sharpness,
    preconditioned_sharpness_from_operator,
    preconditioner_diagonal,
    rmsprop_threshold,
    stability_threshold,
)

DT = torch.float64


class Quadratic(nn.Module):
    """f(θ) = ½ θᵀAθ over θ = (w.flatten(), c)."""

    def __init__(self, A: np.ndarray, theta: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("A", torch.tensor(A))
        self.w = nn.Parameter(torch.tensor(theta[:4]).reshape(2, 2))
        self.c = nn.Parameter(torch.tensor(theta[4:]))

    def forward(self) -> torch.Tensor:
        t = torch.cat([self.w.reshape(-1), self.c])
        return 0.5 * t @ self.A @ t


def quad_loss(model: nn.Module, batch: object) -> torch.Tensor:
    return model()


BATCH = (torch.zeros(1, dtype=DT),)
CLOSURE = CurvatureOptions(closure=True)  # the quadratics take loss_fn(model, batch)


def _matrix(n: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.linspace(-1.0, 10.0, n)) @ Q.T
    return 0.5 * (A + A.T)


def _set(opt: torch.optim.Optimizer, model: Quadratic, **vectors: np.ndarray) -> None:
    for key, v in vectors.items():
        for p, part in zip((model.w, model.c), (v[:4].reshape(2, 2), v[4:])):
            opt.state[p][key] = torch.tensor(part)


# ------------------------------------------------------------------------------- the formulas
def test_threshold_formulas():
    assert gd_threshold(0.01) == pytest.approx(200.0, rel=1e-15)
    assert heavy_ball_threshold(0.02, 0.9) == pytest.approx(3.8 / 0.02, rel=1e-14)
    assert heavy_ball_threshold(0.02, 0.9, dampening=0.5) == pytest.approx(7.6 / 0.02, rel=1e-14)
    assert nesterov_threshold(0.1, 0.9) == pytest.approx(3.8 / 2.8 / 0.1, rel=1e-14)
    assert nesterov_threshold(0.1, 0.0) == pytest.approx(gd_threshold(0.1), rel=1e-15)
    assert adam_threshold(1e-3, 0.9) == pytest.approx(38.0 / 1e-3, rel=1e-12)
    assert adam_threshold(1e-3, 0.0) == pytest.approx(gd_threshold(1e-3), rel=1e-15)
    assert rmsprop_threshold(0.01, 0.5) == pytest.approx(300.0, rel=1e-14)
    with pytest.raises(ValueError, match="learning rate"):
        gd_threshold(0.0)
    with pytest.raises(ValueError, match="momentum"):
        heavy_ball_threshold(0.1, 1.0)
    with pytest.raises(ValueError, match="beta1"):
        adam_threshold(0.1, -0.1)


@pytest.mark.parametrize(
    "cls,kw,kind,c",
    [
        (torch.optim.SGD, dict(lr=0.1), "gd", 2.0),
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9), "heavy_ball", 3.8),
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1), "heavy_ball", 3.8 / 0.9),
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), "nesterov", 3.8 / 2.8),
        (torch.optim.Adam, dict(lr=0.1, betas=(0.8, 0.99)), "adam", 3.6 / 0.2),
        (torch.optim.AdamW, dict(lr=0.1), "adam", 38.0),
        (torch.optim.RMSprop, dict(lr=0.1, momentum=0.5), "rmsprop", 3.0),
    ],
)
def test_stability_threshold_of_optimizers(cls, kw, kind, c):
    thr = stability_threshold(cls([nn.Parameter(torch.zeros(3))], **kw))
    assert thr.kind == kind
    assert thr.constant == pytest.approx(c, rel=1e-13)
    assert thr.threshold == pytest.approx(c / 0.1, rel=1e-13)
    assert thr.preconditioned == (kind in ("adam", "rmsprop"))


def test_threshold_errors():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="no stability threshold"):
        stability_threshold(torch.optim.Adagrad([p]))
    opt = torch.optim.SGD([{"params": [p], "momentum": 0.9}, {"params": [q], "momentum": 0.5}])
    with pytest.raises(ValueError, match="differ in 'momentum'"):
        stability_threshold(opt)
    assert stability_threshold(opt, [q]).constant == pytest.approx(3.0)


# ----------------------------------------- the thresholds are sharp: diverge above, converge below
def _run_sgd(lam: float, lr: float, steps: int = 1200, **kw) -> float:
    x = nn.Parameter(torch.tensor([1.0, 1.0], dtype=DT))
    curv = torch.tensor([lam, 0.3 * lam], dtype=DT)  # the sharpest direction is lam
    opt = torch.optim.SGD([x], lr=lr, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (curv * x * x).sum()).backward()
        opt.step()
        if not bool(torch.isfinite(x).all()) or float(x.detach().abs().max()) > 1e6:
            return math.inf
    return float(x.detach().abs().max())


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(momentum=0.9),
        dict(momentum=0.5, dampening=0.4),
        dict(momentum=0.9, nesterov=True),
    ],
    ids=["gd", "heavy_ball", "dampened", "nesterov"],
)
def test_sgd_diverges_just_above_and_converges_just_below(kw):
    lam = 7.0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, **kw)
    edge = stability_threshold(opt).constant / lam  # the largest stable LR
    assert _run_sgd(lam, 0.98 * edge, **kw) < 1e-6
    assert _run_sgd(lam, 1.02 * edge, **kw) == math.inf


def _run_frozen_adaptive(
    lam_p: float, lr: float, beta: float, ema: bool, steps: int = 3000
) -> float:
    """Adam (ema: m ← βm + (1−β)g) or RMSprop-momentum (b ← βb + P⁻¹g) with P frozen."""
    P = np.array([0.5, 2.0])
    H = np.diag([lam_p * 0.5, 0.2])  # eigenvalues of P⁻¹H: lam_p and 0.1
    x, m = np.ones(2), np.zeros(2)
    for _ in range(steps):
        g = H @ x
        m = beta * m + (1 - beta) * g if ema else beta * m + g / P
        x = x - lr * (m / P if ema else m)
        if not np.all(np.isfinite(x)) or np.abs(x).max() > 1e30:
            return math.inf
    return float(np.abs(x).max())


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_frozen_adam_and_rmsprop_thresholds_are_sharp(beta):
    lam = 40.0
    edge = adam_threshold(1.0, beta) / lam
    assert _run_frozen_adaptive(lam, 0.98 * edge, beta, ema=True, steps=20000) < 1e-6
    assert _run_frozen_adaptive(lam, 1.02 * edge, beta, ema=True) == math.inf
    edge = rmsprop_threshold(1.0, beta) / lam
    assert _run_frozen_adaptive(lam, 0.98 * edge, beta, ema=False, steps=20000) < 1e-6
    assert _run_frozen_adaptive(lam, 1.02 * edge, beta, ema=False) == math.inf


# --------------------------------------------------------- λ_max(P⁻¹H) against scipy.linalg.eigh
@pytest.mark.parametrize(
    "cls,kw",
    [
        (torch.optim.Adam, dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-4)),
        (torch.optim.AdamW, dict(lr=1e-3, amsgrad=True)),
        (torch.optim.RMSprop, dict(lr=1e-3, centered=True, momentum=0.9)),
    ],
)
def test_preconditioned_sharpness_equals_generalized_eigenvalue(cls, kw):
    A = _matrix()
    rng = np.random.default_rng(1)
    model = Quadratic(A, rng.standard_normal(7))
    opt = cls(model.parameters(), **kw)
    v = rng.uniform(1e-6, 1e-2, 7)
    # issue 22: P is that of the next step, the batch's gradient g = Aθ folded into v first
    theta = np.concatenate([model.w.detach().numpy().reshape(-1), model.c.detach().numpy()])
    g = A @ theta
    if cls is torch.optim.RMSprop:
        m = 0.5 * np.sqrt(v) * rng.uniform(-1, 1, 7)
        _set(opt, model, square_avg=v, grad_avg=m, momentum_buffer=np.zeros(7))
        a = 0.99
        sq, ga = a * v + (1 - a) * g * g, a * m + (1 - a) * g
        P = np.sqrt(sq - ga * ga) + kw.get("eps", 1e-8)
    else:
        _set(opt, model, exp_avg=np.zeros(7), exp_avg_sq=v, max_exp_avg_sq=1.5 * v)
        b2, eps = kw.get("betas", (0.9, 0.999))[1], kw.get("eps", 1e-8)
        vn = b2 * v + (1 - b2) * g * g
        vv = np.maximum(1.5 * v, vn) if kw.get("amsgrad") else vn
        P = np.sqrt(vv / (1 - b2**5)) + eps
    for p in model.parameters():
        opt.state[p]["step"] = torch.tensor(4.0)
    res = preconditioned_sharpness(
        model, quad_loss, BATCH, opt, curvature=CLOSURE, lanczos_tol=1e-12
    )
    lam = scipy.linalg.eigh(A, np.diag(P), eigvals_only=True)[-1]
    assert res.lambda_max == pytest.approx(lam, rel=1e-8)
    assert res.preconditioned and res.kind == ("rmsprop" if cls is torch.optim.RMSprop else "adam")
    c = res.constant
    assert res.threshold == pytest.approx(c / 1e-3, rel=1e-12)
    assert res.lr_stable == pytest.approx(c / lam, rel=1e-8)
    assert res.stability_ratio == pytest.approx(1e-3 * lam / c, rel=1e-8)
    assert res.lr == pytest.approx(1 / lam, rel=1e-8)
    assert res.bn_mode == "train" and "eigenvector" not in res.as_dict()


def test_sgd_sharpness_is_raw_lambda_max_and_groups_scale():
    A = _matrix(seed=2)
    model = Quadratic(A, np.ones(7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    res = preconditioned_sharpness(
        model, quad_loss, BATCH, opt, curvature=CLOSURE, lanczos_tol=1e-12
    )
    assert res.lambda_max == pytest.approx(np.linalg.eigvalsh(A)[-1], rel=1e-10)
    assert not res.preconditioned and res.kind == "heavy_ball"
    # two groups, LRs 0.3 and 0.1: the recurrence runs on L^{1/2} A L^{1/2}, L = diag(η_g)
    opt = torch.optim.SGD(
        [{"params": [model.w], "lr": 0.3}, {"params": [model.c], "lr": 0.1}], momentum=0.9
    )
    res = preconditioned_sharpness(
        model, quad_loss, BATCH, opt, curvature=CLOSURE, lanczos_tol=1e-12
    )
    L = np.sqrt(np.array([0.3] * 4 + [0.1] * 3))
    assert res.lr_times_sharpness == pytest.approx(
        np.linalg.eigvalsh(L[:, None] * A * L[None, :])[-1], rel=1e-10
    )


def test_preconditioner_needs_state_and_frozen_params_drop_out():
    A = _matrix()
    model = Quadratic(A, np.ones(7))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="no Adam state yet"):
        preconditioner_diagonal(opt, [model.w, model.c])  # the last step's P: none yet
    # the next step's P needs no state (issue 22): v̂ = g², P = |g| + ε
    g = A @ np.ones(7)
    res = preconditioned_sharpness(
        model, quad_loss, BATCH, opt, curvature=CLOSURE, lanczos_tol=1e-12
    )
    lam0 = scipy.linalg.eigh(A, np.diag(np.abs(g) + 1e-8), eigvals_only=True)[-1]
    assert res.lambda_max == pytest.approx(lam0, rel=1e-8)
    opt = torch.optim.SGD([{"params": [model.w], "lr": 0.0}, {"params": [model.c], "lr": 0.1}])
    q = preconditioner_diagonal(opt, [model.w, model.c])
    assert torch.isinf(q[:4]).all() and torch.equal(q[4:], torch.ones(3, dtype=DT))
    sub = np.linalg.eigvalsh(A[4:, 4:])[-1]
    res = preconditioned_sharpness(
        model, quad_loss, BATCH, opt, curvature=CLOSURE, lanczos_tol=1e-12
    )
    assert res.lambda_max == pytest.approx(sub, rel=1e-10)
    # the same on an operator over both parameters (w frozen by LR 0, then by absence)
    op = HessianOperator(model, quad_loss, BATCH, closure=True)
    for o in (opt, torch.optim.SGD([model.c], lr=0.1)):
        res = preconditioned_sharpness_from_operator(op, o, [model.w, model.c], lanczos_tol=1e-12)
        assert res.lambda_max == pytest.approx(sub, rel=1e-10) and res.lr_in_use == 0.1
    with pytest.raises(ValueError, match="none of the parameters"):
        preconditioner_diagonal(torch.optim.SGD([model.w], lr=0.0), [model.w, model.c])


def test_negative_curvature_flag():
    model = Quadratic(-np.eye(7), np.ones(7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = preconditioned_sharpness(model, quad_loss, BATCH, opt, curvature=CLOSURE)
    assert "negative_curvature" in res.flags and math.isnan(res.lr) and not res.ok
    from hessian_lr.lr import CurvatureError

    with pytest.raises(CurvatureError):
        preconditioned_sharpness(model, quad_loss, BATCH, opt, curvature=CLOSURE, strict=True)
