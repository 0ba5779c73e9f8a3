"""A plain, resumable training loop shared by the experiments (nanoGPT-style: top to bottom).

``train(cfg, root=..., experiment=..., run=...)`` trains one configuration and writes a run folder
(:mod:`hessian_lr.training.run`): ``config.json``, ``meta.json`` and ``records.jsonl`` with one
record per optimizer step (loss, LR, momentum) plus what the observers add: test loss/accuracy
every ``eval_every`` steps, the ``LREstimator``'s estimates every ``estimator_every`` steps, λ_max
and the Hessian trace every ``probe_every`` steps, and the keys of any ``observers=`` given.

Guarantees:

* **Resume**: a checkpoint is replaced atomically every ``checkpoint_every`` steps; calling
  ``train`` again resumes from it and, on CPU, reproduces the uninterrupted records exactly (the
  batch order is a pure function of (seed, epoch, step), and the augmentation generator, the
  global RNGs and every observer's state are checkpointed).
* **One writer**: the run folder is locked (:class:`~hessian_lr.training.run.RunLock`) while a
  process trains it; a second process gets a ``RunLockedError`` naming the holder.
* **Config-checked resume**: a run folder is only continued under the configuration it was
  started with; otherwise a ``ConfigMismatchError`` lists the differing fields, unless
  ``allow_config_change=True``, which records the change in ``meta.json``.
* **Interrupted runs**: a run whose process died says ``interrupted`` on the next start (and
  stray temporary files are removed). A non-finite loss ends the run with status ``diverged``:
  a result, not a crash.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..observe import Observer, run_observers
from ..records import RecordSink, RecordWriter, make_sink, temp_path, write_json_atomic
from ..rng import get_rng_state, preserved_rng, set_rng_state
from ..schedules import schedule_from_dict
from ..schedules.scheduler import ScheduleLR
from .data import Dataset, batch_stream, load_dataset
from .distributed import DistContext
from .models import build_model
from .observers import (
    RecordCallback,
    RunContext,
)
from .run import Run, RunLock, now, run_metadata
from .setup import default_observers, make_optimizer, resolve_device, seed_everything
from .train_config import TrainConfig, TrainResult, config_diff

__all__ = [
    "TrainConfig",
    "TrainResult",
    "ConfigMismatchError",
    "train",
]


class ConfigMismatchError(ValueError):
    """A run folder holds a run of another configuration (the message lists the fields)."""


def _current(optimizer: torch.optim.Optimizer) -> tuple[float, float | None]:
    group = optimizer.param_groups[0]
    mom = group.get("momentum", None)
    if mom is None and "betas" in group:
        mom = group["betas"][0]
    return float(group["lr"]), None if mom is None else float(mom)


def _state_keys(observers: Sequence[Observer]) -> list[str]:
    """Unique checkpoint keys: the observers' names (``name#i`` for repeats)."""
    seen: dict[str, int] = {}
    keys = []
    for obs in observers:
        n = seen.get(obs.name, 0)
        seen[obs.name] = n + 1
        keys.append(obs.name if n == 0 else f"{obs.name}#{n}")
    return keys


def _result(run: Run, status: str, steps: int, seconds: float, resumed: int | None) -> TrainResult:
    accs = [r["test_accuracy"] for r in run.records() if r.get("test_accuracy") is not None]
    last, best = (accs[-1], max(accs)) if accs else (None, None)
    return TrainResult(run.dir, status, steps, last, best, seconds, resumed)


