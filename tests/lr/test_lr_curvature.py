"""LR estimation on the GGN and the Fisher: estimate_lr(curvature=), EdgeOfStability(curvature=)
and the per-layer sharpness observer, against dense float64 references (tests/curvature/
output_reference.py builds the GGN and the empirical Fisher independently of the operators)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from zoo import ZOO, Case, dense_gradient, dense_hessian

from hessian_lr.lr import (
    CurvatureOptions,
    EdgeOfStability,
    LayerSharpnessObserver,
    estimate_lr,
    estimate_lrs,
    plot_layer_sharpness,
)
from hessian_lr.observe import StepContext, run_observers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "curvature"))
from output_reference import dense_empirical_fisher, dense_ggn  # noqa: E402

matplotlib.use("Agg")
DT = torch.float64
DENSE = {
    "hessian": lambda case, names=None: dense_hessian(case, names=names)[0],
    "ggn": dense_ggn,
    "fisher": dense_empirical_fisher,
}


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_quadratic_and_sharpness_rules_on_each_matrix(curvature):
    case = ZOO["ce_unequal_batches"]()
    A = DENSE[curvature](case)
    _, g = dense_gradient(case)
    ests = estimate_lrs(
        case.model,
        case.loss_fn,
        case.data,
        methods=("quadratic", "sharpness"),
        curvature=CurvatureOptions(matrix=curvature, bn_mode="eval"),
        lanczos_tol=1e-10,
    )
    q, s = ests["quadratic"], ests["sharpness"]
    assert q.lr == pytest.approx(float(g @ g / (g @ A @ g)), rel=1e-10)
    lam = float(torch.linalg.eigvalsh(A)[-1])
    assert s.lambda_max == pytest.approx(lam, rel=1e-9)
    assert s.lr_stable == pytest.approx(2 / lam, rel=1e-9)
    for est in (q, s):
        assert est.curvature_matrix == curvature
        assert est.as_dict()["curvature_matrix"] == curvature
    if curvature != "hessian":
        assert f"curvature_matrix='{curvature}'" in repr(q)


def test_estimate_lr_default_is_the_hessian_and_bad_combinations_are_refused():
    case = ZOO["ce_unequal_batches"]()
    est = estimate_lr(case.model, case.loss_fn, case.data)
    assert est.curvature_matrix == "hessian" and "curvature_matrix" not in repr(est)
    ggn = estimate_lr(case.model, case.loss_fn, case.data, curvature="ggn")  # a name alone
    assert ggn.curvature_matrix == "ggn" and ggn.bn_mode == "train"
    with pytest.raises(ValueError, match="supported by the methods"):
        estimate_lr(case.model, case.loss_fn, case.data, method="secant_hvp", curvature="ggn")
    with pytest.raises(ValueError, match="matrix must be one of"):
        estimate_lr(case.model, case.loss_fn, case.data, curvature="kfac")
    with pytest.raises(ValueError, match="no closure"):
        CurvatureOptions(matrix="fisher", closure=True)
    with pytest.raises(ValueError, match="mc_samples"):
        CurvatureOptions(matrix="fisher_mc", mc_samples=0)


def test_mc_fisher_options_pass_through():
    case = ZOO["ce_unequal_batches"]()
    opts = CurvatureOptions(matrix="fisher_mc", mc_samples=3, bn_mode="eval")
    a, b = (
        estimate_lr(case.model, case.loss_fn, case.data, curvature=opts, seed=s) for s in (1, 2)
    )
    assert a.curvature_matrix == "fisher_mc" and a.ok and a.lr == pytest.approx(b.lr, rel=1e-12)
    op = opts.operator(case.model, case.loss_fn, case.data)
    assert op.kind == "mc" and op.mc_samples == 3


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    x, y = torch.randn(24, 4, dtype=DT), torch.randint(0, 3, (24,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, opt, nn.CrossEntropyLoss(), (x, y)


def _train(model, opt, loss_fn, batch, steps, observers=()):
    records = []
    for t in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        ctx = StepContext(step=t, model=model, optimizer=opt, batch=batch, loss_fn=loss_fn)
        records.append({"step": t, **run_observers(observers, ctx, last=t == steps - 1)})
    return records


def _case(model, loss_fn, batch) -> Case:
    return Case("trained", model, loss_fn, batch)


def test_edge_of_stability_tracks_ggn_sharpness():
    model, opt, loss_fn, batch = _setup()
    obs = EdgeOfStability(
        every=2, curvature=CurvatureOptions(matrix="ggn", bn_mode="eval"), lanczos_tol=1e-10
    )
    records = _train(model, opt, loss_fn, batch, 4, [obs])
    rec = records[-1]
    G = dense_ggn(_case(model, loss_fn, batch))
    assert rec["eos_curvature"] == "ggn"
    assert rec["eos_sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-8)
    H = dense_hessian(_case(model, loss_fn, batch))[0]
    assert abs(rec["eos_sharpness"] - float(torch.linalg.eigvalsh(H)[-1])) > 1e-6  # not H's
    with pytest.raises(ValueError, match="no closure"):
        EdgeOfStability(curvature=CurvatureOptions(matrix="ggn", closure=True))


def test_layer_sharpness_observer_records_match_dense_blocks_and_leave_training_alone():
    runs = []
    for with_obs in (False, True):
        model, opt, loss_fn, batch = _setup(seed=1)
        opts = CurvatureOptions(matrix="ggn", bn_mode="eval")
        obs = LayerSharpnessObserver(every=3, curvature=opts, tol=1e-9)
        records = _train(model, opt, loss_fn, batch, 6, [obs] if with_obs else [])
        runs.append((model, records, torch.get_rng_state()))
    (m0, _, r0), (m1, records, r1) = runs
    assert all(torch.equal(p, q) for p, q in zip(m0.parameters(), m1.parameters()))
    assert torch.equal(r0, r1)
    assert [("layer_sharpness/0" in r) for r in records] == [False, False, True] * 2
    rec = records[-1]
    case = _case(m1, nn.CrossEntropyLoss(), _setup(seed=1)[3])
    for block, names in {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}.items():
        top = float(torch.linalg.eigvalsh(dense_ggn(case, names=names))[-1])
        assert rec[f"layer_sharpness/{block}"] == pytest.approx(top, rel=1e-8)
    assert rec["layer_sharpness_curvature"] == "ggn"
    assert rec["layer_sharpness_not_converged"] == []
    fig = plot_layer_sharpness(records, lr=0.05, title="GGN per layer")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["0", "2", "2/η"]
    line = fig.axes[0].get_lines()[0]
    assert np.allclose(line.get_xdata(), [2, 5])
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_layer_sharpness([{"step": 0}])


def test_layer_sharpness_observer_state_round_trip_and_errors():
    obs = LayerSharpnessObserver(every=1)
    state = obs.state_dict()
    torch.randn(3, generator=obs.generator)
    obs.load_state_dict(state)
    assert torch.equal(obs.generator.get_state(), state["generator"])
    with pytest.raises(ValueError, match="matrix must be one of"):
        LayerSharpnessObserver(curvature="diag")
    with pytest.raises(ValueError, match="every"):
        LayerSharpnessObserver(every=-1)
    model, opt, _, _ = _setup()
    with pytest.raises(ValueError, match="loss_fn and a batch"):
        obs.observe(StepContext(step=0, model=model, optimizer=opt))
