"""The LR entry points on the model zoo (issue 10): estimate_lr (each method), LREstimator and
CurvatureLR against dense float64 references (gᵀg/gᵀHg and Σ|g|/Σ|Hg| from the dense H, 1/λ_max
from eigh), on the models users bring: a tiny GPT with tied weights and SDPA, a BN ResNet in both
modes, recurrent nets, unused parameters, dict inputs, token losses, sum reductions, loaders."""

import math

import pytest
import torch
from zoo import CHANGING_CASES, EXACT_CASES, LOW_PRECISION_CASES, ZOO, dense_gradient, dense_hessian

from hessian_lr.curvature.linop import params_to_vector
from hessian_lr.lr import CurvatureLR, CurvatureOptions, LREstimator, estimate_lr, estimate_lrs

#: Covered in the full suite only (the fast tier keeps one case of each kind).
SLOW = {
    "tiny_gpt",
    "loader_shuffle_full_epoch",
    "mse_mean_unequal_batches",
    "ce_unequal_batches",
    "loader_fixed_order",
    "lstm_classifier",
    "transformer_encoder_layer",
    "mlp_float16",
}


def _modes(case):
    return case.bn_modes if "train" in case.bn_modes or len(case.bn_modes) > 1 else ("eval",)


def _kw(case, bn_mode):
    opts = {"single_batch": case.single_batch}
    if case.reduction != "mean" or case.closure:
        opts["reduction"] = case.reduction
    return dict(curvature=CurvatureOptions(bn_mode=bn_mode, closure=case.closure, **opts))


def _references(case, bn_mode):
    H, names = dense_hessian(case, bn_mode=bn_mode)
    _, g = dense_gradient(case, bn_mode=bn_mode)
    hg = H @ g
    return {
        "quadratic": float(g @ g / (g @ hg)),
        "secant_hvp": float(g.abs().sum() / hg.abs().sum()),
        "sharpness": 1.0 / float(torch.linalg.eigvalsh(H)[-1]),
        "H": H,
        "g": g,
        "gHg": float(g @ hg),
    }


def _param_cases():
    out = []
    for name in EXACT_CASES + LOW_PRECISION_CASES:
        marks = [pytest.mark.slow] if name in SLOW else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _param_cases())
def test_estimate_lr_every_method_matches_the_dense_reference(name):
    case = ZOO[name]()
    low = name in LOW_PRECISION_CASES
    rel = 2e-3 if low else 1e-7
    for bn_mode in _modes(case):
        ref = _references(case, bn_mode)
        est = estimate_lrs(
            case.model, case.loss_fn, case.data,
            methods=("quadratic", "secant_hvp", "sharpness"), lanczos_tol=1e-9,
            **_kw(case, bn_mode),
        )  # fmt: skip
        for m in ("quadratic", "secant_hvp", "sharpness"):
            assert est[m].bn_mode == bn_mode
            if (ref["gHg"] if m != "sharpness" else ref[m]) > 0:
                assert est[m].lr == pytest.approx(ref[m], rel=rel), (name, bn_mode, m)
            else:
                assert math.isnan(est[m].lr) and "negative_curvature" in est[m].flags
        if low:
            continue
        # Same-batch secant along a small step −δ g: → Σ|Δθ|/Σ|HΔθ| of the dense H (first order).
        theta = params_to_vector([p.detach() for _, p in _unique(case.model)]).to(torch.float64)
        g = ref["g"]
        delta = 1e-6 * max(1.0, float(theta.norm())) / float(g.norm())
        prev = theta + delta * g  # θ − θ_prev = −δ g
        sb = estimate_lr(
            case.model, case.loss_fn, case.data, method="secant_same_batch",
            theta_prev=prev.to(_dtype(case)), **_kw(case, bn_mode),
        )  # fmt: skip
        want = float(g.abs().sum() / (ref["H"] @ g).abs().sum())
        tol = 1e-4 if case.smooth else 5e-2
        if ref["gHg"] > 0:
            assert sb.lr == pytest.approx(want, rel=tol), (name, bn_mode)
        else:  # the step sees negative curvature: flagged, the formula's value kept
            assert sb.flags == ("negative_curvature",) and math.isnan(sb.lr)
            assert sb.raw_lr == pytest.approx(want, rel=tol)


def _unique(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _dtype(case):
    return next(iter(case.model.parameters())).dtype


@pytest.mark.parametrize("name", CHANGING_CASES)
def test_changing_data_is_refused(name):
    from hessian_lr.curvature.hessian import DataChangedError

    case = ZOO[name]()
    with pytest.raises(DataChangedError):
        estimate_lr(case.model, case.loss_fn, case.data, **_kw(case, case.bn_modes[-1]))


ESTIMATOR_CASES = [
    "unused_parameters",
    "dict_input",
    "dict_batch_closure",
    "multihead_attention",
    *(
        pytest.param(n, marks=pytest.mark.slow)
        for n in ("bn_resnet", "sequence_ignore_index", "mse_sum_unequal_batches", "tiny_gpt")
    ),
]


@pytest.mark.parametrize("name", ESTIMATOR_CASES)
def test_estimator_and_curvature_lr_on_the_zoo(name):
    case = ZOO[name]()
    bn_mode = _modes(case)[-1]
    q0 = _references(case, bn_mode)["quadratic"]
    params = [p for _, p in _unique(case.model)]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    est = LREstimator(
        case.model, methods=("quadratic", "sharpness", "secant_same_batch"), every=1,
        loss_fn=case.loss_fn, optimizer=opt, ema_alpha=1.0, ema_init=abs(q0),
        lanczos_tol=1e-9, **_kw(case, bn_mode),
    )  # fmt: skip
    sched = CurvatureLR(opt, est, method="quadratic")
    prev_lr = opt.param_groups[0]["lr"]
    assert prev_lr == pytest.approx(abs(q0))  # safety 1 × ema_init before any estimate
    for _ in range(3):
        _, g = dense_gradient(case, bn_mode=bn_mode)
        opt.zero_grad()
        for p, gp in zip(params, torch.split(g, [p.numel() for p in params])):
            p.grad = gp.view_as(p).to(p.dtype)
        opt.step()
        est.step(case.data)
        sched.step()
        ref = _references(case, bn_mode)  # at the new parameters
        rec = est.history[-1]
        assert rec["bn_mode"] == bn_mode
        q = rec["estimates"]["quadratic"]
        target = prev_lr  # a flagged estimate leaves the EMA (α = 1: the last estimate) alone
        if ref["gHg"] > 0:
            assert q["lr"] == pytest.approx(ref["quadratic"], rel=1e-7)
            target = ref["quadratic"]
        else:
            assert q["lr"] is None and q["flags"] == ["negative_curvature"]
            target = est.smoothed("quadratic")
        if ref["sharpness"] > 0:
            assert rec["estimates"]["sharpness"]["lr"] == pytest.approx(ref["sharpness"], rel=1e-6)
        assert est.latest["secant_same_batch"].raw_lr > 0
        # CurvatureLR: the EMA's target, moved at most ×2 / ×0.5 per estimation step.
        want = min(max(target, 0.5 * prev_lr), 2.0 * prev_lr)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-7)
        prev_lr = opt.param_groups[0]["lr"]
