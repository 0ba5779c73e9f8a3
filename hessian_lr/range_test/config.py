"""Settings of the LR range test: the ladder's checks and :class:`RangeTestConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .crosscheck import resolve_bn_mode

__all__ = ["RangeTestConfig", "check_ladder"]

RAMPS = ("linear", "exp")
AMP_DTYPES = (torch.float16, torch.bfloat16)


def check_ladder(start_lr: float, end_lr: float, num_steps: int, ramp: str) -> None:
    """ValueError unless the ladder is well defined (ends, length, ramp)."""
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS}, got {ramp!r}")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 2:
        raise ValueError(
            f"num_steps must be an integer ≥ 2 (the ladder has two ends), got {num_steps}"
        )
    if not (math.isfinite(start_lr) and math.isfinite(end_lr)):
        raise ValueError(f"start_lr and end_lr must be finite, got {start_lr} and {end_lr}")
    if ramp == "exp" and not start_lr > 0:
        raise ValueError(f"the exp ramp needs start_lr > 0 (log scale), got {start_lr}")
    if start_lr < 0:
        raise ValueError(f"start_lr must be ≥ 0, got {start_lr}")
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be larger than start_lr, got {start_lr} → {end_lr}")


@dataclass(frozen=True, kw_only=True)
class RangeTestConfig:
    """The range test's settings (every one also a keyword of :func:`lr_range_test`).

    Attributes:
        end_lr: the ladder's top (required; > ``start_lr``).
        num_steps: optimizer updates (required; ≥ 2); each consumes ``accumulation_steps``
            batches.
        start_lr: the ladder's bottom (≥ 0; the exp ramp needs > 0).
        ramp: ``"linear"`` (Smith's range test) or ``"exp"`` (fastai's).
        val_every: evaluate the held-out data after every ``val_every``-th update.
        accumulation_steps: micro-batches per update; each micro-loss is divided by it before
            ``backward`` (the recorded loss is their mean).
        smoothing: β of the bias-corrected EMA, in [0, 1) (0: no smoothing).
        diverge_factor: stop when the smoothed loss exceeds this × the best (> 1; ``math.inf``
            disables the rule; non-finite losses always stop the run).
        restore: restore parameters, buffers, gradients, optimizer state and LRs, module modes,
            a GradScaler and RNG states (torch CPU/CUDA, numpy, random, DataLoader generators)
            afterwards, also on an exception. With ``restore=False`` the trained state is left.
        curvature_check: before training, on the first update's batches, compute λ_max and
            gᵀg/gᵀHg (:mod:`hessian_lr.range_test.crosscheck`); a failure is reported on the
            result (``curvature.flags == ("failed",)`` and a ``RuntimeWarning``), not raised.
        bn_mode: BatchNorm mode of the cross-check's Hessian: ``"train"``, ``"eval"``, or None
            for ``hessian_lr.lr.defaults.DEFAULT_BN_MODE``; recorded on the result.
        amp_dtype: ``torch.float16`` or ``torch.bfloat16`` to run forward passes under
            ``torch.autocast`` (None: full precision).
        progress: show a tqdm progress bar.
    """

    end_lr: float | None = None
    num_steps: int | None = None
    start_lr: float = 1e-5
    ramp: Literal["linear", "exp"] = "linear"
    val_every: int = 1
    accumulation_steps: int = 1
    smoothing: float = 0.98
    diverge_factor: float = 4.0
    restore: bool = True
    curvature_check: bool = True
    bn_mode: Literal["train", "eval"] | None = None
    amp_dtype: torch.dtype | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        """Validate every setting (ValueError naming the setting)."""
        if self.end_lr is None or self.num_steps is None:
            raise ValueError(
                "the range test needs end_lr and num_steps (the ladder's top and its length)"
            )
        check_ladder(self.start_lr, self.end_lr, self.num_steps, self.ramp)
        for name in ("val_every", "accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if not self.diverge_factor > 1.0:
            raise ValueError(
                f"diverge_factor must be > 1 (or math.inf to disable), got {self.diverge_factor}"
            )
        resolve_bn_mode(self.bn_mode)
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            raise ValueError(
                f"amp_dtype must be torch.float16, torch.bfloat16 or None, got {self.amp_dtype}"
            )

    def record(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (the result's ``config``)."""
        return {
            "start_lr": float(self.start_lr),
            "end_lr": float(self.end_lr),  # type: ignore[arg-type]
            "num_steps": self.num_steps,
            "ramp": self.ramp,
            "accumulation_steps": self.accumulation_steps,
            "smoothing": float(self.smoothing),
            "diverge_factor": float(self.diverge_factor),
        }