@dataclass
class _Session:
    """Everything one ``train`` call builds (so the loop and the checkpoint share it)."""

    cfg: TrainConfig
    run: Run
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ScheduleLR
    stream: Any
    observers: list[Observer]
    writer: RecordWriter | None
    ddp: DistContext = field(default_factory=DistContext)
    sinks: list[RecordSink] = field(default_factory=list)
    start_step: int = 0
    step: int = 0
    resumed_from: int | None = None
    elapsed: float = 0.0
    t_start: float = 0.0

    def checkpoint(self, step: int) -> None:
        """Replace ``checkpoint.pt`` atomically (unique temporary name, then ``os.replace``)."""
        if not self.ddp.is_main:
            return
        states = {k: o.state_dict() for k, o in zip(_state_keys(self.observers), self.observers)}
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "observers": states,
            "aug_gen": self.stream.generator.get_state(),
            "rng": get_rng_state(),
            "seconds": self.elapsed + time.perf_counter() - self.t_start,
        }
        tmp = temp_path(self.run.checkpoint_path)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.run.checkpoint_path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, ckpt: Mapping[str, Any], changed: Iterable[str] = ()) -> None:
        """Restore a checkpoint (older ones keep observer states under estimator/probe).

        ``changed`` names config fields that differ from the checkpoint's run (an allowed
        config change): the optimizer keeps the new hyper-parameters (weight decay, momentum,
        Nesterov), and a changed schedule takes over at the checkpoint's step.
        """
        changed = set(changed)
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if changed:
            keep = ("weight_decay", "momentum", "betas", "nesterov", "dampening")
            for group, new in zip(self.optimizer.param_groups, fresh):
                group.update({k: new[k] for k in keep if k in new})
        if "schedule" in changed or "steps" in changed:
            schedule = schedule_from_dict(self.cfg.schedule)
            self.scheduler = ScheduleLR(self.optimizer, schedule, last_epoch=ckpt["step"] - 1)
        else:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        states = ckpt.get("observers") or {k: ckpt.get(k) for k in ("estimator", "probe")}
        for key, obs in zip(_state_keys(self.observers), self.observers):
            if states.get(key) is not None:
                obs.load_state_dict(states[key])
        self.stream.generator.set_state(ckpt["aug_gen"])
        set_rng_state(ckpt["rng"])
        self.start_step = self.resumed_from = ckpt["step"]
        self.elapsed = ckpt.get("seconds", 0.0)

    def emit(self, record: Mapping[str, Any]) -> None:
        """Write one record to ``records.jsonl`` (the source of truth), then to every sink."""
        if self.writer is None:  # not rank 0
            return
        self.writer.write(record)
        for sink in self.sinks:
            sink.write(record)


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
    observers: Iterable[Observer] = (),
    sinks: Iterable[RecordSink | str | Callable[[Mapping[str, Any]], Any]] = (),
    allow_config_change: bool = False,
    process_group: Any = None,
) -> TrainResult:
    """Train ``cfg`` into ``<root>/<experiment>/<run>/``, resuming if a checkpoint is there.

    Args:
        cfg: the configuration.
        root: results root.
        experiment: experiment folder under ``root``.
        run: run folder (default ``seed<seed>``).
        progress: show a tqdm bar.
        train_data: a preloaded training set (else loaded from ``cfg``).
        test_data: a preloaded test set (else loaded from ``cfg``).
        callback: ``callback(step, model, record)``, called after each optimizer step (``step``
            is 0-based: the model has had ``step + 1`` updates) once that step's record is
            complete (loss, LR, estimates, probe, evaluation, ``observers``) and before it is
            written, so it may add JSON-able keys to ``record``. Before the first update of a run
            that starts from scratch it is also called once with ``step = -1``, the initial model
            and an empty record that is not written. It is not called for the non-finite step
            that ends a diverged run, nor for a finished run found in place. On resume it is
            called only for the steps from the checkpoint on (calls made between the checkpoint
            and a crash are made again), so a callback that writes files must be idempotent per
            step. The model is in train mode during the call; the global RNGs are restored
            after it (as for every observer).
        observers: more :class:`hessian_lr.observe.Observer` s, run after the built-in ones
            (estimator, probe, evaluation) in order; their records' keys join the step's record
            and their ``state_dict`` goes into the checkpoint.
        sinks: where records also go (``"tensorboard:DIR"``, ``"csv:PATH"``, a
            :class:`~hessian_lr.records.RecordSink` or a callable; see
            :func:`~hessian_lr.records.make_sink`). ``records.jsonl`` is always written.
        allow_config_change: resume a run folder whose ``config.json`` differs from ``cfg``
            (recorded in ``meta.json`` under ``config_changes``); otherwise that raises.
        process_group: under ``torchrun``, the group to train over (default: the default group
            when one is initialized); see :mod:`hessian_lr.training.distributed`.

    Returns:
        TrainResult. A finished or diverged run found in place is returned without training.

    Raises:
        RunLockedError: another process is writing this run folder.
        ConfigMismatchError: the folder holds a run of another configuration.
    """
    run_obj = Run(root, experiment, run or f"seed{cfg.seed}")
    ddp = DistContext.detect(process_group)
    lock = run_obj.lock()
    try:
        done, diff = ddp.agree(lambda: _prepare_folder(run_obj, cfg, allow_config_change, lock))
        if done is not None:
            return done
        extra = [*observers, *([RecordCallback(callback)] if callback is not None else [])]
        s = _build(cfg, run_obj, train_data, test_data, extra, ddp)
        _start(s, diff, experiment)
        s.sinks = [make_sink(x) for x in sinks] if ddp.is_main else []
        try:
            status, step = _loop(s, progress and ddp.is_main, f"{experiment}/{run_obj.name}")
        except BaseException:
            if ddp.is_main:
                run_obj.update_meta(status="interrupted", steps_done=s.step)
            raise
        finally:
            for closable in [s.writer, *s.observers, *s.sinks]:
                closable.close() if closable is not None else None
        seconds = s.elapsed + time.perf_counter() - s.t_start
        if ddp.is_main:
            run_obj.update_meta(status=status, finished=now(), steps_done=step, seconds=seconds)
            run_obj.checkpoint_path.unlink(missing_ok=True)
        ddp.barrier()
        return _result(run_obj, status, step, seconds, s.resumed_from)
    finally:
        lock.release()


