"""F5 -- the paper's cheap LR estimate against its momentum-noise null, fixed LR vs CLR.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120), Sec. 5, Fig. 5 (v3: Fig. 3): Eq. 8's
secant estimate (three iterates, no extra gradient; EMA α = 0.1 started at 0.1) under a fixed LR
and under CLR 0.1 -> 3.0 -> 0.1; (a) every iteration, (b) every 10th over the whole run, on
linear axes as in the paper. Redrawn in the paper's convention (spaced iterates multiplied by the
single-step ε) with the **null** ε·c(μ, s) -- what Eq. 8 returns when the steps are pure
minibatch noise through momentum μ (``hessian_lr.lr.noise.noise_null``) -- and, on a log panel,
the same-batch secant and the exact-HVP estimates on a fixed held-out batch in both BatchNorm
modes. One figure for the BN ResNet (``f5_lr_estimates``), one for LeNet-5
(``f5_lr_estimates_lenet``).

Reads ``f5_lr_estimates``: ``summary.json`` (checks) and the arms
``<bn|lenet>_<fixed|clr>_seed<s>/arm.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _style
from ._data import Claim, MissingResults, fmt_num, preset
from ._secant_data import EMA_INIT, arm_series, ema, load_arm, load_summary
from .criteria import FAR_ABOVE, Sibling, decide

FIGURE = "F5"
NAME = "f5_lr_estimates"
EXPERIMENTS = ("f5_lr_estimates",)
MODELS = {"bn": "BN ResNet", "lenet": "LeNet-5"}
EXACT = (("secant_hvp", "Σ|g|/Σ|Hg|"), ("quadratic", "gᵀg/gᵀHg"), ("newton", "1/λ_max"))
BN_STYLE = {"train": "-", "eval": ":"}
NULL_COLOR = "#CC79A7"
SAME_COLOR = "#56B4E9"


def _tag(results, summ) -> str:
    return f"[{preset(results, EXPERIMENTS[0])}, seed {summ.get('seed', 0)}]"


def _over_null(summ: dict, model: str, arm: str, spacing: str = "10") -> float:
    entry = summ.get("arms", {}).get(f"{model}_{arm}", {}).get("secant", {}).get(spacing, {})
    return entry.get("median_ratio_over_null", math.nan)


def _undecided(claim: str, paper: str, why: str) -> Claim:
    return Claim("F5", claim, paper, why, None)


def _f13_spread(results, spacing: int, *, pair: bool = False) -> Sibling | None:
    """The s.d. of log(median Eq. 8 ratio) over F13's μ = 0.9 arms at ``spacing`` (LR × batch:
    a conservative stand-in for seed spread, one seed per arm); × √2 for a difference of two."""
    try:
        cells = load_summary(results, "f13_noise_null").get("cells", [])
    except MissingResults:
        return None
    v = [
        math.log(c["median_ratio"])
        for c in cells
        if c["momentum"] == 0.9 and c["spacing"] == spacing and (c["median_ratio"] or 0) > 0
    ]
    if len(v) < 3:
        return None
    sd = float(np.std(v, ddof=1)) * (math.sqrt(2) if pair else 1.0)
    return Sibling(sd, f"F13's μ = 0.9, s = {spacing} cells ({len(v)} arms)")


def _f14_spread(results, key: str) -> Sibling | None:
    """The s.d. over F14's runs (schedules) of the median log train/eval ratio of ``key``."""
    try:
        runs = load_summary(results, "f14_what_tracks").get("runs", {})
    except MissingResults:
        return None
    v = []
    for r in runs.values():
        t = r.get("table") or {}
        a = np.asarray([np.nan if x is None else x for x in t.get(f"{key} [train]", [])], float)
        b = np.asarray([np.nan if x is None else x for x in t.get(f"{key} [eval]", [])], float)
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        if ok.sum() >= 3:
            v.append(float(np.median(np.log(a[ok] / b[ok]))))
    if len(v) < 3:
        return None
    return Sibling(float(np.std(v, ddof=1)), f"F14's {len(v)} schedules")


def _log(x: float) -> float:
    return math.log(x) if x and x > 0 and math.isfinite(x) else math.nan


NO_SIBLING = "; one seed, no sibling study measures this statistic's seed spread: undecided"


