"""``CurvatureLR`` (experimental): a torch LR scheduler driven by curvature estimates.

Sets the learning rate from an :class:`~hessian_lr.lr.LREstimator`'s smoothed estimate,
as Smith & Topin (*Super-Convergence*, arXiv 1708.07120, §5) do with their secant estimate:
LR = clip(safety · EMA(ε*), min_lr, max_lr). Experimental: an LR that follows the local
curvature is not a tested recipe (the paper reports the estimates, large and noisy, 0.2-6 on
ResNet-56, rather than a schedule built on them); the safety factor and the clipping bounds are
the knobs that keep it from diverging, and a trust ratio bounds how far one estimation step can
move the LR (default ×2 up, ×0.5 down), so one near-zero curvature sample (gᵀHg → 0 makes
gᵀg/gᵀHg explode) cannot multiply the LR by 18 in one update. It honours the ``LRScheduler``
contract (``last_epoch``, ``base_lrs``, an initial step in the constructor, ``get_last_lr()``,
``state_dict()``/``load_state_dict()``). Its overhead is kept in its state: ``overhead`` holds the
estimation calls, HVPs and seconds the estimator spent (issue 27); :mod:`.curvature_modes` builds
the two curvature-set modes on it.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..curvature._solver_utils import plain_scalar
from .estimator import LREstimator

__all__ = ["CurvatureLR", "FILLED_KEYS"]

_COMMON = ("loss", "grad_norm")
#: The positive numbers each method fills in its results: the keys ``CurvatureLR`` can follow.
#: (``tests/lr/test_flags_noise.py`` checks every entry against real estimates.)
FILLED_KEYS: dict[str, tuple[str, ...]] = {
    "secant": ("lr", "raw_lr", "lr_l1", "lr_l2", "step_l1", "step_norm", "noise_ratio"),
    "secant_same_batch": ("lr", "raw_lr", "curvature", "step_norm", *_COMMON),
    "quadratic": ("lr", "raw_lr", "gHg", "hg_norm", "hg_l1", "curvature", *_COMMON),
    "secant_hvp": ("lr", "raw_lr", "gHg", "hg_norm", "hg_l1", "curvature", *_COMMON),
    "sharpness": (
        "lr",
        "raw_lr",
        "lambda_max",
        "curvature",
        "lr_newton",
        "lr_stable",
        "lr_stable_momentum",
        *_COMMON,
    ),  # fmt: skip
    "update": (
        "lr",
        "raw_lr",
        "lr_multiplier",
        "lr_in_use",
        "update_norm",
        "dHd",
        "curvature",
        *_COMMON,
    ),  # fmt: skip
    "preconditioned_sharpness": (
        "lr",
        "lambda_max",
        "lr_stable",
        "threshold",
        "lr_in_use",
        "lr_times_sharpness",
    ),  # fmt: skip
}


class CurvatureLR(LRScheduler):
    """LR ← clip(safety · estimator.smoothed(method), min_lr, max_lr), trust-bounded (experimental).

    Call ``estimator.step(...)`` and then ``scheduler.step()`` after every ``optimizer.step()``.
    The estimator refreshes its EMA every ``estimator.every`` steps, so the LR is piecewise
    constant. Before the estimator's first finite estimate the EMA holds ``ema_init`` (the paper:
    0.1), so the LR starts at ``safety · ema_init``; ``warmup_steps`` keeps the optimizer's own
    LRs (``base_lrs``) for the first updates instead.

    Trust ratio: at each new estimation step of the estimator, the LR moves towards the target
    by at most a factor ``max_increase`` up and ``max_decrease`` down:
    LR_new = clip(target, LR_old · max_decrease, LR_old · max_increase). Between estimation steps
    it stays put, so a persistent change is followed geometrically (×2 per estimate by default)
    while a single outlier moves it by at most one factor. ``max_increase=math.inf`` and
    ``max_decrease=0`` turn the bound off. The first LR (before any estimate) is not bounded.

    Parameter groups keep their ratios: group g gets target · base_lr_g / base_ref, where
    base_ref is the mean of the base LRs weighted by the groups' parameter counts (so the
    parameter-weighted mean LR -- what the estimator reads as the LR in use -- is the target).

    Args:
        optimizer: the wrapped optimizer.
        estimator: an ``LREstimator`` (stepped by the caller, before this scheduler).
        method: which of the estimator's methods drives the LR (default its first).
        key: which field of that method's results the EMA follows (default ``"lr"``), e.g.
            ``method="sharpness", key="lr_stable"`` with ``safety=0.5`` keeps the LR at half the
            gradient-descent stability bound 2/λ_max (``LREstimator.track``).
        safety: factor on the estimate (> 0), e.g. 0.5 for a margin below the estimate.
        min_lr, max_lr: clipping bounds, 0 ≤ min_lr ≤ max_lr.
        warmup_steps: updates with the base LRs before the estimate takes over.
        max_increase: largest factor by which one estimation step may raise the LR (≥ 1).
        max_decrease: smallest factor by which one estimation step may lower it, in [0, 1].
        last_epoch: -1 starts fresh (see ``LRScheduler``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
        >>> est = LREstimator(model, methods=("secant",), every=5, optimizer=opt)
        >>> sched = CurvatureLR(opt, est, safety=0.5, max_lr=1.0)
        >>> sched.get_last_lr()  # 0.5 × ema_init (0.1) before any estimate
        [0.05]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        estimator: LREstimator,
        *,
        method: str | None = None,
        key: str = "lr",
        safety: float = 1.0,
        min_lr: float = 0.0,
        max_lr: float = math.inf,
        warmup_steps: int = 0,
        max_increase: float = 2.0,
        max_decrease: float = 0.5,
        last_epoch: int = -1,
    ) -> None:
        safety, min_lr, max_lr, warmup_steps, max_increase, max_decrease = (
            plain_scalar(x)  # NumPy scalars are the numbers they stand for
            for x in (safety, min_lr, max_lr, warmup_steps, max_increase, max_decrease)
        )
        if not isinstance(estimator, LREstimator):
            raise TypeError(f"estimator must be an LREstimator, got {type(estimator).__name__}")
        method = estimator.methods[0] if method is None else method
        if method not in estimator.methods:
            raise ValueError(
                f"method {method!r} is not estimated by the estimator (methods {estimator.methods})"
            )
        if not (math.isfinite(safety) and safety > 0):
            raise ValueError(f"safety must be a positive finite number, got {safety}")
        if not (0.0 <= min_lr <= max_lr):
            raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if not max_increase >= 1.0:
            raise ValueError(f"max_increase must be >= 1 (math.inf: no bound), got {max_increase}")
        if not 0.0 <= max_decrease <= 1.0:
            raise ValueError(f"max_decrease must be in [0, 1] (0: no bound), got {max_decrease}")
        filled = FILLED_KEYS.get(method)
        if filled is not None and key not in filled:
            raise ValueError(
                f"key {key!r} is never filled by method {method!r}, so the LR would never move; "
                f"{method!r} fills {list(filled)}"
            )
        self.max_increase = float(max_increase)
        self.max_decrease = float(max_decrease)
        self._applied: float | None = None  # the last reference LR set (trust-ratio anchor)
        #: Cost of the estimates seen so far: estimation calls, HVPs, seconds (sums over the
        #: estimator's records; ``per_call`` divides by the calls). Saved by ``state_dict``.
        self.overhead: dict[str, float] = {"calls": 0, "hvps": 0, "seconds": 0.0}
        self._counted = 0  # estimator records already added to ``overhead``
        self._seen_updates: int | None = None  # estimator records seen when it was set
        self.estimator = estimator
        self.method = method
        self.key = key
        self._ema_name = estimator.track(method, key)
        self.safety = float(safety)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.warmup_steps = warmup_steps
        self._group_sizes = [
            sum(p.numel() for p in group["params"]) for group in optimizer.param_groups
        ]
        super().__init__(optimizer, last_epoch)

    def target_lr(self) -> float:
        """clip(safety · smoothed estimate, min_lr, max_lr): where the LR is heading."""
        value = self.safety * self.estimator.smoothed(self._ema_name)
        if not math.isfinite(value):  # cannot happen with a finite ema_init; be safe
            value = self.max_lr if math.isfinite(self.max_lr) else self.min_lr
        return min(max(value, self.min_lr), self.max_lr)

    def _account(self) -> None:
        """Add the estimator records not yet counted to ``overhead``."""
        history = self.estimator.history
        for record in history[self._counted :]:
            self.overhead["calls"] += 1
            self.overhead["hvps"] += int(record.get("num_hvps", 0))
            self.overhead["seconds"] += float(record.get("seconds", 0.0))
        self._counted = len(history)

    def overhead_per_call(self) -> dict[str, float]:
        """Mean HVPs and seconds per estimation call (``nan`` before the first call)."""
        self._account()
        calls = self.overhead["calls"]
        if not calls:
            return {"hvps": math.nan, "seconds": math.nan}
        return {"hvps": self.overhead["hvps"] / calls, "seconds": self.overhead["seconds"] / calls}

    def _reference_lr(self) -> float:
        """The trust-bounded reference LR for this update (moves once per estimation step)."""
        self._account()
        updates = len(self.estimator.history)
        if self._applied is not None and updates == self._seen_updates:
            return self._applied
        target = self.target_lr()
        if self._applied is not None and self._applied > 0:
            lo, hi = self._applied * self.max_decrease, self._applied * self.max_increase
            target = min(max(target, lo), hi)
        self._applied, self._seen_updates = target, updates
        return target

    def get_lr(self) -> list[float]:
        """Per-group LRs for update ``last_epoch``."""
        base = [float(b) for b in self.base_lrs]
        sizes = self._group_sizes
        total = sum(sizes)
        base_ref = sum(s * b for s, b in zip(sizes, base)) / total if total else 0.0
        if self.last_epoch < self.warmup_steps:
            self._applied, self._seen_updates = base_ref, -1  # move at the first update after
            return base
        target = self._reference_lr()
        if not base_ref > 0:
            return [target for _ in base]
        return [target * b / base_ref for b in base]

    def state_dict(self) -> dict:
        """The scheduler's state without the optimizer and the estimator.

        Save the estimator with ``estimator.state_dict()``.
        """
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "estimator")}
