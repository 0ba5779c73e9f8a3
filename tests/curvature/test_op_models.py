"""HessianOperator on the models people bring (issue 10 items 1, 4-8): each test fails on the
operator before the restructuring (tied weights under closures, unused parameters, attention
kernels, pytree batches, nn.MSELoss under torch.func, float16/bfloat16 parameters)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo import ZOO, dense_hessian, rel_error, token_ce

from hessian_lr.curvature.hessian import HessianOperator, select_params

DT = torch.float64
EXACT = ["forward-over-reverse", "double-backward"]


def _v(n, k=None, seed=0, dtype=DT):
    shape = (n,) if k is None else (n, k)
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- tied weights
@pytest.mark.parametrize("backend", [*EXACT, "finite-difference"])
def test_tied_weights_exact_under_closure(backend):
    case = ZOO["tiny_gpt"]()
    H, names = dense_hessian(case)

    def closure(model, batch):
        idx, tgt = batch
        return token_ce(model(idx), tgt)

    op = HessianOperator(case.model, closure, case.data, closure=True, backend=backend)
    assert op.names == names and "head.weight" not in op.names  # the tied tensor counts once
    assert op.aliases == {"head.weight": "tok.weight"}
    assert any("tied" in n for n in op.notes)
    V = _v(op.shape[0], 2)
    assert rel_error(op @ V, H @ V) < (1e-6 if backend == "finite-difference" else 1e-10)
    loss, g = op.gradient()
    ref = HessianOperator(case.model, case.loss_fn, case.data).gradient()[1]
    assert rel_error(g, ref) < 1e-12


def test_tied_alias_name_selects_the_shared_tensor():
    case = ZOO["tiny_gpt"]()
    names, tensors = select_params(case.model, ["head.weight", "tok.weight", "ln_f.bias"])
    assert names == ["tok.weight", "ln_f.bias"]
    assert tensors[0] is case.model.tok.weight
    H, _ = dense_hessian(case, names=names)
    op = HessianOperator(case.model, case.loss_fn, case.data, params=["head.weight", "ln_f.bias"])
    v = _v(op.shape[0])
    assert op.shape[0] == case.model.tok.weight.numel() + 6
    assert rel_error(op @ v, H @ v) < 1e-10


# ------------------------------------------------------------------------------- unused
@pytest.mark.parametrize("backend", [*EXACT, "finite-difference"])
def test_unused_parameters_have_zero_rows_and_gradient(backend):
    case = ZOO["unused_parameters"]()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend=backend)
    dead = [n for n in op.names if n.startswith(("never_called", "aux_head"))]
    assert len(dead) == 4
    V = _v(op.shape[0], 3)
    out = op.vector_to_dict((op @ V)[:, 0])
    _, g = op.gradient()
    gd = op.vector_to_dict(g)
    for n in dead:
        assert torch.count_nonzero(out[n]) == 0 and torch.count_nonzero(gd[n]) == 0
    H, _ = dense_hessian(case)
    assert rel_error(op @ V, H @ V) < (1e-6 if backend == "finite-difference" else 1e-10)
    if backend == "double-backward":
        assert op.unreached == dead and any("does not reach" in n for n in op.notes)


def test_constant_gradient_parameter():
    """A parameter whose gradient is constant (loss linear in it) has no graph: zero rows."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 1).double()
    shift = nn.Parameter(torch.ones((), dtype=DT))
    model = nn.Module()
    model.lin, model.shift = lin, shift
    model.forward = lambda x: lin(x).pow(2).squeeze(1) + shift
    x = torch.randn(5, 3, dtype=DT)
    op = HessianOperator(model, lambda out, y: out.mean(), (x, x[:, 0]))
    col = op @ _v(op.shape[0])
    assert col[op.names.index("shift")] == 0


# ------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("name", ["tiny_gpt", "multihead_attention", "transformer_encoder_layer"])
@pytest.mark.parametrize("backend", EXACT)
def test_attention_flags_restored(name, backend):
    case = ZOO[name]()
    fast = torch.backends.mha.get_fastpath_enabled()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend=backend)
    op @ _v(op.shape[0])
    op.gradient()
    assert torch.backends.mha.get_fastpath_enabled() == fast
    assert any("math kernel" in n for n in op.notes)
    # The fused kernels are back for the caller: a default SDPA call has no forward AD.
    q = torch.randn(1, 1, 3, 2)
    with pytest.raises(RuntimeError):
        torch.func.jvp(lambda t: F.scaled_dot_product_attention(t, t, t), (q,), (q,))


# ------------------------------------------------------------------------------- pytrees
def test_dict_inputs_are_one_batch():
    case = ZOO["dict_input"]()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    assert op._single and op.backend == "double-backward"
    H, _ = dense_hessian(case)
    v = _v(op.shape[0])
    assert rel_error(op @ v, H @ v) < 1e-10


