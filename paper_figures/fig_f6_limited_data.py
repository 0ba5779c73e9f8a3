"""F6 -- limited data: final accuracy of 1cycle vs piecewise-constant on shrinking training sets.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Fig. 6a and Table 1: ResNet-56 on
CIFAR-10 with 50k, 20k and 10k training images; 1cycle (10k iterations) beats PC (80k) by +1.2,
+5.2 and +9.2 points. Reads ``f6_limited_data``: runs ``<onecycle|pc>_p<percent>_seed<s>`` and
``summary.json`` (``fractions``, ``steps``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import _style
from ._data import (
    Claim,
    MissingResults,
    arms,
    experiment_runs,
    finals,
    fmt_pct,
    last_quarter_gain,
    mean_sd,
    preset,
    summary,
)
from .criteria import decide
from .fig_f3_onecycle_vs_pc import sibling_spread

FIGURE = "F6"
NAME = "f6_limited_data"
EXPERIMENTS = ("f6_limited_data",)
PAPER_GAIN = {100: 1.2, 40: 5.2, 20: 9.2}  # CIFAR-10: 50k, 20k, 10k of 50k images
PAPER = "1cycle − PC: +1.2 points (50k images), +5.2 (20k), +9.2 (10k) (ResNet-56, CIFAR-10)"


def _load(results) -> tuple[dict[int, dict[str, list]], dict]:
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    by_p: dict[int, dict[str, list]] = {}
    for arm, runs in groups.items():
        m = re.fullmatch(r"(onecycle|pc)_p(\d+)", arm)
        if m:
            by_p.setdefault(int(m[2]), {})[m[1]] = runs
    by_p = {p: d for p, d in by_p.items() if {"onecycle", "pc"} <= set(d)}
    if len(by_p) < 2:
        raise MissingResults(EXPERIMENTS[0], results, "needs onecycle/pc pairs on 2+ fractions")
    return dict(sorted(by_p.items(), reverse=True)), summary(results, EXPERIMENTS[0])


def _gains(by_p) -> dict[int, list[float]]:
    """Per-seed gain (1cycle − PC final accuracy, points), seeds matched by run name."""
    out = {}
    for p, d in by_p.items():
        oc = {r.name.rsplit("_seed", 1)[1]: f for r, f in zip(d["onecycle"], finals(d["onecycle"]))}
        pc = {r.name.rsplit("_seed", 1)[1]: f for r, f in zip(d["pc"], finals(d["pc"]))}
        out[p] = [100 * (oc[s] - pc[s]) for s in sorted(oc) if s in pc]
    return out


def _why_not(by_p, gains, steps) -> str:
    means = {p: mean_sd(g)[0] for p, g in gains.items()}
    run = next(iter(by_p.values()))["onecycle"][0]
    recs = run.records()
    epochs = recs[-1]["epoch"] * (recs[-1]["step"] + 1) / max(1, recs[-1]["step"])
    shown = ", ".join(f"{p}%: {m:+.1f}" for p, m in means.items())
    return (
        f"Measured gains (points) {shown}: 1cycle runs {steps.get('onecycle')} iterations "
        f"({epochs:.2g} epochs of the full set) against PC's {steps.get('pc')}; the gain on the "
        "smallest share is "
        + ("not positive." if means[min(means)] <= 0 else "not larger than on the full set.")
    )


def claims(results) -> list[Claim]:
    by_p, summ = _load(results)
    gains = _gains(by_p)
    mean = {p: mean_sd(g)[0] for p, g in gains.items()}
    largest, smallest = max(mean), min(mean)
    # "advantage grows": the gain on the smallest share exceeds the gain on the full set, and
    # there is an advantage (a positive gain) on the smallest share; per seed, the margin is the
    # smaller of the two differences (both must be positive).
    margins = [min(a - b, a) for a, b in zip(gains[smallest], gains[largest])]
    decision = decide(margins, sibling=sibling_spread(results))
    holds = decision.holds
    steps = summ.get("steps", {})
    parts = []
    for p, d in by_p.items():
        g = mean_sd(gains[p])
        sd = f" ± {g[1]:.2f}" if g[2] > 1 else ""
        tail = mean_sd([last_quarter_gain(r) for r in d["pc"]])[0]
        parts.append(
            f"{p}%: 1cycle {fmt_pct(finals(d['onecycle']))}, PC {fmt_pct(finals(d['pc']))} "
            f"(its last quarter {tail:+.2g}), gain {g[0]:+.2f}{sd}"
        )
    return [
        Claim(
            "F6",
            "the 1cycle advantage grows as data shrinks",
            PAPER,
            "; ".join(parts)
            + f" (points; 1cycle {steps.get('onecycle')} vs PC {steps.get('pc')} iterations; "
            f"criterion: gain at {smallest}% > gain at {largest}% and > 0; {decision.text()}) "
            f"[{preset(results, EXPERIMENTS[0])}]",
            holds,
            _why_not(by_p, gains, steps) if holds is False else "",
        )
    ]


def _ours_label(n: int) -> str:
    return "ours (1 seed)" if n == 1 else f"ours ({n} seeds: mean ± s.d.)"


def draw(results, out) -> list[Path]:
    by_p, summ = _load(results)
    (claim,) = claims(results)
    gains = _gains(by_p)
    fig, axes = _style.figure(1, 2, height=4.8)
    ax, ax_g = axes[0]
    ps = np.array(list(by_p), dtype=float)
    for arm, label in (("pc", "piecewise constant (PC)"), ("onecycle", "1cycle")):
        st = [mean_sd(finals(d[arm])) for d in by_p.values()]
        ax.errorbar(
            ps,
            [s[0] for s in st],
            yerr=[s[1] for s in st],
            fmt="o-",
            capsize=4,
            color=_style.color(arm),
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xticks(ps, [f"{int(p)}%" for p in ps])
    ax.minorticks_off()
    ax.invert_xaxis()
    _style.percent(ax)
    ax.set(
        xlabel="share of the training set (log, shrinking →)",
        ylabel="final test accuracy",
        title="(a) final accuracy",
    )
    ax.legend(loc="best")
    g = [mean_sd(gains[int(p)]) for p in ps]
    ax_g.errorbar(
        ps,
        [x[0] for x in g],
        yerr=[x[1] for x in g],
        fmt="o-",
        ms=7,
        capsize=4,
        color=_style.color("onecycle"),
        label=_ours_label(len(next(iter(gains.values())))),
    )
    pk = sorted(PAPER_GAIN, reverse=True)
    ax_g.plot(pk, [PAPER_GAIN[k] for k in pk], "D--", color="k", ms=7, label="paper (CIFAR-10)")
    for k in pk:  # the paper's shares as labels on its points (ticks show ours only)
        ax_g.annotate(
            f"{k}%",
            (k, PAPER_GAIN[k]),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            fontsize=9,
        )
    ax_g.axhline(0, color="k", lw=0.8)
    ax_g.set_xscale("log")
    ax_g.set_xticks(ps, [f"{int(p)}%" for p in ps])
    ax_g.minorticks_off()
    ax_g.invert_xaxis()
    ax_g.set(
        xlabel="share of the training set (log, shrinking →)",
        ylabel="1cycle − PC (accuracy points)",
        title="(b) 1cycle advantage",
    )
    ax_g.legend(loc="center right", fontsize=10)
    _style.title(
        fig, "F6 (SC Fig. 6a, Table 1): limited data, 1cycle vs PC", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [
            f"Ours: {claim.ours}.",
            f"Paper: {PAPER}; shares {', '.join(f'{k}%: +{v}' for k, v in PAPER_GAIN.items())}.",
            f"Claim: {claim.claim} — {claim.verdict}.",
        ],
    )
    return _style.save(fig, out, NAME)
