"""A stability-aware LR finder: ramp the LR, track η_t·λ_t/c, stop at the edge (issue 24).

The range test (Smith 2017) raises the LR until the loss blows up and reads a suggestion off the
curve. :func:`find_lr` raises it the same way (an exponential ladder, the range test's
:func:`~hessian_lr.range_test.loop.lr_ramp`) but every ``measure_every`` updates measures the
sharpness that governs the optimizer -- λ_max(H) for SGD, λ_max(P⁻¹H) for Adam/RMSprop with P
the optimizer's own frozen preconditioner (:func:`~hessian_lr.lr.stability.
preconditioned_sharpness`; Lanczos warm-started from the previous eigenvector, a few HVPs) -- and
stops as soon as the ratio η_t·λ_t/c reaches 1, c the optimizer's stability constant on the local
quadratic (2 for GD, 2 + 2β for heavy ball, (2 + 2β₁)/(1 − β₁) for Adam; Cohen et al. 2021,
2022; :mod:`hessian_lr.lr.stability`). It never needs to diverge, so it spends a fraction of the
range test's steps, and what it reads is the sharpness the run actually meets (a catapult or
progressive sharpening moves λ away from its value at θ₀; methods notes §7).

``edge_lr`` is the LR where the ratio reached 1 (log-log interpolated between the last two
measurements). The suggestion ``max_lr = k·edge_lr`` uses the constant k that study F16
(``experiments/f16_lr_that_works.py``) fitted between the live crossing and η_max, the largest
LR whose constant-LR run from θ₀ trains; ``interval`` = (max_lr/F, max_lr·F) with F that
study's median factor error (:data:`CALIBRATION`).

Everything the ramp changes -- parameters, buffers, gradients, module modes, optimizer state and
hyper-parameters, the global RNGs and DataLoader generators -- is restored bit-identically
afterwards, also when an exception interrupts it (the range test's snapshot).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..curvature._batches import move_to_device
from ..lr.defaults import DEFAULT_BN_MODE
from ..lr.options import CurvatureOptions
from ..lr.stability import preconditioned_sharpness, stability_threshold
from ._batches import Cycle, split_batch
from ._state import _Snapshot
from .loop import lr_ramp

__all__ = ["CALIBRATION", "LRFinderResult", "find_lr"]

#: (k, F) per optimizer family, from study F16 (η_max ≈ k·edge_lr, F the leave-one-model-out
#: median factor error of the crossing): "sgd" for SGD (plain, heavy ball, Nesterov), "adaptive"
#: for Adam/AdamW/RMSprop. Fitted (``paper_figures.fig_f16_lr_that_works.finder_calibration``)
#: on the cpu preset's 12 cells per optimizer (MLP, LeNet-5, tiny char-GPT, BN ResNet-8 × 3
#: seeds; heavy ball β = 0.9, Adam β₁ = 0.9) with F16's ramp: ×1.065 per update, sharpness
#: every 10 updates (the defaults below). SGD: k = 0.81, F = 1.76 (ρ 0.74, worst left-out model
#: 2.2×). Adam: k = 16, F = 15 -- the crossing misses by ~10³ on LeNet-5, where near-zero second
#: moments make λ_max(P⁻¹H) huge early in the ramp (docs/lr_finder.md), so the adaptive
#: suggestion is not a usable prediction yet.
CALIBRATION: dict[str, tuple[float, float]] = {"sgd": (0.808, 1.76), "adaptive": (15.9, 15.4)}


@dataclass(frozen=True)
class LRFinderResult:
    """What :func:`find_lr` measured along its ramp and the LR it suggests.

    Attributes:
        max_lr: the suggested largest LR that trains, k·``edge_lr`` (``nan`` without an edge).
        interval: (max_lr/F, max_lr·F), the band F16's factor error F puts around it.
        edge_lr: the LR at which η_t·λ_t/c first reached 1 (``nan`` if it never did).
        stop_reason: ``"edge"``, ``"diverged"`` (non-finite loss before the edge) or
            ``"end_of_ramp"``.
        kind: the optimizer's stability kind (``"heavy_ball"``, ``"adam"``, ...).
        constant: c.
        calibration: k. factor: F.
        num_steps: optimizer updates taken. num_hvps: Hessian-vector products spent.
        seconds: wall-clock time.
        lrs: (num_steps,) the LR of each update. losses: (num_steps,) the loss before it.
        measure_steps: the update indices after which the sharpness was measured.
        measure_lrs, sharpness, ratios: at each measurement, the LR in use, λ_max (of P⁻¹H for
            adaptive optimizers; units 1/LR) and η·λ/c (dimensionless).
        flags: ``not_converged`` (some Lanczos run stopped above its tolerance), ``no_edge``,
            ``edge_at_first_measurement`` (lower ``start_lr``: the edge lies below the ramp).
        config: the settings used.
    """

    max_lr: float
    interval: tuple[float, float]
    edge_lr: float
    stop_reason: str
    kind: str
    constant: float
    calibration: float
    factor: float
    num_steps: int
    num_hvps: int
    seconds: float
    lrs: tuple[float, ...] = ()
    losses: tuple[float, ...] = ()
    measure_steps: tuple[int, ...] = ()
    measure_lrs: tuple[float, ...] = ()
    sharpness: tuple[float, ...] = ()
    ratios: tuple[float, ...] = ()
    flags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    def plot(self, ax: Any = None) -> Any:
        """Loss and η·λ/c against the LR (log), the edge and the suggestion; the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(self.lrs, self.losses, color="C0", lw=1.2, label="training loss")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss")
        twin = ax.twinx()
        twin.plot(self.measure_lrs, self.ratios, "o-", color="C3", ms=3, label="η·λ/c")
        twin.axhline(1.0, color="C3", ls=":", lw=1)
        twin.set(yscale="log", ylabel="η·λ_max / c")
        for x, style, text in ((self.edge_lr, "--", "edge"), (self.max_lr, "-", "max_lr")):
            if math.isfinite(x):
                ax.axvline(x, color="k", ls=style, lw=1, label=f"{text} {x:.3g}")
        if all(math.isfinite(v) for v in self.interval):
            ax.axvspan(*self.interval, color="0.9", zorder=0)
        ax.legend(loc="upper left", fontsize=8)
        return ax


