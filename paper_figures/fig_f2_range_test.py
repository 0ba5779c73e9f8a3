"""F2 -- LR range test: held-out accuracy and smoothed loss vs a linearly rising LR.

CLR paper (Smith 2017, arXiv:1506.01186) Fig. 3 and Super-Convergence (Smith & Topin 2017,
arXiv:1708.07120) Fig. 2: accuracy rises while the LR is too small, then turns ragged and falls;
max_lr is read at the peak and base_lr = max_lr/3 (CLR) or /4 (SC). ResNet-56 on CIFAR-10 stays
high up to LR ≈ 3: a wide plateau signals super-convergence. Reads ``f2_range_test``: runs
``len<n>_seed<s>`` with ``range_test.json`` (``RangeTestResult.to_dict()``) and ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hessian_lr.records import read_json

from . import _style
from ._data import Claim, MissingResults, experiment_runs, fmt_num, preset, summary
from .criteria import decide

FIGURE = "F2"
NAME = "f2_range_test"
EXPERIMENTS = ("f2_range_test",)
PAPER = (
    "CIFAR-10 ResNet-56: accuracy high up to LR ≈ 3 (wide plateau, SC Fig. 2); CLR Fig. 3 "
    "(CIFAR-10, Caffe net): rises from LR ≈ 0.001, ragged above ≈ 0.006 → bounds 0.001–0.006"
)


def _load(results) -> dict[str, dict]:
    out = {}
    for run in experiment_runs(results, EXPERIMENTS[0]):
        path = run.dir / "range_test.json"
        if path.exists():
            out[run.name] = read_json(path)
    if not out:
        raise MissingResults(EXPERIMENTS[0], results, "no range_test.json")
    return dict(sorted(out.items(), key=lambda kv: (_length(kv[0]), kv[0])))


def _length(name: str) -> int:
    try:
        return int(name.split("_")[0].removeprefix("len"))
    except ValueError:
        return 0


def _arr(xs) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in xs], dtype=float)


SMOOTH = 5  # evaluations in the running median the plateau is read on
PLATEAU = 0.9  # "high": smoothed accuracy ≥ this fraction of the smoothed peak
WIDE_PLATEAU = 3.0  # "wide": the high plateau spans at least this LR ratio (our reading)


def smoothed_plateau(lrs, accs) -> dict:
    """The high plateau of a range test, read on the smoothed accuracy curve.

    Smoothing: a centred running median over ``SMOOTH`` evaluations (a ragged curve's single
    drops do not cut the plateau). Plateau: the contiguous LR interval around the smoothed peak
    where the smoothed accuracy stays ≥ ``PLATEAU`` × the smoothed peak. Returns ``lo``, ``hi``
    (LRs), ``ratio`` (hi / lo), ``peak`` and ``smoothed`` (the curve).
    """
    lr, a = _arr(lrs), _arr(accs)
    h = SMOOTH // 2
    sm = np.asarray([np.nanmedian(a[max(0, i - h) : i + h + 1]) for i in range(len(a))])
    if not len(sm) or not np.isfinite(sm).any():
        return dict(lo=np.nan, hi=np.nan, ratio=np.nan, peak=np.nan, smoothed=sm)
    j = int(np.nanargmax(sm))
    thr = PLATEAU * sm[j]
    lo = hi = j
    while lo > 0 and sm[lo - 1] >= thr:
        lo -= 1
    while hi < len(sm) - 1 and sm[hi + 1] >= thr:
        hi += 1
    return dict(lo=lr[lo], hi=lr[hi], ratio=lr[hi] / lr[lo], peak=sm[j], smoothed=sm)


def _rise_fall_margin(d: dict, margin: float) -> float:
    """min(peak − first, peak − lowest after the peak) − the margin, in points (raw curve)."""
    a = _arr(d["val_accuracies"])
    if len(a) < 2 or not np.isfinite(a).any():
        return np.nan
    j = int(np.nanargmax(a))
    after = a[j + 1 :]
    fall = a[j] - np.nanmin(after) if len(after) and np.isfinite(after).any() else np.nan
    if d.get("stopped_early"):
        fall = a[j] - 0.1 if not np.isfinite(fall) else max(fall, a[j] - 0.1)  # diverged: chance
    return 100 * (min(a[j] - a[0], fall) - margin)


def claims(results) -> list[Claim]:
    summ = summary(results, EXPERIMENTS[0])
    data = _load(results)
    runs = summ.get("runs", {})
    rec = summ.get("recommended") or {}
    margin = summ.get("claim", {}).get("margin", 0.02)
    each = "; ".join(
        f"{n}: peak {100 * r['peak_val_accuracy']:.1f}% at LR {fmt_num(r['peak_lr'], 2)}"
        + (f", stopped at {fmt_num(r['stop_lr'], 2)}" if r.get("stopped_early") else "")
        for n, r in sorted(runs.items(), key=lambda kv: _length(kv[0]))
        if r.get("peak_val_accuracy") is not None
    )
    from .fig_f3_onecycle_vs_pc import sibling_spread

    # "Every test rose and fell": the smallest margin over the tests decides (one test per
    # length, one seed: judged against F3's seed spread of accuracy margins).
    worst = min((_rise_fall_margin(d, margin) for d in data.values()), default=np.nan)
    dec = decide([worst], sibling=sibling_spread(results))
    return [
        Claim(
            "F2",
            "accuracy rises then turns ragged/falls; suggested max/min drawn",
            PAPER,
            f"{each}; every test rose from its start and fell after its peak by ≥ "
            f"{100 * margin:.0f} points (or diverged): smallest of rise and fall − "
            f"{100 * margin:.0f} over the tests {dec.text()}; suggested max_lr "
            f"{fmt_num(rec.get('max_lr'), 3)}, base_lr {fmt_num(rec.get('base_lr_quarter'), 3)} "
            f"(/4) from {rec.get('from_run')} [{preset(results, EXPERIMENTS[0])}]",
            dec.holds,
            "" if dec.holds is not False else "Some test did not both rise and fall by the margin.",
        ),
        _plateau_claim(results, data),
    ]


def _plateau_claim(results, data: dict) -> Claim:
    """F2's plateau as a prediction, judged by F3: a wide plateau ⇔ 1cycle wins in fewer steps.

    Decided only when F3's verdict is decided and every test length classifies the plateau the
    same way (wide or not): with one test, or lengths that disagree, the reading is undecided.
    """
    from . import figure_module

    plats = {n: smoothed_plateau(d["val_lrs"], d["val_accuracies"]) for n, d in data.items()}
    wide = {n: bool(p["ratio"] >= WIDE_PLATEAU) for n, p in plats.items()}
    longest = max(plats, key=_length)
    try:
        f3 = figure_module("F3").claims(results)[0]
        f3_holds, f3_text = f3.holds, f3.verdict
    except MissingResults:
        f3_holds, f3_text = None, "no F3 results"
    agree = len(set(wide.values())) == 1
    if f3_holds is None or len(plats) < 2 or not agree:
        holds = None
    else:
        holds = wide[longest] == f3_holds
    why = (
        "one test: no replicate of the plateau reading"
        if len(plats) < 2
        else ("the test lengths disagree" if not agree else "")
    )
    each = "; ".join(
        f"{n}: LR {fmt_num(p['lo'], 2)}–{fmt_num(p['hi'], 2)} (ratio {fmt_num(p['ratio'], 2)})"
        for n, p in sorted(plats.items(), key=lambda kv: _length(kv[0]))
    )
    return Claim(
        "F2",
        "a wide high plateau signals super-convergence (judged by F3)",
        "SC Fig. 2: ResNet-56 accuracy stays high over a wide range of large LRs (up to ≈ 3), "
        "and it super-converges (Fig. 1a)",
        f"high plateau on the smoothed accuracy (running median of {SMOOTH} evaluations, "
        f"≥ {PLATEAU:g} × its peak): {each} (wide: ratio ≥ {WIDE_PLATEAU:g}) → the longest test "
        f"predicts {'super-convergence' if wide[longest] else 'none'}; F3: {f3_text}"
        + (f"; undecided: {why}" if why and holds is None else "")
        + f" [{preset(results, EXPERIMENTS[0])}]",
        holds,
        f"The plateau predicted {'super-convergence' if wide[longest] else 'none'} but F3 "
        f"{'does not hold' if wide[longest] else 'holds'}."
        if holds is False
        else "Until issue 25 the plateau was read on the raw ragged curve (within the range "
        "test's 5 % of the peak): ratio 1 everywhere, so 'no plateau, no super-convergence' "
        "held vacuously (✅).",
        test="; ".join(f"{n} ratio {fmt_num(p['ratio'], 2)}" for n, p in plats.items())
        + (f"; {why}" if why else ""),
    )


def draw(results, out) -> list[Path]:
    data = _load(results)
    summ = summary(results, EXPERIMENTS[0])
    claim, plateau_claim = claims(results)
    fig, axes, ax_leg = _style.figure_with_legend(1, 2, height=5.6, legend_ratio=0.2)
    ax_acc, ax_loss = axes[0]
    colors = _style.sequential(len(data))
    for (name, d), c in zip(data.items(), colors):
        n = _length(name)
        label = f"{n} iterations" if n else name
        val_lrs, accs = _arr(d["val_lrs"]), _arr(d["val_accuracies"])
        ax_acc.plot(val_lrs, accs, "o-", ms=3.5, color=c, label=label)
        lrs, sm = _arr(d["lrs"]), _arr(d["smoothed_losses"])
        ax_loss.plot(lrs, sm, color=c, label=label)
        s = d.get("suggestions") or {}
        mx = (s.get("max_lr") or {}).get("lr")
        if mx is not None:
            i = int(np.nanargmin(np.abs(val_lrs - mx))) if len(val_lrs) else None
            if i is not None:
                ax_acc.plot([mx], [accs[i]], "v", ms=11, color=c, mec="k", zorder=5)
        if d.get("stopped_early") and len(lrs):
            ax_loss.plot([lrs[-1]], [sm[-1]], "x", ms=9, mew=2, color=c)
    rec = summ.get("recommended") or {}
    longest = data.get(rec.get("from_run", ""), {})
    name = max(data, key=_length)
    plat = smoothed_plateau(data[name]["val_lrs"], data[name]["val_accuracies"])
    ax_acc.plot(
        _arr(data[name]["val_lrs"]),
        plat["smoothed"],
        color="k",
        lw=1.0,
        alpha=0.6,
        label=f"running median ({SMOOTH}), longest test",
    )
    if np.isfinite(plat["lo"]):
        ax_acc.axvspan(
            plat["lo"],
            max(plat["hi"], plat["lo"] * 1.01),
            color="#0072B2",
            alpha=0.12,
            label=f"high plateau (smoothed ≥ {PLATEAU:g} × peak): "
            f"ratio {fmt_num(plat['ratio'], 2)}",
        )
    for key, ls, lab in (
        ("max_lr", "-", "suggested max_lr"),
        ("base_lr_quarter", "--", "base_lr = max/4"),
    ):
        if rec.get(key) is not None:
            for ax in (ax_acc, ax_loss):
                ax.axvline(
                    rec[key],
                    color="k",
                    ls=ls,
                    lw=1.2,
                    label=f"{lab} = {fmt_num(rec[key], 2)}" if ax is ax_acc else None,
                )
    curv = longest.get("curvature") or {}
    if curv.get("two_over_lambda"):
        two = curv["two_over_lambda"]
        for ax in (ax_acc, ax_loss):
            ax.axvline(
                two,
                color=_style.METHOD_COLORS["stable"],
                ls=(0, (2, 1)),
                lw=2.5,
                zorder=6,
                label=f"2/λ_max at init = {fmt_num(two, 2)}" if ax is ax_loss else None,
            )
        # Often far left of the LRs the test reaches: label it where it stands.
        ax_loss.annotate(
            f"2/λ_max\n= {fmt_num(two, 2)}",
            (two, 0.95),
            xycoords=("data", "axes fraction"),
            xytext=(8, 0),
            textcoords="offset points",
            va="top",
            fontsize=9.5,
            color=_style.METHOD_COLORS["stable"],
            fontweight="bold",
        )
    _style.percent(ax_acc)
    ax_acc.set(
        xlabel="learning rate (rising linearly)",
        ylabel="held-out accuracy",
        title="(a) accuracy vs LR (▼ = peak → max_lr)",
    )
    ax_loss.set(
        xlabel="learning rate (rising linearly)",
        ylabel="smoothed training loss",
        title="(b) smoothed loss vs LR (× = stopped: diverging)",
    )
    _style.legend_row(ax_leg, [ax_acc, ax_loss], ncol=4, fontsize=9.5)
    _style.title(
        fig,
        "F2 (CLR Fig. 3, SC Fig. 2): LR range tests of several lengths",
        preset(results, EXPERIMENTS[0]),
    )
    _style.add_caption(
        fig,
        [
            f"Paper: {PAPER}.",
            f"Ours: {claim.ours}.",
            f"Claim: {claim.claim} — {claim.verdict}; {plateau_claim.claim} — "
            f"{plateau_claim.verdict}.",
        ],
    )
    return _style.save(fig, out, NAME)
