"""CurvatureOptions: one options object for how every LR entry point builds its operator."""

import copy
import inspect

import pytest
import torch
from torch import nn

from hessian_lr.lr import (
    CurvatureOptions,
    EdgeOfStability,
    LREstimator,
    estimate_lr,
    estimate_lrs,
    preconditioned_sharpness,
    update_lr,
)
from hessian_lr.lr.options import OPERATOR_KEYWORDS
from hessian_lr.training.observers import CurvatureProbe

ENTRY_POINTS = {
    "estimate_lr": lambda **kw: estimate_lr(None, None, None, **kw),
    "estimate_lrs": lambda **kw: estimate_lrs(None, None, None, **kw),
    "LREstimator": lambda **kw: LREstimator(None, **kw),
    "EdgeOfStability": lambda **kw: EdgeOfStability(**kw),
    "update_lr": lambda **kw: update_lr(None, None, None, None, **kw),
    "preconditioned_sharpness": lambda **kw: preconditioned_sharpness(None, None, None, None, **kw),
    "CurvatureProbe": lambda **kw: CurvatureProbe(None, every=1, **kw),
}
OLD = ("backend", "bn_mode", "params", "closure", "process_group", "operator_options")


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("keyword", OLD)
def test_an_old_keyword_is_a_type_error_naming_the_field(entry, keyword):
    with pytest.raises(TypeError) as info:
        ENTRY_POINTS[entry](**{keyword: object()})
    msg = str(info.value)
    assert msg.startswith(f"{entry}() no longer takes {keyword}=")
    assert f"curvature={OPERATOR_KEYWORDS[keyword]}" in msg


@pytest.mark.parametrize(
    "fn", [estimate_lrs, LREstimator, EdgeOfStability, update_lr, preconditioned_sharpness]
)
def test_no_entry_point_takes_operator_keywords_of_its_own(fn):
    names = set(inspect.signature(fn).parameters)
    assert "curvature" in names and not names & set(OPERATOR_KEYWORDS)


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"backend": "jvp"}, ValueError, "backend must be one of"),
        ({"bn_mode": "batch"}, ValueError, "bn_mode must be 'train' or 'eval'"),
        ({"closure": 1}, TypeError, "closure must be True or False"),
        ({"params": "weight"}, TypeError, "wrap it in a list"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
        ({"reduction": "max"}, ValueError, "reduction must be"),
        ({"fd_scheme": "backward"}, ValueError, "fd_scheme must be"),
    ],
)
def test_bad_options_are_refused_at_construction(kw, err, match):
    with pytest.raises(err, match=match):
        CurvatureOptions(**kw)


def test_curvature_must_be_an_options_object():
    with pytest.raises(TypeError, match="curvature must be a CurvatureOptions"):
        estimate_lr(nn.Linear(2, 1), nn.MSELoss(), None, curvature={"backend": "auto"})


def test_defaults_are_the_lr_measurements_and_params_become_a_tuple():
    opts = CurvatureOptions(params=["0.weight"])
    assert opts.bn_mode == "train" and opts.backend == "auto" and opts.params == ("0.weight",)
    with pytest.raises(AttributeError):
        opts.backend = "double-backward"  # frozen


def _dense_hessian(model, loss_fn, x, y):
    """Float64 gradient and Hessian of the mean loss by double backward on a float64 copy."""
    m64 = copy.deepcopy(model).double()
    params = list(m64.parameters())
    loss = loss_fn(m64(x.double()), y.double())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    rows = [
        torch.cat([t.reshape(-1) for t in torch.autograd.grad(gi, params, retain_graph=True)])
        for gi in g
    ]
    return torch.stack(rows).detach(), g.detach()


def test_options_reach_the_operator_and_the_estimate_matches_a_dense_reference():
    """dtype, chunk_size and params go through; gᵀg/gᵀHg equals the float64 dense value."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    loss_fn = nn.MSELoss()
    opts = CurvatureOptions(dtype=torch.float64, chunk_size=3, backend="double-backward")
    op = opts.operator(model, loss_fn, (x, y))
    assert op.dtype == torch.float64 and op.chunk_size == 3 and op.bn_mode == "train"
    H, g = _dense_hessian(model, loss_fn, x, y)
    est = estimate_lr(model, loss_fn, (x, y), curvature=opts)
    assert est.lr == pytest.approx(float(g @ g / (g @ H @ g)), rel=1e-10)
    assert est.backend == "double-backward" and est.bn_mode == "train"
    # params restricts the operator: the last layer only (its block of the dense Hessian)
    last = CurvatureOptions(params=["2.weight", "2.bias"], dtype=torch.float64)
    sub = estimate_lr(model, loss_fn, (x, y), curvature=last)
    block, gb = H[-5:, -5:], g[-5:]
    assert sub.lr == pytest.approx(float(gb @ gb / (gb @ block @ gb)), rel=1e-10)


def test_estimate_lr_is_estimate_lrs_of_one_method():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    batch = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    loss_fn = nn.CrossEntropyLoss()
    for method in ("quadratic", "secant_hvp", "sharpness"):
        one = estimate_lr(model, loss_fn, batch, method=method, seed=3)
        many = estimate_lrs(model, loss_fn, batch, methods=(method,), seed=3)[method]
        assert one.lr == many.lr and one.num_hvps == many.num_hvps and one.seed == 3
    with pytest.raises(TypeError, match="use estimate_lrs for several"):
        estimate_lr(model, loss_fn, batch, methods=("quadratic",))
