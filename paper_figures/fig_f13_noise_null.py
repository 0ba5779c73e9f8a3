"""F13 -- the null sweep: Eq. 8's ratio estimate/LR against the momentum-noise null c(μ, s).

Not in the papers (issue 12). Smith & Topin's Eq. 8 (*Super-Convergence*, §5), in the paper's
convention, returns ε·c(μ, s) when the steps are pure minibatch noise through heavy-ball momentum
μ (``hessian_lr.lr.noise.noise_null``). (a) The measured median ratio against c(μ, s) over
LR × momentum × batch size × spacing (constant LR per arm); on the diagonal the estimate says
nothing about the curvature. (b) The estimate against the LR in use: Eq. 8 (s = 1) and the
same-batch secant; slope 1 = follows the LR, slope 0 = a property of the loss.

Reads ``f13_noise_null/summary.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hessian_lr.lr.noise import noise_null

from . import _style
from ._data import Claim, fmt_num, preset
from ._secant_data import load_summary

FIGURE = "F13"
NAME = "f13_noise_null"
EXPERIMENTS = ("f13_noise_null",)
MARKERS = {1: "o", 5: "s", 10: "^", 20: "D"}


def claims(results) -> list[Claim]:
    summ = load_summary(results, EXPERIMENTS[0])
    tag = f"[{preset(results, EXPERIMENTS[0])}]"
    checks = summ.get("checks") or {}
    rows = []
    at = checks.get("secant_at_null")
    if at:
        rows.append(
            Claim(
                "F13",
                "Eq. 8's ratio estimate/LR sits at the momentum-noise null c(μ, s) across LR × "
                "momentum × batch × spacing",
                "(not in the paper; c(0.9, 1) = 2.24, c(0.9, 10) = 1.03)",
                f"{fmt_num(100 * at['fraction_inside'], 3)} % of {at['cells']} cells within "
                f"×{at['band'][0]}–{at['band'][1]} of c (median |log(ratio/c)| "
                f"{fmt_num(at['median_abs_log_ratio_over_null'], 2)}; criterion ≥ 75 %) {tag}",
                bool(at["holds"]),
                ""
                if at["holds"]
                else "Cells off the null carry more than noise (curvature or drift); see "
                "F13 (a) for which momenta, spacings and LRs.",
            )
        )
    sl = checks.get("secant_follows_lr_same_batch_does_not")
    if sl:
        rows.append(
            Claim(
                "F13",
                "Eq. 8 follows the LR in use (log-log slope ≈ 1); the same-batch secant does not",
                "(not in the paper)",
                f"slope of log estimate on log LR: Eq. 8 (s = 1) "
                f"{fmt_num(sl['slope_secant_s1'], 2)}, same-batch "
                f"{fmt_num(sl['slope_same_batch'], 2)} (criterion: 0.8–1.2 and < 0.5) {tag}",
                bool(sl["holds"]),
            )
        )
    if summ.get("diverged"):
        rows.append(
            Claim(
                "F13",
                "every arm of the sweep trains (none diverges)",
                "",
                f"diverged: {', '.join(summ['diverged'])} (excluded from the cells) {tag}",
                False,
                "Those LR × momentum pairs exceed the stability bound of this model; their "
                "records stop at the divergence.",
            )
        )
    if not rows:
        rows.append(Claim("F13", "Eq. 8 sits at the noise null", "", f"no cells {tag}", None))
    return rows


def _plain_log_ticks(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def draw(results, out) -> list[Path]:
    summ = load_summary(results, EXPERIMENTS[0])
    cells = [c for c in summ.get("cells", []) if c["median_ratio"] is not None]
    moms = sorted({c["momentum"] for c in cells})
    colors = dict(zip(moms, _style.sequential(len(moms), "plasma")))
    fig, axes, ax_leg = _style.figure_with_legend(1, 2, height=6.2, legend_ratio=0.28)
    ax = axes[0, 0]
    for c in cells:
        m = c["median_ratio"]
        if not (isinstance(m, float) and math.isfinite(m)):
            continue
        bs_small = c["batch_size"] == min(x["batch_size"] for x in cells)
        ax.plot(
            c["null"],
            m,
            MARKERS.get(c["spacing"], "x"),
            ms=6,
            alpha=0.85,
            mfc=colors[c["momentum"]] if bs_small else "none",
            mec=colors[c["momentum"]],
        )
    lo = min([c["null"] for c in cells] + [c["median_ratio"] for c in cells] + [0.5]) * 0.8
    hi = max([c["null"] for c in cells] + [c["median_ratio"] for c in cells] + [3]) * 1.2
    grid = np.geomspace(lo, hi, 50)
    band = summ.get("at_null_band", [0.8, 1.25])
    ax.plot(grid, grid, color="#333333", lw=1.2, label="ratio = c(μ, s) (pure noise)")
    ax.fill_between(
        grid,
        band[0] * grid,
        band[1] * grid,
        color="#999999",
        alpha=0.2,
        label=f"×{band[0]}–{band[1]} band",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="noise null c(μ, s)",
        ylabel="median Eq. 8 estimate / ε (paper's convention)",
        title="(a) Eq. 8 against its null",
    )
    for mom in moms:
        ax.plot([], [], "o", color=colors[mom], label=f"μ = {mom:g}")
    for s, mk in MARKERS.items():
        if any(c["spacing"] == s for c in cells):
            ax.plot([], [], mk, color="#555555", mfc="none", label=f"s = {s}")
    bss = sorted({c["batch_size"] for c in cells})
    if len(bss) > 1:
        ax.plot([], [], "o", color="#555555", label=f"filled: batch {bss[0]}, hollow: larger")
    ax2 = axes[0, 1]
    arms = summ.get("arms", {})
    for name, a in arms.items():
        if a["status"] != "finished":
            continue
        col = colors.get(a["momentum"], "#555555")
        s1 = [c for c in cells if c["arm"] == name and c["spacing"] == 1]
        if s1 and math.isfinite(s1[0]["median_ratio"]):
            ax2.plot(a["lr"], s1[0]["median_ratio"] * a["lr"], "o", color=col, ms=6)
        sb = a.get("same_batch_median_ratio")
        if sb is not None and math.isfinite(sb):
            ax2.plot(a["lr"], sb * a["lr"], "*", color=col, ms=9, mec="#000000", mew=0.4)
    ax2.plot([], [], "o", color="#555555", label="Eq. 8, s = 1 (median)")
    ax2.plot([], [], "*", color="#555555", ms=9, label="same-batch secant (median)")
    lrs = sorted({a["lr"] for a in arms.values()})
    if lrs:
        x = np.geomspace(min(lrs), max(lrs), 10)
        for mom in moms:
            c1 = noise_null(mom, 1)
            ax2.plot(x, c1 * x, color=colors[mom], ls="-.", lw=1.2)
        ax2.plot([], [], color="#555555", ls="-.", label="ε·c(μ, 1) per momentum")
        ax2.plot(x, x, color=_style.METHOD_COLORS["lr"], ls="--", label="LR in use ε")
    sl = summ.get("slopes", {})
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="LR in use ε (constant per arm)",
        ylabel="estimate (LR units)",
        title=f"(b) slopes: Eq. 8 {fmt_num(sl.get('secant_s1', math.nan), 2)}, same-batch "
        f"{fmt_num(sl.get('same_batch', math.nan), 2)}",
    )
    _style.legend_row(ax_leg, [ax, ax2], ncol=4, fontsize=9)
    _style.title(
        fig,
        "F13: is Eq. 8 curvature or momentum noise? The null sweep",
        preset(results, EXPERIMENTS[0]),
    )
    at = (summ.get("checks") or {}).get("secant_at_null", {})
    burn = fmt_num(100 * summ.get("burn_fraction", 0.25), 2)
    for a in (ax, ax2):
        _plain_log_ticks(a)
    _style.add_caption(
        fig,
        [
            "c(μ, s) = sd(S₁)/sd(S₁ − S₂), S₁ and S₂ consecutive s-step sums of the AR(1) "
            "momentum process (heavy ball: c(μ, 1) = √(1/(2(1 − μ))); plain SGD 1/√2). "
            f"Each point: median over the run after {burn} % burn-in of one arm (constant LR). "
            + (
                f"{fmt_num(100 * at['fraction_inside'], 3)} % of the cells lie in the band."
                if at
                else ""
            ),
            "(b): slope 1 = the estimate reports the LR in use back (scaled by c); slope 0 = it "
            "measures a property of the loss, whatever the LR. Same-batch secant: the gradient "
            "change along the step on the batch that took it (one extra gradient).",
        ],
    )
    return _style.save(fig, out, NAME)
