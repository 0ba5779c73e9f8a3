"""F5 -- the simplified Hessian-free LR estimate vs iteration, under a fixed LR and under CLR.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120), Sec. 5 and Fig. 5 (v3: Fig. 3).
From three consecutive iterates of SGD the paper estimates the locally optimal LR (Eq. 8,
``secant``: ε* = ε Σ|θ_{i+1} − θ_i| / Σ|2θ_{i+1} − θ_i − θ_{i+2}|, no extra gradient), smoothed by
an EMA (α = 0.1, initial value 0.1). Paper (ResNet-56, CIFAR-10): (a) every iteration for the
first few hundred; (b) every 10th over the whole run. The estimates are large (≈ 2–6) -- far
above the LR in use; under the fixed LR 0.1 the estimate spikes to ≈ 3 and then collapses to
≈ 0.2; under CLR it stays high, peaks (≈ 6.7) where the LR peaks and settles (≈ 0.5) only
late. (The ``paper`` preset's cycle, 0.1 → 3.0 → 0.1 with stepsize 5k of 10k iterations, is the
methods notes' §6 reference cycle; the figure's exact CLR bounds are an assumption.) The paper
derives Eq. 8 for plain SGD but trains with momentum 0.9 (so do we; under heavy-ball momentum β
the secant estimates roughly (1 − β)·Σ|g|/Σ|Hg|: see ``hessian_lr.lr.estimator``).

On the same runs we also compute the exact-HVP estimates -- ``secant_hvp`` (Σ|g|/Σ|Hg|),
``quadratic`` (gᵀg/gᵀHg) and ``sharpness`` (1/λ_max and 2/λ_max, warm-started Lanczos) -- on
the training batch just used, every ``estimator_every`` steps (with the secant at that spacing).
One ``LREstimator`` has one spacing, so panel (a)'s every-iteration secant comes from a second,
shorter run of the same configuration and seed: on CPU training is deterministic and the
estimators never touch the model or the optimizer, so its first ``every1_steps`` steps are the
main run's steps (checked: ``replay_max_abs_loss_diff`` in the summary, 0.0 when identical).

Runs (per seed s): ``fixed_seed<s>`` and ``clr_seed<s>`` (all methods every k steps: records
``estimates`` / ``estimates_smoothed``), ``fixed_every1_seed<s>`` and ``clr_every1_seed<s>``
(secant every step, the first ``every1_steps`` steps only).

summary.json (first seed's runs; numbers from the records, no recomputation needed):

* ``lr``: the fixed LR and the CLR bounds, ``lr_peak_step`` (CLR), ``steps``, ``every``.
* ``arms.<fixed|clr>``:
  ``final_test_accuracy``; ``replay_max_abs_loss_diff``;
  ``panel_a`` (secant every step) and ``panel_b.<method>`` for ``secant``, ``secant_hvp``,
  ``quadratic``, ``sharpness`` (1/λ_max) and ``sharpness_stable`` (2/λ_max), each with
  ``smoothed`` (the EMA as recorded; for 2/λ_max the EMA with the same α and initial value)
  and ``raw`` statistics: ``peak``, ``peak_step``,
  ``final``, ``median``, ``median_over_lr``, ``peak_over_lr``, ``final_over_lr``, ``n``;
  ``raw`` also has ``final_mean`` (mean of the last 10 % of the estimates; raw values are
  noisy) and ``peak_smooth`` / ``peak_smooth_step`` (maximum of a centered 5-point median).
* ``checks``: the figure's claims on these numbers (each ``{"holds": bool, ...numbers}``):
  ``far_above_lr`` (median smoothed secant / LR > 1 in both arms; the paper: 20–60x),
  ``fixed_spike_then_collapse`` (fixed arm's raw smoothed-median peak in the first third of
  the run and final ≤ 0.5 × peak), ``clr_stays_high`` (CLR final > fixed final, secant),
  ``clr_peaks_with_lr`` (CLR secant peak within 20 % of the run of the LR peak). The checks
  use the ``raw`` peak of a 5-point running median, since the EMA's initial value 0.1 dominates
  its first ~20 values.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from _common import cli, experiment_name, run_arms, train_kwargs

from hessian_lr.records import Run
from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)
HVP_METHODS = ("secant_hvp", "quadratic", "sharpness")
EMA_ALPHA, EMA_INIT = 0.1, 0.1  # the paper's (and LREstimator's default) EMA


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    model: str = "lenet5"
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    steps: int = 1200  # the whole run (panel b)
    fixed_lr: float = 0.01
    clr_base_lr: float = 0.01
    clr_max_lr: float = 0.2
    clr_step_size: int = 600  # half cycle; steps = 2 x step_size is one triangle as in the paper
    every1_steps: int = 300  # panel (a): secant every iteration over the first steps
    estimator_every: int = 20  # panel (b): every k-th step, all methods
    eval_every: int = 100
    seeds: tuple[int, ...] = (0,)
    bn_momentum: float | None = None  # ResNet only: 0.05 = Caffe's 0.95 moving average


PRESETS = {
    "paper": Config(
        dataset="cifar10",
        model="resnet56",
        batch_size=1000,
        weight_decay=1e-4,
        steps=10_000,
        fixed_lr=0.1,
        clr_base_lr=0.1,
        clr_max_lr=3.0,
        clr_step_size=5000,
        every1_steps=300,
        estimator_every=10,
        eval_every=500,
        bn_momentum=0.05,
    ),
    "cpu": Config(),
    "smoke": Config(
        dataset="digits",
        batch_size=64,
        steps=40,
        clr_step_size=20,
        every1_steps=12,
        estimator_every=5,
        eval_every=20,
    ),
}


def schedules(cfg: Config) -> dict[str, dict[str, Any]]:
    """The two arms' schedules (CLR triangular, momentum held at ``cfg.momentum``)."""
    return {
        "fixed": {"type": "Constant", "base_lr": cfg.fixed_lr},
        "clr": {
            "type": "Cyclic",
            "base_lr": cfg.clr_base_lr,
            "max_lr": cfg.clr_max_lr,
            "step_size_up": cfg.clr_step_size,
            "mode": "triangular",
            "base_momentum": cfg.momentum,
            "max_momentum": cfg.momentum,
        },
    }


