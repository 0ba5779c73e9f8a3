"""FisherOperator (empirical and Monte-Carlo) against independent dense float64 references.

Empirical: Σₙ ∇ℓₙ∇ℓₙᵀ / N with the per-sample gradients as rows of jacrev of the per-sample losses
(output_reference.py), and on a plain MLP the textbook loop (each sample alone through the model,
its own gradient). Monte-Carlo: E_ŷ[F] = GGN for cross-entropy and MSE; with S labels per sample
the relative Frobenius error to the dense GGN must be below 3/√S (stated before running: the
per-sample outer product's relative spread is O(1) for C ≤ 4 classes and the n samples average
on top, so 3/√S is a loose bound that a wrong normalization -- a factor ≥ 2 -- cannot meet).
"""

from __future__ import annotations

import functools

import pytest
import torch
from output_reference import dense_empirical_fisher, dense_ggn
from torch import nn
from torch.func import functional_call, grad
from zoo import CHANGING_CASES, EXACT_CASES, ZOO, rel_error

from hessian_lr.curvature import DataChangedError, FisherOperator, GGNOperator, categorical_sampler
from hessian_lr.curvature.linop import params_to_vector

DT = torch.float64
HEAVY = {"tiny_gpt", "bn_resnet", "transformer_encoder_layer"}
SUPPORTED = [n for n in EXACT_CASES if not ZOO[n]().closure]


@functools.cache
def reference(name: str, bn_mode: str) -> torch.Tensor:
    return dense_empirical_fisher(ZOO[name](), bn_mode)


def case_kwargs(case, bn_mode="eval"):
    kw = {"bn_mode": bn_mode, **case.operator_kwargs()}
    if case.count_fn is not None:
        kw["batch_size_fn"] = case.count_fn
    return kw


def _params(names):
    out = []
    for name in names:
        for bn in ZOO[name]().bn_modes:
            out.append(pytest.param(name, bn, marks=[pytest.mark.slow] * (name in HEAVY)))
    return out


@pytest.mark.parametrize("name,bn_mode", _params(SUPPORTED))
def test_empirical_fisher_matches_dense_reference(name, bn_mode):
    case = ZOO[name]()
    op = FisherOperator(
        case.model, case.loss_fn, case.data, chunk_size=9, **case_kwargs(case, bn_mode)
    )
    F = op.to_dense()
    assert rel_error(F, reference(name, bn_mode)) < 1e-10
    assert float(torch.linalg.eigvalsh(F)[0]) > -1e-12 * float(F.abs().max())


@pytest.mark.parametrize(
    "name", ["unused_parameters", "sequence_ignore_index", "mse_sum_unequal_batches"]
)
def test_autograd_back_end_agrees(name):
    case = ZOO[name]()
    op = FisherOperator(
        case.model, case.loss_fn, case.data, backend="double-backward", **case_kwargs(case)
    )
    assert rel_error(op.to_dense(), reference(name, "eval")) < 1e-10


def test_empirical_fisher_is_the_textbook_per_sample_loop():
    """Each sample alone through the model: F = (1/N) Σₙ ∇ℓₙ ∇ℓₙᵀ, ℓₙ = CE of sample n."""
    case = ZOO["ce_unequal_batches"]()
    model = case.model
    params = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for x, y in case.data:
        for n in range(x.shape[0]):

            def loss(ps, n=n, x=x, y=y):
                out = functional_call(model, ps, (x[n : n + 1],))
                return nn.functional.cross_entropy(out, y[n : n + 1])

            rows.append(params_to_vector(list(grad(loss)(params).values())))
    G = torch.stack(rows)
    ref = G.T @ G / G.shape[0]
    op = FisherOperator(model, case.loss_fn, case.data)
    assert rel_error(op.to_dense(), ref) < 1e-12


@pytest.mark.parametrize("name", ["ce_unequal_batches", "mse_mean_unequal_batches"])
def test_mc_fisher_converges_to_the_ggn(name):
    case = ZOO[name]()
    S = 2000
    op = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", mc_samples=S, seed=3)
    G = dense_ggn(case)
    err = rel_error(op.to_dense(), G)
    assert err < 3 / S**0.5, err
    few = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", mc_samples=5, seed=3)
    assert rel_error(few.to_dense(), G) > err  # more labels, closer: the test can fail


