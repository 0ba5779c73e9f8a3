"""estimate_lr and secant_lr against closed forms on quadratics f(θ) = ½ θᵀAθ − bᵀθ (float64)."""

import copy
import math

import numpy as np
import pytest
import torch
from quadratics import DT, Quadratic, mean_out, spd
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.curvature.hessian import NonFiniteError
from hessian_lr.lr import CurvatureError, CurvatureOptions, LREstimate, estimate_lr, secant_lr

#: The estimator's batch: four dummy samples (the Quadratic ignores its input).
BATCH = (torch.zeros(4, 1, dtype=DT), torch.zeros(4, dtype=DT))


def quad(n=8, seed=0):
    A = spd(n, seed)
    rng = np.random.default_rng(seed + 1)
    return Quadratic(A, rng.standard_normal(n), rng.standard_normal(n))


# ----------------------------------------------------------------------------- HVP methods
def test_quadratic_equals_gg_over_gAg():
    model = quad()
    g, A = model.grad_np(), model.A.numpy()
    est = estimate_lr(model, mean_out, BATCH, method="quadratic")
    assert isinstance(est, LREstimate) and est.flags == () and est.ok
    assert est.lr == pytest.approx(g @ g / (g @ A @ g), rel=1e-12)
    assert est.gHg == pytest.approx(g @ A @ g, rel=1e-12)
    assert est.grad_norm == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert est.loss == pytest.approx(float(model.f().detach()), rel=1e-12)
    assert est.num_hvps == 1 and est.seconds > 0


def test_closure_form_matches():
    model = quad(seed=3)
    g, A = model.grad_np(), model.A.numpy()
    est = estimate_lr(
        model,
        lambda m, batch: m.f(),
        BATCH,
        method="quadratic",
        curvature=CurvatureOptions(closure=True),
    )
    assert est.lr == pytest.approx(g @ g / (g @ A @ g), rel=1e-12)


@pytest.mark.parametrize("backend", ["double-backward", "forward-over-reverse"])
def test_secant_hvp_l1_and_l2(backend):
    model = quad(seed=5)
    g, A = model.grad_np(), model.A.numpy()
    Ag = A @ g
    l1 = estimate_lr(
        model, mean_out, BATCH, method="secant_hvp", curvature=CurvatureOptions(backend=backend)
    )
    l2 = estimate_lr(
        model,
        mean_out,
        BATCH,
        method="secant_hvp",
        norm="l2",
        curvature=CurvatureOptions(backend=backend),
    )
    assert l1.lr == pytest.approx(np.abs(g).sum() / np.abs(Ag).sum(), rel=1e-12)
    assert l2.lr == pytest.approx(np.linalg.norm(g) / np.linalg.norm(Ag), rel=1e-12)
    assert l1.norm == "l1" and l2.norm == "l2" and l1.backend == backend


def test_sharpness_bounds_and_momentum():
    A = spd(40, seed=2, lo=-3.0, hi=25.0)  # indefinite: λ_max still 25
    model = Quadratic(A, np.zeros(40), np.ones(40))
    est = estimate_lr(
        model,
        mean_out,
        BATCH,
        method="sharpness",
        momentum=0.9,
        lanczos_tol=1e-8,
        generator=torch.Generator().manual_seed(0),
    )
    lmax = np.linalg.eigvalsh(A)[-1]
    # sharpness stops on the eigenvalue's error bound (issue 17): accurate to lanczos_tol
    assert est.lambda_max == pytest.approx(lmax, rel=1e-8)
    assert est.lr == est.lr_newton == pytest.approx(1 / lmax, rel=1e-8)
    assert est.lr_stable == pytest.approx(2 / lmax, rel=1e-8)
    assert est.lr_stable_momentum == pytest.approx((2 + 2 * 0.9) / lmax, rel=1e-8)
    assert est.residual <= 1e-4 * lmax  # eigenvalue rule: r ≤ √tol·λ and r²/gap ≤ tol·λ
    u = np.linalg.eigh(A)[1][:, -1]
    assert abs(float(est.eigenvector.numpy() @ u)) == pytest.approx(1.0, abs=1e-8)
    assert "eigenvector" not in repr(est) and "eigenvector" not in est.as_dict()
    assert est.num_hvps > 1 and est.flags == ()