def configs(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """The four runs of one seed: ``<arm>`` (all methods every k) and ``<arm>_every1``."""
    common = dict(train_kwargs(cfg, seed), eval_every=cfg.eval_every)
    out = {}
    for arm, sched in schedules(cfg).items():
        out[arm] = TrainConfig(
            **common,
            steps=cfg.steps,
            schedule=sched,
            estimator_methods=("secant", *HVP_METHODS),
            estimator_every=cfg.estimator_every,
        )
        out[f"{arm}_every1"] = TrainConfig(
            **common,
            steps=min(cfg.every1_steps, cfg.steps),
            schedule=sched,
            estimator_methods=("secant",),
            estimator_every=1,
        )
    return out


# ----------------------------------------------------------------------------------- summary
def _ema(values: list[float]) -> list[float]:
    out, s = [], EMA_INIT
    for v in values:
        s = EMA_ALPHA * v + (1 - EMA_ALPHA) * s
        out.append(s)
    return out


def _running_median(values: list[float], width: int = 5) -> list[float]:
    h = width // 2
    return [statistics.median(values[max(0, i - h) : i + h + 1]) for i in range(len(values))]


def _stats(steps: list[int], values: list[float], lrs: list[float], *, raw: bool) -> dict:
    """Peak, final, median (and their ratios to the LR in use) of one estimate series."""
    if not values:
        return {"n": 0}
    i = max(range(len(values)), key=values.__getitem__)
    ratios = [v / lr for v, lr in zip(values, lrs)]
    out = {
        "n": len(values),
        "peak": values[i],
        "peak_step": steps[i],
        "final": values[-1],
        "median": statistics.median(values),
        "peak_over_lr": ratios[i],
        "final_over_lr": ratios[-1],
        "median_over_lr": statistics.median(ratios),
    }
    if raw:
        tail = values[-max(1, len(values) // 10) :]
        out["final_mean"] = sum(tail) / len(tail)
        smooth = _running_median(values)
        j = max(range(len(smooth)), key=smooth.__getitem__)
        out["peak_smooth"] = smooth[j]
        out["peak_smooth_step"] = steps[j]
    return out


def _series(records: list[dict], method: str, field: str = "lr") -> tuple[list, list, list]:
    """(steps, raw values, LRs) of one method's finite estimates."""
    steps, values, lrs = [], [], []
    for r in records:
        est = (r.get("estimates") or {}).get(method)
        if est is None or est.get(field) is None:
            continue
        steps.append(r["step"])
        values.append(float(est[field]))
        lrs.append(float(r["lr"]))
    return steps, values, lrs


def _smoothed(records: list[dict], method: str) -> tuple[list, list, list]:
    steps, values, lrs = [], [], []
    for r in records:
        sm = r.get("estimates_smoothed") or {}
        if method in sm and sm[method] is not None and method in (r.get("estimates") or {}):
            steps.append(r["step"])
            values.append(float(sm[method]))
            lrs.append(float(r["lr"]))
    return steps, values, lrs


def summarize_arm(main: list[dict], every1: list[dict]) -> dict[str, Any]:
    """Statistics of every estimate series of one arm (see the module docstring)."""
    panel_b: dict[str, Any] = {}
    for method in ("secant", *HVP_METHODS):
        s, v, lr = _series(main, method)
        ss, sv, slr = _smoothed(main, method)
        panel_b[method] = {
            "raw": _stats(s, v, lr, raw=True),
            "smoothed": _stats(ss, sv, slr, raw=False),
        }
    s, v, lr = _series(main, "sharpness", "lr_stable")
    panel_b["sharpness_stable"] = {
        "raw": _stats(s, v, lr, raw=True),
        "smoothed": _stats(s, _ema(v), lr, raw=False),
    }
    s, v, lr = _series(every1, "secant")
    ss, sv, slr = _smoothed(every1, "secant")
    panel_a = {"raw": _stats(s, v, lr, raw=True), "smoothed": _stats(ss, sv, slr, raw=False)}
    common = min(len(main), len(every1))
    diffs = [
        abs(a["train_loss"] - b["train_loss"])
        for a, b in zip(main[:common], every1[:common])
        if a.get("train_loss") is not None and b.get("train_loss") is not None
    ]
    accs = [r["test_accuracy"] for r in main if r.get("test_accuracy") is not None]
    return {
        "final_test_accuracy": accs[-1] if accs else None,
        "replay_max_abs_loss_diff": max(diffs) if diffs else None,
        "panel_a": panel_a,
        "panel_b": panel_b,
    }


def checks(arms: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The F5 claims, evaluated on the secant numbers (see the module docstring)."""
    fixed = arms["fixed"]["panel_b"]["secant"]
    clr = arms["clr"]["panel_b"]["secant"]
    if not fixed["raw"].get("n") or not clr["raw"].get("n"):
        return {}
    medians = {a: arms[a]["panel_b"]["secant"]["smoothed"]["median_over_lr"] for a in arms}
    f_peak, f_step = fixed["raw"]["peak_smooth"], fixed["raw"]["peak_smooth_step"]
    f_final = fixed["raw"]["final_mean"]
    c_step = clr["raw"]["peak_smooth_step"]
    return {
        "far_above_lr": {
            "holds": all(m > 1 for m in medians.values()),
            "median_smoothed_over_lr": medians,
        },
        "fixed_spike_then_collapse": {
            "holds": f_step <= cfg.steps / 3 and f_final <= 0.5 * f_peak,
            "peak": f_peak,
            "peak_step": f_step,
            "final": f_final,
            "final_over_peak": f_final / f_peak,
        },
        "clr_stays_high": {
            "holds": clr["raw"]["final_mean"] > f_final,
            "clr_final": clr["raw"]["final_mean"],
            "fixed_final": f_final,
        },
        "clr_peaks_with_lr": {
            "holds": abs(c_step - cfg.clr_step_size) <= 0.2 * cfg.steps,
            "estimate_peak_step": c_step,
            "lr_peak_step": cfg.clr_step_size,
        },
    }


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    arms: dict[str, Any] = {}
    run_arms(
        lambda seed: configs(cfg, seed),
        cfg.seeds,
        out=out,
        experiment=EXPERIMENT,
        device=device,
        progress=progress,
    )
    seed = cfg.seeds[0]
    for arm in schedules(cfg):
        main_recs = Run(out, EXPERIMENT, f"{arm}_seed{seed}").records()
        every1 = Run(out, EXPERIMENT, f"{arm}_every1_seed{seed}").records()
        arms[arm] = summarize_arm(main_recs, every1)
    return {
        "lr": {"fixed": cfg.fixed_lr, "clr": [cfg.clr_base_lr, cfg.clr_max_lr]},
        "lr_peak_step": cfg.clr_step_size,
        "steps": cfg.steps,
        "every": cfg.estimator_every,
        "every1_steps": min(cfg.every1_steps, cfg.steps),
        "seed": seed,
        "arms": arms,
        "checks": checks(arms, cfg),
    }


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
