"""F17's contenders: how each method sets the LR, and the one training loop they all share.

``build(cfg, method, optimizer, model, t, seed, lr)`` returns a :class:`Setup`: the optimizer and
what steps its LR (a torch scheduler, a curvature mode, nothing), plus the hooks a peer needs
(schedule-free's ``train()``/``eval()``, DoG's averager). ``train(cfg, setup, t, seed)`` runs
``cfg.steps`` updates on the same data order for every method and returns the record.

Methods (each with its documented defaults; ``peer_versions`` records the packages):

* ``cosine``: constant LR ``lr`` with cosine decay to 0 (the tuned reference's arm).
* ``stability``: :func:`hessian_lr.lr.stability_lr`, fraction ``cfg.fraction`` of c/λ_max.
* ``update``: :func:`hessian_lr.lr.update_direction_lr`, ``cfg.update_fraction`` · η*.
* ``find_onecycle``: :func:`hessian_lr.range_test.find_then_onecycle` (finder steps counted as
  overhead, not in the budget; without an edge the peak falls back to 10 × ``start_lr``, and the
  record's ``finder.stop_reason`` says so).
* ``prodigy`` (prodigyopt.Prodigy, lr 1, + cosine as its README recommends), ``dadapt``
  (dadaptation.DAdaptSGD(momentum=β) / DAdaptAdam, lr 1, + cosine), ``dog`` (dog.DoG, lr 1,
  evaluated at its polynomial-decay average as its README does; SGD row only: DoG is an SGD
  method), ``schedulefree`` (schedulefree.SGDScheduleFree(momentum=β, lr 1.0: its default) /
  AdamWScheduleFree(lr=0.0025, its default), evaluated after ``optimizer.eval()``).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from hessian_lr.lr import stability_lr, update_direction_lr
from hessian_lr.range_test import find_then_onecycle

CURVATURE = ("stability", "update", "find_onecycle")
PEERS = {  # method -> (module, distribution name on PyPI)
    "prodigy": ("prodigyopt", "prodigyopt"),
    "dadapt": ("dadaptation", "dadaptation"),
    "dog": ("dog", "dog-optimizer"),
    "schedulefree": ("schedulefree", "schedulefree"),
}
METHODS = ("cosine", *CURVATURE, *PEERS)
PEERS_DIST = {m: dist for m, (_, dist) in PEERS.items()}


class PeerMissing(RuntimeError):
    """A peer package is not installed: the run is skipped with this message."""


def peer_versions() -> dict[str, str | None]:
    """Installed versions of torch and every peer package (None: absent)."""
    out: dict[str, str | None] = {"torch": torch.__version__}
    for _, dist in PEERS.values():
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _peer(method: str) -> Any:
    mod, dist = PEERS[method]
    try:
        return importlib.import_module(mod)
    except ImportError as err:
        raise PeerMissing(
            f"skipped: {method} needs the {dist!r} package (pip install --no-deps {dist}, or "
            "the `peers` extra of pyproject.toml)"
        ) from err


@dataclass
class Setup:
    """One method's optimizer, its LR driver and its hooks."""

    opt: torch.optim.Optimizer
    sched: Any = None  # .step() after every update (a torch scheduler or a curvature mode)
    curvature: Any = None  # a CurvatureLR: its estimator is stepped before it
    averager: Any = None  # DoG's PolynomialDecayAverager: evaluate its averaged model
    schedule_free: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # finder overhead, ...


