"""Models of the studies: an MLP, LeNet-5 and the CIFAR ResNets of He et al. (2016).

- ``CifarResNet``: He, Zhang, Ren & Sun, *Deep Residual Learning for Image Recognition* (CVPR
  2016), §4.2: a 3×3 conv with 16 filters, then three stages of n basic blocks (two 3×3 convs
  each) with 16, 32, 64 filters on 32×32, 16×16, 8×8 maps, global average pooling and a linear
  layer: depth 6n+2 (ResNet-20/56/110 for n = 3/9/18). Shortcuts are option A (identity;
  where the shape changes, a stride-2 subsample padded with zero channels: no parameters), as
  in the paper's CIFAR experiments; option B (1×1 projection + BN) is available. The
  super-convergence experiments (Smith & Topin 2017) train ResNet-56 with Caffe's BatchNorm
  moving-average fraction 0.95, which is torch ``momentum=0.05`` (torch's momentum is the
  weight of the *new* batch statistic: ``running = (1 - m) running + m batch``).
- ``LeNet5``: LeCun et al. (1998): conv5-pool-conv5-pool-fc120-fc84-fc10, adapting its padding
  to the input size; ``lenet_caffe`` is the Caffe ``examples/mnist`` variant (20/50 filters,
  fc500) that Smith & Topin use for their MNIST runs.
- ``MLP``: fully connected, flattening its input.

Initialization follows He et al. (2015, *Delving Deep into Rectifiers*): convolutions (and ReLU
layers of the MLP) get ``kaiming_normal_`` (fan-in, the Caffe "msra" filler), BatchNorm
weight 1 and bias 0, biases 0. Every ReLU is out-of-place and no module writes into its input,
so the models work under ``torch.func.functional_call``, ``vmap``, ``grad`` and ``jvp``
(BatchNorm in eval mode for ``vmap``; see ``hessian_lr.curvature.hessian``'s ``bn_mode``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "LeNet5",
    "lenet_caffe",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "build_model",
    "MODEL_NAMES",
    "num_parameters",
    "CAFFE_BN_MOMENTUM",
]

#: torch BatchNorm momentum equal to Caffe's ``moving_average_fraction: 0.95``.
CAFFE_BN_MOMENTUM = 0.05

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


def num_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _init_layer(module: nn.Module, activation: str) -> None:
    """He (fan-in) init for ReLU layers, Glorot (tanh gain) for tanh layers; zero biases."""
    if activation == "relu":
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("tanh"))
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class MLP(nn.Module):
    """Fully connected classifier: flatten, [Linear, activation] per hidden layer, Linear.

    Args:
        in_features: size of the flattened input (C·H·W; 64 for digits, 784 for MNIST).
        hidden: widths of the hidden layers (``()`` gives multinomial logistic regression).
        num_classes: outputs (logits).
        activation: ``"relu"`` (He init) or ``"tanh"`` (Glorot init with tanh gain).

    Shapes: input (B, *) with prod(*) = in_features -> logits (B, num_classes).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (100,),
        num_classes: int = 10,
        *,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"sizes must be positive: in_features={in_features}, hidden={tuple(hidden)}, "
                f"num_classes={num_classes}"
            )
        self.act_name = activation
        self.act = _activation(activation)
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], num_classes)
        for layer in self.hidden:
            _init_layer(layer, activation)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)


