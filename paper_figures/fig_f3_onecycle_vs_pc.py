"""F3 -- 1cycle vs piecewise-constant: test accuracy vs iteration.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Fig. 1a: ResNet-56 on CIFAR-10, one
cycle 0.1 -> 3.0 -> 0.1 over 10k iterations reaches 92.4 % against 91.2 % for the multistep
baseline (0.35, x0.1 at 50k and 70k) after 80k. Reads ``f3_onecycle_vs_pc`` (runs
``onecycle_seed<s>``, ``pc_seed<s>`` and, where run, ``pc_same_seed<s>``: PC at 1cycle's
iterations). F3 as a curve reads ``f4_cycle_length`` too: 1cycle − PC margins at every cycle
length, and the iteration ratio at which 1cycle ties PC (:func:`tie_curve`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _style
from ._data import (
    Claim,
    MissingResults,
    arm_curves,
    arms,
    experiment_runs,
    finals,
    first_reach,
    fmt_mean,
    fmt_pct,
    fraction,
    last_quarter_gain,
    mean_sd,
    preset,
)
from .criteria import TIE_RATIO, Decision, Sibling, decide, failed_run, onecycle_beats_pc

FIGURE = "F3"
NAME = "f3_onecycle_vs_pc"
EXPERIMENTS = ("f3_onecycle_vs_pc",)
PAPER = "1cycle 92.4% at 10k iterations (1/8) vs PC 91.2% at 80k (ResNet-56, CIFAR-10)"


ARM_LABELS = (
    ("pc", "PC (paper's multiple)"),
    ("pc_same", "PC (same iterations)"),
    ("onecycle", "1cycle"),
)


def _load(results):
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    if "onecycle" not in groups or "pc" not in groups:
        raise MissingResults(EXPERIMENTS[0], results, "needs onecycle_seed* and pc_seed* runs")
    return groups


def _steps(run) -> int:
    """Optimizer updates of a run (its last record's step + 1; records may be thinned)."""
    recs = run.records()
    return recs[-1]["step"] + 1 if recs else 0


def _seed(run) -> int:
    return int(run.name.rsplit("_seed", 1)[1])


def _numbers(groups) -> dict:
    oc, pc = groups["onecycle"], groups["pc"]
    same = groups.get("pc_same", [])
    f_oc, f_pc, f_same = finals(oc), finals(pc), finals(same)
    n_oc = max(_steps(r) for r in oc)
    n_pc = max(_steps(r) for r in pc)
    x, ys = arm_curves(oc, "test_accuracy")
    reach = first_reach(x + 1, np.nanmean(ys, axis=0), mean_sd(f_pc)[0]) if len(x) else np.nan
    # Per-seed margins (points), failed runs (stuck at chance) left out.
    by_seed = {_seed(r): f for r, f in zip(oc, f_oc) if not failed_run(f)}
    pc_seed = {_seed(r): f for r, f in zip(pc, f_pc) if not failed_run(f)}
    same_seed = {_seed(r): f for r, f in zip(same, f_same) if not failed_run(f)}
    margin = [100 * (by_seed[k] - pc_seed[k]) for k in sorted(by_seed.keys() & pc_seed.keys())]
    margin_same = [
        100 * (by_seed[k] - same_seed[k]) for k in sorted(by_seed.keys() & same_seed.keys())
    ]
    failed = [r.name for r, f in zip(oc + pc + same, f_oc + f_pc + f_same) if failed_run(f)]
    return dict(
        f_oc=f_oc,
        f_pc=f_pc,
        f_same=f_same,
        n_oc=n_oc,
        n_pc=n_pc,
        reach=reach,
        margin=margin,
        margin_same=margin_same,
        failed=failed,
        pc_tail=[last_quarter_gain(r) for r in pc],
    )


def _why_not(d: dict) -> str:
    tail = mean_sd(d["pc_tail"])[0]
    return (
        f"PC at {d['n_pc']} iterations ends {-mean_sd(d['margin'])[0]:.2g} points above 1cycle at "
        f"{d['n_oc']}; PC gained {tail:.2g} points over its last quarter (converged if ≈ 0), and "
        f"1cycle vs PC at the same iterations: {fmt_mean(d['margin_same'])} points — so the long "
        "baseline's extra iterations, not a failure of 1cycle at equal cost, decide it."
        if d["margin_same"]
        else f"PC at {d['n_pc']} iterations ends above 1cycle at {d['n_oc']}."
    )


def sibling_spread(results) -> Sibling | None:
    """The seed spread single-seed accuracy margins are judged against: the sample s.d. of F3's
    per-seed 1cycle − PC margins (points; None with fewer than 3 seeds). It holds two runs'
    seed noise (a margin is a difference of two runs) and, on a GPU, non-determinism."""
    try:
        d = _numbers(_load(results))
    except MissingResults:
        return None
    if len(d["margin"]) < 3:
        return None
    sd = float(np.std(d["margin"], ddof=1))
    side = "gpu" if Path(results).name == "results_gpu" else "cpu"
    return Sibling(sd, f"{side} F3's 1cycle − PC margins ({len(d['margin'])} seeds)")


def tie_curve(results) -> dict:
    """1cycle − PC final accuracy (points) against the iteration ratio 1cycle/PC.

    Cycle lengths from ``f4_cycle_length`` (and F3's own 1cycle arm); at each length the
    per-seed margins against F3's PC (same seed) are judged by :func:`decide` (t-test on seeds;
    one seed against :func:`sibling_spread`). The tie ratio is where the mean margin first
    crosses 0 (linear in log ratio); its 95 % interval is where the margin's upper / lower 95 %
    bound first crosses 0 (``inf``: not within the lengths measured).
    """
    groups = _load(results)
    d = _numbers(groups)
    pc = {_seed(r): f for r, f in zip(groups["pc"], d["f_pc"]) if not failed_run(f)}
    lengths: dict[int, dict[int, float]] = {}
    try:
        from .fig_f4_cycle_length import _load as load_f4
        from .fig_f4_cycle_length import _seed_finals

        for n, runs in load_f4(results)[0].items():
            lengths[n] = _seed_finals(runs)
    except MissingResults:
        pass
    own = {_seed(r): f for r, f in zip(groups["onecycle"], d["f_oc"]) if not failed_run(f)}
    if len(own) >= len(lengths.get(d["n_oc"], {})):  # the arm with more seeds at that length
        lengths[d["n_oc"]] = own
    sib = sibling_spread(results)
    rows = []
    for n in sorted(lengths):
        seeds = sorted(lengths[n].keys() & pc.keys())
        dec = decide([100 * (lengths[n][k] - pc[k]) for k in seeds], sibling=sib)
        rows.append((n / d["n_pc"], n, dec))
    return dict(rows=rows, n_pc=d["n_pc"], sibling=sib, **_crossings(rows))


def _crossings(rows: list[tuple[float, int, Decision]]) -> dict:
    def first(values: list[float]) -> float:
        for i, (r, v) in enumerate(zip([x[0] for x in rows], values)):
            if not np.isfinite(v):
                continue
            if v >= 0:
                if i == 0 or not np.isfinite(values[i - 1]):
                    return r
                r0, v0 = rows[i - 1][0], values[i - 1]
                w = -v0 / (v - v0)
                return float(np.exp(np.log(r0) + w * (np.log(r) - np.log(r0))))
        return np.inf

    return dict(
        tie=first([x[2].mean for x in rows]),
        tie_low=first([x[2].high for x in rows]),
        tie_high=first([x[2].low for x in rows]),
    )


def _tie_claim(results) -> Claim:
    c = tie_curve(results)
    if c["tie_high"] <= TIE_RATIO:
        holds = True
    elif c["tie_low"] > TIE_RATIO:
        holds = False
    else:
        holds = None

    def r(x: float) -> str:
        return f"> {c['rows'][-1][0]:.2g} (beyond the longest cycle)" if np.isinf(x) else f"{x:.2g}"

    each = "; ".join(f"{n} it. ({fraction(n, c['n_pc'])}): {dec.text()}" for _, n, dec in c["rows"])
    return Claim(
        "F3",
        f"1cycle ties PC within {TIE_RATIO:g} of its iterations (the tie ratio, F3 + F4 runs)",
        "SC Fig. 1a: 1cycle at 1/8 of PC's iterations already ends above PC (tie ≤ 1/8)",
        f"1cycle − PC final accuracy by cycle length vs PC at {c['n_pc']} iterations: {each}; "
        f"tie ratio {r(c['tie'])}, 95 % interval [{r(c['tie_low'])}, {r(c['tie_high'])}] "
        f"(criterion: the interval's upper end ≤ {TIE_RATIO:g}; above {TIE_RATIO:g} at its lower "
        f"end: does not hold) [{preset(results, EXPERIMENTS[0])}]",
        holds,
        f"Even the 95 % lower end of the tie ratio, {r(c['tie_low'])}, is above {TIE_RATIO:g}."
        if holds is False
        else "",
        test=f"tie ratio {r(c['tie'])}, 95 % interval [{r(c['tie_low'])}, {r(c['tie_high'])}]",
    )


def claims(results) -> list[Claim]:
    groups = _load(results)
    d = _numbers(groups)
    frac = fraction(d["n_oc"], d["n_pc"])
    ratio = d["n_oc"] / d["n_pc"]
    decision = decide(d["margin"], sibling=sibling_spread(results))
    holds = decision.holds
    if holds is True and not onecycle_beats_pc(1.0, 0.0, ratio):
        holds = False
    reach = (
        f"; 1cycle first reaches PC's final accuracy at iteration {int(d['reach'])}"
        if np.isfinite(d["reach"])
        else "; 1cycle never reaches PC's final accuracy"
    )
    same = f"; PC at the same {d['n_oc']} iterations {fmt_pct(d['f_same'])}" if d["f_same"] else ""
    failed = (
        f"; failed runs (chance level, left out): {', '.join(d['failed'])}" if d["failed"] else ""
    )
    tail = mean_sd(d["pc_tail"])[0]
    rows = [
        Claim(
            figure="F3",
            claim="1cycle reaches ≥ the baseline's final accuracy in a fraction of its iterations",
            paper=PAPER,
            ours=(
                f"1cycle {fmt_pct(d['f_oc'])} at {d['n_oc']} iterations ({frac}) vs PC "
                f"{fmt_pct(d['f_pc'])} at {d['n_pc']} (PC's last quarter "
                f"{tail:+.2g} points){same}{reach}; 1cycle − PC {decision.text()}{failed} "
                f"[{preset(results, EXPERIMENTS[0])}]"
            ),
            holds=holds,
            note=_why_not(d) if holds is False else "",
        ),
        _tie_claim(results),
    ]
    if d["margin_same"]:
        eq = decide(d["margin_same"], sibling=sibling_spread(results))
        rows.append(
            Claim(
                "F3",
                "at equal iterations 1cycle ends above PC (new)",
                "(not a number in the paper: SC compares at PC's 8× longer budget)",
                f"1cycle {fmt_pct(d['f_oc'])} vs PC {fmt_pct(d['f_same'])}, both "
                f"{d['n_oc']} iterations; 1cycle − PC {eq.text()} "
                f"[{preset(results, EXPERIMENTS[0])}]",
                eq.holds,
                "PC ends above 1cycle at the same cost." if eq.holds is False else "",
            )
        )
    return rows


def _ratio_panel(ax, results) -> None:
    """1cycle − PC final accuracy (points, 95 % CI) against the iteration ratio; the tie."""
    c = tie_curve(results)
    r = np.asarray([x[0] for x in c["rows"]])
    mean = np.asarray([x[2].mean for x in c["rows"]])
    lo = np.asarray([x[2].low for x in c["rows"]])
    hi = np.asarray([x[2].high for x in c["rows"]])
    col = _style.color("onecycle")
    ax.fill_between(
        r,
        lo,
        hi,
        color=col,
        alpha=0.2,
        lw=0,
        label="95 % CI (t on seeds; one seed: z on F3's spread)",
    )
    ax.plot(r, mean, "o-", color=col, label="1cycle − PC (mean over seeds)")
    ax.axhline(0, color=_style.color("pc"), ls=":", lw=1.2, label="ties PC's final accuracy")
    ax.axvline(TIE_RATIO, color="#555555", ls="--", lw=1.0, label=f"criterion: tie ≤ {TIE_RATIO:g}")
    if np.isfinite(c["tie"]):
        ax.plot([c["tie"]], [0], "D", color="k", ms=7, label=f"tie ratio {c['tie']:.2g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(r, [fraction(x[1], c["n_pc"]) for x in c["rows"]])
    ax.set(
        xlabel="1cycle iterations / PC iterations",
        ylabel="final accuracy − PC's (points)",
        title="(b) where 1cycle ties PC (F3 + F4)",
    )
    ax.legend(loc="upper left", fontsize=8)


def draw(results, out) -> list[Path]:
    groups = _load(results)
    d = _numbers(groups)
    rows = claims(results)
    fig, axes = _style.figure(1, 2, height=4.8, gridspec_kw={"width_ratios": [2.0, 1.2]})
    ax, ax_r = axes[0]
    for arm, label in ARM_LABELS:
        if arm not in groups:
            continue
        x, ys = arm_curves(groups[arm], "test_accuracy")
        _style.band(ax, x + 1, ys, label=label, c=_style.color(arm))
        ax.plot(x[-1:] + 1, np.nanmean(ys, axis=0)[-1:], "o", color=_style.color(arm))
    m_pc = mean_sd(d["f_pc"])[0]
    ax.axhline(m_pc, color=_style.color("pc"), ls=":", lw=1.2, label=f"PC final {100 * m_pc:.1f}%")
    if np.isfinite(d["reach"]):
        ax.axvline(d["reach"], color=_style.color("onecycle"), ls=":", lw=1.2)
    _style.percent(ax)
    ax.set_ylim(max(0.0, min(mean_sd(d["f_oc"])[0], m_pc) - 0.25), None)  # the full curves
    ax.set(xlabel="iteration (optimizer steps)", ylabel="test accuracy", title="(a) test accuracy")
    ax.legend(loc="lower right")
    _ratio_panel(ax_r, results)
    _style.title(
        fig, "F3 (SC Fig. 1a): 1cycle vs piecewise constant", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [
            f"Ours: 1cycle {fmt_pct(d['f_oc'])} at {fraction(d['n_oc'], d['n_pc'])} of the "
            f"iterations vs PC {fmt_pct(d['f_pc'])}. Paper: {PAPER}.",
            "; ".join(f"{c.claim} — {c.verdict}" for c in rows) + ".",
        ],
    )
    return _style.save(fig, out, NAME)