def _check(
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    measure_every: int,
    calibration: Any,
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameter: nothing to ramp")
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise ValueError(f"need 0 < start_lr < end_lr (finite), got {start_lr}, {end_lr}")
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer ≥ 2, got {num_steps}")
    if int(measure_every) != measure_every or not 1 <= measure_every <= num_steps:
        raise ValueError(f"measure_every must be an integer in [1, num_steps], got {measure_every}")
    if calibration is not None:
        k, f = calibration
        if not (math.isfinite(k) and k > 0 and math.isfinite(f) and f >= 1):
            raise ValueError(f"calibration must be (k > 0, F ≥ 1), got {calibration}")


def _loss(model: nn.Module, loss_fn: Callable, batch: Any, closure: bool) -> torch.Tensor:
    if closure:
        return loss_fn(model, batch)
    inputs, targets = split_batch(batch)
    return loss_fn(model(inputs), targets)


def _crossing(lr0: float, r0: float, lr1: float, r1: float) -> float:
    """LR where the ratio reaches 1, log-log interpolated between two measurements."""
    if not (r0 > 0 and r1 > r0):
        return lr1
    a = math.log(1.0 / r0) / math.log(r1 / r0)
    return math.exp(math.log(lr0) + a * (math.log(lr1) - math.log(lr0)))


def find_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any,
    optimizer: torch.optim.Optimizer,
    *,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    num_steps: int = 220,
    measure_every: int = 10,
    probe: Any = None,
    bn_mode: Literal["train", "eval"] = DEFAULT_BN_MODE,
    closure: bool = False,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int = 20,
    calibration: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> LRFinderResult:
    """Ramp the LR exponentially until η_t·λ_t/c = 1; suggest the calibrated max LR.

    Args:
        model: the network, trained in train mode during the ramp, restored afterwards.
        loss_fn: ``loss_fn(outputs, targets)``, or ``loss_fn(model, batch)`` with ``closure``.
        data: a DataLoader, an iterable of batches, or one batch (re-iterated as needed).
        optimizer: SGD (plain, heavy ball, Nesterov), Adam, AdamW or RMSprop over the model's
            parameters; its LRs are overwritten by the ramp (groups keep their ratios to
            group 0) and restored.
        start_lr: first LR of the ladder ``start·(end/start)^(i/(n−1))`` (the range test's
            ``ramp="exp"``).
        end_lr: last LR of the ladder.
        num_steps: ladder length: the most updates the finder may take.
        measure_every: updates between sharpness measurements (each a warm-started Lanczos
            run of a few HVPs on ``probe``).
        probe: the batch the sharpness is measured on (default: the first batch of ``data``).
        bn_mode: BatchNorm mode of the Hessian (default train: batch statistics, the loss SGD
            descends; F16 H3).
        closure: see ``loss_fn``.
        lanczos_tol: tolerance on λ of each measurement.
        lanczos_max_iter: Krylov dimension cap of each measurement.
        calibration: (k, F) overriding :data:`CALIBRATION` for this optimizer family.
        generator: Lanczos' cold-start vector source (default: a private generator seeded 0;
            the global RNGs are never drawn from by the measurements).

    Returns:
        An :class:`LRFinderResult`.

    Raises:
        TypeError: bad model/optimizer/loss, or an optimizer without a derived threshold.
        ValueError: a bad ladder, ``measure_every``, ``calibration``, or an empty ``data``.
    """
    t0 = time.perf_counter()
    _check(model, optimizer, loss_fn, start_lr, end_lr, num_steps, measure_every, calibration)
    thr = stability_threshold(optimizer)  # TypeError for an unsupported optimizer
    family = "adaptive" if thr.preconditioned else "sgd"
    k, factor = calibration if calibration is not None else CALIBRATION[family]
    init = [float(g["lr"]) for g in optimizer.param_groups]
    ratios_g = [lr / init[0] if init[0] > 0 else 1.0 for lr in init]
    ladder = lr_ramp(start_lr, end_lr, int(num_steps), ramp="exp")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    snapshot = _Snapshot(model, optimizer, [data, probe])
    rec: dict[str, list] = {k_: [] for k_ in ("lrs", "losses", "steps", "mlrs", "lam", "ratio")}
    measure = dict(
        curvature=CurvatureOptions(bn_mode=bn_mode, closure=closure),
        lanczos_tol=lanczos_tol,
        lanczos_max_iter=lanczos_max_iter,
        on_nonfinite="flag",
    )
    flags, stop, edge, hvps, v0 = set(), "end_of_ramp", math.nan, 0, None
    try:
        stream = Cycle(data)
        probe_batch = move_to_device(probe if probe is not None else stream.peek(1)[0], device)
        model.train()
        for i, lr in enumerate(float(x) for x in ladder):
            for g, r in zip(optimizer.param_groups, ratios_g):
                g["lr"] = lr * r
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(model, loss_fn, move_to_device(next(stream), device), closure)
            rec["lrs"].append(lr)
            rec["losses"].append(float(loss.detach()))
            if not math.isfinite(rec["losses"][-1]):
                stop = "diverged"
                break
            loss.backward()
            optimizer.step()
            if (i + 1) % measure_every and i + 1 < num_steps:
                continue
            s = preconditioned_sharpness(
                model, loss_fn, probe_batch, optimizer, v0=v0, generator=gen, **measure
            )
            hvps += s.num_hvps
            flags.update(f for f in s.flags if f == "not_converged")
            v0 = s.eigenvector if s.eigenvector is not None else v0
            for key, val in zip(
                ("steps", "mlrs", "lam", "ratio"), (i, lr, s.lambda_max, s.stability_ratio)
            ):
                rec[key].append(float(val))
            if s.stability_ratio >= 1.0:
                if len(rec["ratio"]) == 1:  # already past the edge: start_lr was too large
                    flags.add("edge_at_first_measurement")
                prev = (rec["mlrs"][-2], rec["ratio"][-2]) if len(rec["ratio"]) > 1 else (lr, 1.0)
                edge, stop = _crossing(*prev, lr, s.stability_ratio), "edge"
                break
    finally:
        snapshot.restore()
    if stop != "edge":
        flags.add("no_edge")
    config = dict(
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=int(num_steps),
        measure_every=int(measure_every),
        family=family,
        **measure,
    )
    return _result(rec, k, factor, edge, stop, thr, hvps, time.perf_counter() - t0, flags, config)


def _result(
    rec: dict,
    k: float,
    factor: float,
    edge: float,
    stop: str,
    thr: Any,
    hvps: int,
    seconds: float,
    flags: set,
    config: dict,
) -> LRFinderResult:
    max_lr = k * edge
    return LRFinderResult(
        max_lr=max_lr,
        interval=(max_lr / factor, max_lr * factor),
        edge_lr=edge,
        stop_reason=stop,
        kind=thr.kind,
        constant=thr.constant,
        calibration=k,
        factor=factor,
        num_steps=len(rec["lrs"]),
        num_hvps=hvps,
        seconds=seconds,
        lrs=tuple(rec["lrs"]),
        losses=tuple(rec["losses"]),
        measure_steps=tuple(int(s) for s in rec["steps"]),
        measure_lrs=tuple(rec["mlrs"]),
        sharpness=tuple(rec["lam"]),
        ratios=tuple(rec["ratio"]),
        flags=tuple(sorted(flags)),
        config=config,
    )