def _at_null_margin(q: dict, band: Sequence[float]) -> float:
    """log(band edge) − the worse arm's |log(ratio/null)| (> 0: both arms inside the band)."""
    worst = max(abs(_log(q["fixed"])), abs(_log(q["clr"])))
    return min(_log(band[1]), -_log(band[0])) - worst


def _model_claims(results, summ: dict, checks: dict, tag: str, model: str) -> list[Claim]:
    """The paper's four claims, re-judged in the paper's convention, plus the null rows.

    One seed: each verdict is a z-test of a log margin against a sibling's measured spread
    (F13's arms for Eq. 8 ratios, F14's schedules for the BN-mode ratio); rows without one
    are undecided.
    """
    rows: list[Claim] = []
    lr = summ["lr"] if model == "bn" else summ.get("second_lr", summ["lr"])
    name = MODELS[model]
    far = checks.get("far_above_lr")
    if far:
        med = far["median_ema_over_lr"]
        thr = far.get("threshold", FAR_ABOVE)
        d = decide(
            [_log(min(med["fixed"], med["clr"]) / thr)],
            sibling=_f13_spread(results, 10),
            unit="(log)",
        )
        rows.append(
            Claim(
                "F5",
                f"LR estimates are far above the LR in use ({name})",
                "≈2–6 vs LR 0.1 (20–60×)",
                f"median EMA secant (s = 10, paper's convention, EMA started at the first "
                f"estimate) / LR: fixed {fmt_num(med['fixed'])}×, CLR {fmt_num(med['clr'])}× "
                f"(LR {lr['fixed']} fixed, {lr['clr'][0]}–{lr['clr'][1]} CLR; criterion ≥ "
                f"{thr:g}×, the paper's 20–60×); log(lower / {thr:g}) {d.text()}; the noise null "
                f"at s = 10 is c = {fmt_num(far['null'])}× {tag}",
                d.holds,
                f"Median raw s = 10 ratio estimate/ε over the null c(0.9, 10): fixed "
                f"{fmt_num(_over_null(summ, model, 'fixed'), 2)}, CLR "
                f"{fmt_num(_over_null(summ, model, 'clr'), 2)} (×0.8–1.25 is what pure minibatch "
                "noise through momentum gives, whatever the curvature)."
                + (
                    " Until issue 25 the EMA started at the paper's 0.1 (10× LeNet's LR 0.01) and "
                    "the criterion was > 1×: 1.29× / 1.01×, ✅."
                    if model == "lenet"
                    else ""
                ),
            )
        )
    at = checks.get("every_iteration_at_null")
    if at:
        r, q = at["median_ratio"], at["ratio_over_null"]
        d = decide([_at_null_margin(q, at["band"])], sibling=_f13_spread(results, 1), unit="(log)")
        label = "c(μ, 1) (new)" if model == "bn" else f"({name}, new)"
        rows.append(
            Claim(
                "F5",
                f"every-iteration Eq. 8 sits at the momentum-noise null {label}",
                "(not in the paper; its Fig. 5a ratios are ≈20–30 at LR 0.1)",
                f"median estimate/ε: fixed {fmt_num(r['fixed'])}, CLR {fmt_num(r['clr'])} vs "
                f"c(0.9, 1) = {fmt_num(at['null'])} (ratio/null {fmt_num(q['fixed'], 2)}, "
                f"{fmt_num(q['clr'], 2)}; band ×{at['band'][0]}–{at['band'][1]}); log band edge − "
                f"worst |log(ratio/null)| {d.text()} {tag}",
                d.holds,
                "Outside the band the steps carry more than noise (curvature or drift): "
                "read the exact-HVP and same-batch estimates in the figure."
                if d.holds is False
                else "",
            )
        )
    if model != "bn":
        return rows
    rows += _bn_only_claims(results, summ, checks, tag)
    return rows


