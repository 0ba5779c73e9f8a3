"""F13 -- the null sweep: does Eq. 8 measure curvature, or minibatch noise through momentum?

Smith & Topin's secant estimate (*Super-Convergence*, §5, Eq. 8; paper convention: iterates s
steps apart, single-step ε) returns ε·c(μ, s) whatever the curvature when successive steps are
i.i.d. minibatch noise passed through heavy-ball momentum μ (``hessian_lr.lr.noise.noise_null``:
c = sqrt(1/(2(1 − μ))) at s = 1, 1/√2 without momentum). This sweep trains the BN ResNet of the
family (Fashion-MNIST) over LR × momentum (0, 0.5, 0.9, 0.95) × batch size, with the LR held
constant in each arm, records Eq. 8 at spacings s ∈ {1, 5, 10, 20} from the same trajectory and
the **same-batch secant** (the gradient change along the step on the batch that took it), and
compares the median ratio estimate/ε (after a burn-in) with c(μ, s).

Two readings are decided: (1) Eq. 8's ratio sits at the null (a fraction of the cells inside
[0.8, 1.25]·c); (2) the slope of log(estimate) on log(LR) (with a fixed effect per momentum ×
batch): ≈ 1 means the estimate follows the LR in use (noise), ≈ 0 means it measures a property of
the loss (curvature) -- Eq. 8 vs the same-batch secant.

Arms ``lr<ε>_mom<μ>_bs<b>_seed<s>``, one process each (``jobs`` in parallel; ``run_all.py`` runs
them as units). summary.json: ``cells`` (one per arm × spacing: median ratio, null, ratio/null),
``arms`` (same-batch median ratio, status), ``slopes`` and ``checks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from _common import cli, experiment_name, summarize_only
from _presets import Base, forward_macs, presets
from _secant_lab import (
    ArmSpec,
    arm_macs,
    install_stop_handler,
    load_arm,
    run_arm,
    run_arms_parallel,
    stop_requested,
)
from _secant_stats import med, series

from hessian_lr.lr.noise import noise_null

EXPERIMENT = experiment_name(__file__)
RESUMABLE = True  # units checkpoint and stop cleanly on run_all's SIGUSR1 (_common.request_stop)
AT_NULL = (0.8, 1.25)


@dataclass(frozen=True)
class Config(Base):
    steps: int = 240
    lrs: tuple[float, ...] = (0.01, 0.1, 1.0)
    momenta: tuple[float, ...] = (0.0, 0.5, 0.9, 0.95)
    batch_sizes: tuple[int, ...] = (32, 128)
    spacings: tuple[int, ...] = (1, 5, 10, 20)
    burn_fraction: float = 0.25  # medians over the steps after this fraction of the run
    same_batch_every: int = 1
    eval_size: int = 1000
    data_root: str = ""
    jobs: int = 1
    checkpoint_seconds: float = 60.0

    SCALED = ("steps",)


PRESETS = presets(
    Config,
    paper=dict(steps=2000, batch_sizes=(128, 1000), seeds=(0,), jobs=8),
    # ResNet-20, 24 arms of 500 steps on one GPU.
    gpu=dict(steps=500, batch_sizes=(128, 512), seeds=(0,), jobs=8),
    # ResNet-8 (16 filters): 24 arms of 240 steps. Measured here (load ≈ 5 per core): batch 32
    # 0.35 s/step, batch 128 1.16 s/step with the same-batch secant -> 1.4 / 4.6 min per arm.
    cpu=dict(seeds=(0,)),
    smoke=dict(
        steps=44,
        lrs=(0.05, 0.5),
        momenta=(0.0, 0.9),
        batch_sizes=(32,),
        seeds=(0,),
        spacings=(1, 5, 10),
        eval_size=0,
    ),
)


def _arm_name(lr: float, mom: float, bs: int, seed: int) -> str:
    return f"lr{lr:g}_mom{mom:g}_bs{bs}_seed{seed}"


def specs(cfg: Config) -> list[ArmSpec]:
    kw: dict[str, Any] = {}
    if cfg.width is not None:
        kw["width"] = cfg.width
    if cfg.bn_momentum is not None:
        kw["bn_momentum"] = cfg.bn_momentum
    out = []
    for seed in cfg.seeds:
        for bs in cfg.batch_sizes:
            for mom in cfg.momenta:
                for lr in cfg.lrs:
                    out.append(
                        ArmSpec(
                            name=_arm_name(lr, mom, bs, seed),
                            schedule={"type": "Constant", "base_lr": lr},
                            steps=cfg.steps,
                            dataset=cfg.dataset,
                            data_root=cfg.data_root,
                            model=cfg.model,
                            model_kwargs=kw,
                            batch_size=bs,
                            momentum=mom,
                            weight_decay=cfg.weight_decay,
                            seed=seed,
                            spacings=tuple(cfg.spacings),
                            same_batch_every=cfg.same_batch_every,
                            probe_every=0,
                            eval_size=cfg.eval_size,
                            checkpoint_seconds=cfg.checkpoint_seconds,
                        )
                    )
    return out


def plan(cfg: Config) -> list[dict[str, Any]]:
    fwd = forward_macs(cfg.model, dataset=cfg.dataset, width=cfg.width)
    return [{"name": s.name, "seed": s.seed, "macs": arm_macs(s, fwd)} for s in specs(cfg)]


def run_unit(cfg: Config, name: str, *, out: str, device: str) -> dict:
    install_stop_handler()
    for s in specs(cfg):
        if s.name == name:
            return run_arm(s, out, EXPERIMENT, device, stop=stop_requested)
    raise KeyError(f"{EXPERIMENT} has no unit {name!r}")


# ----------------------------------------------------------------------------------- summary
def _slope(rows: list[tuple[str, float, float]]) -> float:
    """Least-squares slope of log(y) on log(x) with one intercept per group."""
    groups = sorted({g for g, _, _ in rows})
    if len(rows) < 3:
        return math.nan
    a = np.zeros((len(rows), 1 + len(groups)))
    y = np.zeros(len(rows))
    for i, (g, x, v) in enumerate(rows):
        a[i, 0] = math.log(x)
        a[i, 1 + groups.index(g)] = 1.0
        y[i] = math.log(v)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(coef[0])


def summarize(cfg: Config, out: str) -> dict[str, Any]:
    cells, arms = [], {}
    slope_rows: dict[str, list] = {"secant_s1": [], "same_batch": []}
    for spec in specs(cfg):
        arm = load_arm(out, EXPERIMENT, spec.name)
        if arm is None:
            continue
        burn = int(cfg.burn_fraction * spec.steps)
        group = f"mom{spec.momentum:g}_bs{spec.batch_size}"
        lr = spec.schedule["base_lr"]
        sb_steps, sb = series(arm, "same_batch")
        sb_med = med([v for t, v in zip(sb_steps, sb) if t >= burn])
        arms[spec.name] = {
            "status": arm["status"],
            "steps_done": arm["steps_done"],
            "lr": lr,
            "momentum": spec.momentum,
            "batch_size": spec.batch_size,
            "same_batch_median_ratio": sb_med,
            "final_loss": next((v for v in reversed(arm["loss"]) if v is not None), None),
            "seconds_per_step": arm["seconds_per_step"],
        }
        if arm["status"] != "finished":
            continue
        if math.isfinite(sb_med) and sb_med > 0:
            slope_rows["same_batch"].append((group, lr, sb_med * lr))
        for s in spec.spacings:
            steps, ratios = series(arm, "secant", s)
            m = med([v for t, v in zip(steps, ratios) if t >= burn])
            c = noise_null(spec.momentum, s)
            cells.append(
                {
                    "arm": spec.name,
                    "lr": lr,
                    "momentum": spec.momentum,
                    "batch_size": spec.batch_size,
                    "spacing": s,
                    "median_ratio": m,
                    "null": c,
                    "ratio_over_null": m / c,
                    "n": sum(1 for t in steps if t >= burn),
                }
            )
            if s == 1 and math.isfinite(m) and m > 0:
                slope_rows["secant_s1"].append((group, lr, m * lr))
    inside = [
        AT_NULL[0] <= c["ratio_over_null"] <= AT_NULL[1]
        for c in cells
        if math.isfinite(c["ratio_over_null"])
    ]
    slopes = {k: _slope(v) for k, v in slope_rows.items()}
    checks: dict[str, Any] = {}
    if inside:
        frac = sum(inside) / len(inside)
        checks["secant_at_null"] = {
            "holds": frac >= 0.75,
            "fraction_inside": frac,
            "cells": len(inside),
            "band": list(AT_NULL),
            "median_abs_log_ratio_over_null": med(
                [
                    abs(math.log(c["ratio_over_null"]))
                    for c in cells
                    if c["ratio_over_null"] > 0 and math.isfinite(c["ratio_over_null"])
                ]
            ),
        }
    if all(math.isfinite(v) for v in slopes.values()):
        checks["secant_follows_lr_same_batch_does_not"] = {
            "holds": 0.8 <= slopes["secant_s1"] <= 1.2 and slopes["same_batch"] < 0.5,
            "slope_secant_s1": slopes["secant_s1"],
            "slope_same_batch": slopes["same_batch"],
        }
    return {
        "steps": cfg.steps,
        "burn_fraction": cfg.burn_fraction,
        "at_null_band": list(AT_NULL),
        "nulls": {f"{m:g}": {str(s): noise_null(m, s) for s in cfg.spacings} for m in cfg.momenta},
        "cells": cells,
        "arms": arms,
        "slopes": slopes,
        "diverged": sorted(n for n, a in arms.items() if a["status"] == "diverged"),
        "checks": checks,
    }


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    if not summarize_only():
        run_arms_parallel(specs(cfg), out, EXPERIMENT, device=device, jobs=cfg.jobs)
    return summarize(cfg, out)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
