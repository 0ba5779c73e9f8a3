"""``TrainConfig`` (what defines a run, saved as ``config.json``) and ``TrainResult``.

A configuration is validated when it is built, so a bad value fails at once (and at parse time
in the CLI) with a message naming the field, not deep inside a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import schedule_spec

__all__ = ["TrainConfig", "TrainResult", "config_diff"]

_OPTIMIZERS = ("sgd", "nesterov", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json``).

    The schedule is a ``Schedule.to_dict()`` description, e.g.
    ``{"type": "OneCycle", "base_lr": 0.1, "max_lr": 1.0, "step_size": 400, "total_steps": 1000}``;
    a string (JSON, a number, or ``NAME:key=value,...``, see
    :func:`hessian_lr.training.config.schedule_spec`) is turned into one, with missing lengths
    filled in from ``steps``. A dict is kept as given. Units: steps are optimizer updates
    (batches).

    Raises:
        ValueError: a field out of range (the message names it), or a schedule that is invalid,
            ends before ``steps``, or has a negative, non-finite or always-zero LR.
    """

    dataset: str = field(default="digits", metadata={"help": "digits, mnist, fashion-mnist, ..."})
    data_root: str | None = field(default=None, metadata={"help": "folder with the data files"})
    subset: float | int | None = field(
        default=None,
        metadata={"help": "stratified subset of the training set: a fraction (0.25) or a count"},
    )
    augment: bool = field(default=False, metadata={"help": "pad-4 crop + flip (CIFAR)"})
    model: str = field(default="lenet5", metadata={"help": "mlp, logreg, lenet5, resnet20, ..."})
    model_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "model keywords, e.g. '{\"hidden\": [64]}'"}
    )
    optimizer: str = field(default="sgd", metadata={"help": "sgd, nesterov or adam"})
    momentum: float = field(
        default=0.9, metadata={"help": "SGD momentum or Adam beta1, in [0, 1) (a schedule's wins)"}
    )
    weight_decay: float = 5e-4
    batch_size: int = 128
    steps: int = field(default=1000, metadata={"help": "optimizer updates"})
    schedule: dict[str, Any] = field(
        default_factory=lambda: {"type": "Constant", "base_lr": 0.1},
        metadata={"help": "LR schedule (see below)", "type": str, "metavar": "SPEC"},
    )
    estimator_methods: tuple[str, ...] = field(
        default=(),
        metadata={"help": "LR estimates to record: secant, secant_hvp, quadratic, sharpness"},
    )
    estimator_every: int = 10
    probe_every: int = field(
        default=0, metadata={"help": "lambda_max and trace every N steps (0 = off)"}
    )
    probe_size: int = field(default=256, metadata={"help": "training examples the probe uses"})
    trace_probes: int = field(default=0, metadata={"help": "Hutchinson probes (0 = no trace)"})
    eval_every: int = 100
    eval_batch_size: int = 1000
    checkpoint_every: int = 200
    seed: int = 0
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, ..."})

    def __post_init__(self) -> None:
        positive = ("batch_size", "steps", "eval_every", "checkpoint_every", "estimator_every")
        for name in (*positive, "eval_batch_size", "probe_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {value!r}")
        for name in ("probe_every", "trace_probes", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be sgd, nesterov or adam, got {self.optimizer!r}")
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise ValueError(
                f"TrainConfig.momentum must lie in [0, 1) (SGD momentum or Adam beta1), "
                f"got {self.momentum!r}"
            )
        wd = self.weight_decay
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be finite and >= 0, got {wd!r}")
        if self.subset is not None:
            s = self.subset
            ok = (isinstance(s, float) and 0 < s <= 1) or (
                isinstance(s, int) and not isinstance(s, bool) and s >= 1
            )
            if not ok:
                raise ValueError(
                    f"TrainConfig.subset must be a fraction in (0, 1] or a count >= 1, got {s!r}"
                )
        from ..lr.methods import METHODS

        methods = tuple(self.estimator_methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown estimator methods {unknown}; choose from {METHODS}")
        object.__setattr__(self, "estimator_methods", methods)
        try:
            spec = schedule_spec(self.schedule, steps=self.steps)
        except (TypeError, ValueError) as err:
            raise ValueError(f"TrainConfig.schedule: {err}") from None
        object.__setattr__(self, "schedule", spec)
        _check_schedule_covers(spec, self.steps)


def _check_schedule_covers(spec: dict[str, Any], steps: int) -> None:
    """The schedule is defined for every step, with finite LRs >= 0, not all zero."""
    from ..schedules import schedule_from_dict

    sched = schedule_from_dict(spec)
    total = getattr(sched, "total_steps", None)
    if total is not None and total < steps:
        raise ValueError(
            f"TrainConfig.schedule ({spec['type']}) ends at total_steps={total} but the run has "
            f"steps={steps}: lengthen the schedule or shorten the run"
        )
    probe = sorted({0, steps - 1, *range(0, steps, max(1, steps // 64))})
    lrs = [sched.lr(t) for t in probe]
    bad = [(t, lr) for t, lr in zip(probe, lrs) if not (math.isfinite(lr) and lr >= 0)]
    if bad:
        raise ValueError(f"TrainConfig.schedule gives LR {bad[0][1]} at step {bad[0][0]}")
    if not any(lr > 0 for lr in lrs):
        raise ValueError("TrainConfig.schedule gives LR 0 at every step: nothing would train")


def _canonical_schedule(spec: Any, steps: Any) -> Any:
    """A schedule description with every default field filled in (as saved by ``to_dict``)."""
    from ..schedules.base import schedule_from_dict

    try:
        return schedule_from_dict(schedule_spec(spec, steps=steps)).to_dict()
    except (TypeError, ValueError, KeyError):
        return spec  # not a valid description: compared as written


def config_diff(saved: dict[str, Any], new: TrainConfig, *, ignore=("device",)) -> dict:
    """Fields whose value differs between a saved ``config.json`` and ``new``.

    A field missing from ``saved`` (written by an older version) counts as its default.

    Returns:
        ``{field: (saved value, new value)}`` in JSON form; empty when they agree.
    """
    from ..records import to_jsonable

    mine = to_jsonable(new)
    defaults = {
        f.name: to_jsonable(
            f.default if f.default is not dataclasses.MISSING else f.default_factory()
        )
        for f in dataclasses.fields(TrainConfig)
    }
    out = {}
    for key, value in mine.items():
        if key in ignore:
            continue
        old = saved.get(key, defaults.get(key))
        if key == "schedule" and old != value:  # equal once their defaults are filled in?
            steps = saved.get("steps", defaults.get("steps"))
            if _canonical_schedule(old, steps) == _canonical_schedule(value, new.steps):
                continue
        if old != value:
            out[key] = (old, value)
    for key in saved:
        if key not in mine and key not in ignore:
            out[key] = (saved[key], None)
    return out


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