def _bn_only_claims(results, summ: dict, checks: dict, tag: str) -> list[Claim]:
    rows: list[Claim] = []
    spike = checks.get("fixed_spike_then_collapse")
    if spike:
        first_third = spike["peak_step"] <= summ["steps"] / 3
        d = decide(
            [_log(0.5) - _log(spike["final_over_peak"])],
            sibling=_f13_spread(results, 10, pair=True),
            unit="(log)",
        )
        holds = d.holds if first_third or d.holds is False else False
        rows.append(
            Claim(
                "F5",
                "under the fixed LR the estimate spikes early, then collapses",
                "spikes to ≈3, falls to ≈0.2",
                f"s = 10 estimate (5-point running median) peaks {fmt_num(spike['peak'])} at "
                f"step {spike['peak_step']} of {summ['steps']}, ends {fmt_num(spike['final'])} "
                f"({fmt_num(spike['final_over_peak'], 2)} of the peak; criterion: peak in the "
                f"first third, final ≤ 0.5 × peak); log(0.5) − log(final/peak) {d.text()} {tag}",
                holds,
                "Under a fixed LR the null ε·c(μ, s) is constant; the s = 10 ratio/null "
                f"median is {fmt_num(_over_null(summ, 'bn', 'fixed'), 2)}."
                if holds is not True
                else "",
            )
        )
    high = checks.get("clr_stays_high")
    if high:
        d = decide(
            [_log(high["clr_final"] / high["fixed_final"])],
            sibling=_f13_spread(results, 10, pair=True),
            unit="(log)",
        )
        rows.append(
            Claim(
                "F5",
                "under CLR the estimate stays high (ends above the fixed-LR one)",
                "settles ≈0.5 vs ≈0.2 under fixed LR",
                f"final (mean of the last 10 %, s = 10) CLR {fmt_num(high['clr_final'])} vs "
                f"fixed {fmt_num(high['fixed_final'])}; log(CLR / fixed) {d.text()} {tag}",
                d.holds,
                "Both arms end at the same LR, and so at the same null."
                if d.holds is False
                else "",
            )
        )
    peak = checks.get("clr_peaks_with_lr")
    if peak:
        rows.append(
            Claim(
                "F5",
                "under CLR the estimate peaks with the LR",
                "peak ≈6.7 at the LR peak (iteration 5k of 10k)",
                f"estimate peak (5-point running median, s = 10) at step "
                f"{peak['estimate_peak_step']}, LR peak at {peak['lr_peak_step']} (criterion: "
                f"within 20 % of the run; {'met' if peak['holds'] else 'not met'} on this "
                f"seed){NO_SIBLING} {tag}",
                None,
                "An estimate at the null ε·c(μ, s) peaks with ε by construction: this row "
                "holding is what the noise reading predicts too.",
                test="one seed, no sibling seed spread",
            )
        )
    tr = checks.get("clr_tracks_lr")
    if tr:
        rows.append(
            Claim(
                "F5",
                "under CLR Eq. 8 (s = 1) follows the LR in use (new)",
                "(not in the paper)",
                f"log-log correlation of the every-iteration estimate with the LR "
                f"{fmt_num(tr['corr'], 2)} (criterion ≥ 0.9; pooled over schedules with an "
                f"interval: F14){NO_SIBLING} {tag}",
                None,
                test="one seed, no sibling seed spread",
            )
        )
    bn = checks.get("bn_modes_differ")
    if bn:
        d = decide(
            [abs(_log(bn["newton_train_over_eval"])) - _log(2.0)],
            sibling=_f14_spread(results, "1/lambda_max"),
            unit="(log)",
        )
        rows.append(
            Claim(
                "F5",
                "BatchNorm mode changes the exact curvature (train vs eval mode, new)",
                "(not in the paper)",
                f"median 1/λ_max train-mode / eval-mode on the held-out batch, fixed-LR run: "
                f"{fmt_num(bn['newton_train_over_eval'], 3)} (criterion: ≥ 2× apart); "
                f"|log ratio| − log 2 {d.text()} {tag}",
                d.holds,
                "Train- and eval-mode curvature agree within 2× here." if d.holds is False else "",
            )
        )
    return rows


def claims(results) -> list[Claim]:
    summ = load_summary(results, EXPERIMENTS[0])
    tag = _tag(results, summ)
    rows = _model_claims(results, summ, summ.get("checks") or {}, tag, "bn")
    rows += _model_claims(results, summ, summ.get("checks_second") or {}, tag, "lenet")
    if not rows:
        rows = [
            _undecided(
                "estimates are far above the fixed LR; fixed-LR estimate spikes then collapses; "
                "CLR estimate stays high, peaks with the LR, settles late",
                "",
                f"too few estimates to decide {tag}",
            )
        ]
    return rows


