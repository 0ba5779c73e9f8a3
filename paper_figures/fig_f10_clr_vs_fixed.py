"""F10 -- CLR (triangular2, exp_range) vs the fixed and exp policies on a small CNN.

CLR paper (Smith 2017, arXiv:1506.01186) Fig. 1 and Table 1: CIFAR-10, Caffe net; ``fixed``
(0.001) reaches 81.4 % after 70k iterations, ``triangular2`` (0.001-0.006, stepsize 2k) the same
81.4 % after 25k, ``exp_range`` 82.2 % after 42k; ``exp`` ends at 79.1 %. Reads
``f10_clr_vs_fixed``: runs ``<fixed|exp|triangular2|exp_range>_seed<s>``; ``summary.json``
(``fixed_final``, ``iterations_to_fixed_final``, ``checks.clr_faster``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _plots, _style
from ._data import (
    Claim,
    MissingResults,
    arms,
    by_seed,
    experiment_runs,
    final,
    finals,
    first_reach,
    fmt_num,
    fmt_pct,
    preset,
    series,
    summary,
)
from .criteria import CLR_FRACTION, decide, failed_run

FIGURE = "F10"
NAME = "f10_clr_vs_fixed"
EXPERIMENTS = ("f10_clr_vs_fixed",)
PAPER = (
    "fixed 81.4% at 70k iterations; triangular2 reaches 81.4% at 25k (0.36), exp_range 82.2% "
    "at 42k (0.6); exp 79.1% (CIFAR-10)"
)
ARMS = (
    ("fixed", "fixed"),
    ("exp", "exp"),
    ("triangular2", "CLR triangular2"),
    ("exp_range", "CLR exp_range"),
)
STYLES = {"exp": "--", "exp_range": "-"}


def _load(results):
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    if "fixed" not in groups or not ({"triangular2", "exp_range"} & set(groups)):
        raise MissingResults(EXPERIMENTS[0], results, "needs fixed and CLR runs")
    return groups, summary(results, EXPERIMENTS[0])


def claims(results) -> list[Claim]:
    groups, summ = _load(results)
    frac = summ.get("fraction_of_fixed", {})
    reach = summ.get("iterations_to_fixed_final", {})
    f = {a: finals(groups[a]) for a, _ in ARMS if a in groups}
    parts = []
    for a in ("triangular2", "exp_range"):
        if a in f:
            r = reach.get(a)
            when = "never" if r is None else f"at {r} ({fmt_num(frac.get(a), 2)})"
            if len(f["fixed"]) > 1:
                when += " (first seed)"
            parts.append(f"{a} reaches it {when}, ends {fmt_pct(f[a])}")
    margins, step = _margins(groups, summ)
    decision = decide(margins, resolution=step, unit="of the run") if "fixed" in f else None
    holds = None if decision is None else decision.holds
    drops = (summ.get("lr") or {}).get("fixed_drop_steps") or []
    before = summ.get("fixed_before_drop")
    pre = ""
    if before is not None:
        r2 = summ.get("iterations_to_fixed_before_drop") or {}
        pre = f"; before its first drop fixed had {100 * before:.1f}%, reached by " + ", ".join(
            f"{a} at {r2.get(a)}" for a in ("triangular2", "exp_range") if a in r2
        )
    ours = (
        f"fixed {fmt_pct(f['fixed'])} at {summ.get('steps')} iterations"
        + (f" (LR ×0.1 at {', '.join(str(d) for d in drops)})" if drops else "")
        + "; "
        + "; ".join(parts)
        + (f"; exp {fmt_pct(f['exp'])}" if "exp" in f else "")
        + pre
        + (f"; 0.5 − fastest CLR fraction {decision.text()}" if decision else "")
        + " (criterion: some CLR arm within 0.5 of the iterations; the paper: triangular2 0.36, "
        f"exp_range 0.6; evaluation grid {step:.2g} of the run) "
        + f"[{preset(results, EXPERIMENTS[0])}]"
    )
    return [
        Claim(
            "F10",
            "CLR reaches the fixed-LR accuracy in ~1/3 of the iterations",
            PAPER,
            ours,
            holds,
            ""
            if holds is not False
            else "No CLR arm reaches the fixed arm's final accuracy within half the run: the "
            "fastest CLR arm gets there at "
            + ", ".join(fmt_num(CLR_FRACTION - m, 2) for m in margins)
            + " of the iterations (per seed; 1 = never); the fixed arm's final accuracy comes "
            "after its late LR drops (annealing).",
        )
    ]


def _margins(groups, summ) -> tuple[list[float], float]:
    """Per seed: 0.5 − the fastest CLR arm's fraction of the run to the fixed arm's final accuracy.

    A CLR arm that never gets there counts as 1 (the whole run), a lower bound on its margin's
    shortfall. Also returns the evaluation grid step as a fraction of the run (the resolution).
    """
    steps = float(summ.get("steps") or 1)
    step = float(summ.get("eval_every") or 0) / steps
    margins = []
    for arm_runs in by_seed(groups).values():
        if "fixed" not in arm_runs:
            continue
        target = final(arm_runs["fixed"].records())
        if failed_run(target):
            continue  # a fixed arm stuck at chance sets no target: a failed run
        fracs = []
        for a in ("triangular2", "exp_range"):
            if a in arm_runs:
                x, y = series(arm_runs[a].records(), "test_accuracy")
                hit = first_reach(x + 1, y, target)
                fracs.append(1.0 if not np.isfinite(hit) else hit / steps)
        if fracs:
            margins.append(CLR_FRACTION - min(fracs))
    return margins, step


def draw(results, out) -> list[Path]:
    groups, summ = _load(results)
    (claim,) = claims(results)
    fig, axes = _style.figure(1, 2, height=4.8, gridspec_kw={"width_ratios": [2.1, 1]})
    ax, ax_lr = axes[0]
    drops = (summ.get("lr") or {}).get("fixed_drop_steps") or []
    arms_ = [
        (a, f"fixed (Caffe recipe: ×0.1 at {', '.join(map(str, drops))})")
        if a == "fixed" and drops
        else (a, lab)
        for a, lab in ARMS
    ]
    drawn = _plots.curves_panel(ax, groups, arms_, styles=STYLES)
    target = summ.get("fixed_final")
    if target is not None:
        ax.axhline(
            target,
            color=_style.color("fixed"),
            ls=":",
            lw=1.2,
            label=f"fixed final {100 * target:.1f}%",
        )
    for a, r in (summ.get("iterations_to_fixed_final") or {}).items():
        if a in ("triangular2", "exp_range") and r is not None:
            ax.axvline(r, color=_style.color(a), ls=":", lw=1.2)
    _style.percent(ax)
    lows = [y[-1] for _, y in drawn.values()]
    ax.set_ylim(max(0.0, min(lows) - 0.2), None)  # room below the curves for the legend
    ax.set(
        xlabel="iteration",
        ylabel="test accuracy",
        title="(a) test accuracy (dotted: reaches fixed final)",
    )
    ax.legend(loc="lower right", fontsize=8.5)
    _plots.lr_panel(ax_lr, groups, ARMS, styles=STYLES)
    ax_lr.set(xlabel="iteration", title="(b) LR schedules")
    ax_lr.legend(loc="upper right", fontsize=9)
    _style.title(
        fig, "F10 (CLR Fig. 1, Table 1): CLR vs fixed / exp", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [f"Ours: {claim.ours}.", f"Paper: {PAPER}.", f"Claim: {claim.claim} — {claim.verdict}."],
    )
    return _style.save(fig, out, NAME)