def test_sharpness_warm_start_needs_fewer_hvps():
    A = spd(80, seed=4, lo=0.1, hi=10.0)
    lmax = np.linalg.eigvalsh(A)[-1]
    model = Quadratic(A, np.zeros(80), np.ones(80))
    gen = torch.Generator().manual_seed(0)
    cold = estimate_lr(model, mean_out, BATCH, method="sharpness", lanczos_tol=1e-6, generator=gen)
    v0 = cold.eigenvector + 1e-3 * torch.randn(80, dtype=DT, generator=gen)
    warm = estimate_lr(model, mean_out, BATCH, method="sharpness", lanczos_tol=1e-6, v0=v0)
    # both stop once the eigenvalue's error bound is below lanczos_tol (issue 17)
    assert warm.lambda_max == pytest.approx(lmax, rel=1e-6)
    assert cold.lambda_max == pytest.approx(lmax, rel=1e-6)
    # issue 22: the bound must also cover eigenvalues the warm start has not shown, so a warm
    # start is certified like a cold one and no longer saves products (was: warm < cold)
    assert warm.num_hvps <= cold.num_hvps + 2


def test_matches_dense_hessian_on_a_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    x, y = torch.randn(10, 4, dtype=DT), torch.randint(0, 3, (10,))
    loss_fn = nn.CrossEntropyLoss()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def f(flat):
        ps = {n: c.reshape(s) for n, c, s in zip(names, torch.split(flat, sizes), shapes)}
        return loss_fn(functional_call(model, ps, (x,)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = grad(f)(theta)
    H = jacfwd(grad(f))(theta)
    q = estimate_lr(model, loss_fn, (x, y), method="quadratic")
    assert q.lr == pytest.approx(float(g @ g / (g @ H @ g)), rel=1e-10)
    s = estimate_lr(model, loss_fn, (x, y), method="secant_hvp")
    assert s.lr == pytest.approx(float(g.abs().sum() / (H @ g).abs().sum()), rel=1e-10)
    # A list of batches: the Hessian of the mean loss over all samples (here equal sizes).
    split = [(x[:5], y[:5]), (x[5:], y[5:])]
    assert estimate_lr(model, loss_fn, split, method="quadratic").lr == pytest.approx(
        q.lr, rel=1e-10
    )
    sh = estimate_lr(model, loss_fn, (x, y), method="sharpness", lanczos_tol=1e-10)
    assert sh.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    assert sh.loss == pytest.approx(float(f(theta)), rel=1e-12)


def test_model_buffers_grads_and_modes_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    ).to(DT)
    model[1].running_mean.normal_()
    model.train()
    model[3].eval()  # a mixed mode pattern must survive too
    x, y = torch.randn(8, 1, 6, 6, dtype=DT), torch.randint(0, 3, (8,))
    nn.CrossEntropyLoss()(model(x), y).backward()  # .grad present and must stay
    before = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    for method in ("quadratic", "secant_hvp", "sharpness"):
        for bn_mode in ("eval", "train"):
            est = estimate_lr(
                model,
                nn.CrossEntropyLoss(),
                (x, y),
                method=method,
                curvature=CurvatureOptions(bn_mode=bn_mode),
            )
            assert est.method == method and est.num_hvps >= 1
            after = model.state_dict()
            for k, v in before.items():
                assert torch.equal(v, after[k]), k
            assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))
            assert [m.training for m in model.modules()] == modes


