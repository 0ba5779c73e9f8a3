"""A plain, resumable training loop shared by the experiments (nanoGPT-style: top to bottom).

``train(cfg, root=..., experiment=..., run=...)`` trains one configuration and writes a run folder
(see ``hessian_lr.records``): ``config.json``, ``meta.json`` and ``records.jsonl`` with one record
per optimizer step (loss, LR, momentum; test loss/accuracy every ``eval_every`` steps; the
``LREstimator``'s estimates every ``estimator_every`` steps; λ_max and the Hessian trace every
``probe_every`` steps). A checkpoint is replaced atomically every ``checkpoint_every`` steps;
calling ``train`` again with the same arguments resumes from it and, on CPU, reproduces the
uninterrupted records exactly (the batch order is a pure function of (seed, epoch, step), the
augmentation generator and every stateful object are checkpointed). A non-finite loss ends the run
with status ``diverged``: a result, not a crash. ``callback`` sees the live model after every
update (e.g. to take spectral-density snapshots at chosen steps, F12) and may add keys to the
step's record.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..curvature.hessian import HessianOperator
from ..curvature.lanczos import lanczos
from ..curvature.trace import hutchinson_trace
from ..records import RecordWriter, Run, now, run_metadata, write_json_atomic
from ..rng import get_rng_state, set_rng_state
from ..schedules.closed_form import schedule_from_dict
from ..schedules.scheduler import ScheduleLR
from .data import Dataset, ResumableBatchSampler, augment_batch, load_dataset
from .models import build_model

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "resolve_device",
    "evaluate",
    "make_optimizer",
    "probe_batch",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json``).

    The schedule is a ``Schedule.to_dict()`` description, e.g.
    ``{"type": "OneCycle", "base_lr": 0.1, "max_lr": 1.0, "step_size": 400, "total_steps": 1000}``.
    Units: steps are optimizer updates (batches).
    """

    dataset: str = "digits"
    data_root: str | None = None
    subset: float | None = None  # fraction (or count) of the training set, stratified
    augment: bool = False  # pad-4 crop + flip (CIFAR)
    model: str = "lenet5"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"  # sgd | nesterov | adam
    momentum: float = 0.9  # SGD momentum or Adam beta1 (a momentum schedule overrides it)
    weight_decay: float = 5e-4
    batch_size: int = 128
    steps: int = 1000
    schedule: dict[str, Any] = field(default_factory=lambda: {"type": "Constant", "base_lr": 0.1})
    estimator_methods: tuple[str, ...] = ()  # e.g. ("secant", "quadratic", "sharpness")
    estimator_every: int = 10
    probe_every: int = 0  # λ_max (Lanczos) and Hutchinson trace every N steps; 0 = off
    probe_size: int = 256  # fixed training examples the probe's Hessian is taken on
    trace_probes: int = 0  # Hutchinson probes per trace estimate; 0 = no trace
    eval_every: int = 100
    eval_batch_size: int = 1000
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "eval_every", "checkpoint_every", "estimator_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("sgd", "nesterov", "adam"):
            raise ValueError(f"optimizer must be sgd, nesterov or adam, got {self.optimizer!r}")
        if self.probe_every < 0 or self.trace_probes < 0:
            raise ValueError("probe_every and trace_probes must be >= 0")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``: where the run lives and its headline numbers."""

    run_dir: Path
    status: str  # finished | diverged
    steps: int
    final_test_accuracy: float | None
    best_test_accuracy: float | None
    seconds: float
    resumed_from: int | None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (global state, as users' code)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, *, batch_size: int = 1000, device: torch.device | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` on ``data`` in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, len(data.y), batch_size):
            x = data.x[start : start + batch_size].to(device)
            y = data.y[start : start + batch_size].to(device)
            out = model(x)
            loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = len(data.y)
    return loss_sum / n, correct / n


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


def _make_estimator(cfg: TrainConfig, model, optimizer, loss_fn):
    if not cfg.estimator_methods:
        return None
    from ..lr.estimator import LREstimator  # imported late: optional machinery

    return LREstimator(
        model,
        methods=tuple(cfg.estimator_methods),
        every=cfg.estimator_every,
        loss_fn=loss_fn,
        optimizer=optimizer,
    )


def probe_batch(
    cfg: TrainConfig, train_data: Dataset, *, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training examples whose Hessian the curvature probe takes (``probe_every``).

    ``cfg.probe_size`` examples of ``train_data`` drawn without replacement by a generator seeded
    from ``cfg.seed`` (the global RNG is untouched), so a callback can evaluate other curvature
    quantities on exactly the probe's batch.

    Returns:
        ``(x, y)``: x (probe_size, C, H, W) float32, y (probe_size,) int64, on ``device``.
    """
    g = torch.Generator().manual_seed(cfg.seed + 12345)
    idx = torch.randperm(len(train_data.y), generator=g)[: cfg.probe_size]
    return train_data.x[idx].to(device), train_data.y[idx].to(device)


