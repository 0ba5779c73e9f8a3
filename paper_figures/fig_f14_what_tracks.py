"""F14 -- what does each LR estimate track: the LR in use, or the curvature?

Not in the papers (issue 12). Five schedules (fixed, CLR, 1cycle, piecewise-constant, SGDR) on the
BN ResNet, momentum held constant; at each probe window: Eq. 8 (Smith & Topin, *Super-Convergence*
§5, paper's convention) at s = 1 and s = 10, the same-batch secant, and the exact-HVP estimates
Σ|g|/Σ|Hg|, gᵀg/gᵀHg, 1/λ_max on a fixed held-out batch in both BatchNorm modes. (a) Heat map of
the correlations of log estimates after the LR is partialled out (within each run, then pooled);
(b) a table of each estimate's log-log correlation with the LR, per schedule and pooled;
(c) the CLR run's estimates over time.

Verdicts (issue 25): 95 % moving-block bootstrap intervals over each run's probe windows
(:mod:`paper_figures._corr`); the same-batch row also partials out log(step), the drift both
estimates share over training. Reads ``f14_what_tracks/summary.json`` (its window tables).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import _corr, _style
from ._data import Claim, fmt_num, preset
from ._secant_data import load_summary
from .stats import ci_verdict

FIGURE = "F14"
NAME = "f14_what_tracks"
EXPERIMENTS = ("f14_what_tracks",)
SHORT = {
    "secant_s1": "Eq. 8 s=1",
    "secant_s10": "Eq. 8 s=10",
    "same_batch": "same-batch",
    "sum|g|/sum|Hg| [train]": "Σ|g|/Σ|Hg| tr",
    "gg/gHg [train]": "gᵀg/gᵀHg tr",
    "1/lambda_max [train]": "1/λmax tr",
    "sum|g|/sum|Hg| [eval]": "Σ|g|/Σ|Hg| ev",
    "gg/gHg [eval]": "gᵀg/gᵀHg ev",
    "1/lambda_max [eval]": "1/λmax ev",
}


SECANT, SAME, EXACT = "secant_s1", "same_batch", "sum|g|/sum|Hg| [train]"


def _ci(r) -> str:
    return f"{fmt_num(r.estimate, 2)}, 95 % CI [{fmt_num(r.low, 2)}, {fmt_num(r.high, 2)}]"


def _length(summ: dict) -> str:
    cfg_steps = summ.get("steps")
    return f"{cfg_steps} steps per run" if cfg_steps else "run length unknown"


def claims(results) -> list[Claim]:
    summ = load_summary(results, EXPERIMENTS[0])
    runs = summ.get("runs", {})
    tables = {n: r["table"] for n, r in runs.items() if r.get("table")}
    tag = (
        f"[{preset(results, EXPERIMENTS[0])}, seed 0, pooled over {len(tables)} runs of "
        f"{_length(summ)}; 95 % CIs: moving-block bootstrap over each run's probe windows, "
        f"blocks of {_corr.BLOCK}]"
    )
    if not tables:
        return [Claim("F14", "what each estimate tracks", "", f"no data {tag}", None)]
    tl = list(tables.values())
    lr = _corr.with_lr_ci(tl, SECANT)
    sb_lr = _corr.pooled_with_lr([_corr.run_matrix(t, SAME, SAME) for t in tl])
    sec = _corr.partial_ci(tl, SECANT, EXACT)
    same = _corr.partial_ci(tl, SAME, EXACT)
    same_t = _corr.partial_ci(tl, SAME, EXACT, with_step=True)
    per_run = _corr.per_run_partial(tables, SAME, EXACT)
    below = sum(v < 0.5 for v in per_run.values() if math.isfinite(v))
    inside = ci_verdict(sec, 0.5, above=False)
    outside = ci_verdict(sec, -0.5, above=True)
    little = (
        True if inside and outside else (False if inside is False or outside is False else None)
    )
    return [
        Claim(
            "F14",
            "Eq. 8 (s = 1) tracks the LR in use",
            "(not in the paper; the paper reads it as the curvature's verdict)",
            f"log-log correlation with the LR {_ci(lr)} (criterion ≥ 0.9 over the whole CI; "
            f"same-batch secant {fmt_num(sb_lr, 2)}) {tag}",
            ci_verdict(lr, 0.9),
            "Its correlation with the LR is below 0.9 over its CI."
            if ci_verdict(lr, 0.9) is False
            else "",
        ),
        Claim(
            "F14",
            "with the LR partialled out, Eq. 8 carries little of the exact curvature",
            "(not in the paper)",
            f"partial correlation of Eq. 8 (s = 1) with {EXACT}: {_ci(sec)} (criterion: the "
            f"CI within −0.5 < r < 0.5) {tag}",
            little,
            "Eq. 8 carries the exact curvature beyond the LR (|r| ≥ 0.5 over the CI)."
            if little is False
            else "",
        ),
        Claim(
            "F14",
            "the same-batch secant tracks the exact curvature",
            "(not in the paper)",
            f"partial correlation of the same-batch secant with {EXACT}, log LR and log step "
            f"partialled out: {_ci(same_t)} (criterion: the CI ≥ 0.5); log LR only "
            f"{_ci(same)}; per run (log LR only) "
            + ", ".join(f"{n} {fmt_num(v, 2)}" for n, v in per_run.items())
            + f" ({below} of {len(per_run)} below 0.5) {tag}",
            ci_verdict(same_t, 0.5),
            "Decided with log(step) partialled out as well (issue 25): both estimates drift "
            "over training, and that shared trend alone correlates them. The earlier verdict "
            f"(✅ on the point value {fmt_num(same.estimate, 2)} ≥ 0.5, LR only, no interval) is "
            f"{_word(ci_verdict(same, 0.5))} by its own CI. It measures the curvature along the "
            "step actually taken (momentum direction, training batch), the exact estimates "
            "along the held-out gradient.",
            test=f"partial r with log LR and log step out {_ci(same_t)}",
        ),
    ]


def _word(v: bool | None) -> str:
    return {True: "kept", False: "reversed", None: "undecided"}[v]


def _heat(ax, pooled: dict) -> None:
    names = pooled.get("names", [])
    mat = np.asarray(
        [[np.nan if v is None else v for v in row] for row in pooled.get("partial", [])], float
    )
    if not names or mat.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center")
        return
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [SHORT.get(n, n) for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=60, ha="right", fontsize=8.5)
    ax.set_yticks(range(len(names)), labels, fontsize=8.5)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(mat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(mat[i, j]) > 0.6 else "black",
                )
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label="partial correlation (LR removed)")
    ax.set_title("(a) correlations with log LR partialled out (pooled)")


def _table(ax, summ: dict) -> None:
    ax.axis("off")
    runs = summ.get("runs", {})
    pooled = summ.get("pooled", {})
    names = pooled.get("names", [])
    cols = [r for r in runs if runs[r]["corr"].get("lr_varies")] + ["pooled"]
    cell = []
    for n in names:
        row = []
        for r in cols:
            src = pooled.get("with_lr", {}) if r == "pooled" else runs[r]["corr"]["with_lr"]
            v = src.get(n)
            row.append("n/a" if v is None or not math.isfinite(v) else f"{v:+.2f}")
        cell.append(row)
    if not cell:
        return
    t = ax.table(
        cellText=cell,
        rowLabels=[SHORT.get(n, n) for n in names],
        colLabels=cols,
        loc="center",
        cellLoc="center",
    )
    t.auto_set_font_size(False)
    t.set_fontsize(8.5)
    t.scale(1, 1.25)
    ax.set_title("(b) log-log corr. with the LR")


def _timeline(ax, summ: dict, run: str) -> None:
    table = summ.get("runs", {}).get(run, {}).get("table", {})
    if not table:
        ax.text(0.5, 0.5, f"no {run} run", ha="center")
        return
    x = table["step"]
    styles = {
        "lr": ("LR in use (window mean)", _style.METHOD_COLORS["lr"], "--"),
        "secant_s1": ("Eq. 8 s = 1", _style.METHOD_COLORS["secant"], "-"),
        "same_batch": ("same-batch secant", "#56B4E9", "-"),
        "sum|g|/sum|Hg| [train]": (
            "Σ|g|/Σ|Hg| (train BN)",
            _style.METHOD_COLORS["secant_hvp"],
            "-",
        ),
        "1/lambda_max [train]": ("1/λ_max (train BN)", _style.METHOD_COLORS["newton"], "-"),
        "1/lambda_max [eval]": ("1/λ_max (eval BN)", _style.METHOD_COLORS["newton"], ":"),
    }
    for key, (label, color, ls) in styles.items():
        y = np.asarray([np.nan if v is None else v for v in table.get(key, [])], float)
        if len(y):
            ax.plot(x[: len(y)], y, ls, color=color, lw=1.7, marker="o", ms=2.5, label=label)
    ax.set(
        yscale="log",
        xlabel="iteration",
        ylabel="learning rate (log)",
        title=f"(c) the {run} run over time",
    )
    ax.legend(fontsize=8, loc="best")


def draw(results, out) -> list[Path]:
    summ = load_summary(results, EXPERIMENTS[0])
    _style.apply()
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(_style.WIDTH, 11.0), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1.15, 1], width_ratios=[1.25, 1])
    _heat(fig.add_subplot(grid[0, 0]), summ.get("pooled", {}))
    _table(fig.add_subplot(grid[0, 1]), summ)
    run = "clr" if "clr" in summ.get("runs", {}) else next(iter(summ.get("runs", {})), "clr")
    _timeline(fig.add_subplot(grid[1, :]), summ, run)
    _style.title(fig, "F14: what does each LR estimate track?", preset(results, EXPERIMENTS[0]))
    ch = summ.get("checks") or {}
    nums = "; ".join(
        f"{k}: {fmt_num(v.get('corr_with_lr', v.get('partial_corr_with_exact', math.nan)), 2)}"
        for k, v in ch.items()
    )
    _style.add_caption(
        fig,
        [
            f"BN ResNet, momentum {summ.get('momentum', 0.9)} held constant, one window per "
            f"probe (every {summ.get('probe_every')} iterations): per-step estimates are "
            "geometric means over the window, exact-HVP estimates are on a fixed held-out batch "
            "at the window's end (tr: train-mode BN, batch statistics; ev: eval-mode, running "
            "statistics). Partial correlations remove a linear fit on log LR within each run, "
            "then pool the runs.",
            f"Deciding numbers: {nums}." if nums else "",
        ],
    )
    return _style.save(fig, out, NAME)
