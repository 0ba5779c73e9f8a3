"""F14 -- what does each LR estimate track: the LR in use, or the curvature?

Smith & Topin (*Super-Convergence*, §5) read Eq. 8's secant estimate as the curvature's verdict on
the LR. If the estimate were set by minibatch noise through momentum (``noise_null``), it would
follow the LR in use under any schedule, whatever the curvature. This experiment trains the
family's BN ResNet on Fashion-MNIST under five schedules -- fixed, CLR (two triangles), 1cycle,
piecewise-constant and SGDR (T_0 = a third of the run, T_mult = 2) -- with momentum held at the
family's 0.9 (so c(μ, s) is one number per spacing), and logs every estimate:

* Eq. 8 in the paper's convention at s = 1 and s = 10, and the same-batch secant (per step,
  geometric mean over the window between two probes);
* Σ|g|/Σ|Hg|, gᵀg/gᵀHg and 1/λ_max (Lanczos) on a fixed held-out batch, in both BatchNorm modes
  (``train``: batch statistics; ``eval``: running statistics), at each probe.

For each run, and pooled over runs: the log-log correlation of each estimate with the LR (runs
whose LR varies) and the correlation of every pair after the LR is partialled out (residuals of a
linear fit of log estimate on log LR within each run). summary.json: ``runs.<schedule>`` (the
window table and its correlations), ``pooled`` and ``checks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
from _secant_stats import corr_tables, pooled_corr, window_table

EXPERIMENT = experiment_name(__file__)
RESUMABLE = True  # units checkpoint and stop cleanly on run_all's SIGUSR1 (_common.request_stop)
SCHEDULES = ("fixed", "clr", "onecycle", "pc", "sgdr")
SECANT, SAME, EXACT = "secant_s1", "same_batch", "sum|g|/sum|Hg| [train]"


@dataclass(frozen=True)
class Config(Base):
    steps: int = 600
    schedules: tuple[str, ...] = SCHEDULES
    spacings: tuple[int, ...] = (1, 10)
    same_batch_every: int = 5
    probe_every: int = 25
    probe_batch: int = 128
    lanczos_tol: float = 1e-2
    lanczos_max_iter: int = 30
    eval_size: int = 2000
    data_root: str = ""
    jobs: int = 1
    checkpoint_seconds: float = 60.0

    SCALED = ("steps", "probe_every")


PRESETS = presets(
    Config,
    paper=dict(steps=10_000, probe_every=100, probe_batch=1000, jobs=5),
    # ResNet-20, batch 512: 1500 iterations (13 epochs) per schedule, 38 probes.
    gpu=dict(
        steps=1500,
        probe_every=40,
        probe_batch=256,
        same_batch_every=2,
        seeds=(0,),
        jobs=5,
        eval_size=10_000,
    ),
    # ResNet-8 (16 filters), batch 128: 600 iterations, 25 probes. Measured here (load ≈ 5 per
    # core): 0.33 s/step + 0.32 s per same-batch secant + 19 s per probe -> ≈ 12 min per arm.
    cpu=dict(seeds=(0,)),
    smoke=dict(
        steps=40,
        probe_every=8,
        probe_batch=32,
        same_batch_every=2,
        eval_size=0,
        schedules=("fixed", "clr", "sgdr"),
        seeds=(0,),
        lanczos_max_iter=8,
    ),
)


def schedule(cfg: Config, name: str) -> dict[str, Any]:
    """The schedule of one arm (``Schedule.to_dict()`` form); momentum held at ``cfg.momentum``."""
    n, mom = cfg.steps, cfg.momentum
    if name == "fixed":
        return {"type": "Constant", "base_lr": cfg.base_lr}
    if name == "clr":
        return {
            "type": "Cyclic",
            "base_lr": cfg.base_lr,
            "max_lr": cfg.max_lr,
            "step_size_up": max(1, n // 4),
            "mode": "triangular",
            "base_momentum": mom,
            "max_momentum": mom,
        }
    if name == "onecycle":
        return {
            "type": "OneCycle",
            "base_lr": cfg.base_lr,
            "max_lr": cfg.max_lr,
            "step_size": max(1, int(0.45 * n)),
            "total_steps": n,
            "base_momentum": mom,
            "max_momentum": mom,
        }
    if name == "pc":
        return {
            "type": "MultiStep",
            "base_lr": cfg.pc_lr,
            "milestones": [int(0.625 * n), int(0.875 * n)],
            "gamma": 0.1,
        }
    if name == "sgdr":
        return {
            "type": "SGDR",
            "eta_max": cfg.max_lr,
            "eta_min": cfg.base_lr / 10,
            "T_0": max(1, n // 3),
            "T_mult": 2,
        }
    raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")


def specs(cfg: Config) -> list[ArmSpec]:
    kw: dict[str, Any] = {}
    if cfg.width is not None:
        kw["width"] = cfg.width
    if cfg.bn_momentum is not None:
        kw["bn_momentum"] = cfg.bn_momentum
    return [
        ArmSpec(
            name=f"{name}_seed{seed}",
            schedule=schedule(cfg, name),
            steps=cfg.steps,
            dataset=cfg.dataset,
            data_root=cfg.data_root,
            model=cfg.model,
            model_kwargs=kw,
            batch_size=cfg.batch_size,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            seed=seed,
            spacings=tuple(cfg.spacings),
            same_batch_every=cfg.same_batch_every,
            probe_every=cfg.probe_every,
            probe_batch=cfg.probe_batch,
            lanczos_tol=cfg.lanczos_tol,
            lanczos_max_iter=cfg.lanczos_max_iter,
            eval_size=cfg.eval_size,
            checkpoint_seconds=cfg.checkpoint_seconds,
        )
        for seed in cfg.seeds
        for name in cfg.schedules
    ]


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
def _entry(table: dict[str, Any], a: str, b: str, key: str = "partial") -> float:
    names = table.get("names", [])
    if a not in names or b not in names:
        return math.nan
    return table[key][names.index(a)][names.index(b)]


def summarize(cfg: Config, out: str) -> dict[str, Any]:
    seed = cfg.seeds[0]
    runs, tables = {}, []
    for spec in specs(cfg):
        if spec.seed != seed:
            continue
        arm = load_arm(out, EXPERIMENT, spec.name)
        if arm is None:
            continue
        table = window_table(arm, cfg.spacings)
        tables.append(table)
        runs[spec.name.rsplit("_seed", 1)[0]] = {
            "status": arm["status"],
            "final_test_accuracy": arm["final_test_accuracy"],
            "seconds_per_step": arm["seconds_per_step"],
            "table": table,
            "corr": corr_tables(table),
        }
    pooled = pooled_corr(tables)
    checks: dict[str, Any] = {}
    if pooled.get("with_lr"):
        r_lr = pooled["with_lr"].get(SECANT, math.nan)
        r_sb_lr = pooled["with_lr"].get(SAME, math.nan)
        checks["secant_tracks_lr"] = {
            "holds": r_lr >= 0.9 if math.isfinite(r_lr) else None,
            "corr_with_lr": r_lr,
            "same_batch_corr_with_lr": r_sb_lr,
        }
        p_sec = _entry(pooled, SECANT, EXACT)
        checks["secant_lr_partialled_not_curvature"] = {
            "holds": abs(p_sec) < 0.5 if math.isfinite(p_sec) else None,
            "partial_corr_with_exact": p_sec,
            "exact": EXACT,
        }
        p_sb = _entry(pooled, SAME, EXACT)
        checks["same_batch_tracks_curvature"] = {
            "holds": p_sb >= 0.5 if math.isfinite(p_sb) else None,
            "partial_corr_with_exact": p_sb,
            "exact": EXACT,
        }
    return {
        "steps": cfg.steps,
        "probe_every": cfg.probe_every,
        "momentum": cfg.momentum,
        "runs": runs,
        "pooled": pooled,
        "checks": checks,
    }


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    if not summarize_only():
        run_arms_parallel(specs(cfg), out, EXPERIMENT, device=device, jobs=cfg.jobs)
    return summarize(cfg, out)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
