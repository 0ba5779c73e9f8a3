"""F16 -- the LR that works: which estimate predicts η_max, and the live crossing along a ramp.

Beyond the papers (issue 24; methods notes §7). Reads ``f16_lr_that_works/<cell>/result.json``
(one per model × optimizer × seed: ``eta_max``, ``estimates`` at θ₀, ``probes`` (Eq. 8, the
same-batch secant), ``ramp`` (η_div, η_nan, η_dead, the ratio η_t·λ_t/c and its crossing),
``short_ramp``). The hypotheses, statistics and thresholds were written in
``experiments/f16_lr_that_works.py`` and here (``_f16_stats``, the ``H*`` constants below)
before any result existed; they are not tuned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import _f16_stats as st
from . import _style
from ._data import Claim, MissingResults, fmt_num, preset

FIGURE = "F16"
NAME = "f16_lr_that_works"
EXPERIMENTS = ("f16_lr_that_works",)
OPTIMIZERS = {"sgd": "heavy-ball SGD (β = 0.9)", "adam": "Adam (β₁ = 0.9)"}
#: θ₀ estimates (same probe batch), then the two ramp quantities.
AT_INIT = ("sharpness", "update", "quadratic", "secant_hvp", "eq8_p1", "eq8_p2", "same_batch_p1")
ESTIMATORS = (*AT_INIT, "ramp_cross", "eta_div")
LABELS = {
    "sharpness": "c/λ_max (P⁻¹H for Adam)",
    "sharpness_eval": "c/λ_max, eval-mode BN",
    "update": "η* = −gᵀd/dᵀHd",
    "quadratic": "gᵀg/gᵀHg",
    "secant_hvp": "Σ|g|/Σ|Hg|",
    "eq8_p1": "Eq. 8 at η_p1",
    "eq8_p2": "Eq. 8 at η_p2",
    "same_batch_p1": "same-batch secant at η_p1",
    "ramp_cross": "ramp crossing η·λ/c = 1",
    "eta_div": "range test η_div (4×)",
}
# Pre-registered decision rules (issue 24), beside _f16_stats' FACTOR = 2, RHO = 0.8.
H1_SLOPE = (0.7, 1.3)  # d log E8 / d log η_p: Eq. 8 follows the probe LR
H2_K_SPREAD = 4.0  # max/min of the per-model constants ("k constant within 2×")
H3_TRAIN, H3_EVAL = 2.0, 5.0  # train-mode factor ≤ 2, eval-mode ≥ 5 on the BN model
H4_DIV_RATIO = 2.0  # median η_div/η_max ≥ 2 (CI's lower end > 1)
H4_RAMP_BAND = (1 / math.sqrt(2), math.sqrt(2))  # η_div(short)/η_div(long) outside it
H5_FACTOR, H5_HVPS = 1.25, 0.2
BN_MODELS = ("resnet8", "resnet20")


def load_cells(results) -> list[dict]:
    """Every finished cell with an η_max: ``{name, model, optimizer, seed, heldout, eta_max,
    values: {estimator: E}, hvps: {estimator: n}, raw}``."""
    folder = Path(results) / EXPERIMENTS[0]
    files = sorted(folder.glob("*/result.json"))
    if not files:
        raise MissingResults(EXPERIMENTS[0], results, "no finished cell")
    out = []
    for f in files:
        r = json.loads(f.read_text())
        est, pr, ramp = r["estimates"], r["probes"], r["ramp"]
        values = {k: v["lr"] for k, v in est.items()}
        values.update({k: v for k, v in pr.items() if k != "probe_lrs"})
        values.update(ramp_cross=ramp["eta_cross"], eta_div=ramp["eta_div"])
        hvps = {k: v["hvps"] for k, v in est.items()}
        hvps["ramp_cross"] = ramp["hvps"]
        cell = {k: r[k] for k in ("name", "model", "optimizer", "seed", "heldout", "eta_max")}
        out.append({**cell, "values": values, "hvps": hvps, "raw": r})
    return out


def _group(cells: list[dict], opt: str) -> list[dict]:
    return [c for c in cells if c["optimizer"] == opt and c["eta_max"] is not None]


def table(cells: list[dict], opt: str) -> dict[str, st.Fit]:
    """``{estimator: Fit}`` for one optimizer (paired resamples)."""
    group = _group(cells, opt)
    idx = st.resamples(len(group))
    return {e: st.fit(group, e, idx) for e in ESTIMATORS}


def _tag(cells: list[dict], opt: str) -> str:
    group = _group(cells, opt)
    models = sorted({c["model"] for c in group})
    seeds = sorted({c["seed"] for c in group})
    return f"[{len(group)} cells: {', '.join(models)}; seeds {seeds}]"


def _row(f: st.Fit) -> str:
    return (
        f"{LABELS[f.estimator]}: ×{fmt_num(f.factor, 2)} [{fmt_num(f.ci[0], 2)}, "
        f"{fmt_num(f.ci[1], 2)}], ρ {fmt_num(f.rho, 2)}, {f.heldout_kind} ×"
        f"{fmt_num(f.heldout_factor, 2)}"
    )


def _h1(cells: list[dict], fits: dict, opt: str) -> Claim:
    slopes = []
    for c in _group(cells, opt):
        p = c["raw"]["probes"]
        if p.get("eq8_p1") and p.get("eq8_p2"):
            lo, hi = p["probe_lrs"]
            slopes.append(math.log(p["eq8_p2"] / p["eq8_p1"]) / math.log(hi / lo))
    slope = float(np.median(slopes)) if slopes else math.nan
    follows = H1_SLOPE[0] <= slope <= H1_SLOPE[1]
    holds = None if not slopes else bool(follows and not fits["eq8_p1"].predicts)
    return Claim(
        FIGURE,
        f"H1 ({OPTIMIZERS[opt]}): Eq. 8 at a probe LR η_p returns ≈ c·η_p and has no predictive "
        "skill beyond η_p",
        "issue 24 (F5/F13/F14: Eq. 8 reports the LR in use)",
        f"median d log E8 / d log η_p = {fmt_num(slope, 2)} (rule {H1_SLOPE}); "
        f"{_row(fits['eq8_p1'])} {_tag(cells, opt)}",
        holds,
        "" if holds else "Eq. 8 either did not follow the probe LR or predicted η_max.",
    )


def _h2(cells: list[dict], fits: dict, opt: str) -> Claim:
    f = fits["sharpness"]
    ks = list(f.per_model_k.values())
    spread = max(ks) / min(ks) if ks else math.nan
    holds = bool(f.predicts and spread <= H2_K_SPREAD) if ks else None
    kk = ", ".join(f"{m} {fmt_num(k, 2)}" for m, k in f.per_model_k.items())
    what = "(2 + 2β)/λ_max(θ₀)" if opt == "sgd" else "38/λ_max(P⁻¹H)(θ₀)"
    return Claim(
        FIGURE,
        f"H2 ({OPTIMIZERS[opt]}): η_max = k·{what}, k constant within 2× across models",
        "Cohen et al. 2021/2022 thresholds; pilot: 10-350× off at θ₀",
        f"{_row(f)}; per-model k: {kk} (max/min {fmt_num(spread, 2)}, rule ≤ {H2_K_SPREAD:g}) "
        f"{_tag(cells, opt)}",
        holds,
        ""
        if holds
        else "The calibrated sharpness at θ₀ misses η_max by more than the rule "
        "allows for some models: sharpness moves (catapult, progressive sharpening) before the "
        "run settles.",
    )


def _h3(cells: list[dict], opt: str) -> Claim | None:
    group = _group(cells, opt)
    bn = [c for c in group if c["model"] in BN_MODELS]
    if not bn:
        return None
    train = [c for c in group if c["model"] not in BN_MODELS and not c["heldout"]]
    k = st.calibration_constant(train, "sharpness")
    errs = {}
    for mode in ("sharpness", "sharpness_eval"):
        e = [
            abs(math.log(c["eta_max"] / (k * v)))
            if k and (v := c["values"].get(mode))
            else math.inf
            for c in bn
        ]
        errs[mode] = st.factor(e)
    holds = errs["sharpness"] <= H3_TRAIN and errs["sharpness_eval"] >= H3_EVAL
    return Claim(
        FIGURE,
        f"H3 ({OPTIMIZERS[opt]}): on the BN network the train-mode Hessian predicts η_max; the "
        "eval-mode one is off by ≥ 5×",
        "issue 24 (F12: BN mode changes λ_max)",
        f"k from the non-BN models {fmt_num(k, 3)}: train-mode factor error "
        f"×{fmt_num(errs['sharpness'], 2)} (rule ≤ {H3_TRAIN:g}), eval-mode "
        f"×{fmt_num(errs['sharpness_eval'], 2)} (rule ≥ {H3_EVAL:g}) [{len(bn)} BN cells]",
        bool(holds),
        ""
        if holds
        else "The rule needs both: the train-mode estimate within 2× and the "
        "eval-mode one ≥ 5× off.",
    )


def _h4(cells: list[dict], fits: dict, opt: str) -> Claim:
    group = _group(cells, opt)
    idx = st.resamples(len(group))
    ratio = [
        math.log(c["values"]["eta_div"] / c["eta_max"]) if c["values"].get("eta_div") else math.inf
        for c in group
    ]
    med = math.exp(float(np.median(ratio)))
    lo = math.exp(float(np.percentile(np.median(np.asarray(ratio)[idx], axis=1), 2.5)))
    ramps = [
        c["raw"]["short_ramp"]["eta_div"] / c["values"]["eta_div"]
        for c in group
        if c["values"].get("eta_div") and c["raw"]["short_ramp"]["eta_div"]
    ]
    ramp_med = float(np.median(ramps)) if ramps else math.nan
    best = min(AT_INIT, key=lambda e: fits[e].factor)
    d_lo, d_hi = st.paired_difference_ci(fits["ramp_cross"].errors, fits[best].errors, idx)
    a = med >= H4_DIV_RATIO and lo > 1
    b = not (H4_RAMP_BAND[0] <= ramp_med <= H4_RAMP_BAND[1])
    c_ = fits["ramp_cross"].factor < fits[best].factor and d_hi < 0
    return Claim(
        FIGURE,
        f"H4 ({OPTIMIZERS[opt]}): the range test's η_div exceeds η_max by a ramp-dependent "
        "factor; the live crossing η_t·λ_t/c = 1 predicts η_max better than any θ₀ estimate",
        "issue 24 pilot: crossing 0.27, 4× rule 0.79-1.23 vs η_max 0.2-0.4 (MLP, SGD)",
        f"(a) median η_div/η_max {fmt_num(med, 2)} (CI low {fmt_num(lo, 2)}): {a}; (b) "
        f"η_div(short)/η_div(long) median {fmt_num(ramp_med, 2)}: {b}; (c) "
        f"{_row(fits['ramp_cross'])} vs best θ₀ {_row(fits[best])}, paired Δ median "
        f"log-error CI [{fmt_num(d_lo, 2)}, "
        f"{fmt_num(d_hi, 2)}]: {c_} {_tag(cells, opt)}",
        bool(a and b and c_),
        "" if a and b and c_ else "Not all three parts hold (see which above).",
    )


def _h5(cells: list[dict], fits: dict, opt: str) -> Claim:
    u, s = fits["update"], fits["sharpness"]
    group = _group(cells, opt)
    hu = np.mean([c["hvps"].get("update", 1) for c in group])
    hs = np.mean([c["hvps"].get("sharpness", 1) for c in group])
    holds = u.predicts and u.factor <= H5_FACTOR * s.factor and hu / hs <= H5_HVPS
    return Claim(
        FIGURE,
        f"H5 ({OPTIMIZERS[opt]}): the update-direction η* predicts as well as sharpness at "
        "~1/10 of the HVPs",
        "issue 24",
        f"{_row(u)}; {_row(s)}; HVPs {hu:.1f} vs {hs:.1f} ({fmt_num(hu / hs, 2)}) "
        f"{_tag(cells, opt)}",
        bool(holds),
        ""
        if holds
        else "η* must itself predict (factor ≤ 2, ρ ≥ 0.8, held-out ≤ 2) and be "
        "within 1.25× of sharpness' factor error.",
    )


def claims(results) -> list[Claim]:
    """H1-H5 per optimizer, and the estimator table (informational)."""
    cells = load_cells(results)
    out = []
    for opt in OPTIMIZERS:
        if len(_group(cells, opt)) < 3:
            continue
        fits = table(cells, opt)
        out += [_h1(cells, fits, opt), _h2(cells, fits, opt)]
        h3 = _h3(cells, opt)
        out += ([h3] if h3 else []) + [_h4(cells, fits, opt), _h5(cells, fits, opt)]
        rows = "; ".join(f"{_row(f)}{' (predicts)' if f.predicts else ''}" for f in fits.values())
        out.append(
            Claim(
                FIGURE,
                f"{OPTIMIZERS[opt]}: estimator × factor error [95 % CI] × Spearman ρ × held-out",
                "not in the papers (issue 24)",
                f"{rows} {_tag(cells, opt)}",
                None,
                "Informational: k fitted leave-one-model-out; 'predicts' = ×≤2, ρ≥0.8, "
                "held-out ≤2.",
            )
        )
    if not out:
        out.append(Claim(FIGURE, _NO_CELLS, "issue 24", f"only {len(cells)} finished cells", None))
    return out


_NO_CELLS = "H1-H5 need at least 3 finished cells per optimizer"


SHOWN = ("sharpness", "update", "secant_hvp", "eq8_p1", "ramp_cross", "eta_div")
MARKERS = dict(zip(SHOWN, "osD^vP"))


def _scatter(ax, cells: list[dict], opt: str, letter: str) -> None:
    group = _group(cells, opt)
    train = [c for c in group if not c["heldout"]]
    lim = [math.inf, 0.0]
    for i, e in enumerate(SHOWN):
        pts = []
        for c in group:
            fit_on = train if c["heldout"] else [d for d in train if d["model"] != c["model"]]
            k, v = st.calibration_constant(fit_on, e), c["values"].get(e)
            if k and v:
                pts.append((k * v, c["eta_max"]))
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=22, marker=MARKERS[e], color=f"C{i}", label=LABELS[e], alpha=0.8)
            lim = [min(lim[0], *x, *y), max(lim[1], *x, *y)]
    if lim[1] > 0:
        g = np.geomspace(lim[0] / 2, lim[1] * 2, 50)
        ax.plot(g, g, "k-", lw=1)
        ax.fill_between(g, g / 2, g * 2, color="0.85", zorder=0, label="2× band")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="k·E (k leave-one-model-out)",
        ylabel="η_max",
        title=f"({letter}) {opt}: calibrated estimate vs η_max",
    )
    ax.legend(fontsize=7, loc="upper left")


def _ramps(ax, cells: list[dict], opt: str, letter: str) -> None:
    group = _group(cells, opt)
    colors = _style.sequential(max(2, len(group)), "plasma")
    for c, col in zip(group, colors):
        pts = [(lr, r) for lr, r in c["raw"]["ramp"]["ratios"] if r]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, "-", color=col, lw=1)
            ax.axvline(c["eta_max"], color=col, ls=":", lw=0.8)
    ax.axhline(1.0, color="k", lw=1)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="ramp LR η_t",
        ylabel="η_t·λ_t/c",
        title=f"({letter}) {opt}: η_t·λ_t/c along the ramp (dotted: η_max)",
    )


def draw(results, out) -> list[Path]:
    """Calibrated estimates vs η_max (log-log, 2× band) and the ramp ratio traces."""
    cells = load_cells(results)
    rows = claims(results)
    fig, axes = _style.figure(2, 2, height=10.0)
    letters = iter("abcd")
    for row, opt in enumerate(OPTIMIZERS):
        _scatter(axes[row][0], cells, opt, next(letters))
        _ramps(axes[row][1], cells, opt, next(letters))
    _style.title(
        fig,
        "F16 (beyond the papers): which estimate predicts the LR that works",
        preset(results, EXPERIMENTS[0]),
    )
    _style.add_caption(fig, [f"{c.claim} — {c.verdict}." for c in rows if c.holds is not None])
    return _style.save(fig, out, NAME)


def note_table(results) -> str:
    """The note's table: estimator × optimizer × factor error [95 % CI] × ρ × held-out."""
    cells = load_cells(results)
    lines = [
        "| estimator | optimizer | cells | factor error [95 % CI] | Spearman ρ | held-out "
        "| predicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for opt in OPTIMIZERS:
        if len(_group(cells, opt)) < 3:
            continue
        for e, f in table(cells, opt).items():
            label = LABELS[e].replace("|", "\\|")
            lines.append(
                f"| {label} | {opt} | {f.n} | ×{fmt_num(f.factor, 2)} [{fmt_num(f.ci[0], 2)}, "
                f"{fmt_num(f.ci[1], 2)}] | {fmt_num(f.rho, 2)} | ×{fmt_num(f.heldout_factor, 2)} "
                f"({f.heldout_kind}) | {'yes' if f.predicts else 'no'} |"
            )
    return "\n".join(lines)


def finder_calibration(results) -> dict[str, tuple[float, float]]:
    """(k, F) of the ramp crossing per optimizer family, for ``hessian_lr.range_test.finder``:
    k fitted on every training cell, F its leave-one-model-out factor error."""
    cells = load_cells(results)
    out = {}
    for opt, family in (("sgd", "sgd"), ("adam", "adaptive")):
        group = _group(cells, opt)
        k = st.calibration_constant(group, "ramp_cross")
        if k is not None and len(group) >= 3:
            out[family] = (k, st.fit(group, "ramp_cross").factor)
    return out
