"""F13 -- the null sweep: Eq. 8's ratio estimate/LR against the momentum-noise null c(μ, s).

Not in the papers (issue 12). Smith & Topin's Eq. 8 (*Super-Convergence*, §5), in the paper's
convention, returns ε·c(μ, s) when the steps are pure minibatch noise through heavy-ball momentum
μ (``hessian_lr.lr.noise.noise_null``). (a) The measured median ratio against c(μ, s) over
LR × momentum × batch size × spacing (constant LR per arm); on the diagonal the estimate says
nothing about the curvature. (b) The estimate against the LR in use: Eq. 8 (s = 1) and the
same-batch secant; slope 1 = follows the LR, slope 0 = a property of the loss.

Verdicts (issue 25): 95 % moving-block bootstrap intervals within each arm (the fraction of cells
in the band, the slopes); the slopes are read on LR 0.1-1, past the early transient of the LR
0.01 arms. Reads ``f13_noise_null/summary.json`` and its arms' ``arm.json``; where present, a
full-length rerun of part of the sweep in ``f13_noise_null_full`` (one extra row).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hessian_lr.lr.noise import noise_null

from . import _style
from ._data import Claim, MissingResults, fmt_num, preset
from ._secant_data import arm_series, load_arm, load_summary
from .stats import TestResult, block_bootstrap_ci, ci_verdict

FIGURE = "F13"
NAME = "f13_noise_null"
EXPERIMENTS = ("f13_noise_null", "f13_noise_null_full")
#: A full-length (cpu preset, 240 steps) rerun of part of the sweep (issue 25), when present.
FULL = EXPERIMENTS[1]
MARKERS = {1: "o", 5: "s", 10: "^", 20: "D"}


#: F13's slopes are read on the LRs past the early transient (issue 25): at LR 0.01 a run of a
#: few hundred steps is still in its first descent, and its cells say little about the null.
SLOPE_LRS = (0.1, 1.0)
BLOCK = 5  # estimates per bootstrap block within an arm's series
N_BOOT = 400


def _arm_series(
    results, summ: dict, experiment: str = EXPERIMENTS[0]
) -> tuple[list[dict], list[np.ndarray]]:
    """Per finished arm its keys and, as separate series, the post-burn ratios of Eq. 8 at each
    spacing and of the same-batch secant (so a bootstrap can resample each within its arm)."""
    keys, series = [], []
    steps, burn_f = summ.get("steps", 0), summ.get("burn_fraction", 0.25)
    for name, info in sorted(summ.get("arms", {}).items()):
        if info.get("status") != "finished":
            continue
        try:
            arm = load_arm(results, experiment, name)
        except MissingResults:
            continue
        burn = int(burn_f * (steps or arm.get("steps_done", 0)))
        kinds = [("secant", int(k)) for k in sorted(arm["secant"], key=int)]
        for kind, sp in kinds + [("same_batch", None)]:
            t, r, _ = arm_series(arm, kind, sp)
            keys.append(
                dict(
                    arm=name,
                    kind=kind,
                    spacing=sp,
                    lr=info["lr"],
                    momentum=info["momentum"],
                    batch_size=info["batch_size"],
                )
            )
            series.append(r[t >= burn])
    return keys, series


def _medians(keys: list[dict], series: list[np.ndarray]) -> list[float]:
    return [float(np.median(x)) if len(x) else math.nan for x in series]


def _fraction_inside(keys, series, band) -> float:
    m = _medians(keys, series)
    inside = [
        band[0] <= v / noise_null(k["momentum"], k["spacing"]) <= band[1]
        for k, v in zip(keys, m)
        if k["kind"] == "secant" and math.isfinite(v)
    ]
    return sum(inside) / len(inside) if inside else math.nan


def _slope(keys, series, kind: str, lrs: tuple[float, ...] | None) -> float:
    """Slope of log(estimate) on log(LR), one intercept per momentum × batch."""
    m = _medians(keys, series)
    rows = [
        (f"{k['momentum']}_{k['batch_size']}", k["lr"], v * k["lr"])
        for k, v in zip(keys, m)
        if k["kind"] == kind
        and (kind != "secant" or k["spacing"] == 1)
        and (lrs is None or k["lr"] in lrs)
        and math.isfinite(v)
        and v > 0
    ]
    groups = sorted({g for g, _, _ in rows})
    if len(rows) < 3:
        return math.nan
    a = np.zeros((len(rows), 1 + len(groups)))
    for i, (g, x, _) in enumerate(rows):
        a[i, 0], a[i, 1 + groups.index(g)] = math.log(x), 1.0
    y = np.log([v for _, _, v in rows])
    return float(np.linalg.lstsq(a, y, rcond=None)[0][0])


def _boot(keys, series, stat) -> TestResult:
    return block_bootstrap_ci(
        series,
        lambda ss: stat(keys, ss),
        block=BLOCK,
        n_boot=N_BOOT,
        generator=np.random.default_rng(13),
    )


def _ci(r: TestResult, digits: int = 2) -> str:
    return (
        f"{fmt_num(r.estimate, digits)} (95 % CI [{fmt_num(r.low, digits)}, "
        f"{fmt_num(r.high, digits)}])"
    )


def claims(results) -> list[Claim]:
    summ = load_summary(results, EXPERIMENTS[0])
    steps, burn = summ.get("steps"), summ.get("burn_fraction", 0.25)
    tag = (
        f"[{preset(results, EXPERIMENTS[0])}, seed 0, {steps} steps per arm, medians after "
        f"{fmt_num(100 * burn, 2)} % burn-in; 95 % CIs: moving-block bootstrap within each arm, "
        f"blocks of {BLOCK} estimates]"
    )
    keys, series = _arm_series(results, summ)
    if not keys:
        return [Claim("F13", "Eq. 8 sits at the noise null", "", f"no cells {tag}", None)]
    band = summ.get("at_null_band", [0.8, 1.25])
    frac = _boot(keys, series, lambda k, s: _fraction_inside(k, s, band))
    n_cells = sum(1 for k in keys if k["kind"] == "secant")
    n20 = [len(x) for k, x in zip(keys, series) if k["spacing"] == max(MARKERS)]
    sec = _boot(keys, series, lambda k, s: _slope(k, s, "secant", SLOPE_LRS))
    same = _boot(keys, series, lambda k, s: _slope(k, s, "same_batch", SLOPE_LRS))
    sec_all, same_all = (
        _slope(keys, series, "secant", None),
        _slope(keys, series, "same_batch", None),
    )
    follows = _follows(sec, same)
    lr_txt = "–".join(f"{x:g}" for x in SLOPE_LRS)
    rows = [
        Claim(
            "F13",
            "Eq. 8's ratio estimate/LR sits at the momentum-noise null c(μ, s) across LR × "
            "momentum × batch × spacing",
            "(not in the paper; c(0.9, 1) = 2.24, c(0.9, 10) = 1.03)",
            f"{fmt_num(100 * frac.estimate, 3)} % of {n_cells} cells within "
            f"×{band[0]}–{band[1]} of c, 95 % CI [{fmt_num(100 * frac.low, 3)}, "
            f"{fmt_num(100 * frac.high, 3)}] % (criterion ≥ 75 % over the CI); the s = "
            f"{max(MARKERS)} cells rest on {min(n20, default=0)}–{max(n20, default=0)} estimates "
            f"each {tag}",
            ci_verdict(frac, 0.75),
            "Cells off the null carry more than noise (curvature or drift); see F13 (a) for "
            "which momenta, spacings and LRs."
            if ci_verdict(frac, 0.75) is False
            else "",
            test=f"{fmt_num(100 * frac.estimate, 3)} % in the band, 95 % CI "
            f"[{fmt_num(100 * frac.low, 3)}, {fmt_num(100 * frac.high, 3)}] %",
        ),
        Claim(
            "F13",
            "Eq. 8 follows the LR in use (log-log slope ≈ 1); the same-batch secant does not",
            "(not in the paper)",
            f"slope of log estimate on log LR over LR {lr_txt}: Eq. 8 (s = 1) {_ci(sec)}, "
            f"same-batch {_ci(same)} (criterion: Eq. 8's CI within 0.8–1.2 and the same-batch "
            f"CI < 0.5); over all LRs incl. the early-transient 0.01 cells: "
            f"{fmt_num(sec_all, 2)}, {fmt_num(same_all, 2)} {tag}",
            follows,
            "The earlier ✅ rested on the LR 0.01 cells (all-LR slopes above); past the "
            f"transient the same-batch secant's slope is {fmt_num(same.estimate, 2)}."
            if follows is not True
            else "",
            test=f"same-batch slope over LR {lr_txt} {_ci(same)}",
        ),
    ]
    full = _full_length_row(results, keys, series)
    if full is not None:
        rows.append(full)
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
    return rows


def _full_length_row(results, keys_half: list[dict], series_half: list) -> Claim | None:
    """The LR-following claim re-read on the arms of the full-length rerun (where present),
    beside the same arms at the committed length."""
    try:
        summ = load_summary(results, FULL)
    except MissingResults:
        return None
    keys, series = _arm_series(results, summ, FULL)
    if not keys:
        return None
    arms = sorted({k["arm"] for k in keys})
    sub = [(k, x) for k, x in zip(keys_half, series_half) if k["arm"] in arms]
    kh, sh = [k for k, _ in sub], [x for _, x in sub]
    sec = _boot(keys, series, lambda k, s: _slope(k, s, "secant", SLOPE_LRS))
    same = _boot(keys, series, lambda k, s: _slope(k, s, "same_batch", SLOPE_LRS))
    n20 = [len(x) for k, x in zip(keys, series) if k["spacing"] == max(MARKERS)]
    lr_txt = "–".join(f"{x:g}" for x in SLOPE_LRS)
    batches = sorted({k["batch_size"] for k in keys})
    return Claim(
        "F13",
        "full-length check: Eq. 8 follows the LR, the same-batch secant does not (new)",
        "(not in the paper)",
        f"{len(arms)} of 24 arms rerun at {summ.get('steps')} steps (batch "
        f"{', '.join(map(str, batches))}; the rest did not finish before this pass's "
        f"deadline): slope over LR {lr_txt}: Eq. 8 (s = 1) {_ci(sec)}, same-batch {_ci(same)}; "
        f"the same arms at "
        f"the committed length: {fmt_num(_slope(kh, sh, 'secant', SLOPE_LRS), 2)}, "
        f"{fmt_num(_slope(kh, sh, 'same_batch', SLOPE_LRS), 2)}; s = {max(MARKERS)} cells now "
        f"rest on {min(n20, default=0)}–{max(n20, default=0)} estimates [{preset(results, FULL)}]",
        _follows(sec, same),
        "At full length the slopes above decide it, as in the row before."
        if _follows(sec, same) is False
        else "",
    )


def _follows(sec: TestResult, same: TestResult) -> bool | None:
    in_band = (
        True
        if 0.8 < sec.low and sec.high < 1.2
        else False
        if sec.high < 0.8 or sec.low > 1.2
        else None
    )
    flat = ci_verdict(same, 0.5, above=False)
    if in_band is False or flat is False:
        return False
    return True if in_band and flat else None


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
