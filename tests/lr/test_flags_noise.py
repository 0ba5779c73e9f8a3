"""Issue 22 item 6: a secant estimate that measures noise is flagged, nan, and skipped by the EMA
and ``CurvatureLR``; ``CurvatureLR`` refuses keys its method never fills; solvers refuse
non-finite tolerances; numpy scalars are numbers; ``UpdateEstimate`` carries ``raw_lr``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.power import power_iteration
from hessian_lr.lr import CurvatureLR, LREstimator
from hessian_lr.lr.curvature_lr import FILLED_KEYS
from hessian_lr.lr.secant import INDISTINGUISHABLE_FROM_NOISE

DT = torch.float64


class NoiseModel(nn.Module):
    """loss = ξ_tᵀθ: zero curvature, the gradient is pure noise."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=DT))

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        return xi @ self.theta


def _noise_run(steps: int = 120, every: int = 1, lr: float = 0.05):
    n = 500
    model = NoiseModel(n)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    est = LREstimator(model, methods="secant", every=every, optimizer=opt, ema_alpha=0.5)
    sched = CurvatureLR(opt, est, safety=1.0, max_lr=10.0)
    g = torch.Generator().manual_seed(3)
    xis = torch.randn(steps, n, generator=g, dtype=DT)
    lrs = []
    for t in range(steps):
        opt.zero_grad()
        model(xis[t]).backward()
        opt.step()
        est.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return est, sched, lrs


def test_noise_flag_makes_lr_nan_and_the_ema_skips_it():
    est, sched, lrs = _noise_run()
    recs = [r["estimates"]["secant"] for r in est.history if "secant" in r["estimates"]]
    flagged = [r for r in recs if r["indistinguishable_from_noise"] is True]
    assert len(flagged) >= 0.8 * len(recs) - 10  # pure noise: almost every tested estimate
    for r in flagged:
        assert INDISTINGUISHABLE_FROM_NOISE in r["flags"]
        assert r["lr"] is None or math.isnan(r["lr"])  # records write nan as null
        assert r["raw_lr"] is not None and math.isfinite(r["raw_lr"]) and r["raw_lr"] > 0
    unflagged = [r for r in recs if not r["flags"]]
    # only the unflagged estimates entered the EMA
    assert est.num_estimates("secant") == len(unflagged)
    # CurvatureLR on noise must not climb to max_lr (the issue: it doubled to max_lr)
    assert max(lrs) < 10.0
    last = est.latest["secant"]
    assert not last.ok and math.isnan(last.lr)


def test_curvature_lr_refuses_a_key_the_method_never_fills():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("secant", "quadratic"), optimizer=opt, loss_fn=nn.MSELoss())
    with pytest.raises(ValueError, match=r"'lambda_max' is never filled by method 'secant'"):
        CurvatureLR(opt, est, method="secant", key="lambda_max")
    with pytest.raises(ValueError, match=r"'lr_stable' is never filled by method 'quadratic'"):
        CurvatureLR(opt, est, method="quadratic", key="lr_stable")
    with pytest.raises(ValueError, match="never filled"):
        CurvatureLR(opt, est, method="quadratic", key="no_such_field")
    CurvatureLR(opt, est, method="quadratic", key="curvature")  # a filled key is fine


def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(32, 3, dtype=DT)
    y = torch.randn(32, 1, dtype=DT)
    return model, (x, y)


@pytest.mark.parametrize("method", sorted(FILLED_KEYS))
def test_every_filled_key_is_really_filled(method):
    from hessian_lr.lr import estimate_lr

    model, batch = _tiny_problem()
    if method == "secant":
        opt = torch.optim.SGD(model.parameters(), lr=0.05)  # plain SGD: the null at μ = 0
        est = LREstimator(model, methods="secant", every=1, optimizer=opt)
        for _ in range(3):
            opt.zero_grad()
            nn.MSELoss()(model(batch[0]), batch[1]).backward()
            opt.step()
            est.step()
        res = est.latest["secant"]
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            nn.MSELoss()(model(batch[0]), batch[1]).backward()
            opt.step()
        kw = {"optimizer": opt} if method in ("update", "preconditioned_sharpness") else {}
        if method == "secant_same_batch":
            kw["theta_prev"] = (
                torch.cat([p.detach().reshape(-1) for p in model.parameters()]) + 1e-3
            )
        res = estimate_lr(model, nn.MSELoss(), batch, method=method, lanczos_tol=1e-8, **kw)
    for key in FILLED_KEYS[method]:
        value = getattr(res, key)
        assert isinstance(value, float) and math.isfinite(value), (method, key, value)


@pytest.mark.parametrize("bad", [math.inf, -1e-3, 0.0, math.nan])
def test_solvers_refuse_non_finite_or_non_positive_tol(bad):
    op = DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=DT)))
    with pytest.raises(ValueError, match="tol must be positive and finite"):
        lanczos(op, tol=bad)
    with pytest.raises(ValueError, match="tol must be positive and finite"):
        power_iteration(op, tol=bad)


def test_numpy_scalars_are_accepted_where_numbers_are_meant():
    op = DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=DT)))
    g = torch.Generator().manual_seed(0)
    res = lanczos(op, k=np.int64(2), tol=np.float32(1e-6), max_iter=np.int32(10), generator=g)
    np.testing.assert_allclose(res.eigenvalues.numpy(), [10.0, 9.0], rtol=1e-6)
    res = power_iteration(op, k=np.int64(1), tol=np.float64(1e-8), max_iter=np.int64(5000))
    assert res.eigenvalues[0].item() == pytest.approx(10.0, rel=1e-7)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("secant",), optimizer=opt)
    sched = CurvatureLR(opt, est, safety=np.float64(0.5), warmup_steps=np.int64(2))
    assert sched.warmup_steps == 2 and isinstance(sched.warmup_steps, int)


def test_update_estimate_has_raw_lr_even_when_flagged():
    from hessian_lr.lr import estimate_lr

    model, batch = _tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    res = estimate_lr(model, nn.MSELoss(), batch, method="update", optimizer=opt)
    assert res.raw_lr == pytest.approx(res.lr, rel=1e-15)
    assert res.as_dict()["raw_lr"] == res.raw_lr


def test_estimator_accepts_numpy_integers():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("secant",), optimizer=opt, every=np.int64(5),
                      noise_window=np.int32(10), seed=np.int64(2))  # fmt: skip
    assert est.every == 5 and isinstance(est.every, int)
