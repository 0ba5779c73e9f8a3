"""The operator's data loop: the objective over several batches (issue 10 items 2-3), the
fixed-matrix check, and randomness (issue 11 item 7). Each test fails on the operator before
the restructuring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo import IGNORE, ZOO, dense_hessian, rel_error

from hessian_lr.curvature.hessian import DataChangedError, HessianOperator
from hessian_lr.curvature.lanczos import lanczos
from hessian_lr.rng import get_rng_state

DT = torch.float64
EXACT = ["forward-over-reverse", "double-backward"]


def _v(n, k=None, seed=0):
    shape = (n,) if k is None else (n, k)
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _dense_of_batches(case, batches, weights):
    """Σ w_b H_b / Σ w_b from single-batch dense references."""
    total = sum(weights)
    out = 0
    for b, w in zip(batches, weights):
        case.data, case.single_batch = b, True
        out = out + w * dense_hessian(case)[0]
    return out / total


# ------------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("backend", EXACT)
def test_sum_reduction_over_batches_is_the_summed_objective(backend):
    case = ZOO["mse_sum_unequal_batches"]()
    H, _ = dense_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data, backend=backend)
    assert op.reduction == "sum"
    V = _v(op.shape[0], 3)
    assert rel_error(op @ V, H @ V) < 1e-10
    loss, g = op.gradient()
    ref = sum(case.loss_fn(case.model(x), y) for x, y in case.data)
    assert loss == pytest.approx(float(ref.detach()), rel=1e-12)


def test_closure_over_batches_must_say_its_reduction():
    case = ZOO["closure_sum_batches"]()
    with pytest.raises(ValueError, match="reduction='mean'.*reduction='sum'"):
        HessianOperator(case.model, case.loss_fn, case.data, closure=True)
    op = HessianOperator(case.model, case.loss_fn, case.data, closure=True, reduction="sum")
    H, _ = dense_hessian(case)
    v = _v(op.shape[0])
    assert rel_error(op @ v, H @ v) < 1e-10
    # A single batch needs no statement (nothing to combine).
    HessianOperator(case.model, case.loss_fn, case.data[0], closure=True)


def test_reduction_conflicts_and_none_are_refused():
    case = ZOO["mse_sum_unequal_batches"]()
    with pytest.raises(ValueError, match="contradicts"):
        HessianOperator(case.model, nn.MSELoss(reduction="sum"), case.data, reduction="mean")
    with pytest.raises(ValueError, match="reduction='none'"):
        HessianOperator(case.model, nn.MSELoss(reduction="none"), case.data)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        HessianOperator(case.model, nn.MSELoss(), case.data, reduction="avg")


# ------------------------------------------------------------------------------- token weights
@pytest.mark.parametrize("backend", EXACT)
def test_token_level_mean_over_sequences_of_different_lengths(backend):
    case = ZOO["sequence_ignore_index"]()
    H, _ = dense_hessian(case)  # Σ_b (Σ_tokens loss) / Σ_b (counted tokens)
    op = HessianOperator(case.model, case.loss_fn, case.data, backend=backend)
    V = _v(op.shape[0], 2)
    assert rel_error(op @ V, H @ V) < 1e-10
    loss, _ = op.gradient()
    flat_logits = torch.cat([case.model(x).transpose(1, 2).reshape(-1, 4) for x, _ in case.data])
    flat_t = torch.cat([t.reshape(-1) for _, t in case.data])
    ref = F.cross_entropy(flat_logits, flat_t).detach()
    assert loss == pytest.approx(float(ref), rel=1e-12)


def test_class_weights_and_probability_targets_are_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(9, 4, dtype=DT)
    y = torch.tensor([0, 1, 2, 2, IGNORE, 1, 0, 2, 2])
    w = torch.tensor([0.5, 2.0, 1.0], dtype=DT)
    loss_fn = nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE)
    whole = HessianOperator(model, loss_fn, (x, y))
    split = HessianOperator(model, loss_fn, [(x[:2], y[:2]), (x[2:], y[2:])])
    V = _v(whole.shape[0], 2)
    assert rel_error(split @ V, whole @ V) < 1e-12
    p = torch.softmax(torch.randn(9, 3, dtype=DT), 1)
    soft = nn.CrossEntropyLoss()
    whole = HessianOperator(model, soft, (x, p))
    split = HessianOperator(model, soft, [(x[:4], p[:4]), (x[4:], p[4:])])
    assert rel_error(split @ V, whole @ V) < 1e-12


def test_batch_size_fn_overrides_the_count():
    case = ZOO["sequence_ignore_index"]()
    batches = list(case.data)
    op = HessianOperator(case.model, case.loss_fn, batches, batch_size_fn=lambda b: 1.0)
    ref = _dense_of_batches(ZOO["sequence_ignore_index"](), batches, [1.0, 1.0])
    v = _v(op.shape[0])
    assert rel_error(op @ v, ref @ v) < 1e-10


def test_batch_with_nothing_to_count_is_skipped():
    case = ZOO["sequence_ignore_index"]()
    idx, tgt = case.data[0]
    empty = (idx, torch.full_like(tgt, IGNORE))
    op = HessianOperator(case.model, case.loss_fn, [empty, *case.data])
    H, _ = dense_hessian(case)
    v = _v(op.shape[0])
    assert rel_error(op @ v, H @ v) < 1e-10  # no NaN from the all-ignored batch
    with pytest.raises(ValueError, match="anything to count"):
        HessianOperator(case.model, case.loss_fn, [empty, empty]) @ v


# ------------------------------------------------------------------------------- fixed data
def test_changing_data_check_can_be_turned_off_and_queried():
    case = ZOO["loader_shuffle_drop_last"]()
    op = HessianOperator(case.model, case.loss_fn, case.data, check_data=False)
    op @ _v(op.shape[0])  # no error: the caller accepted a changing operator
    assert op.is_deterministic is None
    assert op.check_deterministic() is False and op.is_deterministic is False
    fixed = HessianOperator(case.model, case.loss_fn, list(case.data))
    assert fixed.is_deterministic is True and fixed.check_deterministic() is True


def test_lanczos_cannot_converge_on_a_changing_loader():
    case = ZOO["loader_shuffle_bn_train"]()
    op = HessianOperator(case.model, case.loss_fn, case.data, bn_mode="train")
    with pytest.raises(DataChangedError, match="BatchNorm"):
        lanczos(op, k=1, generator=torch.Generator().manual_seed(0))


def test_random_closure_on_a_loader_is_detected():
    """Randomness that no RNG restore can undo (a private numpy generator in the loss)."""
    case = ZOO["loader_fixed_order"]()
    rng = np.random.default_rng(0)

    def noisy(model, batch):
        x, y = batch
        scale = float(rng.uniform(0.5, 1.5))
        return F.cross_entropy(model(x) * scale, y)

    op = HessianOperator(case.model, noisy, case.data, closure=True, reduction="mean")
    with pytest.raises(DataChangedError):
        op @ _v(op.shape[0])


# ------------------------------------------------------------------------------- randomness
@pytest.mark.parametrize("backend", [*EXACT, "finite-difference"])
def test_loader_passes_leave_rng_states_as_found(backend):
    case = ZOO["loader_shuffle_full_epoch"]()
    loader = case.data
    torch.manual_seed(123)
    before = get_rng_state()
    gen_before = loader.generator.get_state()
    op = HessianOperator(case.model, case.loss_fn, loader, backend=backend)
    op @ _v(op.shape[0])
    op @ _v(op.shape[0], 2)
    op.gradient()
    op.check_deterministic()
    after = get_rng_state()
    assert torch.equal(after["torch"], before["torch"])
    assert after["python"] == before["python"]
    assert torch.equal(loader.generator.get_state(), gen_before)


def test_loader_without_generator_leaves_global_rng():
    case = ZOO["loader_fixed_order"]()
    x, y = case.data.dataset.tensors
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), 4, shuffle=True)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    op = HessianOperator(case.model, case.loss_fn, loader)
    op @ _v(op.shape[0])
    assert torch.equal(torch.rand(3), expected)