# ------------------------------------------------------------------------------------- flags
def test_negative_curvature_along_gradient():
    # A = diag(2, -1), b = 0, θ = (0, 1): g = (0, -1) lies along the negative direction.
    model = Quadratic(np.diag([2.0, -1.0]), np.zeros(2), [0.0, 1.0])
    for method in ("quadratic", "secant_hvp"):
        est = estimate_lr(model, mean_out, BATCH, method=method)
        assert math.isnan(est.lr) and est.flags == ("negative_curvature",) and not est.ok
        assert est.gHg == pytest.approx(-1.0)
        with pytest.raises(CurvatureError, match="no positive curvature"):
            estimate_lr(model, mean_out, BATCH, method=method, strict=True)
    # Negative definite: λ_max < 0.
    neg = Quadratic(-np.diag([1.0, 2.0, 3.0]), np.zeros(3), np.ones(3))
    est = estimate_lr(neg, mean_out, BATCH, method="sharpness", lanczos_tol=1e-10)
    assert est.lambda_max == pytest.approx(-1.0) and math.isnan(est.lr)
    assert math.isnan(est.lr_stable) and "negative_curvature" in est.flags
    with pytest.raises(CurvatureError):
        estimate_lr(neg, mean_out, BATCH, method="sharpness", strict=True)


def test_zero_gradient_at_the_minimum():
    A = spd(5)
    model = Quadratic(A, np.zeros(5), np.zeros(5))  # θ = 0 is the minimum, g = 0 exactly
    for method in ("quadratic", "secant_hvp"):
        est = estimate_lr(model, mean_out, BATCH, method=method)
        assert est.flags == ("zero_gradient",) and math.isnan(est.lr) and est.grad_norm == 0.0
        assert est.num_hvps == 0
        with pytest.raises(CurvatureError, match="zero"):
            estimate_lr(model, mean_out, BATCH, method=method, strict=True)
    # Sharpness is defined at a minimum.
    sh = estimate_lr(model, mean_out, BATCH, method="sharpness", lanczos_tol=1e-10)
    assert sh.lr == pytest.approx(1 / 20.0) and sh.flags == ()


def test_nan_loss_raises_or_flags():
    model = quad()
    with torch.no_grad():
        model.theta[0] = float("nan")
    for method in ("quadratic", "secant_hvp", "sharpness"):
        with pytest.raises(NonFiniteError):
            estimate_lr(model, mean_out, BATCH, method=method)
        est = estimate_lr(model, mean_out, BATCH, method=method, on_nonfinite="flag")
        assert est.flags == ("nonfinite_loss",) and math.isnan(est.lr)


def test_argument_errors():
    model = quad()
    with pytest.raises(ValueError, match="secant needs iterates"):
        estimate_lr(model, mean_out, BATCH, method="secant")
    with pytest.raises(ValueError, match="norm"):
        estimate_lr(model, mean_out, BATCH, method="secant_hvp", norm="l3")
    with pytest.raises(ValueError, match="momentum"):
        estimate_lr(model, mean_out, BATCH, method="sharpness", momentum=1.0)
    with pytest.raises(ValueError, match="on_nonfinite"):
        estimate_lr(model, mean_out, BATCH, on_nonfinite="ignore")


def test_works_under_no_grad():
    model = quad()
    g, A = model.grad_np(), model.A.numpy()
    with torch.no_grad():
        est = estimate_lr(model, mean_out, BATCH, method="quadratic")
    assert est.lr == pytest.approx(g @ g / (g @ A @ g), rel=1e-12)


# ------------------------------------------------------------------------------------ secant
def sgd_trajectory(A, b, theta0, lrs):
    thetas = [np.asarray(theta0, dtype=float)]
    for lr in lrs:
        t = thetas[-1]
        thetas.append(t - lr * (A @ t - b))
    return [torch.tensor(t, dtype=DT) for t in thetas]