def test_single_batch_argument_overrides_the_rule():
    torch.manual_seed(0)
    net = nn.Linear(4, 2).double()
    x1, x2 = torch.randn(6, 2, dtype=DT), torch.randn(6, 2, dtype=DT)
    y1, y2 = torch.randn(6, 1, dtype=DT), torch.randn(6, 1, dtype=DT)

    def closure(model, batch):  # one batch ((x1, x2), (y1, y2)): two inputs, two targets
        (a, b), (c, d) = batch
        out = model(torch.cat([a, b], 1))
        return F.mse_loss(out[:, :1], c) + F.mse_loss(out[:, 1:], d)

    data = ((x1, x2), (y1, y2))
    with pytest.raises(ValueError, match="reduction"):  # read as two batches: must say how
        HessianOperator(net, closure, data, closure=True)
    op = HessianOperator(net, closure, data, closure=True, single_batch=True)
    # Closed form: each output row r has loss mean_i (w_r·x_i + b_r − t_ir)², Hessian
    # (2/6) [[XᵀX, Σx], [Σxᵀ, 6]] per row.
    W = torch.cat([x1, x2], 1)
    wv = op.vector_to_dict(_v(op.shape[0]))
    ref = {
        "weight": 2 / 6 * (wv["weight"] @ (W.T @ W) + wv["bias"][:, None] * W.sum(0)),
        "bias": 2 / 6 * (wv["weight"] @ W.sum(0) + 6 * wv["bias"]),
    }
    got = op.vector_to_dict(op @ op.dict_to_vector(wv))
    assert rel_error(got["weight"], ref["weight"]) < 1e-12
    assert rel_error(got["bias"], ref["bias"]) < 1e-12


def test_tuple_of_batches_with_single_batch_false():
    case = ZOO["ce_unequal_batches"]()
    op = HessianOperator(case.model, case.loss_fn, tuple(case.data), single_batch=False)
    H, _ = dense_hessian(case)
    v = _v(op.shape[0])
    assert rel_error(op @ v, H @ v) < 1e-10


def test_bad_batch_structure_names_the_fix():
    case = ZOO["dict_batch_closure"]()
    op = HessianOperator(case.model, nn.CrossEntropyLoss(), case.data)  # forgot closure=True
    with pytest.raises(ValueError, match="closure=True"):
        op @ _v(op.shape[0])


# ------------------------------------------------------------------------------- MSE
def test_mse_loss_forward_over_reverse():
    case = ZOO["mse_mean_unequal_batches"]()
    op = HessianOperator(case.model, nn.MSELoss(), case.data[0], backend="forward-over-reverse")
    H = HessianOperator(case.model, nn.MSELoss(), case.data[0], backend="double-backward")
    v = _v(op.shape[0])
    assert rel_error(op @ v, H @ v) < 1e-12 and op.backend == "forward-over-reverse"


def test_forward_ad_gap_named_and_auto_falls_back():
    case = ZOO["mse_mean_unequal_batches"]()
    op = HessianOperator(case.model, nn.HuberLoss(), case.data, backend="forward-over-reverse")
    with pytest.raises(RuntimeError, match="backend='double-backward'"):
        op @ _v(op.shape[0])
    auto = HessianOperator(case.model, nn.HuberLoss(), case.data)
    ref = HessianOperator(case.model, nn.HuberLoss(), case.data, backend="double-backward")
    v = _v(auto.shape[0])
    assert rel_error(auto @ v, ref @ v) < 1e-12
    assert auto.backend == "double-backward" and "forward AD" in auto.fallback_reason


def test_mse_target_shape_mismatch_is_refused():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(8, 3, dtype=DT), torch.randn(8, dtype=DT)
    op = HessianOperator(model, nn.MSELoss(), (x, y))
    with pytest.raises(ValueError, match=r"broadcast to \(8, 8\)"):
        op @ _v(op.shape[0])
    ok = HessianOperator(model, nn.MSELoss(), (x, y.view(-1, 1)))
    assert torch.allclose(ok.to_dense()[:3, :3], 2 * x.T @ x / 8)


# ------------------------------------------------------------------------------- precision
def test_float32_model_in_float64_on_request():
    case = ZOO["gru_classifier"]()
    H, _ = dense_hessian(case)
    case.model.float()
    x, y = case.data
    op = HessianOperator(case.model, case.loss_fn, (x.float(), y), dtype=torch.float64)
    assert op.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in case.model.parameters())
    v = _v(op.shape[0])
    # float64 arithmetic on float32-rounded values: agrees with the float64 model to ~1e-7
    assert rel_error(op @ v, H @ v) < 1e-5
    op32 = HessianOperator(case.model, case.loss_fn, (x.float(), y))
    assert op32.dtype == torch.float32
    assert rel_error((op32 @ v.float()).double(), op @ v) < 1e-4


def test_half_precision_bad_dtype_refused():
    case = ZOO["mlp_float16"]()
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        HessianOperator(case.model, case.loss_fn, case.data, dtype=torch.float16)


def test_single_batch_rule():
    from hessian_lr.curvature._batches import is_single_batch

    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert is_single_batch((x, y), closure=False)
    assert is_single_batch([x, y], closure=False)
    assert is_single_batch(({"x": x}, y), closure=False)
    assert is_single_batch(({"x": x}, {"y": y}), closure=False)  # (inputs, targets) of dicts
    assert not is_single_batch(({"x": x}, {"y": y}), closure=True)  # two dict batches
    assert is_single_batch({"x": x, "y": y}, closure=True)
    assert not is_single_batch([(x, y), (x, y)], closure=False)
    assert not is_single_batch(iter([(x, y)]), closure=False)


@pytest.mark.parametrize("name", ["unused_parameters", "tiny_gpt", "mse_mean_unequal_batches"])
def test_batched_double_backward_path(name, monkeypatch):
    """The GPU path (is_grads_batched over k columns), run on the CPU."""
    from hessian_lr.curvature import products

    monkeypatch.setattr(products, "BATCHED_ON_CPU", True)
    case = ZOO[name]()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    H, _ = dense_hessian(case)
    V = _v(op.shape[0], 5)
    assert rel_error(op @ V, H @ V) < 1e-10
