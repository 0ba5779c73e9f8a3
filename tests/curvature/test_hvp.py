"""HessianOperator against dense float64 Hessians built independently with jacfwd(grad(f))."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd

from hessian_lr.curvature.hessian import HessianOperator, NonFiniteError
from hessian_lr.curvature.linop import vector_to_params

EXACT = ["forward-over-reverse", "double-backward"]
DT = torch.float64


def dense_hessian(model, loss_fn, batches, names, bn_train=False):
    """Reference: jacfwd(grad(mean loss)) on a copy of the model (grad-based: see methods §1)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        m.training = False
        if bn_train and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.training, m.track_running_stats = True, False
    params = {n: p.detach() for n, p in model.named_parameters()}
    sel = [params[n] for n in names]

    def f(flat):
        ps = {**params, **dict(zip(names, vector_to_params(flat, sel)))}
        total = sum(x.shape[0] for x, _ in batches)
        return (
            sum(x.shape[0] * loss_fn(functional_call(model, ps, (x,)), y) for x, y in batches)
            / total
        )

    H = jacfwd(grad(f))(torch.cat([p.reshape(-1) for p in sel]))
    assert torch.allclose(H, H.T, rtol=0, atol=1e-12 * H.abs().max()), "reference not symmetric"
    return H


def tanh_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(DT)


def bn_cnn():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).to(DT)
    # Non-trivial running statistics so eval and train modes differ.
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    return model


def data(shape, n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT), torch.randint(
        0, classes, (n,), generator=g
    )


def rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = {
    "mlp": (tanh_mlp, (5,)),
    "cnn_bn": (bn_cnn, (1, 6, 6)),
}


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_exact_backends_match_dense(backend, case, bn_mode):
    make, shape = CASES[case]
    model = make()
    x, y = data(shape)
    loss_fn = nn.CrossEntropyLoss()
    names = [n for n, _ in model.named_parameters()]
    H = dense_hessian(model, loss_fn, [(x, y)], names, bn_train=bn_mode == "train")
    op = HessianOperator(model, loss_fn, (x, y), backend=backend, bn_mode=bn_mode, chunk_size=3)
    V = torch.randn(op.shape[0], 7, dtype=DT, generator=torch.Generator().manual_seed(2))
    assert rel(op @ V[:, 0], H @ V[:, 0]) < 1e-10
    assert rel(op @ V, H @ V) < 1e-10  # vmapped, chunked (7 columns in chunks of 3)
    assert op.backend == backend
    assert op.num_hvps == 8


def test_bn_modes_differ():
    model = bn_cnn()
    x, y = data((1, 6, 6))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=DT)
    ev = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), bn_mode="eval") @ v
    tr = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), bn_mode="train") @ v
    assert rel(ev, tr) > 1e-3


@pytest.mark.parametrize("backend", [*EXACT, "finite-difference"])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_model_untouched(backend, bn_mode):
    model = bn_cnn()
    model.train()
    model[2].eval()  # a mixed state that must survive exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    tracks = model[1].track_running_stats
    x, y = data((1, 6, 6))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend, bn_mode=bn_mode)
    op @ torch.randn(op.shape[0], dtype=DT)
    op @ torch.randn(op.shape[0], 3, dtype=DT)
    op.gradient()
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # bit-identical, num_batches_tracked included
    assert [m.training for m in model.modules()] == flags
    assert model[1].track_running_stats == tracks
    assert all(p.grad is None for p in model.parameters())


def test_multibatch_is_true_mean():
    model = tanh_mlp()
    x, y = data((5,), n=11)
    batches = [(x[:3], y[:3]), (x[3:10], y[3:10]), (x[10:], y[10:])]  # unequal sizes
    names = [n for n, _ in model.named_parameters()]
    H_full = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], names)
    v = torch.randn(H_full.shape[0], 4, dtype=DT)
    for backend in EXACT:
        op = HessianOperator(model, nn.CrossEntropyLoss(), batches, backend=backend)
        assert rel(op @ v, H_full @ v) < 1e-10
    # One-shot generators are materialized so repeated products work.
    op = HessianOperator(model, nn.CrossEntropyLoss(), (b for b in batches))
    assert rel(op @ v, H_full @ v) < 1e-10 and rel(op @ v, H_full @ v) < 1e-10
    loss, g = op.gradient()
    ref = nn.CrossEntropyLoss()(model(x), y)
    assert abs(loss - ref.item()) < 1e-12
    gref = torch.autograd.grad(ref, list(model.parameters()))
    assert rel(g, torch.cat([t.reshape(-1) for t in gref])) < 1e-10


def test_dataloader_input():
    model = tanh_mlp()
    x, y = data((5,), n=10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    names = [n for n, _ in model.named_parameters()]
    H = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], names)
    op = HessianOperator(model, nn.CrossEntropyLoss(), loader)
    assert op.backend == "forward-over-reverse"  # auto on a loader
    v = torch.randn(H.shape[0], dtype=DT)
    assert rel(op @ v, H @ v) < 1e-10


