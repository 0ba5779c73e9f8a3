"""Caches of the Hessian operator (issue 11 items 5 and 12): a cached first-order graph or
gradient is never reused after the model changed, however it changed; small API edges."""

from __future__ import annotations

import copy

import pytest
import torch
from zoo import ZOO, dense_hessian, rel_error

from hessian_lr.curvature.hessian import HessianOperator

DT = torch.float64


def _v(n, k=None, seed=0):
    shape = (n,) if k is None else (n, k)
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _mlp_case():
    case = ZOO["ce_unequal_batches"]()
    case.data, case.single_batch = case.data[1], True
    return case


def _through_data(model):  # bypasses the version counter
    with torch.no_grad():
        model[0].weight.data.mul_(1.7)


def _assign_data(model):  # new storage, version of the new tensor
    model[0].weight.data = model[0].weight.detach() * 1.7


def _vector_to_parameters(model):
    vec = torch.nn.utils.parameters_to_vector(model.parameters()) * 1.3
    torch.nn.utils.vector_to_parameters(vec, model.parameters())


def _in_place(model):
    with torch.no_grad():
        model[2].weight.mul_(1.5)


@pytest.mark.parametrize("change", [_through_data, _assign_data, _vector_to_parameters, _in_place])
def test_cached_graph_follows_parameter_changes(change):
    case = _mlp_case()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    assert op.cache_graph
    v = _v(op.shape[0])
    op @ v
    _, g_old = op.gradient()
    change(case.model)
    H, _ = dense_hessian(case)
    assert rel_error(op @ v, H @ v) < 1e-10
    fresh = HessianOperator(case.model, case.loss_fn, case.data)
    assert rel_error(op.gradient()[1], fresh.gradient()[1]) < 1e-14
    assert rel_error(op.gradient()[1], g_old) > 1e-3


def test_cached_graph_follows_buffer_changes():
    """Eval-mode BatchNorm depends on running statistics: a training step changes H."""
    case = ZOO["bn_resnet"]()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    v = _v(op.shape[0])
    op @ v
    case.model.train()
    with torch.no_grad():
        case.model(case.data[0] * 3)  # updates running_mean/var in place
    H, _ = dense_hessian(case)
    assert rel_error(op @ v, H @ v) < 1e-10


def test_cache_survives_when_nothing_changed():
    case = _mlp_case()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    op @ _v(op.shape[0])
    graph = op._graphs[0]
    op @ _v(op.shape[0], seed=1)
    op.gradient()
    assert op._graphs[0] is graph


def test_zero_columns_give_an_empty_result():
    case = _mlp_case()
    for backend in ["forward-over-reverse", "double-backward", "finite-difference"]:
        op = HessianOperator(case.model, case.loss_fn, case.data, backend=backend)
        out = op @ torch.zeros(op.shape[0], 0, dtype=DT)
        assert out.shape == (op.shape[0], 0)


def test_chunks_write_into_one_output():
    """op @ V holds the output plus one chunk: products are computed chunk by chunk."""
    case = ZOO["mse_mean_unequal_batches"]()
    widths = []
    op = HessianOperator(case.model, case.loss_fn, case.data, chunk_size=3)
    op @ _v(op.shape[0])  # the first product also runs the one-time symmetry probe
    inner = op._matmat_batch

    def spy(index, batch, V):
        widths.append(V.shape[1])
        return inner(index, batch, V)

    op._matmat_batch = spy
    V = _v(op.shape[0], 8)
    H, _ = dense_hessian(case)
    assert rel_error(op @ V, H @ V) < 1e-10
    assert widths == [3, 3, 2] * 3  # three batches, chunks of ≤ 3 columns


def test_gradient_at_other_parameters():
    case = _mlp_case()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    theta = op.parameter_vector() + 0.1 * _v(op.shape[0])
    before = [p.detach().clone() for p in case.model.parameters()]
    loss, g = op.gradient_at(theta)
    assert all(torch.equal(p, q) for p, q in zip(case.model.parameters(), before))
    moved = copy.deepcopy(case.model)
    torch.nn.utils.vector_to_parameters(theta, moved.parameters())
    ref_loss, ref_g = HessianOperator(moved, case.loss_fn, case.data).gradient()
    assert loss == pytest.approx(ref_loss, rel=1e-14)
    assert rel_error(g, ref_g) < 1e-14
    with pytest.raises(ValueError, match="shape mismatch"):
        op.gradient_at(theta[:-1])


def test_repr_and_notes():
    case = ZOO["tiny_gpt"]()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    assert "reduction='mean'" in repr(op)
    text = " ".join(op.notes)
    assert "dropout" in text and "math kernel" in text and "tied" in text


def test_a_solver_fingerprints_the_model_on_entry_and_exit_only(monkeypatch):
    """Inside lanczos/SLQ/trace the model is checked twice per call, not before every product."""
    from hessian_lr.curvature import _gradient as hessian_mod
    from hessian_lr.curvature.density import spectral_density
    from hessian_lr.curvature.lanczos import lanczos
    from hessian_lr.curvature.trace import trace_estimate

    case = _mlp_case()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    calls = []
    real = hessian_mod.fingerprint
    monkeypatch.setattr(hessian_mod, "fingerprint", lambda t: calls.append(1) or real(t))
    g = torch.Generator().manual_seed(0)
    for run in (
        lambda: lanczos(op, k=2, max_iter=30, generator=g, progress=False),
        lambda: spectral_density(op, num_steps=20, generator=g, progress=False),
        lambda: trace_estimate(op, 12, generator=g),  # nested: trace_estimate -> xtrace
    ):
        calls.clear()
        before = op.num_matvecs
        run()
        assert op.num_matvecs - before >= 12 and len(calls) <= 3  # entry, exit (+ first key)
    calls.clear()
    for _ in range(5):  # outside a solver every product still checks the model
        op @ _v(op.shape[0])
    assert len(calls) >= 5
    # The result equals the dense Hessian's (the cached graph is the right one).
    H = dense_hessian(case)[0]
    lam = lanczos(op, k=1, tol=1e-10, generator=torch.Generator().manual_seed(1), progress=False)
    assert float(lam.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)


def test_a_model_changed_during_a_solve_is_an_error_not_a_mixed_result():
    from hessian_lr.curvature.lanczos import lanczos

    case = _mlp_case()
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    inner = op._matmat_batch
    count = [0]

    def meddling(*args, **kwargs):  # another thread "trains" the model mid-solve
        count[0] += 1
        if count[0] == 3:
            _through_data(case.model)  # .data: autograd's version check does not see it
        return inner(*args, **kwargs)

    op._matmat_batch = meddling
    with pytest.raises(RuntimeError, match="changed while a solver"):
        lanczos(op, k=1, max_iter=10, generator=torch.Generator().manual_seed(0), progress=False)
    op._matmat_batch = inner
    H = dense_hessian(case)[0]  # after the error the next solve starts from the changed model
    lam = lanczos(op, k=1, tol=1e-10, generator=torch.Generator().manual_seed(1), progress=False)
    assert float(lam.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
