"""Issue 12: the same-batch secant (gradient change along the step on one batch) and BN modes."""

import numpy as np
import pytest
import torch
from quadratics import DT, QBATCH, Quadratic, mean_out
from quadratics import spd as _spd
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.curvature import HessianOperator
from hessian_lr.curvature.linop import params_to_vector
from hessian_lr.lr import DEFAULT_BN_MODE, CurvatureOptions, LREstimator, estimate_lr


def test_equals_sum_g_over_sum_hg_exactly_on_a_quadratic():
    A = spd(6, seed=1)
    b = np.arange(6.0)
    model = Quadratic(A, b, np.linspace(-1, 1, 6))
    theta_prev = model.theta.detach().clone()
    g = A @ theta_prev.numpy() - b
    with torch.no_grad():  # one plain-SGD step
        model.theta -= 0.03 * torch.tensor(g, dtype=DT)
    for norm, want in (
        ("l1", np.abs(g).sum() / np.abs(A @ g).sum()),
        ("l2", np.linalg.norm(g) / np.linalg.norm(A @ g)),
    ):
        est = estimate_lr(
            model, mean_out, QBATCH, method="secant_same_batch", theta_prev=theta_prev, norm=norm
        )
        assert est.lr == pytest.approx(want, rel=1e-12) and est.flags == ()
        assert est.num_gradients == 2 and est.num_hvps == 0
    assert est.curvature == pytest.approx(g @ A @ g / (g @ g), rel=1e-12)
    with pytest.raises(ValueError, match="theta_prev"):
        estimate_lr(model, mean_out, QBATCH, method="secant_same_batch")


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)


def test_converges_to_the_exact_hvp_value_as_the_step_shrinks():
    model, loss_fn = tanh_mlp(1), nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(2)
    batch = (torch.randn(32, 4, generator=gen, dtype=DT), torch.randint(0, 3, (32,), generator=gen))
    theta0 = params_to_vector([p.detach() for p in model.parameters()]).clone()
    op = HessianOperator(model, loss_fn, batch)
    _, g = op.gradient()
    exact = float(g.abs().sum() / (op @ g).abs().sum())  # Σ|g|/Σ|Hg| at θ0
    errors = []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        copy = tanh_mlp(1)
        torch.nn.utils.vector_to_parameters(theta0 - eps * g, copy.parameters())
        est = estimate_lr(
            copy,
            loss_fn,
            batch,
            method="secant_same_batch",
            theta_prev=theta0,
            curvature=CurvatureOptions(bn_mode="eval"),
        )
        errors.append(abs(est.lr / exact - 1))
    # First-order convergence: each 10× smaller step cuts the error ~10×.
    assert errors[-1] < 1e-4
    for big, small in zip(errors, errors[1:]):
        assert small < big / 5


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def dense_quadratic_lr(model, loss_fn, batch, bn_mode):
    """gᵀg/gᵀHg from a dense jacfwd(grad) Hessian over functional_call (independent reference)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = params_to_vector([p.detach() for p in model.parameters()])
    ref = BNNet().to(DT)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    if bn_mode == "train":
        ref.bn.training, ref.bn.track_running_stats = True, False

    def f(flat):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            ps[n] = flat[i : i + k].view(s)
            i += k
        return loss_fn(functional_call(ref, ps, (batch[0],)), batch[1])

    g = grad(f)(theta)
    H = jacfwd(grad(f))(theta)
    return float(g @ g / (g @ H @ g))


def test_bn_mode_default_recorded_and_equal_to_the_mode_used():
    assert DEFAULT_BN_MODE == "train"
    model, loss_fn = BNNet().to(DT), nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(4)
    batch = (torch.randn(16, 4, generator=gen, dtype=DT), torch.randint(0, 3, (16,), generator=gen))
    refs = {m: dense_quadratic_lr(model, loss_fn, batch, m) for m in ("train", "eval")}
    assert abs(refs["train"] / refs["eval"] - 1) > 0.05  # the modes are different losses
    default = estimate_lr(model, loss_fn, batch)
    assert default.bn_mode == "train" and default.lr == pytest.approx(refs["train"], rel=1e-9)
    for mode in ("train", "eval"):
        est = estimate_lr(model, loss_fn, batch, curvature=CurvatureOptions(bn_mode=mode))
        assert est.bn_mode == mode and est.lr == pytest.approx(refs[mode], rel=1e-9)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays where it is
        kw = {} if mode == DEFAULT_BN_MODE else {"curvature": CurvatureOptions(bn_mode=mode)}
        lre = LREstimator(
            model, methods=("quadratic", "secant_same_batch"), every=1, loss_fn=loss_fn,
            optimizer=opt, **kw,
        )  # fmt: skip
        opt.step()
        lre.step(batch)
        rec = lre.history[-1]
        assert rec["bn_mode"] == mode
        assert rec["estimates"]["quadratic"]["bn_mode"] == mode
        assert rec["estimates"]["quadratic"]["lr"] == pytest.approx(refs[mode], rel=1e-9)
        # Zero step (lr 0): the same-batch secant sees no move and says so.
        assert rec["estimates"]["secant_same_batch"]["flags"] == ["zero_step"]
    with pytest.raises(ValueError, match="bn_mode"):
        estimate_lr(model, loss_fn, batch, curvature=CurvatureOptions(bn_mode="batch"))


def test_estimator_same_batch_secant_matches_the_function():
    model, loss_fn = tanh_mlp(5), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    est = LREstimator(
        model, methods=("secant_same_batch",), every=3, loss_fn=loss_fn, optimizer=opt
    )
    gen = torch.Generator().manual_seed(6)
    for t in range(1, 10):
        batch = (
            torch.randn(16, 4, generator=gen, dtype=DT),
            torch.randint(0, 3, (16,), generator=gen),
        )
        before = params_to_vector([p.detach() for p in model.parameters()]).clone()
        opt.zero_grad()
        loss_fn(model(batch[0]), batch[1]).backward()
        opt.step()
        out = est.step(batch)
        if t % 3 == 0:
            want = estimate_lr(model, loss_fn, batch, method="secant_same_batch", theta_prev=before)
            assert out["secant_same_batch"].lr == pytest.approx(want.lr, rel=1e-13)
            assert out["secant_same_batch"].ok
        else:
            assert out is None
    assert len(est.history) == 3


def spd(n, seed=0):
    return _spd(n, seed, lo=0.5, hi=12.0)
