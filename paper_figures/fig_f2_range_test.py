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


def claims(results) -> list[Claim]:
    summ = summary(results, EXPERIMENTS[0])
    runs = summ.get("runs", {})
    rec = summ.get("recommended") or {}
    holds = bool(summ.get("claim", {}).get("rises_then_falls_all"))
    margin = summ.get("claim", {}).get("margin", 0.02)
    each = "; ".join(
        f"{n}: peak {100 * r['peak_val_accuracy']:.1f}% at LR {fmt_num(r['peak_lr'], 2)}"
        + (f", stopped at {fmt_num(r['stop_lr'], 2)}" if r.get("stopped_early") else "")
        + (" ✓" if r["rises_then_falls"] else " ✗")
        for n, r in sorted(runs.items(), key=lambda kv: _length(kv[0]))
        if r.get("peak_val_accuracy") is not None
    )
    longest = runs.get(rec.get("from_run", ""), {})
    plateau = longest.get("plateau_lrs")
    plat = (
        f"; high plateau (within the range test's tolerance of the peak) LR "
        f"{fmt_num(plateau[0], 2)}–{fmt_num(plateau[1], 2)} "
        f"(ratio {fmt_num(longest.get('plateau_ratio'), 2)})"
        if plateau
        else ""
    )
    return [
        Claim(
            "F2",
            "accuracy rises then turns ragged/falls; suggested max/min drawn",
            PAPER,
            f"every test rose and then fell by ≥ {100 * margin:.0f} points (or diverged): "
            f"{'yes' if holds else 'no'} — {each}; suggested max_lr "
            f"{fmt_num(rec.get('max_lr'), 3)}, base_lr {fmt_num(rec.get('base_lr_quarter'), 3)} "
            f"(/4) from {rec.get('from_run')}{plat} [{preset(results, EXPERIMENTS[0])}]",
            holds,
            ""
            if holds
            else "Tests that did not both rise and fall by the margin: "
            + ", ".join(n for n, r in runs.items() if not r["rises_then_falls"])
            + ".",
        ),
        _plateau_claim(results, longest),
    ]


WIDE_PLATEAU = 3.0  # "wide": the high plateau spans at least this LR ratio (our reading)


def _plateau_claim(results, longest: dict) -> Claim:
    """F2's plateau as a prediction, judged by F3: a wide plateau ⇔ 1cycle wins in fewer steps."""
    from . import figure_module

    ratio = longest.get("plateau_ratio")
    wide = ratio is not None and ratio >= WIDE_PLATEAU
    try:
        f3 = figure_module("F3").claims(results)[0]
        f3_holds, f3_text = f3.holds, f3.verdict
    except MissingResults:
        f3_holds, f3_text = None, "no F3 results"
    holds = None if f3_holds is None or ratio is None else (wide == f3_holds)
    return Claim(
        "F2",
        "a wide high plateau signals super-convergence (judged by F3)",
        "SC Fig. 2: ResNet-56 accuracy stays high over a wide range of large LRs (up to ≈ 3), "
        "and it super-converges (Fig. 1a)",
        f"plateau ratio {fmt_num(ratio, 2)} of the longest test (wide: ≥ {WIDE_PLATEAU:g}) → "
        f"predicts {'super-convergence' if wide else 'none'}; F3: {f3_text} "
        f"[{preset(results, EXPERIMENTS[0])}]",
        holds,
        f"The plateau predicted {'super-convergence' if wide else 'none'} but F3 "
        f"{'does not hold' if wide else 'holds'}."
        if holds is False
        else "",
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
    plateau = (longest.get("suggestions") or {}).get("plateau_lrs")
    if plateau:
        ax_acc.axvspan(
            plateau[0], plateau[1], color="#0072B2", alpha=0.08, label="high plateau (longest)"
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
