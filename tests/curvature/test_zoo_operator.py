"""Every back end on every zoo model against the dense float64 reference (tests/zoo.py).

The reference is jacfwd(grad(f)) over functional_call of the case's own objective (mean over
counted elements or sum, tied weights tied, BatchNorm in the stated mode), built independently of
the operator. Exact back ends must agree to 1e-10 relative in float64, finite differences to 1e-6
on smooth models; low-precision models run in float32 and agree to float32 accuracy.
"""

from __future__ import annotations

import functools

import pytest
import torch
from zoo import (
    CHANGING_CASES,
    EXACT_CASES,
    LOW_PRECISION_CASES,
    ZOO,
    dense_gradient,
    dense_hessian,
    rel_error,
)

from hessian_lr.curvature.hessian import DataChangedError, HessianOperator

EXACT = ["forward-over-reverse", "double-backward"]
ALL = [*EXACT, "finite-difference"]
HEAVY = {"tiny_gpt", "bn_resnet", "tiny_gpt_bfloat16"}  # dense references of ~500 parameters
FD_FAST = {"mse_sum_unequal_batches", "sequence_ignore_index", "dict_batch_closure", "mlp_float16"}


@functools.cache
def reference(name: str, bn_mode: str):
    case = ZOO[name]()
    H, names = dense_hessian(case, bn_mode)
    loss, g = dense_gradient(case, bn_mode)
    return H, names, loss, g


def _params(name, backends):
    out = []
    for case_name in name:
        for bn in ZOO[case_name]().bn_modes:
            for backend in backends:
                heavy = case_name in HEAVY and backend != "double-backward"
                heavy |= backend == "finite-difference" and case_name not in FD_FAST
                marks = [pytest.mark.slow] if heavy else []
                out.append(pytest.param(case_name, bn, backend, marks=marks))
    return out


def _operator(case, bn_mode, backend, **kw):
    return HessianOperator(
        case.model,
        case.loss_fn,
        case.data,
        backend=backend,
        bn_mode=bn_mode,
        chunk_size=2,
        **case.operator_kwargs(),
        **kw,
    )


@pytest.mark.parametrize("name, bn_mode, backend", _params(EXACT_CASES, ALL))
def test_zoo_matches_dense_reference(name, bn_mode, backend):
    case = ZOO[name]()
    if backend == "finite-difference" and not case.smooth:
        pytest.skip("finite differences are not exact across ReLU kinks")
    H, names, ref_loss, ref_grad = reference(name, bn_mode)
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    flags = [m.training for m in case.model.modules()]
    op = _operator(case, bn_mode, backend)
    assert op.names == names and op.shape == H.shape
    V = torch.randn(op.shape[0], 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tol = 1e-6 if backend == "finite-difference" else 1e-10
    assert rel_error(op @ V, H @ V) < tol  # chunks of 2 columns
    assert rel_error(op @ V[:, 0], H @ V[:, 0]) < tol
    loss, g = op.gradient()
    assert rel_error(g, ref_grad) < 1e-12
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert op.backend == backend
    # The caller's model is untouched: values, buffers, train/eval flags, .grad.
    for k, v in case.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [m.training for m in case.model.modules()] == flags
    assert all(p.grad is None for p in case.model.parameters())


@pytest.mark.parametrize("name, bn_mode, backend", _params(LOW_PRECISION_CASES, ALL))
def test_low_precision_parameters_compute_in_float32(name, bn_mode, backend):
    case = ZOO[name]()
    low = next(case.model.parameters()).dtype
    snapshot = [p.detach().clone() for p in case.model.parameters()]
    H, _, _, ref_grad = reference(name, bn_mode)
    op = _operator(case, bn_mode, backend)
    assert op.dtype == torch.float32 and any("upcast" in n for n in op.notes)
    V = torch.randn(op.shape[0], 3, generator=torch.Generator().manual_seed(2))
    tol = 1e-3 if backend == "finite-difference" else 1e-5
    assert rel_error((op @ V).double(), H @ V.double()) < tol
    assert rel_error(op.gradient()[1].double(), ref_grad) < 1e-5
    assert all(p.dtype == low for p in case.model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(case.model.parameters(), snapshot))


@pytest.mark.parametrize("name", CHANGING_CASES)
@pytest.mark.parametrize("backend", ALL)
def test_changing_data_is_refused(name, backend):
    case = ZOO[name]()
    op = _operator(case, case.bn_modes[0], backend)
    assert op.is_deterministic is None
    v = torch.randn(op.shape[0], dtype=torch.float64)
    with pytest.raises(DataChangedError, match="shuffle=True and drop_last=True"):
        op @ v
    assert op.is_deterministic is False
    with pytest.raises(DataChangedError):  # and on every later product
        op @ v


def test_fixed_matrix_from_a_shuffling_loader_is_accepted():
    """Shuffling without drop_last changes the batches but not the mean over the epoch."""
    case = ZOO["loader_shuffle_full_epoch"]()
    op = _operator(case, "eval", "forward-over-reverse")
    assert op.is_deterministic is None
    H, *_ = reference("loader_shuffle_full_epoch", "eval")
    v = torch.randn(op.shape[0], dtype=torch.float64)
    assert rel_error(op @ v, H @ v) < 1e-10
    assert op.is_deterministic is True