class _CurvatureProbe:
    """λ_max (warm-started Lanczos) and Hutchinson trace on a fixed batch, every k steps."""

    def __init__(self, cfg: TrainConfig, train_data: Dataset, device: torch.device) -> None:
        self.batch = probe_batch(cfg, train_data, device=device)
        self.trace_probes = cfg.trace_probes
        self.seed = cfg.seed
        self.v0: torch.Tensor | None = None

    def __call__(self, model: nn.Module, step: int) -> dict[str, Any]:
        op = HessianOperator(model, nn.CrossEntropyLoss(), self.batch)
        t0 = time.perf_counter()
        res = lanczos(op, k=1, which="LA", tol=1e-3, v0=self.v0)
        self.v0 = res.eigenvectors[:, 0].detach().clone() if res.eigenvectors is not None else None
        out = {
            "lambda_max": float(res.eigenvalues[0]),
            "lambda_max_hvps": res.num_matvecs,
        }
        if self.trace_probes:
            g = torch.Generator(device=op.device).manual_seed(self.seed * 100003 + step)
            tr = hutchinson_trace(op, num_probes=self.trace_probes, generator=g)
            out["trace"] = tr.estimate
            out["trace_std_error"] = tr.std_error
        out["probe_seconds"] = time.perf_counter() - t0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"v0": None if self.v0 is None else self.v0.cpu()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.v0 = None if state["v0"] is None else state["v0"].to(device)


def _current(optimizer: torch.optim.Optimizer) -> tuple[float, float | None]:
    group = optimizer.param_groups[0]
    mom = group.get("momentum", None)
    if mom is None and "betas" in group:
        mom = group["betas"][0]
    return float(group["lr"]), None if mom is None else float(mom)


