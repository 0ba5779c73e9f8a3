"""F5 -- the paper's cheap LR estimate beside the exact ones, under a fixed LR and under CLR.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120), Sec. 5, Fig. 5 (v3: Fig. 3): the
simplified Hessian-free estimate (Eq. 8, ``secant``: three iterates, no extra gradient, EMA with
α = 0.1 from 0.1) for ResNet-56 on CIFAR-10 under a fixed LR 0.1 and under CLR 0.1 -> 3.0 -> 0.1;
(a) every iteration over the first few hundred, (b) every 10th over the whole run. The toolkit's
point: on the same runs, the exact-HVP estimates -- ``secant_hvp`` (Σ|g|/Σ|Hg|), ``quadratic``
(gᵀg/gᵀHg), 1/λ_max and 2/λ_max (Lanczos) -- drawn next to it.

Reads ``f5_lr_estimates``: runs ``<fixed|clr>_seed<s>`` (all methods every k steps) and
``<fixed|clr>_every1_seed<s>`` (secant every step, first few hundred steps), and the claims'
``checks`` in ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _style
from ._data import Claim, MissingResults, experiment_runs, fmt_num, preset, series, summary

FIGURE = "F5"
NAME = "f5_lr_estimates"
EXPERIMENTS = ("f5_lr_estimates",)

# (record key, label, colour key, line style)
EXACT = (
    ("estimates.secant_hvp.lr", "secant_hvp Σ|g|/Σ|Hg| (exact HVP)", "secant_hvp", "-"),
    ("estimates.quadratic.lr", "quadratic gᵀg/gᵀHg (exact HVP)", "quadratic", "-"),
    ("estimates.sharpness.lr_newton", "1/λ_max (Lanczos)", "newton", "--"),
    ("estimates.sharpness.lr_stable", "2/λ_max (Lanczos)", "stable", ":"),
)


def _load(results):
    runs = {r.name: r for r in experiment_runs(results, EXPERIMENTS[0])}
    seeds = sorted(n.rsplit("_seed", 1)[1] for n in runs if n.startswith("fixed_seed"))
    if not seeds:
        raise MissingResults(EXPERIMENTS[0], results, "no fixed_seed* run")
    s = seeds[0]
    need = [f"{a}{e}_seed{s}" for a in ("fixed", "clr") for e in ("", "_every1")]
    missing = [n for n in need if n not in runs]
    if missing:
        raise MissingResults(EXPERIMENTS[0], results, f"missing runs {missing}")
    return {n: runs[n].records() for n in need}, s


def _newton_span(results) -> str:
    """Raw 1/λ_max of the fixed-LR run: median of the first 3 vs the last 3 estimates."""
    recs, seed = _load(results)
    _, y = series(recs[f"fixed_seed{seed}"], "estimates.sharpness.lr_newton")
    if len(y) < 6:
        return "n/a"
    return f"{fmt_num(float(np.median(y[:3])), 2)} to {fmt_num(float(np.median(y[-3:])), 2)}"


def claims(results) -> list[Claim]:
    summ = summary(results, EXPERIMENTS[0])
    checks = summ.get("checks") or {}
    tag = f"[{preset(results, EXPERIMENTS[0])}, seed {summ.get('seed', 0)}]"
    if not checks:
        return [
            Claim(
                "F5",
                "estimates are far above the fixed LR; fixed-LR estimate spikes then collapses; "
                "CLR estimate stays high, peaks with the LR, settles late",
                "",
                f"too few estimates to decide {tag}",
                None,
            )
        ]
    lr = summ["lr"]
    far, spike = checks["far_above_lr"], checks["fixed_spike_then_collapse"]
    high, peak = checks["clr_stays_high"], checks["clr_peaks_with_lr"]
    med = far["median_smoothed_over_lr"]
    momentum_note = (
        "Under momentum 0.9 the secant measures the effective step (1 − β)·Σ|g|/Σ|Hg|, about "
        "10× below the plain-SGD curvature LR, which compresses the ratios."
    )
    return [
        Claim(
            "F5",
            "LR estimates are far above the LR in use",
            "≈2–6 vs LR 0.1 (20–60×)",
            f"median smoothed secant / LR: fixed {fmt_num(med['fixed'])}×, CLR "
            f"{fmt_num(med['clr'])}× (LR {lr['fixed']} fixed, {lr['clr'][0]}–{lr['clr'][1]} "
            f"CLR) {tag}",
            bool(far["holds"]),
            "" if far["holds"] else momentum_note,
        ),
        Claim(
            "F5",
            "under the fixed LR the estimate spikes early, then collapses",
            "spikes to ≈3, falls to ≈0.2",
            f"peak {fmt_num(spike['peak'])} at step {spike['peak_step']} of {summ['steps']}, "
            f"final {fmt_num(spike['final'])} ({fmt_num(spike['final_over_peak'], 2)} of the "
            f"peak; criterion: peak in the first third, final ≤ 0.5 × peak) {tag}",
            bool(spike["holds"]),
            ""
            if spike["holds"]
            else f"The raw estimate does rise early (peak at step {spike['peak_step']}) and fall, "
            f"but only to {fmt_num(spike['final_over_peak'], 2)} of its peak, not to the paper's "
            f"≈1/15: at the small fixed LR LeNet-5 does not sharpen (the exact 1/λ_max goes "
            f"from {_newton_span(results)} over the run), so there is no sharp region for the "
            "estimate to collapse into.",
        ),
        Claim(
            "F5",
            "under CLR the estimate stays high (ends above the fixed-LR one)",
            "settles ≈0.5 vs ≈0.2 under fixed LR",
            f"final (mean of last 10 %) CLR {fmt_num(high['clr_final'])} vs fixed "
            f"{fmt_num(high['fixed_final'])} {tag}",
            bool(high["holds"]),
            ""
            if high["holds"]
            else "CLR's large LRs reach flatter regions only if they are well above the fixed LR; "
            "on this small model the two arms end in similar curvature.",
        ),
        Claim(
            "F5",
            "under CLR the estimate peaks with the LR",
            "peak ≈6.7 at the LR peak (iteration 5k of 10k)",
            f"estimate peak (5-point running median) at step {peak['estimate_peak_step']}, LR "
            f"peak at {peak['lr_peak_step']} (criterion: within 20 % of the run) {tag}",
            bool(peak["holds"]),
            ""
            if peak["holds"]
            else "The secant ratio follows the curvature along the path, which lags the LR: the "
            "flattest region is reached after the LR peak, and raw estimates are noisy.",
        ),
    ]


def _panel_a(ax, recs, lr_label: str) -> None:
    x, raw = series(recs, "estimates.secant.lr")
    xs, sm = series(recs, "estimates_smoothed.secant")
    xl, lr = series(recs, "lr")
    ax.plot(x + 1, raw, ".", ms=3, color="#999999", label="secant, raw (Eq. 8)")
    ax.plot(xs + 1, sm, color=_style.METHOD_COLORS["secant"], lw=2.2, label="secant, EMA α = 0.1")
    ax.plot(xl + 1, lr, color=_style.METHOD_COLORS["lr"], ls="--", lw=1.6, label=lr_label)
    ax.set_yscale("log")


def _panel_b(ax, recs, lr_label: str) -> dict:
    xs, sm = series(recs, "estimates_smoothed.secant")
    x, raw = series(recs, "estimates.secant.lr")
    ax.plot(x + 1, raw, ".", ms=3, color="#999999")
    ax.plot(xs + 1, sm, color=_style.METHOD_COLORS["secant"], lw=2.4, label="secant (paper's), EMA")
    ratios = {}
    for key, label, ckey, ls in EXACT:
        xe, ye = series(recs, key)
        if len(ye):
            ax.plot(
                xe + 1,
                ye,
                color=_style.METHOD_COLORS[ckey],
                ls=ls,
                lw=1.7,
                label=label + ", raw",
            )
            ratios[ckey] = ye
    xl, lr = series(recs, "lr")
    ax.plot(xl + 1, lr, color=_style.METHOD_COLORS["lr"], ls="--", lw=1.6, label=lr_label)
    ax.set_yscale("log")
    return ratios


def draw(results, out) -> list[Path]:
    recs, seed = _load(results)
    summ = summary(results, EXPERIMENTS[0])
    checks = claims(results)
    lr = summ["lr"]
    _style.apply()
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(_style.WIDTH, 9.4), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[0.16, 1, 1], width_ratios=[1, 1.5])
    ax_leg = fig.add_subplot(grid[0, :])
    ax_leg.axis("off")
    axes = [[fig.add_subplot(grid[r, c]) for c in range(2)] for r in (1, 2)]
    labels = {"fixed": f"LR in use (fixed {lr['fixed']})", "clr": "LR in use (CLR)"}
    every = summ.get("every", "k")
    med = {}
    for row, arm in enumerate(("fixed", "clr")):
        ax_a, ax_b = axes[row]
        _panel_a(ax_a, recs[f"{arm}_every1_seed{seed}"], labels[arm])
        r = _panel_b(ax_b, recs[f"{arm}_seed{seed}"], labels[arm])
        _, sec = series(recs[f"{arm}_seed{seed}"], "estimates.secant.lr")
        if "secant_hvp" in r and len(sec):
            med[arm] = float(np.median(sec)) / float(np.median(r["secant_hvp"]))
        name = "fixed LR" if arm == "fixed" else "CLR"
        n1 = summ.get("every1_steps", "")
        ax_a.set(
            title=f"({'a' if row == 0 else 'c'}) {name}: every iteration, first {n1}",
            xlabel="iteration",
            ylabel="learning rate (log)",
        )
        ax_b.set(
            title=f"({'b' if row == 0 else 'd'}) {name}: every {every}th iteration, whole run",
            xlabel="iteration",
            ylabel="learning rate (log)",
        )
    handles, labs = axes[1][1].get_legend_handles_labels()
    grey = plt.Line2D([], [], ls="none", marker=".", color="#999999", label="secant, raw (Eq. 8)")
    ax_leg.legend([grey, *handles], [grey.get_label(), *labs], loc="center", ncol=3, fontsize=10)
    ratio = ", ".join(f"{a} {fmt_num(v, 2)}×" for a, v in med.items())
    # Same trajectory, secant at spacing 1 (panel a) vs spacing k (panel b), over panel a's span.
    n1 = int(summ.get("every1_steps") or 0)
    _, s1 = series(recs[f"fixed_every1_seed{seed}"], "estimates.secant.lr")
    xk, sk = series(recs[f"fixed_seed{seed}"], "estimates.secant.lr")
    sk = sk[xk < n1] if n1 else sk
    spacing = (
        f" Under momentum the spacing matters: fixed LR, median raw secant over the first {n1} "
        f"iterations {fmt_num(float(np.median(s1)), 2)} every iteration vs "
        f"{fmt_num(float(np.median(sk)), 2)} every {every}th."
        if len(s1) and len(sk)
        else ""
    )
    fig.suptitle(
        f"F5 (SC Fig. 5): LR estimates vs iteration, fixed LR vs CLR "
        f"[{preset(results, EXPERIMENTS[0])} preset, seed {seed}]"
    )
    verdicts = "; ".join(f"{c.claim}: {c.verdict.upper()}" for c in checks)
    lines = [
        f"Ours: {summ.get('steps')} iterations, LR {lr['fixed']} fixed vs CLR "
        f"{lr['clr'][0]} → {lr['clr'][1]} → {lr['clr'][0]}, momentum 0.9. Black: the paper's "
        "secant estimate smoothed as in the paper (EMA α = 0.1 from 0.1), grey dots: raw secant; "
        "coloured: the exact-HVP estimates on the same steps, raw (each on the training batch "
        "just used). Median raw secant / secant_hvp on "
        f"the same steps: {ratio}.{spacing}",
        "Paper (ResNet-56, CIFAR-10): estimates ≈2–6; fixed LR 0.1: spikes to ≈3, falls to ≈0.2; "
        "CLR 0.1–3.0: stays high, peaks ≈6.7 with the LR, settles ≈0.5.",
        f"Claims: {verdicts} (numbers in CLAIMS.md).",
    ]
    _style.add_caption(fig, lines)
    return _style.save(fig, out, NAME)