@pytest.mark.parametrize("backend", EXACT)
def test_parameter_subset(backend):
    model = tanh_mlp()
    x, y = data((5,))
    names = ["2.weight", "0.bias"]
    H = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], names)
    by_name = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=names, backend=backend)
    by_tensor = HessianOperator(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        params=[model[2].weight, model[0].bias],
        backend=backend,
    )
    assert by_name.shape == (21 + 7, 21 + 7)
    v = torch.randn(28, 3, dtype=DT)
    assert rel(by_name @ v, H @ v) < 1e-10
    assert rel(by_tensor @ v, H @ v) < 1e-10


def test_frozen_parameters_excluded():
    model = tanh_mlp()
    model[0].weight.requires_grad_(False)
    x, y = data((5,))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    assert op.names == ["0.bias", "2.weight", "2.bias"]
    H = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], op.names)
    v = torch.randn(op.shape[0], dtype=DT)
    assert rel(op @ v, H @ v) < 1e-10


def test_closure_loss_with_dict_batch():
    model = tanh_mlp()
    x, y = data((5,))

    def closure(m, batch):
        return nn.functional.cross_entropy(m(batch["image"]), batch["label"])

    names = [n for n, _ in model.named_parameters()]
    H = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], names)
    v = torch.randn(H.shape[0], 2, dtype=DT)
    for backend in EXACT:
        op = HessianOperator(
            model, closure, {"image": x, "label": y}, closure=True, backend=backend
        )
        assert rel(op @ v, H @ v) < 1e-10


def test_cached_graph_invalidated_by_parameter_update():
    model = tanh_mlp()
    x, y = data((5,))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend="double-backward")
    v = torch.randn(op.shape[0], dtype=DT)
    op @ v
    with torch.no_grad():
        model[0].weight.add_(0.5)
    H = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)], op.names)
    assert rel(op @ v, H @ v) < 1e-10


@pytest.mark.parametrize("scheme,order", [("forward", 1), ("central", 2)])
def test_finite_difference_converges_at_expected_order(scheme, order):
    model = tanh_mlp()
    x, y = data((5,))
    exact = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(exact.shape[0], dtype=DT, generator=torch.Generator().manual_seed(3))
    hv = exact @ v
    errs = []
    for eps in (1e-2, 5e-3, 2.5e-3):
        op = HessianOperator(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            backend="finite-difference",
            fd_scheme=scheme,
            fd_eps=eps,
        )
        errs.append(rel(op @ v, hv))
    rates = [errs[i] / errs[i + 1] for i in range(2)]
    for r in rates:  # halving δ divides the error by 2^order
        assert 2**order * 0.8 < r < 2**order * 1.25, (errs, rates)
    default = HessianOperator(
        model, nn.CrossEntropyLoss(), (x, y), backend="finite-difference", fd_scheme=scheme
    )
    assert rel(default @ v, hv) < (1e-6 if scheme == "central" else 1e-5)


def test_auto_reports_backend():
    model = tanh_mlp()
    x, y = data((5,))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    assert op.backend == "double-backward" and op.cache_graph
    op2 = HessianOperator(model, nn.CrossEntropyLoss(), [(x[:6], y[:6]), (x[6:], y[6:])])
    assert op2.backend == "forward-over-reverse" and not op2.cache_graph


def test_dict_helpers_round_trip():
    model = tanh_mlp()
    x, y = data((5,))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.arange(op.shape[0], dtype=DT)
    d = op.vector_to_dict(v)
    assert d["0.weight"].shape == (7, 5)
    assert torch.equal(op.dict_to_vector(d), v)
    assert torch.equal(
        op.parameter_vector(), torch.cat([p.reshape(-1) for p in model.parameters()])
    )


def test_scipy_export_matches():
    model = tanh_mlp()
    x, y = data((5,))
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(op.shape[0], dtype=DT)
    out = op.to_scipy() @ v.numpy()
    assert rel(torch.as_tensor(out), op @ v) < 1e-14


# ------------------------------------------------------------------------------- bad input
def test_nan_loss_is_reported():
    model = tanh_mlp()
    x, y = data((5,))
    x[0, 0] = float("nan")
    for backend in [*EXACT, "finite-difference"]:
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend)
        with pytest.raises(NonFiniteError, match="NaN"):
            op @ torch.ones(op.shape[0], dtype=DT)
    with pytest.raises(NonFiniteError, match="loss"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y)).gradient()


def test_bad_inputs():
    model = tanh_mlp()
    x, y = data((5,))
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, nn.CrossEntropyLoss(), [])
    with pytest.raises(ValueError, match="backend"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend="magic")
    with pytest.raises(ValueError, match="bn_mode"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), bn_mode="running")
    frozen = tanh_mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        HessianOperator(frozen, nn.CrossEntropyLoss(), (x, y))
    with pytest.raises(ValueError, match="not parameters of the model"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=[torch.zeros(3)])
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    with pytest.raises(ValueError, match="shape mismatch"):
        op @ torch.ones(op.shape[0] + 1, dtype=DT)
    with pytest.raises(ValueError, match="dtype mismatch"):
        op @ torch.ones(op.shape[0], dtype=torch.float32)
    bad_shape = HessianOperator(model, nn.CrossEntropyLoss(), (torch.randn(4, 6, dtype=DT), y[:4]))
    with pytest.raises(RuntimeError):
        bad_shape @ torch.ones(op.shape[0], dtype=DT)