class LeNet5(nn.Module):
    """LeNet-5: conv5(6) - pool2 - conv5(16) - pool2 - fc120 - fc84 - fc(num_classes).

    Padding adapts to the input size (``padding="auto"``), keeping the classic layer stack:

    - 32×32: no padding (LeCun et al. 1998): 32 → 28 → 14 → 10 → 5, 16·5·5 = 400 features;
    - 28×28 (MNIST): first conv padded by 2 (the usual MNIST LeNet-5): same 400 features;
    - smaller inputs, e.g. 8×8 digits: both convs "same"-padded (2): 8 → 8 → 4 → 4 → 2,
      16·2·2 = 64 features. In general the second conv is padded when its input is under 10.

    ReLU and max pooling by default (``activation="tanh"``, ``pool="avg"`` give the 1998 flavour).

    Args:
        in_channels: input channels (1 for MNIST/digits, 3 for CIFAR).
        num_classes: outputs.
        input_size: input height = width.
        channels: filters of the two convs.
        hidden: widths of the fully connected layers before the output.
        activation: ``"relu"`` or ``"tanh"``.
        pool: ``"max"`` or ``"avg"``.
        padding: ``"auto"`` or an explicit (first conv, second conv) pair.
        conv_activation: apply the activation after each conv (before pooling); Caffe's LeNet
            does not.

    Shapes: (B, in_channels, input_size, input_size) -> (B, num_classes).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        input_size: int = 28,
        channels: tuple[int, int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        activation: str = "relu",
        pool: str = "max",
        padding: str | tuple[int, int] = "auto",
        conv_activation: bool = True,
    ) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if padding == "auto":
            p1 = 0 if input_size >= 32 else 2
            s1 = (input_size + 2 * p1 - 4) // 2
            p2 = 0 if s1 >= 10 else 2
        else:
            p1, p2 = padding
        s1 = (input_size + 2 * p1 - 4) // 2
        s2 = (s1 + 2 * p2 - 4) // 2
        if s1 < 1 or s2 < 1:
            raise ValueError(
                f"input_size {input_size} with padding ({p1}, {p2}) leaves no features "
                f"(maps {s1}, {s2}); use padding='auto'"
            )
        self.input_size = input_size
        self.padding = (p1, p2)
        self.act_name = activation
        self.act = _activation(activation)
        self.conv_activation = conv_activation
        self.pool = F.max_pool2d if pool == "max" else F.avg_pool2d
        self.conv1 = nn.Conv2d(in_channels, channels[0], 5, padding=p1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, padding=p2)
        widths = [channels[1] * s2 * s2, *hidden]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], num_classes)
        for layer in (self.conv1, self.conv2, *self.fc):
            _init_layer(layer, activation)
        # A small output layer: logits ≈ 0 at init, so the loss starts at ln C. He-initialised
        # hidden layers with a Xavier output gave logits of s.d. 2-3 and a loss of 3.4-5.1 on
        # Fashion-MNIST (ln 10 = 2.30), i.e. λ_max ≈ 300 at init and unstable LRs above 0.01.
        nn.init.xavier_uniform_(self.out.weight, gain=0.1)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for conv in (self.conv1, self.conv2):
            x = conv(x)
            x = self.pool(self.act(x) if self.conv_activation else x, 2)
        x = x.flatten(1)
        for layer in self.fc:
            x = self.act(layer(x))
        return self.out(x)


def lenet_caffe(
    in_channels: int = 1, num_classes: int = 10, *, input_size: int = 28, **kw
) -> LeNet5:
    """Caffe's MNIST LeNet (``examples/mnist/lenet_train_test.prototxt``), used by Smith & Topin.

    conv5(20) - maxpool2 - conv5(50) - maxpool2 - fc500 - ReLU - fc(num_classes): no padding on
    28×28 ("auto" padding on smaller inputs) and no activation after the convs, as in Caffe.
    431,080 parameters on 28×28. Other keywords go to ``LeNet5``.
    """
    options = dict(
        channels=(20, 50),
        hidden=(500,),
        padding=(0, 0) if input_size >= 28 else "auto",
        conv_activation=False,
    )
    options.update(kw)
    return LeNet5(in_channels, num_classes, input_size=input_size, **options)


class _BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a shortcut: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + s(x))``."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, *, bn_momentum: float, shortcut: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.stride = stride
        self.pad_channels = 0
        self.projection: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                if planes < in_planes or (planes - in_planes) % 2:
                    raise ValueError(f"option-A shortcut cannot map {in_planes} to {planes}")
                self.pad_channels = (planes - in_planes) // 2
            else:
                self.projection = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes, momentum=bn_momentum),
                )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, self.pad_channels, self.pad_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32×32 inputs, depth 6n+2 (He et al. 2016, §4.2).

    Parameter counts for 10 classes, option A: ResNet-20 269,722 (the paper's "0.27M"),
    ResNet-56 853,018 ("0.85M"), ResNet-110 1,727,962 ("1.7M"); option B adds the projection
    shortcuts (ResNet-20 272,474, ResNet-56 855,770).

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        num_classes: outputs.
        bn_momentum: torch BatchNorm momentum (0.1 torch default; ``CAFFE_BN_MOMENTUM`` = 0.05
            for the paper's Caffe setting).
        width: filters of the first stage (16; stages have width, 2·width, 4·width).
        in_channels: input channels.
        shortcut: ``"A"`` (zero-padding identity, parameter-free) or ``"B"`` (1×1 projections
            where the shape changes).

    Shapes: (B, in_channels, H, W) -> (B, num_classes); any H, W (global pooling), 32 intended.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        bn_momentum: float = 0.1,
        width: int = 16,
        in_channels: int = 3,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if not 0.0 <= bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must lie in [0, 1], got {bn_momentum}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width, momentum=bn_momentum)
        blocks = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    _BasicBlock(
                        in_planes, planes, stride, bn_momentum=bn_momentum, shortcut=shortcut
                    )
                )
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)


def resnet20(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-20 (n = 3); keywords as ``CifarResNet``."""
    return CifarResNet(20, num_classes, **kw)


def resnet32(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-32 (n = 5)."""
    return CifarResNet(32, num_classes, **kw)


def resnet44(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-44 (n = 7)."""
    return CifarResNet(44, num_classes, **kw)


def resnet56(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-56 (n = 9), the super-convergence paper's CIFAR-10 model."""
    return CifarResNet(56, num_classes, **kw)


def resnet110(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-110 (n = 18)."""
    return CifarResNet(110, num_classes, **kw)


MODEL_NAMES: tuple[str, ...] = (
    "mlp",
    "logreg",
    "lenet5",
    "lenet-caffe",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
)


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    **kw,
) -> nn.Module:
    """Build a model by name, for experiment configs.

    Names: ``mlp`` (keywords ``hidden``, ``activation``), ``logreg`` (an MLP without hidden
    layers), ``lenet5`` (keywords of ``LeNet5``), ``lenet-caffe``, ``resnet<6n+2>`` such as
    ``resnet20``/``resnet56``/``resnet110`` (keywords ``bn_momentum``, ``width``, ``shortcut``).
    Names are case-insensitive; ``_`` and ``-`` are interchangeable.

    Args:
        name: the model.
        num_classes: number of classes (``ds.num_classes``).
        in_channels: image channels (``ds.in_channels``).
        input_size: image height = width (``ds.input_size``).
        **kw: passed to the constructor.

    Raises:
        ValueError: unknown name.
    """
    key = name.strip().lower().replace("_", "-")
    if key == "mlp":
        return MLP(in_channels * input_size * input_size, num_classes=num_classes, **kw)
    if key == "logreg":
        return MLP(in_channels * input_size * input_size, (), num_classes, **kw)
    if key in ("lenet5", "lenet"):
        return LeNet5(in_channels, num_classes, input_size=input_size, **kw)
    if key == "lenet-caffe":
        return lenet_caffe(in_channels, num_classes, input_size=input_size, **kw)
    match = re.fullmatch(r"resnet-?(\d+)", key)
    if match:
        return CifarResNet(int(match.group(1)), num_classes, in_channels=in_channels, **kw)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