def _prepare_folder(
    run: Run, cfg: TrainConfig, allow_config_change: bool, lock: RunLock
) -> tuple[TrainResult | None, dict[str, Any]]:
    """Take the lock; clean up after a killed writer, check the config, spot a finished run."""
    lock.acquire()
    for path in run.stray_temp_files():
        path.unlink(missing_ok=True)
    meta = run.meta()
    if meta.get("status") == "running":  # we hold the lock, so its writer died
        lost = {"detected": now(), "steps_done": meta.get("steps_done")}
        meta = run.update_meta(
            status="interrupted", interruptions=[*meta.get("interruptions", []), lost]
        )
    diff = config_diff(run.config(), cfg) if run.config_path.exists() else {}
    status = meta.get("status")
    if diff and (not allow_config_change or status in ("finished", "diverged")):
        fields = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        remedy = (
            "its checkpoint is gone, so it cannot continue: choose another run name"
            if status in ("finished", "diverged")
            else "choose another run name, or pass allow_config_change=True "
            "(--allow-config-change) to continue it under the new values"
        )
        raise ConfigMismatchError(
            f"run folder {run.dir} ({status or 'started'}) was made with another configuration "
            f"(saved -> new: {fields}); {remedy}"
        )
    if status in ("finished", "diverged"):
        recs = run.records()
        steps = meta.get("steps_done", len(recs))
        return _result(run, status, steps, meta.get("seconds", 0.0), None), diff
    return None, diff


def _build(
    cfg: TrainConfig,
    run: Run,
    train_data: Dataset | None,
    test_data: Dataset | None,
    extra: list[Observer],
    ddp: DistContext,
) -> _Session:
    """Data, model, optimizer, schedule, observers and batch stream of a run."""
    device = ddp.device(resolve_device(cfg.device))
    if cfg.batch_size < ddp.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} < {ddp.world_size} processes: no shards")
    seed_everything(cfg.seed)
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
    s = _Session(
        cfg=cfg,
        run=run,
        device=device,
        model=model,
        optimizer=optimizer,
        scheduler=ScheduleLR(optimizer, schedule),
        stream=batch_stream(train_data, cfg.batch_size, seed=cfg.seed, augment=cfg.augment),
        observers=[
            *default_observers(cfg, model, optimizer, train_data, test_data, device),
            *extra,
        ],
        writer=RecordWriter(run.records_path) if ddp.is_main else None,
        ddp=ddp,
    )
    return s


