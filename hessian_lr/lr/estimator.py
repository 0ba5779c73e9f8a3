"""``LREstimator``: curvature learning-rate estimates every k steps inside any training loop.

The stateful companion of :mod:`hessian_lr.lr.estimate`. Call ``estimator.step(batch)`` after each
optimizer step; every ``every`` steps it computes the requested methods (``secant``,
``secant_hvp``, ``quadratic``, ``sharpness``), keeps the Super-Convergence paper's exponential
moving average per method (Smith & Topin 2017, §5: LR ← α ε* + (1 − α) LR, α = 0.1, initial 0.1),
the raw history, and optionally writes one JSON line per estimate. Like cockpit's quantities it
observes and records; it never owns the loop and never changes the model or the optimizer.

The ``secant`` method keeps the iterates θ at steps t − 2k, t − k (k = ``every``; flat copies on
``storage_device``) and, at step t, applies :func:`hessian_lr.estimate.secant_lr` with
``steps=k``: the estimate of the per-step LR is kε Σ|Δ₁| / Σ|Δ₁ − Δ₂| (derivation in
``secant_lr``). The LR ε of each span is the one actually applied (read by an optimizer step
pre-hook, so the order of ``scheduler.step()`` and ``estimator.step()`` does not matter): by
default the mean per-step LR of each span (``secant_lr_rule="mean"``, exact when the LR varies
between the spans); ``"first"`` uses the LR of the first step of the first span for both spans,
as the paper's ε_i. The first secant estimate comes at step 2k (θ₀ is taken at construction).

Parameter groups: the "LR in use" is the mean of the groups' LRs weighted by the number of
estimated parameters in each group (exact when all groups share one LR); the per-group LRs are
recorded. Momentum, Nesterov, weight decay or a non-SGD optimizer raise a one-time warning and are
listed in ``caveats`` (and in every record): the paper's derivation assumes plain SGD. Under
heavy-ball momentum β the secant estimate approximates (1 − β)·Σ|g|/Σ|Hg|, the LR that with that
momentum gives the secant-optimal effective step, while ``secant_hvp`` / ``quadratic`` give the
plain-SGD LR and ``sharpness`` reports the momentum bound (2 + 2β)/λ_max; with weight decay the
trajectory (secant) includes the decay term, the HVP methods see the loss only.
"""

from __future__ import annotations

import json
import math
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.linop import params_to_vector
from ..records import append_record, to_jsonable
from .estimate import (
    HVP_METHODS,
    METHODS,
    NONFINITE_LOSS,
    LREstimate,
    SecantResult,
    _check_common,
    _estimate_many,
    secant_lr,
)

__all__ = ["LREstimator"]

_STATE_VERSION = 1


def _nonfinite_secant(lr: float, steps: int, norm: str) -> SecantResult:
    nan = float("nan")
    return SecantResult(
        lr=nan,
        lr_l1=nan,
        lr_l2=nan,
        curvature=nan,
        step_l1=nan,
        step_norm=nan,
        lr_used=lr,
        lr_next=lr,
        steps=steps,
        norm=norm,
        flags=(NONFINITE_LOSS,),
    )


