"""The one base preset every experiment derives from, and the four preset families.

Every experiment's ``Config`` subclasses :class:`Base` (dataset, model, batch size, weight
decay, momentum, the 1cycle / piecewise-constant LRs, evaluation and checkpoint intervals,
seeds) and builds its ``PRESETS`` with :func:`presets`: the family's shared values
(:data:`FAMILIES`), then the experiment's own overrides. So "the `gpu` model" or "the `paper`
CIFAR block" is written once, here.

Families:

- ``paper``: Smith & Topin's setting (ResNet-56 on CIFAR-10, batch 1,000, WD 1e-4, 1cycle
  0.1 -> 3.0, PC 0.35, Caffe BN momentum) -- GPU days; never run here, kept as the reference.
- ``gpu``: the paper's protocol at a size one H100/H200-class GPU finishes in minutes:
  ResNet-20 (BatchNorm, option-A shortcuts) on Fashion-MNIST, batch 512, the paper's LRs scaled
  linearly to the batch (x 512/1000). Lengths scale with one knob (``--scale`` of
  ``experiments/run_all.py``, :func:`scaled`).
- ``cpu``: the same protocol for one CPU core per run: a small BatchNorm ResNet (ResNet-8,
  16/32/64 filters, option A) on Fashion-MNIST, batch 128; about 9 CPU-hours for F2-F12.
  F9 and F10 keep LeNet-5 (their own claims).
- ``smoke``: seconds, for tests (scikit-learn digits, a 4-filter ResNet-8).

Cost model (for ``run_all``'s scheduling and its ``--dry-run`` estimate): multiply-accumulates of
one forward pass, :func:`forward_macs`, times 3 for a training step.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = [
    "Base",
    "FAMILIES",
    "presets",
    "scaled",
    "train_fields",
    "forward_macs",
    "train_macs",
]

C = TypeVar("C", bound="Base")


@dataclass(frozen=True)
class Base:
    """Fields every experiment shares (each experiment adds its own after these).

    ``width`` is the first-stage filter count of a ResNet (``None``: the model's default, 16);
    ``bn_momentum`` the torch BatchNorm momentum (``None``: torch's 0.1; 0.05 is Caffe's 0.95).
    ``base_lr``/``max_lr`` are the 1cycle bounds, ``pc_lr`` the piecewise-constant baseline's LR.

    The 1cycle bounds are each family's fixed values, **not** read from the F2 range test as SC
    does (max at the accuracy peak, base = max/4). ``gpu``: the paper's 0.1 -> 3.0 scaled by the
    batch (512/1000), 0.05 -> 1.5; the gpu range test suggests 0.43 -> 1.72 (max within 13 %).
    ``cpu``: 0.1 -> 1.0; the cpu range test suggests 0.45 -> 1.8 (one 500-update test). At
    its evaluations nearest 1.0 (LR 0.90 and 1.05) that test's held-out accuracy is 74.6 %, 0.90
    of its raw peak (82.5 % at 1.8), but below its smoothed high plateau (1.8-3.0, F2): a
    conservative max_lr, kept because every cpu study ran at it (rerunning F3/F4/F6/F8 at 1.8
    is about 7 CPU-hours).
    """

    dataset: str = "fashion-mnist"
    model: str = "resnet8"
    width: int | None = None
    bn_momentum: float | None = None
    batch_size: int = 128
    weight_decay: float = 1e-4
    momentum: float = 0.9
    base_lr: float = 0.1
    max_lr: float = 1.0
    pc_lr: float = 0.1
    evals_per_run: int = 20  # test-set evaluations per training run (every steps // this)
    checkpoint_every: int = 50
    seeds: tuple[int, ...] = (0,)

    #: Fields holding iteration counts, multiplied by ``scaled`` (each experiment lists its own).
    SCALED: ClassVar[tuple[str, ...]] = ()


# The shared values of each family. An experiment overrides only what its protocol changes.
FAMILIES: dict[str, dict[str, Any]] = {
    "paper": dict(
        dataset="cifar10",
        model="resnet56",
        width=None,
        bn_momentum=0.05,  # Caffe moving_average_fraction 0.95
        batch_size=1000,
        weight_decay=1e-4,
        momentum=0.9,
        base_lr=0.1,
        max_lr=3.0,
        pc_lr=0.35,
        checkpoint_every=1000,
        evals_per_run=20,
        seeds=(0,),
    ),
    "gpu": dict(
        dataset="fashion-mnist",
        model="resnet20",
        width=None,
        bn_momentum=None,
        batch_size=512,  # 117 iterations per epoch of Fashion-MNIST
        weight_decay=1e-4,
        momentum=0.9,
        base_lr=0.05,  # the paper's 0.1 / 3.0 / 0.35 at batch 1000, scaled by 512/1000
        max_lr=1.5,
        pc_lr=0.175,
        checkpoint_every=100,
        seeds=(0, 1, 2),
    ),
    "cpu": dict(
        dataset="fashion-mnist",
        model="resnet8",
        width=16,
        bn_momentum=None,
        batch_size=128,  # 468 iterations per epoch
        weight_decay=1e-4,
        momentum=0.9,
        base_lr=0.1,
        max_lr=1.0,
        pc_lr=0.1,
        checkpoint_every=50,
        seeds=(0, 1, 2),
    ),
    "smoke": dict(
        dataset="digits",
        model="resnet8",
        width=4,
        bn_momentum=None,
        batch_size=64,
        evals_per_run=3,
        weight_decay=1e-4,
        momentum=0.9,
        base_lr=0.05,
        max_lr=0.5,
        pc_lr=0.1,
        checkpoint_every=10,
        seeds=(0,),
    ),
}


def presets(config: type[C], **families: dict[str, Any]) -> dict[str, C]:
    """``{family: config(**FAMILIES[family], **overrides)}`` for each family named.

    ``presets(Config, paper={...}, gpu={...}, cpu={...}, smoke={...})``: every family must be
    given (an empty dict keeps the family's values); a field the Config lacks is an error.
    """
    missing = set(FAMILIES) - set(families)
    if missing:
        raise ValueError(f"presets for {sorted(missing)} missing (give an empty dict to keep)")
    names = {f.name for f in dataclasses.fields(config)}
    out: dict[str, C] = {}
    for family, overrides in families.items():
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
        values = {**FAMILIES[family], **overrides}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{config.__name__} has no field(s) {sorted(unknown)}")
        out[family] = config(**values)
    return out


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, tuple):
        return tuple(_scale(v, factor) for v in value)
    return max(1, round(value * factor))


def scaled(cfg: C, factor: float) -> C:
    """``cfg`` with every iteration count (the Config's ``SCALED`` fields) times ``factor``."""
    if not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"scale must be a positive number, got {factor}")
    if factor == 1:
        return cfg
    names = {f.name for f in dataclasses.fields(cfg)}
    fields = getattr(type(cfg), "SCALED", ())
    changes = {k: _scale(getattr(cfg, k), factor) for k in fields if k in names}
    return dataclasses.replace(cfg, **changes)


def train_fields(cfg: Any, seed: int) -> dict[str, Any]:
    """The ``TrainConfig`` fields taken straight from the base preset (scripts add the rest).

    Works on any Config with ``dataset``, ``model``, ``batch_size``, ``weight_decay``,
    ``momentum`` (``width``, ``bn_momentum``, ``checkpoint_every`` when it has them).
    """
    model_kwargs: dict[str, Any] = {}
    if getattr(cfg, "bn_momentum", None) is not None:
        model_kwargs["bn_momentum"] = cfg.bn_momentum
    if getattr(cfg, "width", None) is not None:
        model_kwargs["width"] = cfg.width
    extra = {}
    if hasattr(cfg, "checkpoint_every"):
        extra["checkpoint_every"] = cfg.checkpoint_every
    return dict(
        dataset=cfg.dataset,
        model=cfg.model,
        model_kwargs=model_kwargs,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        seed=seed,
        augment=cfg.dataset.startswith("cifar"),
        **extra,
    )


_INPUT = {"digits": (1, 8), "mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}


def forward_macs(model: str, *, dataset: str = "fashion-mnist", width: int | None = None) -> float:
    """Multiply-accumulates of one forward pass of one image (convolutions and linear layers).

    ``resnet<6n+2>``: stem, 3 stages of n blocks (two 3x3 convs each) at H, H/2, H/4 with
    width, 2 width, 4 width filters; ``lenet5``: conv5(6)-conv5(16)-fc120-fc84-fc10 on the
    padded 28x28 layout. An estimate for scheduling, not a measurement.
    """
    c, h = _INPUT.get(dataset, (1, 28))
    match = re.fullmatch(r"resnet-?(\d+)", model.lower())
    if match:
        n = (int(match.group(1)) - 2) // 6
        w = width or 16
        macs = h * h * c * w * 9  # stem
        for stage, (planes, size) in enumerate(((w, h), (2 * w, -(-h // 2)), (4 * w, -(-h // 4)))):
            in_planes = planes if stage == 0 else planes // 2
            macs += size * size * 9 * (in_planes * planes + (2 * n - 1) * planes * planes)
        return float(macs + 4 * w * 10)
    if model.lower() in ("lenet5", "lenet"):
        return float(28 * 28 * 6 * 25 * c + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 840)
    return 1e6


def train_macs(cfg: Base, steps: int, *, batch_size: int | None = None) -> float:
    """Estimated multiply-accumulates of ``steps`` training steps (x3 a forward pass)."""
    per_image = forward_macs(cfg.model, dataset=cfg.dataset, width=getattr(cfg, "width", None))
    return 3.0 * per_image * steps * (batch_size or cfg.batch_size)
