"""F4 -- cycle-length sweep: one 1cycle run per length, test accuracy vs iteration.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Fig. 1b and Table 1: ResNet-56 on
CIFAR-10 with a single cycle (0.1 -> 3.0 -> 0.1) of several stepsizes; longer cycles gain a
little, short ones stay competitive (the 10k-iteration cycle, 92.4 %, already beats the 80k
piecewise-constant baseline, 91.2 %). Reads ``f4_cycle_length``: runs
``onecycle_<steps>_seed<s>`` and ``summary.json`` (``lengths``, ``claim``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import _plots, _style
from ._data import (
    Claim,
    MissingResults,
    arms,
    experiment_runs,
    finals,
    fmt_pct,
    mean_sd,
    preset,
    summary,
)
from .criteria import decide, failed_run
from .fig_f3_onecycle_vs_pc import sibling_spread

FIGURE = "F4"
NAME = "f4_cycle_length"
EXPERIMENTS = ("f4_cycle_length",)
PAPER = (
    "ResNet-56, CIFAR-10, one cycle 0.1 → 3.0 → 0.1 of several lengths: longer cycles gain a "
    "little; 10k iterations (92.4%) already beat PC at 80k (91.2%)"
)


def _load(results) -> tuple[dict[int, list], dict]:
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    by_len = {}
    for arm, runs in groups.items():
        m = re.fullmatch(r"onecycle_(\d+)", arm)
        if m:
            by_len[int(m[1])] = runs
    if len(by_len) < 2:
        raise MissingResults(EXPERIMENTS[0], results, "needs onecycle_<steps> runs of 2+ lengths")
    return dict(sorted(by_len.items())), summary(results, EXPERIMENTS[0])


def _seed_finals(runs) -> dict[int, float]:
    """{seed: final accuracy}, failed (chance-level) runs left out."""
    out = {}
    for run, f in zip(runs, finals(runs)):
        if not failed_run(f):
            out[int(run.name.rsplit("_seed", 1)[1])] = f
    return out


def _epochs(run) -> float:
    recs = run.records()
    return recs[-1]["epoch"] * (recs[-1]["step"] + 1) / recs[-1]["step"] if len(recs) > 1 else 0.0


def claims(results) -> list[Claim]:
    by_len, _ = _load(results)
    f = {n: finals(r) for n, r in by_len.items()}
    short, long_ = min(f), max(f)
    s_short, s_long = _seed_finals(by_len[short]), _seed_finals(by_len[long_])
    seeds = sorted(s_short.keys() & s_long.keys())
    sib = sibling_spread(results)
    gain = decide([100 * (s_long[k] - s_short[k]) for k in seeds], sibling=sib)
    # Competitive: shortest error ≤ 1.5 × longest error; margin in points of error.
    comp = decide([100 * (1.5 * (1 - s_long[k]) - (1 - s_short[k])) for k in seeds], sibling=sib)
    tag = f"[{preset(results, EXPERIMENTS[0])}]"
    accs = ", ".join(f"{n}: {fmt_pct(v, 2)}" for n, v in f.items())
    e_short = 100 * (1 - mean_sd(f[short])[0])
    e_long = 100 * (1 - mean_sd(f[long_])[0])
    why_comp = (
        f"The shortest cycle ({short} iterations, {_epochs(by_len[short][0]):.2g} epochs) ends "
        f"at {e_short:.1f}% error against {e_long:.1f}% for the longest "
        f"({_epochs(by_len[long_][0]):.2g} epochs): {e_short / e_long:.2g}× the error, "
        "beyond the paper's 1.41×."
    )
    return [
        Claim(
            "F4",
            "longer cycles gain",
            PAPER,
            f"final accuracy by cycle length (iterations) {accs}; longest − shortest "
            f"{gain.text()} {tag}",
            gain.holds,
            ""
            if gain.holds is not False
            else f"The longest cycle ends {-gain.mean:.2g} points below the shortest.",
        ),
        Claim(
            "F4",
            "short cycles stay competitive",
            "the shortest cycle's error 10.3% vs 7.3% for the longest (1.41×; SC Fig. 1b)",
            f"error shortest ({short} it.) {e_short:.1f}% vs longest ({long_} it.) "
            f"{e_long:.1f}%; criterion: shortest error ≤ 1.5 × longest, {comp.text()} {tag}",
            comp.holds,
            why_comp if comp.holds is False else "",
        ),
    ]


def draw(results, out) -> list[Path]:
    by_len, summ = _load(results)
    cl = claims(results)
    fig, axes = _style.figure(1, 2, height=4.8, gridspec_kw={"width_ratios": [1.8, 1]})
    ax, ax_f = axes[0]
    colors = _style.sequential(len(by_len), "plasma")
    groups = {str(n): runs for n, runs in by_len.items()}
    arms_ = [(str(n), f"{n} iterations") for n in by_len]
    cmap = {str(n): c for n, c in zip(by_len, colors)}
    drawn = _plots.curves_panel(ax, groups, arms_, colors=cmap)
    _style.percent(ax)
    lows = [y[-1] for _, y in drawn.values()]
    ax.set_ylim(max(0.0, min(lows) - 0.1), None)
    ax.set(xlabel="iteration", ylabel="test accuracy", title="(a) one cycle of each length")
    ax.legend(loc="lower right", fontsize=10)
    ns = np.array(list(by_len))
    stats = [mean_sd(finals(r)) for r in by_len.values()]
    mean = np.array([s[0] for s in stats])
    sd = np.array([s[1] for s in stats])
    ax_f.errorbar(ns, mean, yerr=sd, fmt="o-", color=_style.color("onecycle"), capsize=4)
    for n, y, c in zip(ns, mean, colors):
        ax_f.plot([n], [y], "o", ms=9, color=c)
    ax_f.set_xscale("log", base=2)
    ax_f.set_xticks(ns, [str(n) for n in ns])
    _style.percent(ax_f)
    ax_f.set(
        xlabel="cycle length (iterations, log)",
        ylabel="final test accuracy",
        title="(b) final accuracy vs length",
    )
    _style.title(
        fig, "F4 (SC Fig. 1b, Table 1): cycle-length sweep", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [f"Ours: {cl[0].ours}.", f"Paper: {PAPER}."]
        + [f"Claim: {c.claim} — {c.verdict}." for c in cl],
    )
    return _style.save(fig, out, NAME)
