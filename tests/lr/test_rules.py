"""Pure LR rules (hessian_lr.lr.rules) on plain matrices: closed forms, flags, overflow."""

import math

import numpy as np
import pytest
import torch
from quadratics import spd

from hessian_lr.curvature import DenseOperator, lanczos
from hessian_lr.lr.rules import (
    quadratic_lr,
    secant_hvp_lr,
    secant_rule,
    sharpness_lrs,
)

DT = torch.float64


def test_rules_on_a_dense_operator_match_numpy():
    A = spd(7, seed=1)
    op = DenseOperator(torch.tensor(A, dtype=DT))
    g = torch.tensor(np.random.default_rng(2).standard_normal(7), dtype=DT)
    hg = op @ g
    gn, An = g.numpy(), A
    assert quadratic_lr(g, hg).lr == pytest.approx(gn @ gn / (gn @ An @ gn), rel=1e-13)
    l1 = np.abs(gn).sum() / np.abs(An @ gn).sum()
    l2 = np.linalg.norm(gn) / np.linalg.norm(An @ gn)
    assert secant_hvp_lr(g, hg).lr == pytest.approx(l1, rel=1e-13)
    assert secant_hvp_lr(g, hg, "l2").lr == pytest.approx(l2, rel=1e-13)
    # The quadratic rule is the exact line search: f(θ − ε g) is smallest at ε*.
    eps = quadratic_lr(g, hg).lr
    f = [0.5 * e * e * gn @ An @ gn - e * gn @ gn for e in (0.9 * eps, eps, 1.1 * eps)]
    assert f[1] < f[0] and f[1] < f[2]


def test_sharpness_lrs_from_lanczos_on_a_known_spectrum():
    A = spd(9, seed=3, lo=0.1, hi=8.0)
    lam = float(lanczos(DenseOperator(torch.tensor(A, dtype=DT)), k=1, tol=1e-10).eigenvalues[0])
    assert lam == pytest.approx(np.linalg.eigvalsh(A)[-1], rel=1e-10)
    s = sharpness_lrs(lam, momentum=0.9)
    assert (s.lr_newton, s.lr_stable) == pytest.approx((1 / lam, 2 / lam), rel=1e-15)
    assert s.lr_stable_momentum == pytest.approx(3.8 / lam, rel=1e-15) and s.flags == ()
    # Gradient descent on the quadratic converges just below 2/λ and diverges just above it.
    for factor, grows in ((0.99, False), (1.01, True)):
        x = np.ones(9)
        for _ in range(3000):
            x = x - factor * s.lr_stable * (A @ x)
        assert bool(np.linalg.norm(x) > 1.0) is grows


def test_flags_make_lr_nan_and_keep_the_raw_value():
    g = torch.tensor([0.0, 1.0], dtype=DT)
    H = torch.diag(torch.tensor([2.0, -1.0], dtype=DT))
    for rule in (quadratic_lr, secant_hvp_lr):
        r = rule(g, H @ g)
        assert r.flags == ("negative_curvature",) and math.isnan(r.lr) and not r.ok
    assert quadratic_lr(g, H @ g).raw_lr == pytest.approx(-1.0)
    assert secant_hvp_lr(g, H @ g).raw_lr == pytest.approx(1.0)
    zero = torch.zeros(2, dtype=DT)
    assert quadratic_lr(zero, zero).flags == ("zero_gradient",)
    assert sharpness_lrs(-1.0).flags == ("negative_curvature",)
    assert sharpness_lrs(float("inf")).flags == ("overflow",)
    assert sharpness_lrs(5e-324).flags == ("overflow",)  # 1/λ not representable
    with pytest.raises(ValueError, match="momentum"):
        sharpness_lrs(1.0, momentum=1.0)
    with pytest.raises(ValueError, match="norm"):
        secant_hvp_lr(g, g, "linf")


def test_secant_rule_is_sum_ratio_and_rayleigh_quotient():
    A = spd(6, seed=4)
    s = torch.tensor(np.random.default_rng(5).standard_normal(6), dtype=DT)
    w = torch.tensor(A, dtype=DT) @ s
    r = secant_rule(s, w)
    sn = s.numpy()
    assert r.lr == pytest.approx(np.abs(sn).sum() / np.abs(A @ sn).sum(), rel=1e-13)
    assert r.lr_l2 == pytest.approx(np.linalg.norm(sn) / np.linalg.norm(A @ sn), rel=1e-13)
    assert r.curvature == pytest.approx(sn @ A @ sn / (sn @ sn), rel=1e-13)
    # A step along the gradient (plain SGD) gives Σ|g|/Σ|Hg| whatever the LR.
    g = s
    assert secant_rule(-0.03 * g, torch.tensor(A, dtype=DT) @ (-0.03 * g)).lr == pytest.approx(
        secant_hvp_lr(g, torch.tensor(A, dtype=DT) @ g).lr, rel=1e-13
    )


def test_secant_rule_overflow_is_labelled_overflow():
    # Huge but finite entries: the naive sums overflow, the scaled ratio does not.
    s = torch.full((8,), 1e307, dtype=DT)
    r = secant_rule(s, 2.0 * s)
    assert r.flags == () and r.lr == pytest.approx(0.5, rel=1e-14)
    assert r.curvature == pytest.approx(2.0, rel=1e-14)
    # A ratio beyond float64: overflow, not negative curvature.
    tiny = torch.full((4,), 1e-300, dtype=DT)
    r = secant_rule(torch.full((4,), 1e300, dtype=DT), tiny)
    assert r.flags == ("overflow",) and math.isnan(r.lr)
    # Non-finite inputs (a step that cannot be represented).
    r = secant_rule(torch.tensor([math.inf, 1.0], dtype=DT), torch.ones(2, dtype=DT))
    assert r.flags == ("overflow",)


def test_secant_rule_degenerate_cases():
    z = torch.zeros(3, dtype=DT)
    one = torch.ones(3, dtype=DT)
    assert secant_rule(z, one).flags == ("zero_step",)
    assert secant_rule(one, z).flags == ("zero_curvature",)
    r = secant_rule(one, -one)
    assert r.flags == ("negative_curvature",) and r.raw_lr == 1.0 and math.isnan(r.lr)
    with pytest.raises(ValueError, match="sizes differ"):
        secant_rule(one, torch.ones(4, dtype=DT))
