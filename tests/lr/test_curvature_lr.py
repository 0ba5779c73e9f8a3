"""CurvatureLR's trust ratio (issue 10, item 10): one outlier estimate cannot move the LR 18×."""

import math

import pytest
import torch
from torch import nn

from hessian_lr.lr import CurvatureLR, LREstimator

DT = torch.float64


class BatchCurvature(nn.Module):
    """f(θ) = mean_i (½ x_i θ² − θ): the batch sets the curvature (mean x), gᵀg/gᵀHg = 1/mean x."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(1, dtype=DT))

    def forward(self, x):
        return 0.5 * x * self.theta**2 - self.theta  # (batch,)


def mean_out(outputs, targets):
    return outputs.mean()


def run(curvatures, **trust):
    model = BatchCurvature()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("quadratic",), every=1, loss_fn=mean_out, optimizer=opt,
                      ema_init=1.0)  # fmt: skip
    sched = CurvatureLR(opt, est, **trust)
    lrs = [opt.param_groups[0]["lr"]]
    for c in curvatures:
        x = torch.full((4,), c, dtype=DT)
        opt.zero_grad()
        mean_out(model(x), None).backward()
        opt.step()
        est.step((x, None))
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, est


def test_one_near_zero_curvature_sample_no_longer_moves_the_lr_18x():
    curv = [1.0] * 5 + [0.003] + [1.0] * 5  # one batch with gᵀHg ≈ 0.003 gᵀg
    old, est = run(curv, max_increase=math.inf, max_decrease=0.0)  # no trust bound
    q = [r["estimates"]["quadratic"]["lr"] for r in est.history]
    assert q[5] == pytest.approx(1 / 0.003, rel=1e-12)  # the outlier estimate
    assert old[6] / old[5] > 18  # the unbounded scheduler jumps with the EMA
    new, _ = run(curv)  # default: ×2 up, ×0.5 down per estimation step
    ratios = [b / a for a, b in zip(new[1:], new[2:])]
    assert max(ratios) <= 2.0 + 1e-12 and min(ratios) >= 0.5 - 1e-12
    assert new[6] / new[5] == pytest.approx(2.0)
    # The EMA still remembers the outlier for ~1/α estimates: the LR follows it at ×2 per update
    # (max_lr is the hard cap), peaking lower and later than the unbounded scheduler.
    assert max(new) < 0.7 * max(old) and new.index(max(new)) > old.index(max(old))


def test_trust_ratio_follows_a_persistent_change_geometrically():
    lrs, _ = run([0.01] * 12)  # the curvature really fell 100×: the target is 100
    steps = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(s == pytest.approx(2.0) for s in steps[:5])
    assert lrs[-1] > 40  # reaches the new level within a few estimates


def test_trust_arguments_are_checked():
    model = BatchCurvature()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("quadratic",), loss_fn=mean_out, optimizer=opt)
    with pytest.raises(ValueError, match="max_increase"):
        CurvatureLR(opt, est, max_increase=0.5)
    with pytest.raises(ValueError, match="max_decrease"):
        CurvatureLR(opt, est, max_decrease=1.5)


class Quadratic(nn.Module):
    def __init__(self, diag):
        super().__init__()
        self.register_buffer("a", torch.tensor(diag, dtype=DT))
        self.theta = nn.Parameter(torch.ones(len(diag), dtype=DT))

    def forward(self, x):
        return (0.5 * (self.a * self.theta**2).sum()).expand(x.shape[0])


def test_key_follows_another_field_of_the_estimate():
    model = Quadratic([1.0, 2.0, 4.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("sharpness",), every=1, loss_fn=mean_out, optimizer=opt,
                      ema_alpha=1.0, ema_init=0.3, lanczos_tol=1e-10)  # fmt: skip
    sched = CurvatureLR(opt, est, method="sharpness", key="lr_stable", safety=0.5)
    assert sched.get_last_lr() == [pytest.approx(0.15)]
    x = torch.zeros(2, 1, dtype=DT)
    for _ in range(3):
        opt.zero_grad()
        mean_out(model(x), None).backward()
        opt.step()
        est.step((x, None))
        sched.step()
        # λ_max = 4: lr_stable = 2/4, half of it is the LR.
        assert opt.param_groups[0]["lr"] == pytest.approx(0.25, rel=1e-9)
    assert est.smoothed("sharpness.lr_stable") == pytest.approx(0.5, rel=1e-9)
    assert est.smoothed("sharpness") == pytest.approx(0.25, rel=1e-9)  # 1/λ, the method's own
    assert est.history[-1]["smoothed"]["sharpness.lr_stable"] == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match="not estimated"):
        est.track("quadratic", "lr")