def test_secant_on_exact_sgd_trajectory_equals_closed_form():
    A = spd(10, seed=7)
    rng = np.random.default_rng(0)
    b, t0 = rng.standard_normal(10), rng.standard_normal(10)
    eps = 0.02
    th = sgd_trajectory(A, b, t0, [eps, eps])
    g0 = A @ t0 - b
    # Δ1 = -ε g0, Δ1 - Δ2 = -ε² A g0: Eq. 8 gives Σ|g0| / Σ|A g0| exactly.
    res = secant_lr(*th, eps, per_weight=True)
    assert res.lr == res.lr_l1 == pytest.approx(np.abs(g0).sum() / np.abs(A @ g0).sum(), rel=1e-9)
    assert res.lr_l2 == pytest.approx(np.linalg.norm(g0) / np.linalg.norm(A @ g0), rel=1e-9)
    assert secant_lr(*th, eps, norm="l2").lr == res.lr_l2
    np.testing.assert_allclose(res.per_weight.numpy(), g0 / (A @ g0), rtol=1e-8)
    # The Rayleigh quotient of A along the step.
    assert res.curvature == pytest.approx(g0 @ A @ g0 / (g0 @ g0), rel=1e-9)
    # The literal Eq. 8 on the iterates.
    x0, x1, x2 = (t.numpy() for t in th)
    eq8 = eps * np.abs(x1 - x0).sum() / np.abs(2 * x1 - x0 - x2).sum()
    assert res.lr == pytest.approx(eq8, rel=1e-12)
    np.testing.assert_allclose(res.per_weight.numpy(), eps * (x1 - x0) / (2 * x1 - x0 - x2))
    # And it equals the exact-HVP version at θ0.
    model = Quadratic(A, b, t0)
    assert res.lr == pytest.approx(
        estimate_lr(model, mean_out, BATCH, method="secant_hvp").lr, rel=1e-9
    )


def test_secant_recovers_one_over_a_in_1d():
    a, eps = 4.0, 0.1
    th = sgd_trajectory(np.array([[a]]), np.zeros(1), [3.0], [eps, eps])
    assert secant_lr(*th, eps).lr == pytest.approx(1 / a, rel=1e-12)
    assert secant_lr(*th, eps, norm="l2").lr == pytest.approx(1 / a, rel=1e-12)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_secant_k_steps_apart_closed_form(k):
    a, eps = 2.0, 0.005
    th = sgd_trajectory(np.array([[a]]), np.zeros(1), [1.0], [eps] * (2 * k))
    res = secant_lr(th[0], th[k], th[2 * k], eps, steps=k)
    closed = k * eps / (1 - (1 - eps * a) ** k)
    assert res.lr == pytest.approx(closed, rel=1e-10)
    # Small kεa: the estimate of the per-step LR recovers 1/a up to ≈ (k-1)εa/2.
    assert res.lr == pytest.approx(1 / a, rel=(k - 1) * eps * a / 2 * 1.1 + 1e-12)
    # Without the k factor it would be off by k.
    assert secant_lr(th[0], th[k], th[2 * k], eps).lr == pytest.approx(closed / k, rel=1e-10)


def test_secant_lr_next_is_exact_when_the_lr_changes():
    A = spd(6, seed=1)
    b, t0 = np.ones(6), np.linspace(-1, 1, 6)
    e1, e2 = 0.01, 0.03
    th = sgd_trajectory(A, b, t0, [e1, e2])
    g0 = A @ t0 - b
    exact = np.abs(g0).sum() / np.abs(A @ g0).sum()
    assert secant_lr(*th, e1, lr_next=e2).lr == pytest.approx(exact, rel=1e-9)
    paper = secant_lr(*th, e1).raw_lr  # one ε for both steps: biased when the LR changes
    assert abs(paper / exact - 1) > 0.1


def test_secant_accepts_lists_of_parameter_tensors():
    A = spd(6, seed=2)
    th = sgd_trajectory(A, np.ones(6), np.arange(6.0), [0.01, 0.01])
    as_lists = [[t[:2].reshape(1, 2), t[2:]] for t in th]
    flat = secant_lr(*th, 0.01, per_weight=True)
    listed = secant_lr(*as_lists, 0.01, per_weight=True)
    assert listed.lr == flat.lr
    assert torch.equal(listed.per_weight, flat.per_weight)
    float32 = secant_lr(*[t.float() for t in th], 0.01)
    assert float32.lr == pytest.approx(flat.lr, rel=1e-5)