class LREstimator:
    """Learning-rate estimates every ``every`` optimizer steps, with EMA, history and records.

    Args:
        model: the network (never modified; train/eval modes restored by the HVP operator).
        methods: any of ``"secant"`` (trajectory only, no extra gradient), ``"secant_hvp"``,
            ``"quadratic"`` (one gradient + one HVP, shared when both are asked) and
            ``"sharpness"`` (Lanczos, warm-started from the previous eigenvector).
        every: k, estimate at steps k, 2k, ... (the secant from step 2k on).
        loss_fn: ``loss_fn(outputs, targets)`` (or ``loss_fn(model, batch)`` with ``closure``);
            required by the HVP methods.
        optimizer: where the applied LR is read (a step pre-hook records the per-group LRs at
            each ``optimizer.step()``) and momentum / weight decay are detected. Without it, pass
            ``step(lr=...)`` (needed by ``secant``). Its state is never changed.
        norm: ``"l1"`` (the paper) or ``"l2"`` for ``secant`` and ``secant_hvp``.
        momentum: β for the sharpness bound (2 + 2β)/λ_max; default: the optimizer's
            ``momentum`` (0 without one).
        secant_lr_rule: ``"mean"`` (mean applied LR per span) or ``"first"`` (the paper's ε_i).
        ema_alpha: α of the EMA, in (0, 1].
        ema_init: initial EMA value (the paper: 0.1). ``smoothed()`` returns it before the first
            estimate. Estimates that are ``nan`` (flagged) leave the EMA unchanged.
        storage_device: where the secant's two previous iterates and the warm-start eigenvector
            are kept (``"cpu"`` saves accelerator memory; the parameters' device saves copies).
        record_path: a JSONL file; one line per estimation step is appended and flushed.
        lanczos_tol, lanczos_max_iter: for ``sharpness`` (see ``estimate_lr``).
        warm_start: start Lanczos from the previous top eigenvector.
        backend, bn_mode, params, closure: passed to ``HessianOperator`` (``params`` also selects
            the weights of the secant).
        on_nonfinite: ``"flag"`` (default: record ``nonfinite_loss`` and go on) or ``"raise"``.
        generator: random source for cold Lanczos starts.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.05)
        >>> est = LREstimator(model, methods=("secant", "quadratic"), every=2,
        ...                   loss_fn=nn.MSELoss(), optimizer=opt)
        >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
        >>> for _ in range(4):
        ...     opt.zero_grad(); nn.MSELoss()(model(x), y).backward(); opt.step()
        ...     _ = est.step((x, y))
        >>> sorted(est.latest), len(est.history)
        (['quadratic', 'secant'], 2)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        methods: Sequence[str] = ("secant",),
        every: int = 10,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        norm: Literal["l1", "l2"] = "l1",
        momentum: float | None = None,
        secant_lr_rule: Literal["mean", "first"] = "mean",
        ema_alpha: float = 0.1,
        ema_init: float = 0.1,
        storage_device: torch.device | str = "cpu",
        record_path: str | Path | None = None,
        lanczos_tol: float = 1e-2,
        lanczos_max_iter: int | None = None,
        warm_start: bool = True,
        backend: str = "auto",
        bn_mode: Literal["eval", "train"] = "eval",
        params: Sequence[torch.Tensor] | Sequence[str] | None = None,
        closure: bool = False,
        on_nonfinite: Literal["raise", "flag"] = "flag",
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(methods, str):
            methods = (methods,)
        methods = tuple(methods)
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown or len(set(methods)) != len(methods):
            raise ValueError(
                f"methods must be distinct names from {METHODS}, got {methods!r}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        hvp_methods = tuple(m for m in methods if m in HVP_METHODS)
        if hvp_methods and loss_fn is None:
            raise ValueError(f"methods {hvp_methods} need loss_fn (the loss to differentiate)")
        if not (0.0 < ema_alpha <= 1.0):
            raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
        if not math.isfinite(ema_init):
            raise ValueError(f"ema_init must be finite, got {ema_init}")
        if secant_lr_rule not in ("mean", "first"):
            raise ValueError(f"secant_lr_rule must be 'mean' or 'first', got {secant_lr_rule!r}")
        _check_common(norm, 0.0 if momentum is None else momentum, lanczos_tol, on_nonfinite)
        if optimizer is not None and not hasattr(optimizer, "param_groups"):
            raise TypeError("optimizer must have param_groups (a torch.optim.Optimizer)")

        self.model = model
        self.methods = methods
        self.every = every
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.norm = norm
        self.secant_lr_rule = secant_lr_rule
        self.ema_alpha = float(ema_alpha)
        self.ema_init = float(ema_init)
        self.storage_device = torch.device(storage_device)
        self.record_path = None if record_path is None else Path(record_path)
        self.lanczos_tol = lanczos_tol
        self.lanczos_max_iter = lanczos_max_iter
        self.warm_start = warm_start
        self.backend = backend
        self.bn_mode = bn_mode
        self.closure = closure
        self.on_nonfinite = on_nonfinite
        self.generator = generator
        self._hvp_methods = hvp_methods
        self._names, self._params = HessianOperator._select_params(model, params)

        self._group_weights = self._compute_group_weights()
        self.momentum = self._detect_momentum() if momentum is None else float(momentum)
        self.caveats = self._detect_caveats()
        if self.caveats:
            warnings.warn(
                "LREstimator: the secant estimate (Super-Convergence Eq. 8) is derived for plain "
                f"SGD, but the optimizer has {', '.join(self.caveats)}. Under heavy-ball momentum "
                "β the secant approximates (1-β)·Σ|g|/Σ|Hg|; weight decay enters the trajectory. "
                "The caveats are recorded with every estimate.",
                UserWarning,
                stacklevel=2,
            )

        # State (see state_dict).
        self.num_steps = 0
        self._snapshots: list[torch.Tensor] = []
        self._span_prev: list[float] = []
        self._span_cur: list[float] = []
        self._smoothed = {m: self.ema_init for m in methods}
        self._counts = {m: 0 for m in methods}
        self._history: list[dict[str, Any]] = []
        self._latest: dict[str, LREstimate | SecantResult] = {}
        self._eigenvector: torch.Tensor | None = None
        self._pending_lrs: list[float] | None = None

        if "secant" in methods:
            self._snapshots.append(self._snapshot())
        self._hook = None
        if optimizer is not None and hasattr(optimizer, "register_step_pre_hook"):
            ref = weakref.ref(self)

            def hook(opt: Any, args: Any, kwargs: Any) -> None:
                est = ref()
                if est is not None:
                    est._pending_lrs = est._group_lrs()

            self._hook = optimizer.register_step_pre_hook(hook)
            weakref.finalize(self, self._hook.remove)  # no dangling hook once collected

    # --------------------------------------------------------------------------- the optimizer
    def _compute_group_weights(self) -> list[int]:
        if self.optimizer is None:
            return []
        ids = {id(p): p.numel() for p in self._params}
        weights = [
            sum(ids.get(id(p), 0) for p in group["params"]) for group in self.optimizer.param_groups
        ]
        if sum(weights) == 0:
            raise ValueError("none of the estimated parameters is in the optimizer's param_groups")
        return weights

    def _group_lrs(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def _weighted_lr(self, lrs: Sequence[float]) -> float:
        if len(lrs) != len(self._group_weights):  # groups were added: recount
            self._group_weights = self._compute_group_weights()
        total = sum(self._group_weights)
        return sum(w * lr for w, lr in zip(self._group_weights, lrs)) / total

    def _active_groups(self) -> list[dict]:
        if self.optimizer is None:
            return []
        return [g for g, w in zip(self.optimizer.param_groups, self._group_weights) if w > 0]

    def _detect_momentum(self) -> float:
        groups = self._active_groups()
        m = groups[0].get("momentum", 0.0) if groups else 0.0
        return float(m) if isinstance(m, (int, float)) else 0.0

    def _detect_caveats(self) -> tuple[str, ...]:
        """Short descriptions of what departs from plain SGD, e.g. ``("momentum=0.9",)``."""
        if self.optimizer is None:
            return ()
        found: list[str] = []
        if not isinstance(self.optimizer, torch.optim.SGD):
            found.append(f"optimizer={type(self.optimizer).__name__}")
        groups = self._active_groups()
        for key in ("momentum", "dampening", "weight_decay"):
            values = sorted({float(g.get(key) or 0.0) for g in groups} - {0.0})
            if values:
                found.append(f"{key}={'/'.join(f'{v:g}' for v in values)}")
        if any(g.get("nesterov", False) for g in groups):
            found.append("nesterov")
        return tuple(found)

    # ------------------------------------------------------------------------------ the step
    def _snapshot(self) -> torch.Tensor:
        """A copy of θ (flat, float) on ``storage_device``."""
        with torch.no_grad():
            theta = params_to_vector([p.detach() for p in self._params])  # cat: a new tensor
            return theta.to(self.storage_device)

    @property
    def due(self) -> bool:
        """Whether the next ``step()`` computes estimates (build the HVP batch only then)."""
        return (self.num_steps + 1) % self.every == 0

    def step(self, batch: Any = None, *, lr: float | None = None) -> dict[str, Any] | None:
        """Register one optimizer step; every ``every`` steps compute and record the estimates.

        Call after ``optimizer.step()`` (before or after ``scheduler.step()``).

        Args:
            batch: the batch for the HVP methods (``(inputs, targets)``, or as ``loss_fn``
                expects with ``closure``); only needed when ``due``. The estimate is at the
                current (post-step) parameters.
            lr: the LR applied in the step just taken (overrides the optimizer's). Needed by
                ``secant`` when no optimizer was given.

        Returns:
            ``{method: LREstimate | SecantResult}`` on an estimation step (the secant appears
            from step 2k on), else None.
        """
        t = self.num_steps + 1
        hvp = self._hvp_methods
        # Validate everything before the state advances.
        if hvp and batch is None and t % self.every == 0:
            raise ValueError(
                f"step {t} is an estimation step and methods {hvp} need a batch: call "
                "estimator.step(batch) (check estimator.due to build it only when needed)"
            )
        groups: list[float] | None = None
        if lr is not None:
            lr_now: float | None = float(lr)
            if not (math.isfinite(lr_now) and lr_now > 0):
                raise ValueError(f"lr must be a positive finite number, got {lr}")
        elif self.optimizer is not None:
            groups = self._pending_lrs if self._pending_lrs is not None else self._group_lrs()
            lr_now = self._weighted_lr(groups)
        else:
            lr_now = None
        if "secant" in self.methods and lr_now is None:
            raise ValueError(
                "the secant method needs the LR applied in each step: construct the "
                "estimator with optimizer=... or call step(lr=...)"
            )
        self.num_steps = t
        self._pending_lrs = None
        if "secant" in self.methods:
            self._span_cur.append(lr_now)
        if t % self.every != 0:
            return None

        t0 = time.perf_counter()
        results: dict[str, LREstimate | SecantResult] = {}
        if "secant" in self.methods:
            theta = self._snapshot()
            if len(self._snapshots) == 2:
                results["secant"] = self._secant(theta)
            self._snapshots = [*self._snapshots, theta][-2:]
            self._span_prev, self._span_cur = self._span_cur, []
        warm = False
        num_hvps = 0
        if hvp:
            op = HessianOperator(
                self.model,
                self.loss_fn,
                batch,
                params=self._names,
                backend=self.backend,
                bn_mode=self.bn_mode,
                closure=self.closure,
            )
            warm = self.warm_start and self._eigenvector is not None and "sharpness" in hvp
            results.update(
                _estimate_many(
                    op,
                    hvp,
                    norm=self.norm,
                    momentum=self.momentum,
                    lanczos_tol=self.lanczos_tol,
                    lanczos_max_iter=self.lanczos_max_iter,
                    v0=self._eigenvector if warm else None,
                    on_nonfinite=self.on_nonfinite,
                    generator=self.generator,
                )
            )
            num_hvps = op.num_hvps
            sharp = results.get("sharpness")
            if sharp is not None and sharp.eigenvector is not None:
                self._eigenvector = sharp.eigenvector.detach().to(self.storage_device)
        for m, r in results.items():
            if r.ok:
                a = self.ema_alpha
                self._smoothed[m] = a * r.lr + (1.0 - a) * self._smoothed[m]
                self._counts[m] += 1
        estimates = {m: r.as_dict() for m, r in results.items()}
        if "sharpness" in estimates:
            estimates["sharpness"]["warm_start"] = warm
        record = to_jsonable(
            {
                "step": t,
                "lr": lr_now,
                "lr_groups": groups,
                "estimates": estimates,
                "smoothed": dict(self._smoothed),
                "num_hvps": num_hvps,
                "seconds": time.perf_counter() - t0,
                "caveats": list(self.caveats),
            },
            inf_as_string=False,
        )
        self._history.append(record)
        self._latest = results
        if self.record_path is not None:
            append_record(self.record_path, record)
        return dict(results)

    def _secant(self, theta: torch.Tensor) -> SecantResult:
        prev, cur = self._span_prev, self._span_cur
        if self.secant_lr_rule == "first":
            lr1, lr2 = prev[0], None
        else:
            lr1, lr2 = sum(prev) / len(prev), sum(cur) / len(cur)
        try:
            return secant_lr(
                self._snapshots[0],
                self._snapshots[1],
                theta,
                lr1,
                lr_next=lr2,
                steps=self.every,
                norm=self.norm,
            )
        except NonFiniteError:
            if self.on_nonfinite == "raise":
                raise
            return _nonfinite_secant(lr1, self.every, self.norm)

    # ------------------------------------------------------------------------------ reading
    @property
    def latest(self) -> dict[str, LREstimate | SecantResult]:
        """The results of the last estimation step, ``{method: result}`` (empty before)."""
        return dict(self._latest)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per estimation step (the JSONL lines; ``None`` where a value is NaN)."""
        return list(self._history)

    def smoothed(self, method: str | None = None) -> float:
        """The EMA of ``method``'s estimates (``ema_init`` before the first finite one).

        ``method`` defaults to the first of ``methods``.
        """
        method = self.methods[0] if method is None else method
        if method not in self._smoothed:
            raise KeyError(f"method {method!r} is not estimated here; methods: {self.methods}")
        return self._smoothed[method]

    def num_estimates(self, method: str) -> int:
        """How many finite estimates of ``method`` entered the EMA."""
        if method not in self._counts:
            raise KeyError(f"method {method!r} is not estimated here; methods: {self.methods}")
        return self._counts[method]

    def close(self) -> None:
        """Remove the optimizer hook (the estimator then reads the LR at ``step()`` time)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ------------------------------------------------------------------------- checkpointing
    def _config(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "every": self.every,
            "norm": self.norm,
            "secant_lr_rule": self.secant_lr_rule,
            "num_params": sum(p.numel() for p in self._params),
        }

    def state_dict(self) -> dict[str, Any]:
        """The estimator's state: step count, secant iterates and LR spans, EMA, history, the
        warm-start eigenvector. Plain containers and tensors: loads with
        ``torch.load(..., weights_only=True)``. ``latest`` (result objects) is not saved."""
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "num_steps": self.num_steps,
            "snapshots": [s.clone() for s in self._snapshots],
            "span_prev": list(self._span_prev),
            "span_cur": list(self._span_cur),
            "smoothed": dict(self._smoothed),
            "counts": dict(self._counts),
            "history": [json.loads(json.dumps(r)) for r in self._history],
            "eigenvector": None if self._eigenvector is None else self._eigenvector.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the configuration (methods, every, norm, rule and
        the number of parameters) must match."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported LREstimator state version {state.get('version')!r}")
        mine, theirs = self._config(), state["config"]
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(f"state_dict configuration differs (saved, here): {diff}")
        self.num_steps = int(state["num_steps"])
        self._snapshots = [s.to(self.storage_device) for s in state["snapshots"]]
        self._span_prev = [float(x) for x in state["span_prev"]]
        self._span_cur = [float(x) for x in state["span_cur"]]
        self._smoothed = {k: float(v) for k, v in state["smoothed"].items()}
        self._counts = {k: int(v) for k, v in state["counts"].items()}
        self._history = [dict(r) for r in state["history"]]
        eig = state["eigenvector"]
        self._eigenvector = None if eig is None else eig.to(self.storage_device)
        self._latest = {}
        self._pending_lrs = None

    def __repr__(self) -> str:
        smoothed = {m: round(v, 6) for m, v in getattr(self, "_smoothed", {}).items()}
        return (
            f"LREstimator(methods={getattr(self, 'methods', None)}, "
            f"every={getattr(self, 'every', None)}, step={getattr(self, 'num_steps', 0)}, "
            f"smoothed={smoothed})"
        )
