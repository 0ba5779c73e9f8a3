"""Without an initialized process group everything is local (fast tests, no process spawn)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_lr.curvature.distributed import resolve_process_group, unwrap_ddp


def test_process_group_conventions():
    assert resolve_process_group() is None
    assert resolve_process_group("auto") is None
    assert resolve_process_group(False) is None
    with pytest.raises(ValueError, match="not initialized"):
        resolve_process_group(object())
    with pytest.raises(ValueError, match="process_group must be"):
        resolve_process_group("world")
    m = nn.Linear(2, 2)
    assert unwrap_ddp(m) is m


def _range_test(**kw):
    from hessian_lr.range_test import lr_range_test

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    data = [
        (
            torch.randn(6, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 2, (6,), generator=g),
        )
        for _ in range(3)
    ]
    kw = {"val_data": data[:1], **kw}
    return lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(), start_lr=1e-3,
                         end_lr=1.0, num_steps=6, curvature_check=False, **kw)  # fmt: skip


def test_range_test_local_paths_agree():
    base, local = _range_test(), _range_test(process_group=False)
    assert base.losses == local.losses and base.val_losses == local.val_losses
    assert "world_size" not in base.config
    with pytest.raises(ValueError, match="not initialized"):
        _range_test(process_group=object())


def test_range_test_still_rejects_empty_held_out_data_without_a_group():
    with pytest.raises(ValueError, match="val_data is empty"):
        _range_test(val_data=[])


def test_estimator_without_group_writes_every_record(tmp_path):
    from hessian_lr.lr import CurvatureOptions
    from hessian_lr.lr.estimator import LREstimator

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "r.jsonl"
    est = LREstimator(model, methods=("quadratic",), every=1, loss_fn=nn.CrossEntropyLoss(),
                      optimizer=opt, record_path=path,
                      curvature=CurvatureOptions(process_group=False))  # fmt: skip
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        est.step((x, y))
    assert len(path.read_text().splitlines()) == 2
    assert est.curvature.process_group is False and est.process_group is False


def test_reducer_packs_on_the_backends_device():
    from hessian_lr.curvature.distributed import Reducer

    red = Reducer.__new__(Reducer)  # no group needed to pick the device
    cpu = torch.device("cpu")
    for backend in ("gloo", "cpu:gloo,cuda:nccl"):
        red.backend = backend
        assert red._device([]) == cpu and red._device([torch.ones(2)]) == cpu