def base_optimizer(cfg: Any, optimizer: str, model: torch.nn.Module, lr: float) -> Any:
    """Heavy-ball SGD (β = ``cfg.momentum``) or AdamW (β₁ = ``cfg.momentum``, ``cfg.adamw_wd``)."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    return torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.adamw_wd
    )


def _cosine(opt: Any, steps: int) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


def build(
    cfg: Any, method: str, optimizer: str, model: Any, t: Any, seed: int, lr: float | None
) -> Setup:
    """The method's optimizer and LR driver for ``model`` (``lr``: the reference's LR)."""
    m, sgd = cfg.momentum, optimizer == "sgd"
    if method == "cosine":
        opt = base_optimizer(cfg, optimizer, model, float(lr))
        return Setup(opt, _cosine(opt, cfg.steps))
    if method in ("stability", "update"):
        opt = base_optimizer(cfg, optimizer, model, cfg.start_lr[optimizer])
        factory = stability_lr if method == "stability" else update_direction_lr
        frac = cfg.fraction if method == "stability" else cfg.update_fraction
        mode = factory(
            model, t.loss_fn, opt, fraction=frac, measure_every=cfg.measure_every,
            lanczos_max_iter=cfg.lanczos_max_iter, seed=seed,
        )  # fmt: skip
        return Setup(opt, mode, curvature=mode)
    if method == "find_onecycle":
        opt = base_optimizer(cfg, optimizer, model, cfg.start_lr[optimizer])
        ramp = cfg.finder_ramp[optimizer]
        data = [t.batch(10**6 + i) for i in range(cfg.finder_steps)]
        sched, res = find_then_onecycle(
            model, t.loss_fn, data, opt, total_steps=cfg.steps, start_lr=ramp[0],
            end_lr=ramp[1], num_steps=cfg.finder_steps, measure_every=cfg.finder_every,
            fallback_lr=cfg.start_lr[optimizer] * 10, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        info = {k: getattr(res, k) for k in ("max_lr", "edge_lr", "stop_reason", "num_steps")}
        info.update(hvps=res.num_hvps, seconds=res.seconds)
        return Setup(opt, sched, extra={"finder": info})
    lib = _peer(method)
    params = model.parameters()
    if method == "prodigy":
        opt = lib.Prodigy(params, lr=1.0, betas=(m, 0.999), weight_decay=0 if sgd else cfg.adamw_wd)
        return Setup(opt, _cosine(opt, cfg.steps))
    if method == "dadapt":
        if sgd:
            opt = lib.DAdaptSGD(params, lr=1.0, momentum=m)
        else:
            opt = lib.DAdaptAdam(params, lr=1.0, betas=(m, 0.999), weight_decay=cfg.adamw_wd)
        return Setup(opt, _cosine(opt, cfg.steps))
    if method == "dog":
        if not sgd:
            raise PeerMissing("skipped: DoG is an SGD method (no AdamW variant); SGD row only")
        opt = lib.DoG(params, lr=1.0)
        return Setup(opt, averager=lib.PolynomialDecayAverager(model))
    if sgd:
        opt = lib.SGDScheduleFree(params, momentum=m)  # lr 1.0, its default
    else:
        opt = lib.AdamWScheduleFree(params, betas=(m, 0.999), weight_decay=cfg.adamw_wd)
    return Setup(opt, schedule_free=True)


def effective_lr(setup: Setup) -> float:
    """The LR the method applies now (d·lr for D-Adaptation/Prodigy, DoG's mean η)."""
    g = setup.opt.param_groups[0]
    if "d" in g:
        return float(g["d"]) * float(g["lr"])
    eta = g.get("eta")
    if isinstance(eta, (list, tuple)) and eta:
        return float(torch.stack([torch.as_tensor(e).float().mean() for e in eta]).mean())
    return float(g.get("scheduled_lr", g["lr"]) if setup.schedule_free else g["lr"])


def train(cfg: Any, setup: Setup, model: Any, t: Any, seed: int) -> dict[str, Any]:
    """``cfg.steps`` updates on ``t.batch(step)``; the LR, loss and cost records."""
    opt, lrs, losses = setup.opt, [], []
    if setup.schedule_free:
        opt.train()
    model.train()
    t0, c0, bad = time.perf_counter(), time.process_time(), False
    for step in range(cfg.steps):
        x, y = t.batch(step)
        opt.zero_grad(set_to_none=True)
        loss = t.loss_fn(model(x), y)
        value = float(loss.detach())
        if step % cfg.log_every == 0:
            lrs.append(effective_lr(setup))
            losses.append(value)
        if not math.isfinite(value):
            bad = True
            break
        loss.backward()
        opt.step()
        if setup.averager is not None:
            setup.averager.step()
        if setup.curvature is not None:
            est = setup.curvature.estimator
            est.step((x, y) if est.due else None)
        if setup.sched is not None:
            setup.sched.step()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if setup.schedule_free:
        opt.eval()
    evaluated = setup.averager.averaged_model if setup.averager is not None else model
    metric = math.nan if bad else t.evaluate(evaluated)
    over = dict(setup.curvature.overhead) if setup.curvature is not None else {}
    return dict(
        metric=metric, diverged=bad, lrs=lrs, losses=losses, log_every=cfg.log_every,
        seconds=seconds, cpu_seconds=cpu, overhead=over, **setup.extra,
    )  # fmt: skip
