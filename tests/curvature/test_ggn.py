"""GGNOperator against dense float64 references built independently (output_reference.py).

The reference is Σ_b c_b J_bᵀ H_b J_b / Σ_b c_b with J_b = jacrev of the outputs and H_b =
jacfwd(jacrev) of the loss w.r.t. the outputs -- never the operator's closed forms. Both back ends
must agree to 1e-10 relative in float64 on every zoo case that has (inputs, targets) batches;
closures are refused, changing data raises DataChangedError, low-precision models agree to float32
accuracy. Also: G = H for a linear model under MSE, the closed forms equal autodiff, curvlinops'
GGNLinearOperator (when installed) gives the same matrix.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from output_reference import dense_ggn
from torch import nn
from zoo import CHANGING_CASES, EXACT_CASES, LOW_PRECISION_CASES, ZOO, dense_hessian, rel_error

from hessian_lr.curvature import (
    DataChangedError,
    GGNOperator,
    HessianOperator,
    token_cross_entropy_hessian,
)
from hessian_lr.curvature._output_space import autodiff_output_hessian, output_hessian_product

DT = torch.float64
HEAVY = {"tiny_gpt", "bn_resnet", "transformer_encoder_layer", "tiny_gpt_bfloat16"}
SUPPORTED = [n for n in EXACT_CASES if not ZOO[n]().closure]
CLOSURES = [n for n in ZOO if ZOO[n]().closure]


@functools.cache
def reference(name: str, bn_mode: str) -> torch.Tensor:
    return dense_ggn(ZOO[name](), bn_mode)


def case_kwargs(case, bn_mode="eval"):
    kw = {"bn_mode": bn_mode, **case.operator_kwargs()}
    if case.count_fn is not None:
        kw["batch_size_fn"] = case.count_fn
    return kw


def _params(names, backends):
    out = []
    for name in names:
        for bn in ZOO[name]().bn_modes:
            for backend in backends:
                slow = name in HEAVY or (backend == "double-backward" and name not in FAST_DB)
                out.append(pytest.param(name, bn, backend, marks=[pytest.mark.slow] * slow))
    return out


FAST_DB = {"unused_parameters", "sequence_ignore_index", "mse_sum_unequal_batches", "dict_input"}


@pytest.mark.parametrize(
    "name,bn_mode,backend", _params(SUPPORTED, ["forward-over-reverse", "double-backward"])
)
def test_ggn_matches_dense_reference(name, bn_mode, backend):
    case = ZOO[name]()
    op = GGNOperator(
        case.model,
        case.loss_fn,
        case.data,
        backend=backend,
        chunk_size=7,
        **case_kwargs(case, bn_mode),
    )
    G = op.to_dense()
    assert op.backend == backend
    assert rel_error(G, reference(name, bn_mode)) < 1e-10
    assert rel_error(G, G.T) < 1e-12


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] * (n in HEAVY)) for n in LOW_PRECISION_CASES]
)
def test_low_precision_models_match_at_float32_accuracy(name):
    case = ZOO[name]()
    op = GGNOperator(case.model, case.loss_fn, case.data, **case_kwargs(case))
    assert op.dtype == torch.float32
    G = op.to_dense().to(DT)
    ref = dense_ggn(case)
    assert rel_error(G, ref) < 1e-5  # float32 products of the upcast copy (measured ~3e-7)


@pytest.mark.parametrize("name", CLOSURES)
def test_closures_are_refused_with_a_clear_error(name):
    case = ZOO[name]()
    with pytest.raises(ValueError, match="closure=True"):
        GGNOperator(case.model, case.loss_fn, case.data, **case_kwargs(case))


@pytest.mark.parametrize("name", CHANGING_CASES)
def test_changing_data_raises(name):
    case = ZOO[name]()
    bn = case.bn_modes[0]
    op = GGNOperator(case.model, case.loss_fn, case.data, bn_mode=bn)
    v = torch.randn(op.shape[0], dtype=DT, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataChangedError):
        op @ v


def test_finite_difference_backend_is_refused():
    case = ZOO["dict_input"]()
    with pytest.raises(ValueError, match="finite-difference"):
        GGNOperator(case.model, case.loss_fn, case.data, backend="finite-difference")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ggn_equals_hessian_for_a_linear_model_under_mse(reduction):
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(DT)
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(n, 4, generator=g, dtype=DT), torch.randn(n, 3, generator=g, dtype=DT))
        for n in (5, 2)
    ]
    loss = nn.MSELoss(reduction=reduction)
    G = GGNOperator(model, loss, batches).to_dense()
    H = HessianOperator(model, loss, batches).to_dense()
    assert rel_error(G, H) < 1e-13
    # and differs from H for a nonlinear model (the test can fail)
    case = ZOO["mse_mean_unequal_batches"]()
    Gc = GGNOperator(case.model, case.loss_fn, case.data).to_dense()
    Hc, _ = dense_hessian(case)
    assert rel_error(Gc, Hc) > 1e-3


def test_ggn_is_positive_semidefinite_for_cross_entropy():
    case = ZOO["ce_unequal_batches"]()
    G = GGNOperator(case.model, case.loss_fn, case.data).to_dense()
    ev = torch.linalg.eigvalsh(G)
    assert float(ev[0]) > -1e-12 * float(ev[-1])
    H, _ = dense_hessian(case)
    assert float(torch.linalg.eigvalsh(H)[0]) < -1e-6  # the Hessian is not: G is another matrix


def _random_case(shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=DT)
    W = torch.randn(3, *shape, generator=g, dtype=DT)
    t = torch.randint(0, classes, (shape[0], *shape[2:]), generator=g)
    return z, W, t


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(reduction="sum"),
        nn.CrossEntropyLoss(ignore_index=1),
        nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=DT)),
        nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=DT), ignore_index=2),
        nn.CrossEntropyLoss(label_smoothing=0.2),
    ],
    ids=["ce", "ce-sum", "ce-ignore", "ce-weight", "ce-weight-ignore", "ce-smoothing"],
)
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 6)], ids=["BC", "BCT"])
def test_cross_entropy_closed_form_equals_autodiff(loss_fn, shape):
    z, W, t = _random_case(shape, 4)
    closed = output_hessian_product(loss_fn, loss_fn, z, t, W)
    auto = autodiff_output_hessian(loss_fn, z, t, W)
    assert rel_error(closed, auto) < 1e-13


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.MSELoss(),
        nn.MSELoss(reduction="sum"),
        nn.BCEWithLogitsLoss(),
        nn.BCEWithLogitsLoss(reduction="sum"),
        nn.BCEWithLogitsLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=DT)),
    ],
)
def test_elementwise_closed_forms_equal_autodiff(loss_fn):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 3, generator=g, dtype=DT)
    t = torch.rand(6, 3, generator=g, dtype=DT)
    W = torch.randn(2, 6, 3, generator=g, dtype=DT)

    def impl(o, y):  # mean-reduced mse_loss in a twice-differentiable form
        return loss_fn(o, y)

    closed = output_hessian_product(loss_fn, impl, z, t, W)
    auto = autodiff_output_hessian(impl, z, t, W)
    assert rel_error(closed, auto) < 1e-13


def test_token_cross_entropy_closed_form_equals_autodiff_on_token_logits():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 5, 9, generator=g, dtype=DT)  # (B, T, C)
    W = torch.randn(2, 3, 5, 9, generator=g, dtype=DT)
    t = torch.randint(0, 9, (3, 5), generator=g)
    t[0, :2] = -100

    def token_ce(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    closed = token_cross_entropy_hessian()(z, t, W)
    auto = autodiff_output_hessian(token_ce, z, t, W)
    assert rel_error(closed, auto) < 1e-13


@pytest.mark.slow
def test_tiny_gpt_with_the_token_closed_form_matches_the_reference():
    case = ZOO["tiny_gpt"]()
    op = GGNOperator(
        case.model,
        case.loss_fn,
        case.data,
        output_hessian=token_cross_entropy_hessian(),
        batch_size_fn=case.count_fn,
    )
    assert rel_error(op.to_dense(), reference("tiny_gpt", "eval")) < 1e-10


def test_params_subset_is_the_block_of_the_full_matrix():
    case = ZOO["unused_parameters"]()
    names = ["main_head.weight", "body.0.bias", "aux_head.bias"]
    op = GGNOperator(case.model, case.loss_fn, case.data, params=names)
    assert op.names == names
    assert rel_error(op.to_dense(), dense_ggn(case, names=names)) < 1e-10
    full = GGNOperator(case.model, case.loss_fn, case.data)
    unused = [i for i, n in enumerate(full.names) if n.startswith(("never_called", "aux_head"))]
    sizes = [p.numel() for p in full.params]
    starts = torch.tensor([0, *sizes]).cumsum(0)
    G = full.to_dense()
    for i in unused:
        rows = slice(int(starts[i]), int(starts[i + 1]))
        assert float(G[rows].abs().max()) == 0.0


def test_vectors_matrices_chunks_and_untouched_model():
    case = ZOO["sequence_ignore_index"]()
    model = case.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    op = GGNOperator(model, case.loss_fn, case.data, chunk_size=2)
    V = torch.randn(op.shape[0], 5, dtype=DT, generator=torch.Generator().manual_seed(0))
    GV = op @ V
    assert torch.allclose(op @ V[:, 3], GV[:, 3], rtol=1e-12, atol=1e-14)
    assert op.num_hvps == 6
    ref = reference("sequence_ignore_index", "eval")
    assert rel_error(GV, ref @ V) < 1e-10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == [m.training for m in model.modules()]
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())


def test_gradient_is_the_objectives():
    case = ZOO["mse_mean_unequal_batches"]()
    op = GGNOperator(case.model, case.loss_fn, case.data)
    hop = HessianOperator(case.model, case.loss_fn, case.data)
    assert rel_error(op.gradient()[1], hop.gradient()[1]) < 1e-13


def test_bad_output_hessian_is_refused():
    case = ZOO["dict_input"]()
    with pytest.raises(TypeError, match="output_hessian"):
        GGNOperator(case.model, case.loss_fn, case.data, output_hessian="ce")


@pytest.mark.parametrize(
    "name", ["ce_unequal_batches", "mse_mean_unequal_batches", "mse_sum_unequal_batches"]
)
def test_equals_curvlinops_ggn(name):
    curvlinops = pytest.importorskip("curvlinops")
    case = ZOO[name]()
    params = list(case.model.parameters())
    theirs = curvlinops.GGNLinearOperator(case.model, case.loss_fn, params, case.data)
    ours = GGNOperator(case.model, case.loss_fn, case.data)
    V = torch.randn(ours.shape[0], 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert rel_error(ours @ V, torch.as_tensor(theirs @ V)) < 1e-12


def test_equals_curvlinops_ggn_per_batch_on_sequences_with_ignore_index():
    """Per batch; over several batches curvlinops weights by samples, we by counted tokens."""
    curvlinops = pytest.importorskip("curvlinops")
    case = ZOO["sequence_ignore_index"]()
    params = list(case.model.parameters())
    for batch in case.data:
        theirs = curvlinops.GGNLinearOperator(case.model, case.loss_fn, params, [batch])
        ours = GGNOperator(case.model, case.loss_fn, batch)
        V = torch.randn(ours.shape[0], 3, dtype=DT, generator=torch.Generator().manual_seed(1))
        assert rel_error(ours @ V, torch.as_tensor(theirs @ V)) < 1e-12


@pytest.mark.parametrize("cls", ["ggn", "fisher"])
def test_cached_graph_follows_the_model(cls):
    from hessian_lr.curvature import FisherOperator

    case = ZOO["dict_input"]()
    make = GGNOperator if cls == "ggn" else FisherOperator
    op = make(case.model, case.loss_fn, case.data, backend="double-backward")
    assert op.cache_graph  # one batch: the output and Jᵀu graphs are kept
    v = torch.randn(op.shape[0], dtype=DT, generator=torch.Generator().manual_seed(0))
    first = op @ v
    assert op._jac_graphs
    with torch.no_grad():
        case.model.scale.mul_(1.5)
    fresh = make(case.model, case.loss_fn, case.data, backend="forward-over-reverse")
    assert rel_error(op @ v, fresh @ v) < 1e-12 and rel_error(op @ v, first) > 1e-3
    hop = HessianOperator(case.model, case.loss_fn, case.data)
    assert rel_error(op.gradient()[1], hop.gradient()[1]) < 1e-13
    op.release_graph()
    assert not op._jac_graphs


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_small_batchnorm_model_in_both_modes(bn_mode):
    """A fast BatchNorm case for the default suite (bn_resnet covers it in the slow one)."""
    from output_reference import dense_empirical_fisher
    from zoo import Case, _randomize_bn

    from hessian_lr.curvature import FisherOperator

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    _randomize_bn(model)
    model = model.to(DT).train()
    g = torch.Generator().manual_seed(4)
    batch = (torch.randn(8, 4, generator=g, dtype=DT), torch.randint(0, 3, (8,), generator=g))
    case = Case("bn_mlp", model, nn.CrossEntropyLoss(), batch)
    running = model[1].running_mean.clone()
    for cls, ref in ((GGNOperator, dense_ggn), (FisherOperator, dense_empirical_fisher)):
        op = cls(model, case.loss_fn, batch, bn_mode=bn_mode)
        assert rel_error(op.to_dense(), ref(case, bn_mode)) < 1e-10
    assert torch.equal(model[1].running_mean, running) and model.training
    G_eval, G_train = (dense_ggn(case, m) for m in ("eval", "train"))
    assert rel_error(G_eval, G_train) > 1e-2  # the two modes are different matrices


def test_torch_func_jvp_on_attention_restores_the_fast_path_flag():
    case = ZOO["multihead_attention"]()
    before = torch.backends.mha.get_fastpath_enabled()
    op = GGNOperator(case.model, case.loss_fn, case.data, backend="forward-over-reverse")
    V = torch.randn(op.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert rel_error(op @ V, reference("multihead_attention", "eval") @ V) < 1e-10
    assert op.backend == "forward-over-reverse"
    assert torch.backends.mha.get_fastpath_enabled() == before
