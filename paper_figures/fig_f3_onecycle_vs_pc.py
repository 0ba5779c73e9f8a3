"""F3 -- 1cycle vs piecewise-constant: test accuracy vs iteration.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Fig. 1a: ResNet-56 on CIFAR-10, one
cycle 0.1 -> 3.0 -> 0.1 over 10k iterations reaches 92.4 % against 91.2 % for the multistep
baseline (0.35, x0.1 at 50k and 70k) after 80k. Reads ``f3_onecycle_vs_pc`` (runs
``onecycle_seed<s>``, ``pc_seed<s>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _style
from ._data import (
    Claim,
    arm_curves,
    arms,
    experiment_runs,
    finals,
    first_reach,
    fmt_pct,
    fraction,
    mean_sd,
    preset,
)

FIGURE = "F3"
NAME = "f3_onecycle_vs_pc"
EXPERIMENTS = ("f3_onecycle_vs_pc",)
PAPER = "1cycle 92.4% at 10k iterations (1/8) vs PC 91.2% at 80k (ResNet-56, CIFAR-10)"


def _load(results):
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    if "onecycle" not in groups or "pc" not in groups:
        from ._data import MissingResults

        raise MissingResults(EXPERIMENTS[0], results, "needs onecycle_seed* and pc_seed* runs")
    return groups


def _numbers(groups) -> dict:
    oc, pc = groups["onecycle"], groups["pc"]
    f_oc, f_pc = finals(oc), finals(pc)
    n_oc = max(len(r.records()) for r in oc)
    n_pc = max(len(r.records()) for r in pc)
    x, ys = arm_curves(oc, "test_accuracy")
    reach = first_reach(x + 1, np.nanmean(ys, axis=0), mean_sd(f_pc)[0]) if len(x) else np.nan
    return dict(f_oc=f_oc, f_pc=f_pc, n_oc=n_oc, n_pc=n_pc, reach=reach)


def _why_not(cfg: dict, d: dict) -> str:
    sched = cfg.get("schedule", {})
    return (
        f"LeNet-5 (no BatchNorm) on {cfg.get('dataset')} tolerates only a moderate max LR "
        f"({sched.get('max_lr')}, from the range test; ResNet-56 takes 3.0), so there is no "
        f"super-convergence to exploit: the {d['n_oc']}-iteration 1cycle run is simply a short "
        f"run, and PC keeps gaining over its {d['n_pc'] / d['n_oc']:.3g}× "
        "longer schedule."
    )


def claims(results) -> list[Claim]:
    groups = _load(results)
    d = _numbers(groups)
    m_oc, m_pc = mean_sd(d["f_oc"])[0], mean_sd(d["f_pc"])[0]
    holds = bool(m_oc >= m_pc)
    frac = fraction(d["n_oc"], d["n_pc"])
    reach = (
        f"; 1cycle first reaches PC's final accuracy at iteration {int(d['reach'])}"
        if np.isfinite(d["reach"])
        else "; 1cycle never reaches PC's final accuracy"
    )
    return [
        Claim(
            figure="F3",
            claim="1cycle reaches ≥ the baseline's final accuracy in a fraction of its iterations",
            paper=PAPER,
            ours=(
                f"1cycle {fmt_pct(d['f_oc'])} at {d['n_oc']} iterations ({frac}) vs PC "
                f"{fmt_pct(d['f_pc'])} at {d['n_pc']}{reach} [{preset(results, EXPERIMENTS[0])}]"
            ),
            holds=holds,
            note="" if holds else _why_not(groups["onecycle"][0].config(), d),
        )
    ]


def draw(results, out) -> list[Path]:
    groups = _load(results)
    d = _numbers(groups)
    (claim,) = claims(results)
    fig, axes = _style.figure(1, 2, height=4.8, gridspec_kw={"width_ratios": [2.2, 1]})
    ax, ax_lr = axes[0]
    for arm, label in (("pc", "piecewise constant (PC)"), ("onecycle", "1cycle")):
        x, ys = arm_curves(groups[arm], "test_accuracy")
        _style.band(ax, x + 1, ys, label=label, c=_style.color(arm))
        ax.plot(x[-1:] + 1, np.nanmean(ys, axis=0)[-1:], "o", color=_style.color(arm))
        xl, lrs = arm_curves(groups[arm][:1], "lr")
        ax_lr.plot(xl + 1, lrs[0], color=_style.color(arm), label=label)
    m_pc = mean_sd(d["f_pc"])[0]
    ax.axhline(m_pc, color=_style.color("pc"), ls=":", lw=1.2, label=f"PC final {100 * m_pc:.1f}%")
    if np.isfinite(d["reach"]):
        ax.axvline(d["reach"], color=_style.color("onecycle"), ls=":", lw=1.2)
    _style.percent(ax)
    lowest_final = min(mean_sd(d["f_oc"])[0], m_pc)
    ax.set_ylim(max(0.0, min(lowest_final - 0.05, m_pc - 0.15)), None)
    ax.set(xlabel="iteration (optimizer steps)", ylabel="test accuracy", title="(a) test accuracy")
    ax.legend(loc="lower right")
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="(b) LR schedules")
    ax_lr.legend(loc="upper right", fontsize=9.5)
    _style.title(
        fig, "F3 (SC Fig. 1a): 1cycle vs piecewise constant", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [
            f"Ours: 1cycle {fmt_pct(d['f_oc'])} at {fraction(d['n_oc'], d['n_pc'])} of the "
            f"iterations vs PC {fmt_pct(d['f_pc'])}. Paper: {PAPER}.",
            f"Claim: {claim.claim} — {claim.verdict}.",
        ],
    )
    return _style.save(fig, out, NAME)
