"""``LREstimator``: curvature learning-rate estimates every k steps inside any training loop.

The stateful companion of :mod:`hessian_lr.lr.estimate`, and an :class:`~hessian_lr.observe.
Observer`. Call ``estimator.step(batch)`` after each optimizer step (or hand it to a runner as an
observer); every ``every`` steps it computes the requested methods, keeps the Super-Convergence
paper's exponential moving average per method (Smith & Topin 2017, §5: LR ← α ε* + (1 − α) LR,
α = 0.1, initial 0.1), the raw history, and optionally writes one JSON line per estimate. It never
changes the model, the optimizer or the global RNGs (its randomness comes from its own generator,
seeded by ``seed``).

``secant`` keeps the iterates θ at steps t − 2k, t − k (k = ``every``) and applies
:func:`~hessian_lr.lr.secant.secant_lr` with ``steps=k``, ``scale=secant_scale`` (``"per_step"``:
× kε, the default; ``"paper"``: × ε, k times smaller) and the LR each span applied (read by an
optimizer step pre-hook; ``secant_lr_rule``). Each secant estimate carries ``noise_ratio`` =
estimate / (ε·c(μ, k)) and ``indistinguishable_from_noise`` from the bootstrap band of the last
``noise_window`` ratios (:func:`~hessian_lr.lr.secant.with_null_band`). ``secant_same_batch``
measures g(θ_t; B) − g(θ_{t−1}; B) along the step just taken on one batch (one extra gradient).

EMA: an estimate moves the EMA only when ``ok`` (finite positive ``lr``, no flag). With
``ema_include_flagged=True`` a flagged estimate enters with its ``raw_lr`` when that is finite and
positive (the paper's EMA of every Eq. 8 value). A failing ``step`` leaves the state unchanged.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..curvature._solver_utils import plain_scalar
from ..curvature.distributed import Reducer, resolve_process_group, unwrap_ddp
from ..curvature.hessian import NonFiniteError, select_params
from ..curvature.linop import params_to_vector
from ..observe import Observer, StepContext
from ..records import append_record, to_jsonable
from ._estimator_args import check_estimator_args, check_smoothing_args
from ._estimator_state import EstimatorCheckpoint
from ._optimizer_view import OptimizerView
from .estimate import estimate_lrs
from .methods import HVP_METHODS, check_options
from .options import CurvatureOptions, as_options, rejects_operator_keywords
from .secant import SecantResult, nonfinite_secant, secant_lr, with_null_band

__all__ = ["LREstimator"]


class LREstimator(EstimatorCheckpoint, Observer):
    """Learning-rate estimates every ``every`` optimizer steps, with EMA, history and records.

    Args:
        model: the network (never modified).
        methods: any of ``"secant"`` (trajectory only), ``"secant_same_batch"`` (one extra
            gradient), ``"secant_hvp"``, ``"quadratic"`` (one gradient + one HVP, shared) and
            ``"sharpness"`` (Lanczos, warm-started from the previous eigenvector).
        every: k, estimate at steps k, 2k, ... (the secant from step 2k on).
        loss_fn: ``loss_fn(outputs, targets)`` (or ``loss_fn(model, batch)`` with ``closure``);
            required by the methods other than ``secant``.
        optimizer: where the applied LR is read (a step pre-hook) and momentum / weight decay are
            detected. Without it, pass ``step(lr=...)`` (needed by ``secant``). Never changed.
        norm: ``"l1"`` (the paper) or ``"l2"`` for the secant rules.
        momentum: β for the sharpness bound and the noise null; default the optimizer's.
        secant_lr_rule: ``"mean"`` (mean applied LR per span) or ``"first"`` (the paper's ε_i).
        secant_scale: ``"per_step"`` (kε, default) or ``"paper"`` (ε); see the module docstring.
        ema_alpha: α of the EMA, in (0, 1].
        ema_init: initial EMA value, > 0 (the paper: 0.1).
        ema_include_flagged: let flagged estimates enter the EMA with their ``raw_lr``.
        noise_window: how many recent secant ratios the noise band uses (≥ 5).
        noise_tol: equivalence margin of the noise test (see ``null_band``).
        storage_device: where iterates and warm-start vectors are kept.
        record_path: a JSONL file; one line per estimation step is appended (under a process
            group by rank 0 only; a failed write raises on every rank).
        lanczos_tol: relative Ritz residual for ``sharpness``.
        lanczos_max_iter: Krylov dimension cap for ``sharpness``.
        warm_start: start Lanczos from the previous top eigenvector.
        on_nonfinite: ``"flag"`` (default: record ``nonfinite_loss`` and go on) or ``"raise"``.
        seed: seed of the estimator's own generator (Lanczos starts, bootstrap); recorded.
        generator: use this generator instead (then ``seed`` is not recorded).
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`);
            ``bn_mode`` is recorded, ``params`` (tensors or names) are also the secant's
            weights, ``closure`` selects ``loss_fn(model, batch)``. Under a process group
            (``process_group``: None auto-detects an initialized default group, ``False``
            estimates on this rank's batch alone) each rank passes its shard of the batch to
            ``step``; the products are all-reduced, so every rank gets the same estimates (on
            the union of the shards) and the same EMA. A ``DistributedDataParallel`` model is
            unwrapped.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.05)
        >>> est = LREstimator(model, methods=("secant", "quadratic"), every=2,
        ...                   loss_fn=nn.MSELoss(), optimizer=opt)
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
        >>> for _ in range(4):
        ...     opt.zero_grad(); nn.MSELoss()(model(x), y).backward(); opt.step()
        ...     _ = est.step((x, y))
        >>> sorted(est.latest), len(est.history)
        (['quadratic', 'secant'], 2)
    """

    name = "lr_estimator"

    @rejects_operator_keywords
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
        secant_scale: Literal["per_step", "paper"] = "per_step",
        ema_alpha: float = 0.1,
        ema_init: float = 0.1,
        ema_include_flagged: bool = False,
        noise_window: int = 20,
        noise_tol: float = 0.1,
        storage_device: torch.device | str = "cpu",
        record_path: str | Path | None = None,
        lanczos_tol: float = 1e-2,
        lanczos_max_iter: int | None = None,
        warm_start: bool = True,
        on_nonfinite: Literal["raise", "flag"] = "flag",
        seed: int = 0,
        generator: torch.Generator | None = None,
        curvature: CurvatureOptions | None = None,
    ) -> None:
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        every, noise_window, lanczos_max_iter, seed = (  # NumPy scalars are numbers (issue 22)
            plain_scalar(x) for x in (every, noise_window, lanczos_max_iter, seed)
        )
        model = unwrap_ddp(model)  # products and θ on the module inside DDP
        check_estimator_args(model, methods, every, loss_fn, optimizer)
        check_smoothing_args(ema_alpha, ema_init, secant_lr_rule, secant_scale, noise_window)
        curvature = as_options(curvature)
        check_options(norm, 0.0 if momentum is None else momentum, lanczos_tol, on_nonfinite)

        self.model, self.methods, self.every = model, methods, every
        self.loss_fn, self.optimizer, self.norm = loss_fn, optimizer, norm
        self.secant_lr_rule, self.secant_scale = secant_lr_rule, secant_scale
        self.ema_alpha, self.ema_init = float(ema_alpha), float(ema_init)
        self.ema_include_flagged = bool(ema_include_flagged)
        self.noise_window, self.noise_tol = noise_window, float(noise_tol)
        self.storage_device = torch.device(storage_device)
        self.record_path = None if record_path is None else Path(record_path)
        self.lanczos_tol, self.lanczos_max_iter = lanczos_tol, lanczos_max_iter
        self.warm_start, self.on_nonfinite = warm_start, on_nonfinite
        self.bn_mode, self.process_group = curvature.bn_mode, curvature.process_group
        self.seed = None if generator is not None else int(seed)
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(int(seed))
        self._hvp_methods = tuple(m for m in methods if m in HVP_METHODS)
        self._names, self._params = select_params(model, curvature.params)
        self.curvature = replace(curvature, params=self._names)

        self._opt = OptimizerView(optimizer, self._params)
        self.momentum = self._opt.momentum() if momentum is None else float(momentum)
        self._explicit_momentum = momentum is not None
        self.caveats = self._opt.caveats()
        if self.caveats and "secant" in methods:
            warnings.warn(
                "LREstimator: the secant estimate (Super-Convergence Eq. 8) is derived for plain "
                f"SGD, but the optimizer has {', '.join(self.caveats)}. Read each secant estimate "
                "against its momentum-noise null (noise_ratio, indistinguishable_from_noise in "
                "the records); weight decay enters the trajectory.",
                UserWarning,
                stacklevel=2,
            )

        self._init_state()
        self._hook = self._install_lr_hook(optimizer)

    def _init_state(self) -> None:
        """The state that ``state_dict`` saves, at step 0."""
        self.num_steps = 0
        self._snapshots: list[torch.Tensor] = []
        self._span_prev: list[float] = []
        self._span_cur: list[float] = []
        self._smoothed = {m: self.ema_init for m in self.methods}
        self._tracked: dict[str, tuple[str, str]] = {}
        self._counts = {m: 0 for m in self.methods}
        self._history: list[dict[str, Any]] = []
        self._latest: dict[str, Any] = {}
        self._eigenvectors: dict[str, torch.Tensor] = {}
        self._noise_ratios: deque[float] = deque(maxlen=self.noise_window)
        self._theta_before: torch.Tensor | None = None
        self._pending_lrs: list[float] | None = None
        if "secant" in self.methods:
            self._snapshots.append(self._snapshot())
        if "secant_same_batch" in self.methods and self.every == 1:
            self._theta_before = self._snapshot()

    def _install_lr_hook(self, optimizer: Any) -> Any:
        """A step pre-hook that records the groups' LRs applied by each ``optimizer.step()``."""
        if optimizer is None or not hasattr(optimizer, "register_step_pre_hook"):
            return None
        ref = weakref.ref(self)

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            est = ref()
            if est is not None:
                est._pending_lrs = est._opt.group_lrs()

        handle = optimizer.register_step_pre_hook(hook)
        weakref.finalize(self, handle.remove)  # no dangling hook once collected
        return handle

    # ------------------------------------------------------------------------------ the step
    def _snapshot(self) -> torch.Tensor:
        """A copy of θ (flat) on ``storage_device``."""
        with torch.no_grad():
            return params_to_vector([p.detach() for p in self._params]).to(self.storage_device)

    @property
    def due(self) -> bool:
        """Whether the next ``step()`` computes estimates (build the HVP batch only then)."""
        return (self.num_steps + 1) % self.every == 0

    def should_run(self, step: int, *, last: bool = False) -> bool:
        """Always: the estimator follows every update (the secant's LR spans and iterates)."""
        return True

    def observe(self, ctx: StepContext) -> dict[str, Any] | None:
        """Observer entry: ``step(ctx.batch, lr=ctx.lr)``; the record keys on estimation steps.

        Returns:
            ``{"estimates": {...}, "estimates_smoothed": {...}}`` after an estimation step, else
            None (the keys the training runner writes).
        """
        if self.step(ctx.batch, lr=ctx.lr) is None:
            return None
        latest = self._history[-1]
        return {"estimates": latest["estimates"], "estimates_smoothed": latest["smoothed"]}

    def _applied_lr(self, lr: float | None) -> tuple[float | None, list[float] | None]:
        if lr is not None:
            value = float(lr)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"lr must be a positive finite number, got {lr}")
            return value, None
        if self.optimizer is not None:
            groups = self._pending_lrs if self._pending_lrs is not None else self._opt.group_lrs()
            return self._opt.weighted_lr(groups), groups
        return None, None

    def step(self, batch: Any = None, *, lr: float | None = None) -> dict[str, Any] | None:
        """Register one optimizer step; every ``every`` steps compute and record the estimates.

        Call after ``optimizer.step()`` (before or after ``scheduler.step()``). If anything
        raises (a bad argument, a failing product, a record that cannot be written), the
        estimator's state is exactly as before the call.

        Args:
            batch: the batch for the model-based methods; only needed when ``due``. The estimate
                is at the current (post-step) parameters.
            lr: the LR applied in the step just taken (overrides the optimizer's). Needed by
                ``secant`` when no optimizer was given.

        Returns:
            ``{method: result}`` on an estimation step (the secant from step 2k on), else None.
        """
        t = self.num_steps + 1
        hvp = self._hvp_methods
        if hvp and batch is None and t % self.every == 0:
            raise ValueError(
                f"step {t} is an estimation step and methods {hvp} need a batch: call "
                "estimator.step(batch) (check estimator.due to build it only when needed)"
            )
        lr_now, groups = self._applied_lr(lr)
        if "secant" in self.methods and lr_now is None:
            raise ValueError(
                "the secant method needs the LR applied in each step: construct the "
                "estimator with optimizer=... or call step(lr=...)"
            )
        span_cur = [*self._span_cur, lr_now] if "secant" in self.methods else self._span_cur
        if t % self.every != 0:
            before = self._next_theta_before(t)
            self.num_steps, self._span_cur, self._pending_lrs = t, span_cur, None
            self._theta_before = before
            return None
        gen_state = self.generator.get_state()
        try:
            new = self._estimate(t, batch, lr_now, groups, span_cur)
            if self.record_path is not None:
                self._write(new["record"])
        except BaseException:
            self.generator.set_state(gen_state)
            raise
        self._commit(t, new)
        return dict(new["results"])

    def _write(self, record: dict[str, Any]) -> None:
        """Append the record once: by rank 0 of the group; a failed write raises on every rank."""
        group = resolve_process_group(self.process_group)
        if group is None:
            append_record(self.record_path, record)  # type: ignore[arg-type]
            return
        reducer, error = Reducer(group), None
        if reducer.rank == 0:
            try:
                append_record(self.record_path, record)  # type: ignore[arg-type]
            except Exception as err:
                error = err
        reducer.barrier_check(error)  # every rank commits, or every rank rolls back

    def _next_theta_before(self, t: int) -> torch.Tensor | None:
        """θ_t when step t + 1 is due and the same-batch secant needs θ before it."""
        if "secant_same_batch" in self.methods and (t + 1) % self.every == 0:
            return self._snapshot()
        return None

    def _estimate(
        self, t: int, batch: Any, lr_now: float | None, groups: Any, span_cur: list[float]
    ) -> dict[str, Any]:
        """Compute one estimation step without touching the state; return what to commit."""
        t0 = time.perf_counter()
        results: dict[str, Any] = {}
        new: dict[str, Any] = {"snapshots": self._snapshots, "span_prev": self._span_prev}
        new["noise_ratios"] = deque(self._noise_ratios, maxlen=self.noise_window)
        if "secant" in self.methods:
            theta = self._snapshot()
            if len(self._snapshots) == 2:
                results["secant"] = self._secant(theta, self._span_prev, span_cur)
                results["secant"] = with_null_band(
                    results["secant"], new["noise_ratios"], tol=self.noise_tol,
                    generator=self.generator,
                )  # fmt: skip
            new["snapshots"] = [*self._snapshots, theta][-2:]
            new["span_prev"] = span_cur
        num_hvps = 0
        warm = {}
        if self._hvp_methods:
            warm = {m: v for m, v in self._eigenvectors.items() if self.warm_start}
            est = estimate_lrs(
                self.model, self.loss_fn, batch, methods=self._hvp_methods, norm=self.norm,
                momentum=self.momentum, lanczos_tol=self.lanczos_tol,
                lanczos_max_iter=self.lanczos_max_iter, warm_starts=warm,
                theta_prev=self._theta_before, optimizer=self.optimizer,
                on_nonfinite=self.on_nonfinite, generator=self.generator, curvature=self.curvature,
            )  # fmt: skip
            results.update(est)
            num_hvps = sum(int(getattr(r, "num_hvps", 0)) for r in est.values())
        new["eigenvectors"] = dict(self._eigenvectors)
        for m, r in results.items():
            vec = getattr(r, "eigenvector", None)
            if vec is not None:
                new["eigenvectors"][m] = vec.detach().to(self.storage_device)
        new["smoothed"], new["counts"] = self._ema(results)
        new["record"] = self._record(t, lr_now, groups, results, new, warm, num_hvps, t0)
        new["results"] = results
        return new

    def _ema(self, results: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
        smoothed, counts = dict(self._smoothed), dict(self._counts)
        for m, r in results.items():
            value = r.lr if r.ok else float("nan")
            if not r.ok and self.ema_include_flagged:
                value = float(getattr(r, "raw_lr", float("nan")))
            if math.isfinite(value) and value > 0:
                smoothed[m] = self.ema_alpha * value + (1.0 - self.ema_alpha) * smoothed[m]
                counts[m] += 1
        for name, (m, key) in self._tracked.items():
            r = results.get(m)
            if r is None or not (r.ok or self.ema_include_flagged):
                continue
            value = float(getattr(r, key, float("nan")))
            if math.isfinite(value) and value > 0:
                smoothed[name] = self.ema_alpha * value + (1.0 - self.ema_alpha) * smoothed[name]
                counts[name] += 1
        return smoothed, counts

    def _record(self, t, lr_now, groups, results, new, warm, num_hvps, t0) -> dict[str, Any]:
        estimates = {m: r.as_dict() for m, r in results.items()}
        if "sharpness" in estimates:
            estimates["sharpness"]["warm_start"] = "sharpness" in warm
        for m in estimates:
            estimates[m].setdefault("bn_mode", None if m == "secant" else self.bn_mode)
        return to_jsonable(
            {
                "step": t,
                "lr": lr_now,
                "lr_groups": groups,
                "estimates": estimates,
                "smoothed": new["smoothed"],
                "num_hvps": num_hvps,
                "seconds": time.perf_counter() - t0,
                "caveats": list(self.caveats),
                "bn_mode": self.bn_mode,
                "seed": self.seed,
                "secant_scale": self.secant_scale if "secant" in self.methods else None,
            },
            inf_as_string=False,
        )

    def _commit(self, t: int, new: Mapping[str, Any]) -> None:
        self.num_steps = t
        self._pending_lrs = None
        self._snapshots, self._span_prev = new["snapshots"], new["span_prev"]
        self._span_cur = []
        self._noise_ratios = new["noise_ratios"]
        self._eigenvectors = new["eigenvectors"]
        self._smoothed, self._counts = new["smoothed"], new["counts"]
        self._history.append(new["record"])
        self._latest = new["results"]
        self._theta_before = self._next_theta_before(t)

    def _secant(self, theta: torch.Tensor, prev: list[float], cur: list[float]) -> SecantResult:
        if self.secant_lr_rule == "first":
            lr1, lr2 = prev[0], None
        else:
            lr1, lr2 = sum(prev) / len(prev), sum(cur) / len(cur)
        null = self._opt.null_setup(self.momentum, self._explicit_momentum) or {}
        try:
            return secant_lr(
                self._snapshots[0], self._snapshots[1], theta, lr1, lr_next=lr2,
                steps=self.every, scale=self.secant_scale, norm=self.norm, **null,
            )  # fmt: skip
        except NonFiniteError:
            if self.on_nonfinite == "raise":
                raise
            return nonfinite_secant(lr1, self.every, self.norm, self.secant_scale)

    # ------------------------------------------------------------------------------ reading
    @property
    def latest(self) -> dict[str, Any]:
        """The results of the last estimation step, ``{method: result}`` (empty before)."""
        return dict(self._latest)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per estimation step (the JSONL lines; ``None`` where a value is NaN)."""
        return list(self._history)

    def smoothed(self, method: str | None = None) -> float:
        """The EMA of ``method``'s estimates (``ema_init`` before the first one that counts).

        ``method`` defaults to the first of ``methods``.
        """
        method = self.methods[0] if method is None else method
        if method not in self._smoothed:
            raise KeyError(f"method {method!r} is not estimated here; methods: {self.methods}")
        return self._smoothed[method]

    def track(self, method: str, key: str) -> str:
        """Also keep an EMA of ``getattr(result, key)`` for ``method``; return the EMA's name.

        E.g. ``track("sharpness", "lr_stable")`` smooths 2/λ_max under the name
        ``"sharpness.lr_stable"`` (read it with ``smoothed(name)``; ``CurvatureLR(key=...)`` calls
        this). ``key="lr"`` is the method's own EMA. Same rules as the main EMA (flags, α, init).
        """
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not estimated here; methods: {self.methods}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a result attribute name, got {key!r}")
        if key == "lr":
            return method
        name = f"{method}.{key}"
        if name not in self._tracked:
            self._tracked[name] = (method, key)
            self._smoothed.setdefault(name, self.ema_init)
            self._counts.setdefault(name, 0)
        return name

    def num_estimates(self, method: str) -> int:
        """How many estimates of ``method`` entered the EMA."""
        if method not in self._counts:
            raise KeyError(f"method {method!r} is not estimated here; methods: {self.methods}")
        return self._counts[method]

    def close(self) -> None:
        """Remove the optimizer hook (the estimator then reads the LR at ``step()`` time)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __repr__(self) -> str:
        smoothed = {m: round(v, 6) for m, v in getattr(self, "_smoothed", {}).items()}
        return (
            f"LREstimator(methods={getattr(self, 'methods', None)}, "
            f"every={getattr(self, 'every', None)}, step={getattr(self, 'num_steps', 0)}, "
            f"smoothed={smoothed})"
        )
