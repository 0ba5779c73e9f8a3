"""GPU paths (skipped without CUDA): the same numbers on the accelerator as on the CPU."""

import pytest
import torch
from torch import nn

from hessian_lr.curvature.hessian import HessianOperator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DT = torch.float64


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).to(DT)


@pytest.mark.parametrize(
    "backend", ["forward-over-reverse", "double-backward", "finite-difference"]
)
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_hvp_cuda_matches_cpu(backend, bn_mode):
    model = _cnn()
    x = torch.randn(16, 1, 8, 8, dtype=DT)
    y = torch.randint(0, 5, (16,))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 6, dtype=DT)
    cpu = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend, bn_mode=bn_mode)
    ref = cpu @ V
    model_gpu = model.cuda()
    before = {k: v.clone() for k, v in model_gpu.state_dict().items()}
    gpu = HessianOperator(
        model_gpu, nn.CrossEntropyLoss(), (x, y), backend=backend, bn_mode=bn_mode, chunk_size=4
    )
    assert gpu.device.type == "cuda"
    out = (gpu @ V.cuda()).cpu()
    tol = 1e-6 if backend == "finite-difference" else 1e-10
    assert float((out - ref).norm() / ref.norm()) < tol
    for k, v in model_gpu.state_dict().items():
        assert torch.equal(v, before[k])


def test_lanczos_cuda_matches_eigh():
    from hessian_lr.curvature.lanczos import lanczos
    from hessian_lr.curvature.linop import DenseOperator

    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, dtype=DT, generator=g))
    lam = torch.linspace(-1, 10, 300, dtype=DT)
    A = (Q * lam) @ Q.T
    res = lanczos(DenseOperator(A.cuda()), k=3, which="LA", tol=1e-10)
    exact = torch.linalg.eigvalsh(A)[-3:].flip(0)
    assert torch.allclose(res.eigenvalues.cpu(), exact, rtol=1e-8)


def test_train_on_cuda(tmp_path):
    from hessian_lr.training.runner import TrainConfig, train

    cfg = TrainConfig(
        dataset="digits",
        model="lenet5",
        steps=30,
        batch_size=64,
        eval_every=15,
        schedule={
            "type": "OneCycle",
            "base_lr": 0.02,
            "max_lr": 0.2,
            "step_size": 12,
            "total_steps": 30,
        },
        estimator_methods=("secant", "quadratic", "sharpness"),
        estimator_every=10,
        probe_every=15,
        trace_probes=4,
        device="cuda",
    )
    res = train(cfg, root=tmp_path, experiment="gpu", run="r", progress=False)
    assert res.status == "finished" and res.final_test_accuracy > 0.1
