"""GPU paths of the schedules room (skipped without CUDA): float16 autocast + GradScaler range
test with a bit-identical restore, the cross-check on CUDA equal to the CPU's, ScheduleLR on a
capturable tensor LR."""

import math

import pytest
import torch
from torch import nn

from hessian_lr.range_test import lr_range_test
from hessian_lr.schedules import Cyclic, ScheduleLR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _setup(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.GELU(), nn.Linear(64, 5))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(64, 32, generator=g), torch.randint(0, 5, (64,), generator=g))
            for _ in range(6)]  # fmt: skip
    return model.to(device), data


def test_float16_autocast_grad_scaler_on_cuda_restores_everything():
    model, data = _setup("cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    before = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    scale0 = scaler.state_dict()
    res = lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(), start_lr=1e-4,
                        end_lr=10.0, num_steps=30, ramp="exp", amp_dtype=torch.float16,
                        grad_scaler=scaler, val_data=data[0])  # fmt: skip
    assert res.config["amp_dtype"] == "torch.float16" and res.config["grad_scaler"]
    assert math.isfinite(res.losses[0]) and res.val_losses
    assert all(
        math.isfinite(g) for i, g in enumerate(res.grad_norms) if i not in res.skipped_updates
    )
    after = [t.detach() for t in (*model.parameters(), *model.buffers())]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert scaler.state_dict() == scale0
    assert res.curvature is not None and res.curvature.error is None, res.curvature.error


def test_crosscheck_cuda_equals_cpu():
    lams = {}
    for dev in ("cpu", "cuda"):
        model, data = _setup(dev)
        model = model.double()
        data = [(x.double(), y) for x, y in data]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        res = lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(), end_lr=0.2,
                            num_steps=2)  # fmt: skip
        lams[dev] = (res.curvature.lambda_max, res.curvature.g_hg)
    assert lams["cuda"] == pytest.approx(lams["cpu"], rel=1e-8)


def test_schedule_lr_on_capturable_tensor_lr():
    p = nn.Parameter(torch.zeros(4, device="cuda"))
    opt = torch.optim.Adam([p], lr=torch.tensor(0.01, device="cuda"), capturable=True)
    lr_t = opt.param_groups[0]["lr"]
    sched = ScheduleLR(opt, Cyclic(base_lr=0.01, max_lr=0.05, step_size_up=2))
    seen = []
    for _ in range(5):
        seen.append(round(float(opt.param_groups[0]["lr"]), 6))
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr_t
    assert seen == [0.01, 0.03, 0.05, 0.03, 0.01]


def test_device_cuda_without_index_matches_a_model_on_cuda0():
    """device="cuda" (what TrainConfig and the experiments pass) names the current CUDA device."""
    model, data = _setup("cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(model, opt, data, loss_fn=nn.CrossEntropyLoss(), num_steps=5,
                        device="cuda")  # fmt: skip
    assert len(res.losses) == 5