def train(
    cfg: TrainConfig,
    *,
    root: str | os.PathLike = "results",
    experiment: str = "train",
    run: str | None = None,
    progress: bool = True,
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
    callback: Callable[[int, nn.Module, dict], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``<root>/<experiment>/<run>/``, resuming if a checkpoint is there.

    Args:
        cfg: the configuration.
        root, experiment, run: where the run folder goes (``run`` defaults to ``seed<seed>``).
        progress: show a tqdm bar.
        train_data, test_data: preloaded datasets (else loaded from ``cfg``).
        callback: ``callback(step, model, record)``, called after each optimizer step (``step``
            is 0-based: the model has had ``step + 1`` updates) once that step's record is
            complete (loss, LR, estimates, probe, evaluation) and before it is written, so it may
            add JSON-able keys to ``record``. Before the first update of a run that starts from
            scratch it is also called once with ``step = -1``, the initial model and an empty
            record that is not written. It is not called for the non-finite step that ends a
            diverged run, nor for a finished run found in place. On resume it is called only for
            the steps from the checkpoint on (calls made between the checkpoint and a crash are
            made again), so a callback that writes files must be idempotent per step. The model
            is in train mode during the call; the callback must leave the model, its mode and the
            global RNGs as it found them (``HessianOperator``, ``evaluate``, and ``lanczos`` or
            ``spectral_density`` given a ``generator`` do), or the records stop being
            reproducible.

    Returns:
        TrainResult. A finished or diverged run found in place is returned without training.
    """
    run_obj = Run(root, experiment, run or f"seed{cfg.seed}")
    meta = run_obj.meta()
    if meta.get("status") in ("finished", "diverged"):
        recs = run_obj.records()
        accs = [r["test_accuracy"] for r in recs if r.get("test_accuracy") is not None]
        return TrainResult(
            run_obj.dir,
            meta["status"],
            meta.get("steps_done", len(recs)),
            accs[-1] if accs else None,
            max(accs) if accs else None,
            meta.get("seconds", 0.0),
            None,
        )

    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    if train_data is None:
        train_data = load_dataset(
            cfg.dataset, split="train", root=cfg.data_root, subset=cfg.subset, seed=cfg.seed
        )
    if test_data is None:
        test_data = load_dataset(cfg.dataset, split="test", root=cfg.data_root)
    model = build_model(
        cfg.model,
        num_classes=train_data.num_classes,
        in_channels=train_data.x.shape[1],
        input_size=train_data.x.shape[-1],
        **cfg.model_kwargs,
    ).to(device)
    schedule = schedule_from_dict(cfg.schedule)
    optimizer = make_optimizer(
        cfg.optimizer,
        model.parameters(),
        lr=schedule.lr(0),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    scheduler = ScheduleLR(optimizer, schedule)
    loss_fn = nn.CrossEntropyLoss()
    estimator = _make_estimator(cfg, model, optimizer, loss_fn)
    probe = _CurvatureProbe(cfg, train_data, device) if cfg.probe_every else None
    sampler = ResumableBatchSampler(
        len(train_data.y), cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True
    )
    aug_gen = torch.Generator().manual_seed(cfg.seed + 777)

    start_step, resumed_from, elapsed = 0, None, 0.0
    writer = RecordWriter(run_obj.records_path)
    if run_obj.checkpoint_path.exists():
        ckpt = torch.load(run_obj.checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if estimator is not None:
            estimator.load_state_dict(ckpt["estimator"])
        if probe is not None:
            probe.load_state_dict(ckpt["probe"], device)
        aug_gen.set_state(ckpt["aug_gen"])
        set_rng_state(ckpt["rng"])
        start_step = resumed_from = ckpt["step"]
        elapsed = ckpt.get("seconds", 0.0)
        writer.truncate_after(start_step - 1)
    else:
        writer.truncate_after(-1)  # a run that died before its first checkpoint starts clean
        write_json_atomic(run_obj.config_path, cfg)
    run_obj.update_meta(
        **run_metadata(device=str(device), seed=cfg.seed),
        status="running",
        started=meta.get("started", now()),
        resumed_from=resumed_from,
        experiment=experiment,
    )

    def checkpoint(step: int) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "estimator": estimator.state_dict() if estimator is not None else None,
            "probe": probe.state_dict() if probe is not None else None,
            "aug_gen": aug_gen.get_state(),
            "rng": get_rng_state(),
            "seconds": elapsed + time.perf_counter() - t_start,
        }
        tmp = run_obj.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, run_obj.checkpoint_path)

    per_epoch = len(sampler)
    status = "finished"
    t_start = time.perf_counter()
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=start_step,
        disable=not progress,
        desc=f"{experiment}/{run_obj.name}",
        leave=False,
    )
    step = start_step
    try:
        if callback is not None and start_step == 0:
            callback(-1, model, {})
        for step in range(start_step, cfg.steps):
            epoch, pos = divmod(step, per_epoch)
            idx = next(sampler.batches(epoch, pos))
            x, y = train_data.x[idx], train_data.y[idx]
            if cfg.augment:
                x = augment_batch(x, aug_gen)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr, mom = _current(optimizer)
            loss = loss_fn(model(x), y)
            record: dict[str, Any] = {"step": step, "epoch": step / per_epoch, "lr": lr}
            if mom is not None:
                record["momentum"] = mom
            loss_value = float(loss.detach())
            record["train_loss"] = loss_value
            if not math.isfinite(loss_value):
                status = "diverged"
                writer.write(record)
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step() if step + 1 < cfg.steps else None
            if estimator is not None:
                if estimator.step((x, y), lr=lr):
                    latest = estimator.history[-1]
                    record["estimates"] = latest["estimates"]
                    record["estimates_smoothed"] = latest["smoothed"]
            if probe is not None and (step % cfg.probe_every == 0 or step + 1 == cfg.steps):
                record.update(probe(model, step))
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                test_loss, acc = evaluate(model, test_data, batch_size=cfg.eval_batch_size)
                record.update(test_loss=test_loss, test_accuracy=acc)
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.3f}")
            if callback is not None:
                callback(step, model, record)
            writer.write(record)
            bar.update(1)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1)
        else:
            step = cfg.steps
    except BaseException:
        run_obj.update_meta(status="interrupted", steps_done=step)
        writer.close()
        bar.close()
        raise
    bar.close()
    writer.close()
    seconds = elapsed + time.perf_counter() - t_start
    run_obj.update_meta(status=status, finished=now(), steps_done=step, seconds=seconds)
    if run_obj.checkpoint_path.exists():
        run_obj.checkpoint_path.unlink()
    accs = [r["test_accuracy"] for r in run_obj.records() if r.get("test_accuracy") is not None]
    return TrainResult(
        run_obj.dir,
        status,
        step,
        accs[-1] if accs else None,
        max(accs) if accs else None,
        seconds,
        resumed_from,
    )