def _start(s: _Session, diff: dict[str, Any], experiment: str) -> None:
    """Resume from the checkpoint or start fresh; rank 0 writes config.json and meta.json."""
    run, cfg, ddp, device = s.run, s.cfg, s.ddp, s.device
    meta = run.meta()
    if run.checkpoint_path.exists():
        ckpt = torch.load(run.checkpoint_path, map_location=device, weights_only=False)
        try:
            s.load(ckpt, changed=diff)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            if not diff:
                raise
            raise ConfigMismatchError(
                f"cannot resume {run.dir} under the changed fields {sorted(diff)}: the "
                f"checkpoint does not fit them ({type(err).__name__}: {err}); choose another "
                "run name"
            ) from err
    ddp.broadcast_module(s.model)  # identical anyway (same seed, same checkpoint): make sure
    if not ddp.is_main:
        return
    s.writer.truncate_after(s.start_step - 1)  # -1: a run dead before its first checkpoint
    if diff or not run.checkpoint_path.exists():
        write_json_atomic(run.config_path, cfg)
    changes = {}
    if diff:
        change = {"at_step": s.start_step, "time": now(), "fields": diff}
        changes["config_changes"] = [*meta.get("config_changes", []), change]
    run.update_meta(
        **run_metadata(device=str(device), seed=cfg.seed),
        status="running",
        started=meta.get("started", now()),
        resumed_from=s.resumed_from,
        experiment=experiment,
        **changes,
    )


def _observe(observers: Sequence[Observer], ctx: RunContext, *, last: bool) -> None:
    """Run each due observer (global RNGs preserved) and add its keys to ``ctx.record``."""
    for obs in observers:
        rec = run_observers([obs], ctx, last=last)
        clash = sorted(set(rec) & set(ctx.record))
        if clash:
            raise ValueError(
                f"observer {obs.name!r} wrote record keys {clash} already set at step {ctx.step}"
            )
        ctx.record.update(rec)


def _forward(
    s: _Session, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module
) -> tuple[torch.Tensor, float]:
    """The loss to differentiate and the batch's mean loss (all ranks: the global batch's)."""
    if not s.ddp.active:
        loss = loss_fn(s.model(x), y)
        return loss, float(loss.detach())
    xs, ys = s.ddp.shard(x, y)  # this rank's part; sum / global size, gradients summed later
    local = nn.functional.cross_entropy(s.model(xs), ys, reduction="sum") / len(y)
    return local, float(s.ddp.sum_(local.detach().clone()))


def _loop(s: _Session, progress: bool, desc: str) -> tuple[str, int]:
    """The training loop proper: one record per update; returns (status, steps done)."""
    cfg, model, optimizer = s.cfg, s.model, s.optimizer
    loss_fn = nn.CrossEntropyLoss()
    per_epoch = s.stream.steps_per_epoch
    status, step = "finished", s.start_step
    s.t_start = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=s.start_step, disable=not progress, desc=desc, leave=False)
    try:
        if s.start_step == 0:
            ctx0 = RunContext(step=-1, model=model, optimizer=optimizer, loss_fn=loss_fn)
            for obs in s.observers:
                if hasattr(obs, "on_train_start"):
                    with preserved_rng():
                        obs.on_train_start(ctx0)
        for step in range(s.start_step, cfg.steps):
            s.step = step
            x, y = s.stream.batch(step)
            x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
            lr, mom = _current(optimizer)
            loss, loss_value = _forward(s, x, y, loss_fn)
            record: dict[str, Any] = {"step": step, "epoch": step / per_epoch, "lr": lr}
            if mom is not None:
                record["momentum"] = mom
            record["train_loss"] = loss_value
            if not math.isfinite(loss_value):
                status = "diverged"
                s.emit(record)
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            s.ddp.sum_gradients(model)
            optimizer.step()
            s.ddp.broadcast_module(model, buffers_only=True)
            if step + 1 < cfg.steps:
                s.scheduler.step()
            # Observers see this rank's shard: their operators all-reduce over the group, so an
            # estimate is the global batch's, computed once (not p times; right for sum losses).
            obs_batch = s.ddp.shard(x, y) if s.ddp.active else (x, y)
            ctx = RunContext(
                step=step, model=model, optimizer=optimizer, batch=obs_batch, loss=loss_value,
                lr=lr, loss_fn=loss_fn, total_steps=cfg.steps, record=record,
            )  # fmt: skip
            _observe(s.observers, ctx, last=step + 1 == cfg.steps)
            if "test_accuracy" in record:
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{record['test_accuracy']:.3f}")
            s.emit(record)
            bar.update(1)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                s.checkpoint(step + 1)
        else:
            step = cfg.steps
    finally:
        bar.close()
    return status, step