# ------------------------------------------------------------------------------------ drawing
def _null_line(ax, arm, spacing: int, label: str) -> None:
    c = arm["null"][str(spacing)]
    lr = np.asarray([np.nan if v is None else v for v in arm["lr"]], float)
    ax.plot(np.arange(len(lr)), c * lr, color=NULL_COLOR, lw=1.8, ls="-.", label=label)


def _lr_line(ax, arm) -> None:
    lr = np.asarray([np.nan if v is None else v for v in arm["lr"]], float)
    ax.plot(
        np.arange(len(lr)),
        lr,
        color=_style.METHOD_COLORS["lr"],
        ls="--",
        lw=1.6,
        label="LR in use ε",
    )


def _paper_panel(ax, arm, spacing: int, first: int | None) -> None:
    t, _, est = arm_series(arm, "secant", spacing)
    sm = ema(est, init=est[0]) if len(est) else est
    if first is not None:
        keep = t < first
        t, est, sm = t[keep], est[keep], sm[keep]
    ax.plot(t, est, ".", ms=3, color="#999999", label="Eq. 8 raw")
    ax.plot(
        t,
        sm,
        color=_style.METHOD_COLORS["secant"],
        lw=2.0,
        label="Eq. 8, EMA α = 0.1 (starts at the first estimate)",
    )
    mu = arm["spec"]["momentum"]
    _null_line(ax, arm, spacing, f"noise null ε·c(μ = {mu:g}, s)")
    _lr_line(ax, arm)
    if first is not None:
        ax.set_xlim(0, first)
    top = np.nanpercentile(est, 99) if len(est) else 1.0
    ax.set_ylim(0, 1.15 * max(top, np.nanmax(sm) if len(sm) else 0, 1e-3))


