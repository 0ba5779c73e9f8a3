"""Tests for hessian_lr.training.models: parameter counts by hand (and as published), shapes,
option-A shortcuts, BatchNorm momentum, init scale, and torch.func compatibility."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vmap

from hessian_lr.training.models import (
    CAFFE_BN_MOMENTUM,
    MLP,
    CifarResNet,
    LeNet5,
    build_model,
    lenet_caffe,
    num_parameters,
    resnet20,
    resnet56,
    resnet110,
)


def resnet_option_a_count(n: int, classes: int = 10) -> int:
    """Conv weights (no bias) + 2 per BN channel + the linear layer, counted layer by layer."""
    count = 3 * 16 * 9 + 2 * 16  # stem
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            count += in_planes * planes * 9 + planes * planes * 9 + 4 * planes
            in_planes = planes
    return count + 64 * classes + classes


def test_resnet_parameter_counts():
    # He et al. 2016, Table 6: 0.27M, 0.85M, 1.7M; the exact option-A numbers
    assert num_parameters(resnet20()) == resnet_option_a_count(3) == 269_722
    assert num_parameters(resnet56()) == resnet_option_a_count(9) == 853_018
    assert num_parameters(resnet110()) == resnet_option_a_count(18) == 1_727_962
    # option B adds 1x1 projections + BN at the two stage transitions: 16*32+64 + 32*64+128
    assert num_parameters(resnet20(shortcut="B")) == 269_722 + 576 + 2176 == 272_474
    assert num_parameters(resnet56(shortcut="B")) == 855_770
    assert num_parameters(resnet20(100)) == 269_722 + 64 * 90 + 90  # CIFAR-100 head


def test_lenet_and_mlp_parameter_counts():
    # conv1 1*6*25+6, conv2 6*16*25+16, fc 400*120+120, 120*84+84, 84*10+10
    classic = 156 + 2416 + 48120 + 10164 + 850
    assert num_parameters(LeNet5(1, 10, input_size=28)) == classic == 61_706
    assert num_parameters(LeNet5(1, 10, input_size=32)) == classic
    assert num_parameters(LeNet5(3, 10, input_size=32)) == classic + 2 * 6 * 25
    # 8x8 digits: 16*2*2 = 64 features into fc120
    assert num_parameters(LeNet5(1, 10, input_size=8)) == classic - 400 * 120 + 64 * 120
    # Caffe LeNet: 20*25+20, 20*50*25+50, 800*500+500, 500*10+10
    assert num_parameters(lenet_caffe()) == 520 + 25050 + 400500 + 5010 == 431_080
    assert num_parameters(MLP(784, (100,), 10)) == 784 * 100 + 100 + 100 * 10 + 10


@pytest.mark.parametrize(
    "name, shape, classes",
    [
        ("mlp", (1, 8, 8), 10),
        ("logreg", (1, 28, 28), 10),
        ("lenet5", (1, 8, 8), 10),
        ("lenet5", (1, 28, 28), 10),
        ("LeNet5", (3, 32, 32), 10),
        ("lenet-caffe", (1, 28, 28), 10),
        ("lenet_caffe", (1, 8, 8), 10),
        ("resnet20", (3, 32, 32), 10),
        ("resnet-8", (1, 8, 8), 100),
    ],
)
def test_forward_shapes(name, shape, classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, in_channels=shape[0], input_size=shape[1])
    x = torch.randn(3, *shape)
    x_copy = x.clone()
    out = model(x)
    assert out.shape == (3, classes) and torch.isfinite(out).all()
    assert torch.equal(x, x_copy)


def test_build_model_errors_and_keywords():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg16", num_classes=10, in_channels=3, input_size=32)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet21", num_classes=10, in_channels=3, input_size=32)
    with pytest.raises(ValueError, match="activation"):
        MLP(4, (3,), 2, activation="gelu")
    with pytest.raises(ValueError, match="no features"):
        LeNet5(1, 10, input_size=8, padding=(0, 0))
    m = build_model("mlp", num_classes=3, in_channels=1, input_size=4, hidden=(7, 5))
    assert [layer.out_features for layer in m.hidden] == [7, 5]
    r = build_model("resnet20", num_classes=10, in_channels=3, input_size=32, width=8)
    assert r.fc.in_features == 32


def test_option_a_shortcut_is_zero_padded_subsample():
    block = resnet20().blocks[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    assert block.projection is None and block.pad_channels == 8
    x = torch.randn(2, 16, 32, 32)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 16, 16)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert torch.all(s[:, :8] == 0) and torch.all(s[:, 24:] == 0)
    assert resnet20().blocks[1].shortcut(x) is x  # identity inside a stage


def test_bn_momentum_is_the_new_statistic_weight():
    bns = [m for m in resnet20(bn_momentum=CAFFE_BN_MOMENTUM).modules()]
    bns = [m for m in bns if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 19 and all(m.momentum == 0.05 for m in bns)
    model = CifarResNet(8, bn_momentum=CAFFE_BN_MOMENTUM, width=4).train()
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        pre = model.conv(x)
        model(x)
    # running_mean starts at 0: after one step it is 0.05 * batch mean (Caffe fraction 0.95)
    torch.testing.assert_close(model.bn.running_mean, 0.05 * pre.mean(dim=(0, 2, 3)))


def test_kaiming_init_scale():
    torch.manual_seed(0)
    conv = resnet56().blocks[-1].conv2  # 64 * 64 * 9 weights, fan-in 576
    std = conv.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 576), rel=0.03)
    bn = resnet56().blocks[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def _double_backward_hvp(model, params, x, y, v):
    loss = F.cross_entropy(functional_call(model, params, (x,)), y)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    dot = sum((gi * v[k]).sum() for gi, k in zip(g, params))
    return dict(zip(params, torch.autograd.grad(dot, list(params.values()))))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: MLP(64, (16,), 10, activation="tanh"), (1, 8, 8)),
        (lambda: MLP(64, (16, 8), 10, activation="relu"), (1, 8, 8)),
        (lambda: LeNet5(1, 10, input_size=8), (1, 8, 8)),
        (lambda: lenet_caffe(1, 10, input_size=8), (1, 8, 8)),
        (lambda: CifarResNet(8, 10, width=4).eval(), (3, 8, 8)),
    ],
)
def test_forward_over_reverse_hvp_matches_double_backward(make, shape):
    torch.manual_seed(0)
    model = make().double()
    x = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.randint(0, 10, (5,))
    params = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    v = {k: torch.randn_like(p) for k, p in params.items()}

    def loss(p):
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y)

    _, hv = jvp(grad(loss), ({k: p.detach() for k, p in params.items()},), (v,))
    ref = _double_backward_hvp(model, params, x, y, v)
    for k in params:
        torch.testing.assert_close(hv[k], ref[k], rtol=1e-9, atol=1e-10)
    assert sum((hv[k] * v[k]).sum() for k in v).abs() > 0


def test_vmap_per_example_matches_batch():
    torch.manual_seed(0)
    model = CifarResNet(8, 10, width=4).eval()
    x = torch.randn(4, 3, 8, 8)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def one(xi):
        return functional_call(model, (params, buffers), (xi[None],))[0]

    torch.testing.assert_close(vmap(one)(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lenet5_starts_at_ln_c(seed):
    """Loss at initialisation ≈ ln C (issue 13: it was 3.4-5.1 with a Xavier output layer)."""
    import math

    torch.manual_seed(seed)
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=28)
    x = torch.randn(512, 1, 28, 28)
    y = torch.randint(0, 10, (512,))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y)
    assert abs(float(loss) - math.log(10)) < 0.15  # random labels: ln C + s.d.(logits)²/2
