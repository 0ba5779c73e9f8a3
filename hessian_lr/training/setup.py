"""What a training run is built from, given its config: device, seeding, optimizer, observers.

The pieces :func:`hessian_lr.training.train` assembles before its loop, usable on their own (an
experiment that trains its own way calls ``resolve_device`` and ``make_optimizer``; a callback
that measures on the curvature probe's batch calls ``probe_batch``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from ..observe import Observer
from .data import Dataset, probe_indices
from .observers import CurvatureProbe, EstimatorObserver, EvalObserver
from .train_config import TrainConfig

__all__ = [
    "resolve_device",
    "seed_everything",
    "make_optimizer",
    "probe_batch",
    "default_observers",
]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (the run's start, as users' code does)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (global state, as users' code)
    torch.manual_seed(seed)


def make_optimizer(
    name: str, params: Any, *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``"sgd"``, ``"nesterov"`` or ``"adam"`` (``momentum`` is Adam's beta1)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name not in ("sgd", "nesterov"):
        raise ValueError(f"optimizer must be sgd, nesterov or adam, got {name!r}")
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=name == "nesterov"
    )


def probe_batch(
    cfg: TrainConfig, train_data: Dataset, *, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training examples whose Hessian the curvature probe takes (``probe_every``).

    ``cfg.probe_size`` examples of ``train_data`` drawn without replacement by a generator seeded
    from ``cfg.seed`` (:func:`~hessian_lr.training.data.probe_indices`; the global RNG is
    untouched), so a callback can evaluate other curvature quantities on exactly this batch.

    Returns:
        ``(x, y)``: x (probe_size, C, H, W) float32, y (probe_size,) int64, on ``device``.
    """
    idx = probe_indices(len(train_data.y), cfg.probe_size, seed=cfg.seed)
    return train_data.x[idx].to(device), train_data.y[idx].to(device)


def default_observers(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: Dataset,
    test_data: Dataset,
    device: torch.device,
) -> list[Observer]:
    """The observers ``cfg`` asks for, in record order: estimator, probe, evaluation."""
    out: list[Observer] = []
    if cfg.estimator_methods:
        from ..lr.estimator import LREstimator  # imported late: optional machinery

        est = LREstimator(
            model,
            methods=tuple(cfg.estimator_methods),
            every=cfg.estimator_every,
            loss_fn=nn.CrossEntropyLoss(),
            optimizer=optimizer,
        )
        out.append(EstimatorObserver(est))
    if cfg.probe_every:
        batch = probe_batch(cfg, train_data, device=device)
        out.append(
            CurvatureProbe(
                batch, every=cfg.probe_every, trace_probes=cfg.trace_probes, seed=cfg.seed
            )
        )
    out.append(EvalObserver(test_data, every=cfg.eval_every, batch_size=cfg.eval_batch_size))
    return out
