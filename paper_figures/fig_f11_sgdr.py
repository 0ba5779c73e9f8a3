"""F11 -- SGDR anytime performance: test error vs epoch, default step schedule vs warm restarts.

SGDR (Loshchilov & Hutter, ICLR 2017, arXiv:1608.03983) Fig. 2: WRN-28-10 on CIFAR-10, 200
epochs; the step default (0.1 or 0.05, x0.2 at 60/120/160) against SGDR (η_max 0.05, T_0 = 1 or
10, T_mult = 2). SGDR reaches a given error 2-4x sooner and ends comparable or better (4.17 %
default vs 3.74-4.03 % SGDR). Reads ``f11_sgdr``: runs ``step_lr<lr>_seed<s>``,
``sgdr_T0_<T_0>_seed<s>`` and ``summary.json`` (``epoch_steps``, ``restarts``, ``target``,
``epochs_to_target``, ``checks``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _plots, _style
from ._data import (
    Claim,
    MissingResults,
    arms,
    by_seed,
    experiment_runs,
    finals,
    first_reach,
    fmt_num,
    preset,
    series,
    summary,
)
from .criteria import SGDR_END_TOLERANCE, Sibling, decide, sgdr_sooner
from .fig_f3_onecycle_vs_pc import sibling_spread

FIGURE = "F11"
NAME = "f11_sgdr"
EXPERIMENTS = ("f11_sgdr",)
PAPER_SOONER = "SGDR reaches the default's error 2–4× sooner (CIFAR-10/100, WRN-28-10)"
PAPER_END = "final error 4.17% default vs 3.74–4.03% SGDR (CIFAR-10)"
CHANCE_ERROR = 0.85  # final test error at or above this: the run never learned (10 classes)
COLORS = {
    "step_lr0.1": "#D55E00",
    "step_lr0.05": "#E69F00",
    "sgdr_T0_1": "#0b5d1e",
    "sgdr_T0_10": "#CC79A7",
}


def _load(results):
    groups = arms(experiment_runs(results, EXPERIMENTS[0]))
    if not any(a.startswith("sgdr") for a in groups) or not any(
        a.startswith("step") for a in groups
    ):
        raise MissingResults(EXPERIMENTS[0], results, "needs step_* and sgdr_* runs")
    return groups, summary(results, EXPERIMENTS[0])


def _label(arm: str) -> str:
    if arm.startswith("step_lr"):
        return f"default step, η₀ = {arm.removeprefix('step_lr')}"
    if arm.startswith("sgdr_T0_"):
        return f"SGDR T₀ = {arm.removeprefix('sgdr_T0_')}, T_mult = 2"
    return arm


def _order(groups) -> list[tuple[str, str]]:
    """(arm, legend label) in drawing order; arms that never leave chance level say so."""
    out = []
    for a in _names(groups):
        err = [1 - v for v in finals(groups[a])]
        dead = err and min(err) >= CHANCE_ERROR
        out.append((a, _label(a) + (" (stuck at chance)" if dead else "")))
    return out


def _names(groups) -> list[str]:
    names = sorted(
        (a for a in groups if a.startswith("step")), key=lambda a: -float(a.removeprefix("step_lr"))
    ) + sorted(
        (a for a in groups if a.startswith("sgdr")), key=lambda a: float(a.rsplit("_", 1)[1])
    )
    return names


def _pct(values) -> str:
    from ._data import mean_sd

    m, s, n = mean_sd(values)
    return f"{100 * m:.2f}%" + (f" ± {100 * s:.2f} ({n} seeds)" if n > 1 else "")


def _why_not_sooner(err: dict[str, list[float]], speedup: dict) -> str:
    dead = [a for a, e in err.items() if a.startswith("step") and e and min(e) >= CHANCE_ERROR]
    best = max((v for v in speedup.values() if v is not None), default=None)
    text = (
        f"The best SGDR run gets there {fmt_num(best, 2)}× sooner, short of 2×: "
        if best is not None
        else "No SGDR run gets there sooner: "
    )
    alive = {a: min(e) for a, e in err.items() if a.startswith("step") and a not in dead and e}
    if alive:
        best_step = min(alive, key=alive.get)
        text += f"the best step run ({best_step}) ends at {100 * alive[best_step]:.2f}% error."
    if dead:
        text += (
            f" {', '.join(dead)} ended at chance level (a failed run, not a baseline: its final "
            f"error ≥ {100 * CHANCE_ERROR:.0f}%)."
        )
    return text


def claims(results) -> list[Claim]:
    groups, summ = _load(results)
    checks = summ.get("checks") or {}
    tag = (
        f"[{preset(results, EXPERIMENTS[0])}; {summ.get('epochs')} paper epochs of "
        f"{summ.get('epoch_steps')} steps]"
    )
    err = {a: [1 - v for v in finals(groups[a])] for a, _ in _order(groups)}
    target = summ.get("target")
    sooner = checks.get("sgdr_sooner", {})
    sp = sooner.get("speedup") or {}
    reach = (
        (summ.get("epochs_to_target") or {}).get(f"{target:.4f}", {}) if target is not None else {}
    )
    parts = [
        f"{a}: "
        + ("never" if reach.get(a) is None else f"epoch {fmt_num(reach[a], 4)}")
        + (f" ({fmt_num(sp[a], 2)}×)" if sp.get(a) is not None else "")
        for a in reach
    ]
    best_sgdr = min((min(v) for a, v in err.items() if a.startswith("sgdr") and v), default=1.0)
    # Per seed: (best step error + 0.5 points) − best SGDR error, in points; > 0 is "comparable".
    steps_, sgdrs = ([v for a, v in err.items() if a.startswith(p) and v] for p in ("step", "sgdr"))
    n = min((len(v) for v in steps_ + sgdrs), default=0)
    sib = sibling_spread(results)
    end = decide(
        [
            100 * (min(v[k] for v in steps_) + SGDR_END_TOLERANCE - min(v[k] for v in sgdrs))
            for k in range(n if steps_ and sgdrs else 0)
        ],
        sibling=sib,
    )
    cycle_end = _at_cycle_end(summ)
    sooner_holds, gap = _sooner_per_seed(groups, sibling=sib)
    if sooner_holds is None and "holds" in sooner and not gap:
        sooner_holds = bool(sooner["holds"])
    out = [
        Claim(
            "F11",
            "SGDR reaches a given error 2–4× sooner",
            PAPER_SOONER,
            f"first epoch at the best step run's final error {fmt_num(100 * target, 3)}%"
            + (" (first seed)" if n > 1 else "")
            + ": "
            + "; ".join(parts)
            + gap
            + f" (criterion: some SGDR run ≥ 2× sooner than the step runs) {tag}",
            sooner_holds,
            "" if sooner_holds is not False else _why_not_sooner(err, sp),
        ),
        Claim(
            "F11",
            "SGDR ends comparable or better",
            PAPER_END,
            "final test error "
            + "; ".join(f"{a} {_pct(v)}" for a, v in err.items())
            + cycle_end
            + (" (first seed)" if n > 1 and cycle_end else "")
            + f"; best step + 0.5 − best SGDR {end.text()} (criterion: best SGDR ≤ best step + "
            f"0.5 points, at the final epoch) {tag}",
            end.holds,
            ""
            if end.holds is not False
            else f"The best SGDR run ends at {100 * best_sgdr:.2f}% error against "
            f"{100 * target:.2f}% for the best step run.",
        ),
    ]
    return out


def _sooner_per_seed(groups: dict, *, sibling: Sibling | None = None) -> tuple[bool | None, str]:
    """ "2× sooner", judged per seed: (verdict or None, the text of the deciding margin).

    Per seed the target is the best step run's final error. Where some SGDR run reaches it,
    the seed holds when one does so ≥ 2× sooner (in steps) than the first step run. Where none
    does, the margin is how far SGDR's lowest error stays above the target, in points, and the
    decision rule (``decide``; one seed against ``sibling``) judges those margins. Seeds that
    disagree leave it undecided.
    """
    reached, gaps = [], []
    for arm_runs in by_seed(groups).values():
        curves = {a: series(r.records(), "test_accuracy") for a, r in arm_runs.items()}
        steps = {a: c for a, c in curves.items() if a.startswith("step") and len(c[0])}
        sgdr = {a: c for a, c in curves.items() if a.startswith("sgdr") and len(c[0])}
        if not steps or not sgdr:
            continue
        target = max(c[1][-1] for c in steps.values())  # best final accuracy of a step run
        first = {a: first_reach(x + 1, y, target - 1e-12) for a, (x, y) in curves.items()}
        ref = min(first[a] for a in steps if np.isfinite(first[a]))  # the best one reaches it
        hits = [first[a] for a in sgdr if np.isfinite(first[a])]
        if hits:
            reached.append(sgdr_sooner(ref / min(hits)))
        else:
            gaps.append(100 * (max(c[1].max() for c in sgdr.values()) - target))
    if reached and gaps:
        miss = decide(gaps, sibling=sibling)
        if not any(reached) and miss.holds is False:  # no seed shows it
            return False, f"; SGDR's best accuracy − target where it never gets there {miss.text()}"
        return None, "; seeds disagree (SGDR reaches the target on some seeds only)"
    if gaps:
        miss = decide(gaps, sibling=sibling)
        return miss.holds, f"; SGDR's best accuracy − target {miss.text()}"
    if reached:
        return (all(reached) if all(reached) or not any(reached) else None), ""
    return None, ""


def _at_cycle_end(summ: dict) -> str:
    """SGDR's error at its last completed cycle (the run ends mid-cycle; first seed's curve).

    The evaluation at or just before each SGDR run's last restart, where its LR had annealed:
    context for the final-epoch criterion, which stays as it was set before the runs.
    """
    curves, parts = summ.get("curves") or {}, []
    for arm, restarts in sorted((summ.get("restarts") or {}).items()):
        done = [e for e in restarts if e <= (summ.get("epochs") or 0)]
        pts = [p for p in curves.get(arm, []) if done and p[0] <= done[-1] + 1e-9]
        if pts:
            e, v = pts[-1]
            where = (
                "" if e == done[-1] else f", the last evaluation before the restart at {done[-1]}"
            )
            parts.append(f"{arm} {100 * v:.2f}% (epoch {fmt_num(e, 4)}{where})")
    return f"; at the last completed cycle: {'; '.join(parts)}" if parts else ""


def draw(results, out) -> list[Path]:
    groups, summ = _load(results)
    cl = claims(results)
    spe = float(summ.get("epoch_steps") or 1)
    order = _order(groups)
    styles = {a: "--" if a.startswith("step") else "-" for a, _ in order}
    fig, axes = _style.figure(1, 2, height=5.0, gridspec_kw={"width_ratios": [1.7, 1]})
    ax, ax_lr = axes[0]
    drawn = _plots.curves_panel(
        ax, groups, order, error=True, per=spe, colors=COLORS, styles=styles
    )
    target = summ.get("target")
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1.2, label=f"best step final {100 * target:.2f}%")
    for a, ep in (summ.get("restarts") or {}).items():
        for e in ep:
            ax.axvline(e, color=COLORS.get(a, "#999999"), lw=0.6, alpha=0.35)
    ax.set_yscale("log")
    finals_ = [y[-1] for _, y in drawn.values()]
    # Runs stuck at chance (error ≈ 90 %) are in the legend but do not set the axis range.
    alive = [e for e in finals_ if e < CHANCE_ERROR] or finals_
    ax.set_ylim(min(alive) * 0.8, min(1.0, max(alive) * 3))
    from matplotlib.ticker import FixedLocator, NullFormatter, PercentFormatter

    ticks = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel=f"epoch (paper epochs of {int(spe)} steps)",
        ylabel="test error (log)",
        title="(a) test error (thin lines: SGDR restarts)",
    )
    ax.legend(loc="center right", fontsize=9.5)
    _plots.lr_panel(ax_lr, groups, order, per=spe, log=True, colors=COLORS, styles=styles)
    ax_lr.set_ylim(1e-4, 0.3)
    ax_lr.set(xlabel="epoch", title="(b) LR schedules")
    _style.title(
        fig,
        "F11 (SGDR Fig. 2): anytime test error, step default vs SGDR",
        preset(results, EXPERIMENTS[0]),
    )
    _style.add_caption(
        fig,
        [f"Ours: {c.claim} — {c.verdict}: {c.ours}." for c in cl]
        + [f"Paper: {PAPER_SOONER}; {PAPER_END}."],
    )
    return _style.save(fig, out, NAME)