@pytest.mark.slow
def test_mc_fisher_with_token_sampler_converges_to_the_ggn_on_tiny_gpt():
    case = ZOO["tiny_gpt"]()
    S = 1000
    op = FisherOperator(
        case.model,
        case.loss_fn,
        case.data,
        kind="mc",
        mc_samples=S,
        sampler=categorical_sampler(),
        batch_size_fn=case.count_fn,
    )
    G = GGNOperator(case.model, case.loss_fn, case.data, batch_size_fn=case.count_fn).to_dense()
    assert rel_error(op.to_dense(), G) < 3 / S**0.5


def test_mc_fisher_is_one_fixed_matrix_and_leaves_the_global_rng_alone():
    case = ZOO["ce_unequal_batches"]()
    state = torch.get_rng_state()
    op = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", seed=5)
    v = torch.randn(op.shape[0], dtype=DT, generator=torch.Generator().manual_seed(0))
    a, b = op @ v, op @ v  # (the first product also carries the base's symmetry probe)
    assert torch.allclose(a, b, rtol=1e-13, atol=0)
    assert op.check_deterministic()
    assert torch.equal(state, torch.get_rng_state())
    same = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", seed=5)
    other = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", seed=6)
    assert torch.allclose(same @ v, a, rtol=1e-13, atol=0)
    assert rel_error(other @ v, a) > 1e-3
    op.resample(6)
    assert torch.allclose(op @ v, other @ v, rtol=1e-13, atol=0)
    gen = torch.Generator().manual_seed(11)
    g_op = FisherOperator(case.model, case.loss_fn, case.data, kind="mc", generator=gen)
    assert g_op.seed == int(
        torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(11))
    )


def test_mc_fisher_for_bce_with_logits_converges_to_the_ggn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).to(DT)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, dtype=DT)
    y = torch.randint(0, 2, (9, 2), generator=g).to(DT)
    loss = nn.BCEWithLogitsLoss()
    S = 2000
    F = FisherOperator(model, loss, (x, y), kind="mc", mc_samples=S).to_dense()
    G = GGNOperator(model, loss, (x, y)).to_dense()
    assert rel_error(F, G) < 3 / S**0.5


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.L1Loss(),
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0], dtype=DT)),
        nn.CrossEntropyLoss(label_smoothing=0.1),
    ],
)
def test_mc_without_a_predictive_distribution_is_refused(loss_fn):
    case = ZOO["ce_unequal_batches"]()
    if isinstance(loss_fn, nn.L1Loss):
        data = [(x, nn.functional.one_hot(y, 3).to(DT)) for x, y in case.data]
    else:
        data = case.data
    op = FisherOperator(case.model, loss_fn, data, kind="mc")
    with pytest.raises(ValueError, match="predictive distribution"):
        op @ torch.ones(op.shape[0], dtype=DT)


def test_bad_arguments():
    case = ZOO["dict_input"]()
    with pytest.raises(ValueError, match="kind"):
        FisherOperator(case.model, case.loss_fn, case.data, kind="true")
    with pytest.raises(ValueError, match="mc_samples"):
        FisherOperator(case.model, case.loss_fn, case.data, kind="mc", mc_samples=0)
    closure = ZOO["dict_batch_closure"]()
    with pytest.raises(ValueError, match="closure=True"):
        FisherOperator(closure.model, closure.loss_fn, closure.data, closure=True)


@pytest.mark.parametrize("name", CHANGING_CASES)
def test_changing_data_raises(name):
    case = ZOO[name]()
    op = FisherOperator(case.model, case.loss_fn, case.data, bn_mode=case.bn_modes[0])
    with pytest.raises(DataChangedError):
        op @ torch.ones(op.shape[0], dtype=DT)


def test_mc_labels_over_a_reshuffled_loader_are_refused():
    """MC labels are tied to batch positions: a reshuffling loader is not one fixed matrix."""
    case = ZOO["loader_shuffle_full_epoch"]()
    op = FisherOperator(case.model, case.loss_fn, case.data, kind="mc")
    with pytest.raises(DataChangedError):
        op @ torch.ones(op.shape[0], dtype=DT)


@pytest.mark.parametrize(
    "name", ["ce_unequal_batches", "mse_mean_unequal_batches", "mse_sum_unequal_batches"]
)
def test_equals_curvlinops_empirical_fisher(name):
    """Where both define the same matrix (one label per sample; sequences differ: see docs)."""
    curvlinops = pytest.importorskip("curvlinops")
    case = ZOO[name]()
    params = list(case.model.parameters())
    theirs = curvlinops.EFLinearOperator(case.model, case.loss_fn, params, case.data)
    ours = FisherOperator(case.model, case.loss_fn, case.data)
    V = torch.randn(ours.shape[0], 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert rel_error(ours @ V, torch.as_tensor(theirs @ V)) < 1e-12