def test_secant_degenerate_cases():
    t = torch.ones(4, dtype=DT)
    res = secant_lr(t, t.clone(), t.clone(), 0.1)
    assert res.flags == ("zero_step",) and math.isnan(res.lr)
    with pytest.raises(CurvatureError, match="zero step"):
        secant_lr(t, t, t, 0.1, strict=True)
    # A linear loss: identical steps, no curvature seen.
    res = secant_lr(t, t - 0.1, t - 0.2, 0.1)
    assert res.flags == ("zero_curvature",) and math.isnan(res.lr)
    with pytest.raises(CurvatureError, match="identical steps"):
        secant_lr(t, t - 0.1, t - 0.2, 0.1, strict=True)
    # Growing steps: negative curvature along the step; lr is nan, the paper's value is kept.
    th = sgd_trajectory(np.array([[-1.0]]), np.zeros(1), [1.0], [0.1, 0.1])
    res = secant_lr(*th, 0.1)
    assert res.flags == ("negative_curvature",) and math.isnan(res.lr) and not res.ok
    assert res.raw_lr == pytest.approx(1.0) and res.lr_l1 == pytest.approx(1.0)
    assert res.curvature == pytest.approx(-1.0)
    # Per weight: division by zero gives nan.
    pw = secant_lr(
        torch.tensor([0.0, 1.0]),
        torch.tensor([0.0, 0.5]),
        torch.tensor([0.0, 0.25]),
        0.1,
        per_weight=True,
    ).per_weight
    assert math.isnan(pw[0]) and pw[1] == pytest.approx(0.2)


def test_secant_argument_errors():
    t = torch.zeros(3)
    with pytest.raises(ValueError, match="shapes differ"):
        secant_lr(t, t, torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="shapes differ"):
        secant_lr([torch.zeros(3)], [torch.zeros(3)], [torch.zeros(1, 3)], 0.1)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            secant_lr(t, t, t, bad)
    with pytest.raises(ValueError, match="lr_next"):
        secant_lr(t, t, t, 0.1, lr_next=0.0)
    with pytest.raises(ValueError, match="steps"):
        secant_lr(t, t, t, 0.1, steps=0)
    with pytest.raises(ValueError, match="norm"):
        secant_lr(t, t, t, 0.1, norm="linf")
    with pytest.raises(NonFiniteError):
        secant_lr(t, t, torch.tensor([0.0, float("nan"), 0.0]), 0.1)
    with pytest.raises(TypeError):
        secant_lr("a", t, t, 0.1)


# ------------------------------------------------------------ dispatch to the optimizer-aware
def test_optimizer_aware_methods_dispatch_to_their_functions():
    from hessian_lr.lr.estimator import LREstimator
    from hessian_lr.lr.stability import preconditioned_sharpness
    from hessian_lr.lr.update import update_lr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DT)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(12, 3, generator=g, dtype=DT), torch.randint(0, 2, (12,), generator=g))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(batch[0]), batch[1]).backward()
        opt.step()
    upd = estimate_lr(model, loss_fn, batch, method="update", optimizer=opt)
    ref = update_lr(model, loss_fn, batch, opt)
    assert upd.lr == pytest.approx(ref.lr, rel=1e-12) and upd.method == "update"
    pre = estimate_lr(
        model, loss_fn, batch, method="preconditioned_sharpness", optimizer=opt, lanczos_tol=1e-8
    )
    ref = preconditioned_sharpness(model, loss_fn, batch, opt, lanczos_tol=1e-8)
    assert pre.lr == pytest.approx(ref.lr, rel=1e-6)
    with pytest.raises(ValueError, match="optimizer"):
        estimate_lr(model, loss_fn, batch, method="update")
    est = LREstimator(
        model, methods=("update", "preconditioned_sharpness"), every=1, loss_fn=loss_fn,
        optimizer=opt,
    )  # fmt: skip
    opt.zero_grad()
    loss_fn(model(batch[0]), batch[1]).backward()
    opt.step()
    out = est.step(batch)
    assert set(out) == {"update", "preconditioned_sharpness"}
    assert set(est.history[-1]["estimates"]) == {"update", "preconditioned_sharpness"}
    assert "preconditioned_sharpness" in est.state_dict()["eigenvectors"]
    with pytest.raises(ValueError, match="optimizer"):
        LREstimator(model, methods=("update",), loss_fn=loss_fn)
