"""Recipes: the LR range test set up from one configuration, as the runner sets up a run.

:func:`range_test_from_config` is the one place where a range test is built from a dataset
name, a model name and optimizer settings (used by ``hessian-lr range-test``, the demo and the
F2 experiment): the model is initialised exactly as :func:`hessian_lr.training.runner.train`
initialises it for the same seed, and the batches are the runner's
(:func:`~hessian_lr.training.data.batch_stream`), so the test sees what the training run will see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..range_test import RangeTestResult, lr_range_test
from ..rng import preserved_rng
from .data import Dataset, batch_stream, load_dataset
from .models import build_model

__all__ = ["RangeTestSetup", "range_test_from_config", "held_out"]


@dataclass(frozen=True)
class RangeTestSetup:
    """One LR range test (CLR §3.3, SC §3) by names: data, model, optimizer and the ladder.

    The ladder's settings mean what they mean in
    :class:`hessian_lr.range_test.RangeTestConfig`; this adds what to build.

    Raises:
        ValueError: a field out of range (the message names it).
    """

    dataset: str = field(default="digits", metadata={"help": "digits, mnist, cifar10, ..."})
    data_root: str | None = field(default=None, metadata={"help": "folder with the data files"})
    download: bool = field(default=False, metadata={"help": "download missing dataset files"})
    subset: float | int | None = field(
        default=None, metadata={"help": "training subset: a fraction (0.25) or a count"}
    )
    model: str = field(default="lenet5", metadata={"help": "mlp, logreg, lenet5, resnet20, ..."})
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "model keywords"})
    optimizer: str = field(default="sgd", metadata={"help": "sgd, nesterov or adam"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum / Adam beta1"})
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = field(default=False, metadata={"help": "pad-4 crop + flip (CIFAR)"})
    start_lr: float = 0.0
    end_lr: float = 1.0
    num_steps: int = field(default=200, metadata={"help": "optimizer updates"})
    ramp: Literal["linear", "exp"] = "linear"
    val_every: int = field(default=5, metadata={"help": "held-out evaluation interval"})
    val_examples: int = field(
        default=2000,
        metadata={"help": "held-out examples (a stratified part of the test split; 0: none)"},
    )
    smoothing: float = 0.98
    diverge_factor: float = 4.0
    curvature_check: bool = field(default=True, metadata={"help": "2/lambda_max at the start"})
    seed: int = 0
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, ..."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RangeTestSetup.{name} must be >= 1, got {value!r}")
        for name in ("val_examples", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"RangeTestSetup.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"RangeTestSetup.momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.end_lr) and self.end_lr > self.start_lr >= 0):
            raise ValueError(
                f"RangeTestSetup needs 0 <= start_lr < end_lr, got {self.start_lr}, {self.end_lr}"
            )
        if self.optimizer not in ("sgd", "nesterov", "adam"):
            raise ValueError(f"optimizer must be sgd, nesterov or adam, got {self.optimizer!r}")


def held_out(cfg: RangeTestSetup) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``cfg.val_examples`` stratified examples of the test split (None when 0)."""
    if cfg.val_examples == 0:
        return None
    test = load_dataset(cfg.dataset, split="test", root=cfg.data_root, download=cfg.download)
    if len(test) > cfg.val_examples:
        test = test.subset(cfg.val_examples, seed=cfg.seed)
    return test.tensors


def range_test_from_config(
    cfg: RangeTestSetup,
    *,
    train_data: Dataset | None = None,
    val_data: Any = "auto",
    restore: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> RangeTestResult:
    """Build model, optimizer and batches from ``cfg`` and run the LR range test.

    The model is built right after ``torch.manual_seed(cfg.seed)``, as ``train`` does, and the
    whole test runs inside :func:`hessian_lr.rng.preserved_rng`, so the caller's global RNGs
    are left as they were.

    Args:
        cfg: the configuration.
        train_data: a preloaded training set (else ``cfg.dataset``'s train split, ``cfg.subset``).
        val_data: held-out batches (a list of ``(x, y)``, one batch, or a loader); ``"auto"``
            takes :func:`held_out` (``cfg.val_examples`` of the test split); None: no
            evaluation.
        restore: put the model and optimizer back afterwards (see ``lr_range_test``).
        generator: random source of the curvature check (default: the global RNG, seeded).
        progress: a tqdm bar.

    Returns:
        The ``RangeTestResult``.
    """
    device = _device(cfg.device)
    if train_data is None:
        train_data = load_dataset(
            cfg.dataset,
            split="train",
            root=cfg.data_root,
            download=cfg.download,
            subset=cfg.subset,
            seed=cfg.seed,
        )
    if isinstance(val_data, str) and val_data == "auto":
        val_data = held_out(cfg)
    from .setup import make_optimizer

    with preserved_rng():
        torch.manual_seed(cfg.seed)  # as train(): the initialisation draws from torch's RNG
        model = build_model(
            cfg.model,
            num_classes=train_data.num_classes,
            in_channels=train_data.in_channels,
            input_size=train_data.input_size,
            **cfg.model_kwargs,
        ).to(device)
        optimizer = make_optimizer(
            cfg.optimizer,
            model.parameters(),
            lr=cfg.start_lr if cfg.start_lr > 0 else 1e-3,  # overwritten by the LR ladder
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        batches = batch_stream(train_data, cfg.batch_size, seed=cfg.seed, augment=cfg.augment)
        return lr_range_test(
            model,
            optimizer,
            batches,
            loss_fn=nn.CrossEntropyLoss(),
            start_lr=cfg.start_lr,
            end_lr=cfg.end_lr,
            num_steps=cfg.num_steps,
            ramp=cfg.ramp,
            val_data=val_data,
            val_every=cfg.val_every,
            smoothing=cfg.smoothing,
            diverge_factor=cfg.diverge_factor,
            device=device,
            restore=restore,
            curvature_check=cfg.curvature_check,
            generator=generator,
            progress=progress,
        )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