def _log_panel(ax, arm, *, has_bn: bool = True) -> None:
    t, _, est = arm_series(arm, "secant", 10 if "10" in arm["secant"] else 1)
    if len(est):
        ax.plot(t, ema(est, init=est[0]), color=_style.METHOD_COLORS["secant"], lw=2.0)
    ts, _, sb = arm_series(arm, "same_batch")
    if len(sb):
        ax.plot(ts, sb, ".", ms=2, color=SAME_COLOR, alpha=0.5)
        k = max(1, len(sb) // 40)
        med = [np.median(sb[max(0, i - k) : i + k + 1]) for i in range(len(sb))]
        ax.plot(ts, med, color=SAME_COLOR, lw=1.8, label="same-batch secant (running median)")
    probes = arm["probes"]
    # A model without BatchNorm (LeNet-5) has one curvature: both "modes" are the same network.
    for mode in arm["spec"]["bn_modes"] if has_bn else arm["spec"]["bn_modes"][:1]:
        vals = probes.get(mode) or {}
        for key, label in EXACT:
            y = np.asarray([np.nan if v is None else v for v in vals.get(key, [])], float)
            if len(y) and np.isfinite(y).any():
                color = _style.METHOD_COLORS["newton" if key == "newton" else key]
                ax.plot(
                    probes["step"][: len(y)],
                    y,
                    color=color,
                    ls=BN_STYLE[mode],
                    lw=1.6,
                    marker="o",
                    ms=2.5,
                    label=f"{label} ({mode}-mode BN, held-out batch)"
                    if has_bn
                    else f"{label} (held-out batch)",
                )
    _null_line(ax, arm, 10 if "10" in arm["secant"] else 1, "_null")
    _lr_line(ax, arm)
    ax.set_yscale("log")


def _draw_model(results, out, summ, model: str) -> list[Path]:
    seed = summ.get("seed", 0)
    arms = {
        a: load_arm(results, EXPERIMENTS[0], f"{model}_{a}_seed{seed}") for a in ("fixed", "clr")
    }
    import matplotlib.pyplot as plt

    fig, axes, ax_leg = _style.figure_with_legend(
        2, 3, height=9.6, legend_ratio=0.2, width_ratios=[1, 1.2, 1.2]
    )
    spacings = summ.get("spacings", [1, 10])
    s_far = max(spacings)
    n = summ.get("steps", len(arms["fixed"]["lr"]))
    first = min(n, 300)
    lr = summ["lr"] if model == "bn" else summ.get("second_lr", summ["lr"])
    for row, a in enumerate(("fixed", "clr")):
        arm = arms[a]
        name = f"fixed LR {lr['fixed']}" if a == "fixed" else f"CLR {lr['clr'][0]}→{lr['clr'][1]}"
        _paper_panel(axes[row, 0], arm, min(spacings), first)
        axes[row, 0].set(
            title=f"({'ad'[row]}) every iteration (s = {min(spacings)}), first {first}",
            xlabel="iteration",
            ylabel=f"{name}\nlearning rate (linear)",
        )
        _paper_panel(axes[row, 1], arm, s_far, None)
        axes[row, 1].set(
            title=f"({'be'[row]}) every {s_far}th (s = {s_far}), whole run",
            xlabel="iteration",
            ylabel="learning rate (linear)",
        )
        _log_panel(axes[row, 2], arm, has_bn=model == "bn")
        axes[row, 2].set(
            title=f"({'cf'[row]}) beside the exact estimates",
            xlabel="iteration",
            ylabel="learning rate (log)",
        )
    grey = plt.Line2D([], [], ls="none", marker=".", color="#999999", label="Eq. 8 raw")
    _style.legend_row(ax_leg, axes.ravel(), ncol=3, fontsize=9, extra=[grey])
    mu = summ.get("momentum", 0.9)
    _style.title(
        fig,
        f"F5 (SC Fig. 5): Eq. 8 vs its noise null, fixed LR vs CLR — {MODELS[model]}",
        preset(results, EXPERIMENTS[0]),
    )
    ch = summ.get("checks" if model == "bn" else "checks_second") or {}
    s1 = {a: summ["arms"].get(f"{model}_{a}", {}).get("secant", {}) for a in ("fixed", "clr")}

    def ratio(a: str, s: int) -> str:
        e = s1[a].get(str(s), {})
        return f"{fmt_num(e.get('median_ratio', math.nan), 3)} (null {fmt_num(e.get('null'), 3)})"

    lines = [
        f"Paper's convention: estimate = ε_i Σ|θ_(i+s) − θ_i| / Σ|2θ_(i+s) − θ_i − θ_(i+2s)| with "
        f"the single-step ε_i; EMA α = 0.1 started at the first estimate (the paper starts at "
        f"{EMA_INIT}, its own LR). Dash-dot: the "
        f"noise null ε·c(μ = {mu:g}, s), the estimate that pure minibatch noise through momentum "
        "gives whatever the curvature. Median estimate/ε, fixed: s = 1 "
        f"{ratio('fixed', 1)}, s = {s_far} {ratio('fixed', s_far)}; CLR: s = 1 {ratio('clr', 1)}, "
        f"s = {s_far} {ratio('clr', s_far)}.",
        (
            "Right: exact-HVP estimates on a fixed held-out batch (solid: train-mode BN, dotted: "
            "eval-mode)"
            if model == "bn"
            else "Right: exact-HVP estimates on a fixed held-out batch (LeNet-5 has no BatchNorm)"
        )
        + " and the same-batch secant (one extra gradient on the batch that took the "
        "step). Paper (ResNet-56, CIFAR-10): estimates ≈2–6; fixed LR 0.1 spikes to ≈3, falls "
        "to ≈0.2; CLR peaks ≈6.7 with the LR, settles ≈0.5.",
    ]
    if ch:
        rows = [c for c in claims(results) if (MODELS["lenet"] in c.claim) == (model == "lenet")]
        verdicts = "; ".join(f"{c.claim} — {c.verdict}" for c in rows)
        lines.append(f"Claims: {verdicts} (numbers and tests in CLAIMS.md).")
    _style.add_caption(fig, lines)
    return _style.save(fig, out, NAME if model == "bn" else f"{NAME}_{model}")


def draw(results, out) -> list[Path]:
    summ = load_summary(results, EXPERIMENTS[0])
    paths = _draw_model(results, out, summ, "bn")
    if any(k.startswith("lenet_") for k in summ.get("arms", {})):
        try:
            paths += _draw_model(results, out, summ, "lenet")
        except MissingResults:
            pass
    return paths
