"""F8 -- sweeps under 1cycle: weight decay, momentum (constant and cyclical), batch size.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Figs. 9-10, Tables 5-6 (and Smith 2018,
"A disciplined approach...", Sec. 4): under super-convergence too much weight decay (1e-3 vs
1e-4 for ResNet-56 on CIFAR-10) kills the effect, the momentum value (0.8-0.95, or cyclical)
matters little, larger batches do slightly better. Reads ``f8_sweeps``: ``summary.json``
(``final_test_accuracy`` per sweep and value, per seed; ``base``; ``steps``) -- the values
come from the runs' records -- and checks that the runs exist.
"""

from __future__ import annotations

from pathlib import Path

from hessian_lr.records import read_json

from . import _style
from ._data import Claim, experiment_runs, fmt_num, mean_sd, preset, summary

FIGURE = "F8"
NAME = "f8_sweeps"
EXPERIMENTS = ("f8_sweeps",)
PAPER_WD = "ResNet-56, CIFAR-10: WD 1e-4 super-converges, 1e-3 kills the effect"
PAPER_MOM = "momentum 0.8–0.95 (and cyclical 0.95 → 0.85) give similar accuracy"
PAPER_BS = "larger batches (up to 1536) slightly better at the same epochs"
MOMENTUM_LITTLE = 1.0  # "matters little": all momenta within this many points
CHANCE = 0.15  # final accuracy at or below this: the run never learned (10 classes)


def _load(results):
    experiment_runs(results, EXPERIMENTS[0])  # raises MissingResults when there are none
    summ = summary(results, EXPERIMENTS[0])
    return summ, summ["final_test_accuracy"]


def _config(results) -> dict:
    path = Path(results) / EXPERIMENTS[0] / "experiment_config.json"
    return read_json(path).get("config", {}) if path.exists() else {}


def _stats(d: dict[str, list]) -> dict[str, tuple[float, float, int]]:
    return {k: mean_sd(v) for k, v in d.items()}


def claims(results) -> list[Claim]:
    summ, acc = _load(results)
    base = summ.get("base", {})
    tag = (
        f"[{preset(results, EXPERIMENTS[0])}; {base.get('steps')} iterations at batch "
        f"{base.get('batch_size')}]"
    )
    wd = _stats(acc["weight_decay"])
    mom = _stats(acc["momentum"])
    bs = _stats(acc["batch_size"])
    wd_keys = sorted(wd, key=float)
    largest = wd_keys[-1]
    best = max(wd, key=lambda k: wd[k][0])
    largest_worst = wd[largest][0] == min(v[0] for v in wd.values())
    drop = 100 * (wd[best][0] - wd[largest][0])
    spread = 100 * (max(v[0] for v in mom.values()) - min(v[0] for v in mom.values()))
    bs_keys = sorted(bs, key=int)
    bs_gain = 100 * (bs[bs_keys[-1]][0] - bs[bs_keys[0]][0])
    rest = [bs[k][0] for k in bs_keys[:-1]]
    rest_spread = 100 * (max(rest) - min(rest)) if rest else 0.0

    def row(st):
        return ", ".join(
            f"{k}: {100 * v[0]:.2f}%"
            + (f" ± {100 * v[1]:.2f}" if v[2] > 1 else "")
            + (" (stuck at chance)" if v[0] <= CHANCE else "")
            for k, v in st.items()
        )

    dead_wd = [k for k in wd_keys if wd[k][0] <= CHANCE]
    max_lr = _config(results).get("max_lr")
    lr = f"max LR {max_lr}" if max_lr is not None else "max LR"
    head = (
        f"The largest WD ({largest}) is the best here"
        if best == largest
        else f"WD {best} is the best here and {largest} only {fmt_num(drop, 2)} points below it"
    )
    wd_note = (
        f"{head}: at the cpu preset's {lr} on LeNet-5 the large-LR regularization is weak, so "
        f"weight decay up to {largest} does not over-regularize in {base.get('steps')} iterations."
    )
    if dead_wd:
        wd_note += (
            f" The {', '.join(dead_wd)} run never left chance level (test loss ln 10 from the "
            "first steps): a failed start, not an effect of weight decay."
        )
    mom_sorted = sorted(mom, key=lambda k: mom[k][0])
    bs_steps = summ.get("steps", {})
    return [
        Claim(
            "F8",
            "too much weight decay kills the effect",
            PAPER_WD,
            f"WD {row({k: wd[k] for k in wd_keys})}; the largest ({largest}) is "
            + (
                "the best"
                if best == largest
                else f"{'the worst' if largest_worst else 'not the worst'}, "
                f"{fmt_num(drop, 2)} points below the best ({best})"
            )
            + f" (criterion: the largest WD is the worst) {tag}",
            bool(largest_worst),
            "" if largest_worst else wd_note,
        ),
        Claim(
            "F8",
            "momentum matters little",
            PAPER_MOM,
            f"momentum {row(mom)}; spread {fmt_num(spread, 2)} points (criterion: ≤ "
            f"{MOMENTUM_LITTLE:g}) {tag}",
            spread <= MOMENTUM_LITTLE,
            ""
            if spread <= MOMENTUM_LITTLE
            else f"The spread comes from momentum {mom_sorted[0]} "
            f"({100 * mom[mom_sorted[0]][0]:.1f}%): at the peak LR the effective step "
            "LR/(1 − β) is 4× larger at 0.95 than at 0.8, and a short run on a network "
            "without BatchNorm does not recover from it; the paper's ResNet-56 with BatchNorm "
            "tolerates it.",
        ),
        Claim(
            "F8",
            "larger batch slightly better",
            PAPER_BS,
            f"batch {row({k: bs[k] for k in bs_keys})} ({summ.get('batch_protocol', 'epochs')} "
            f"held fixed: {', '.join(f'{k}: {bs_steps.get(k)} it.' for k in bs_keys)}); largest "
            f"− smallest {bs_gain:+.2f} points (criterion: > 0) {tag}",
            bs_gain > 0,
            ""
            if bs_gain > 0
            else f"At equal epochs batch {bs_keys[-1]} takes only {bs_steps.get(bs_keys[-1])} "
            "iterations with the same LRs (no LR scaling), too few for LeNet-5 to converge; "
            f"the smaller batches lie within {fmt_num(rest_spread, 2)} points of each other.",
        ),
    ]


def _panel(ax, st: dict, xs: list, labels: list[str], color: str) -> None:
    """Mean ± s.d. per value; runs stuck at chance are drawn as red crosses at the bottom."""
    ok = [(x, k) for x, k in zip(xs, labels) if st[k][0] > CHANCE]
    ax.errorbar(
        [x for x, _ in ok],
        [100 * st[k][0] for _, k in ok],
        yerr=[100 * st[k][1] for _, k in ok],
        fmt="o-",
        capsize=4,
        color=color,
        ms=7,
    )
    for x, k in zip(xs, labels):
        if st[k][0] <= CHANCE:
            ax.plot(
                [x], [0.02], "x", ms=12, mew=3, color="#D55E00", transform=ax.get_xaxis_transform()
            )
            ax.annotate(
                f"{k}: stuck at chance\n({100 * st[k][0]:.0f}%)",
                (x, 0.02),
                xycoords=ax.get_xaxis_transform(),
                xytext=(0, 14),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                color="#D55E00",
            )


def draw(results, out) -> list[Path]:
    summ, acc = _load(results)
    cl = claims(results)
    fig, axes = _style.figure(1, 3, height=6.0, sharey=True)
    ax_wd, ax_m, ax_b = axes[0]
    base = summ.get("base", {})
    wd = _stats(acc["weight_decay"])
    keys = sorted(wd, key=float)
    _panel(ax_wd, wd, [float(k) for k in keys], keys, _style.color("onecycle"))
    ax_wd.set_xscale("log")
    ax_wd.set(
        xlabel="weight decay (log)", ylabel="final test accuracy (%)", title="(a) weight decay"
    )
    if base.get("weight_decay") is not None:
        ax_wd.axvline(
            base["weight_decay"],
            color="#999999",
            ls=":",
            lw=1.2,
            label=f"base {base['weight_decay']:g}",
        )
        ax_wd.legend(loc="lower left", fontsize=9.5)

    mom = _stats(acc["momentum"])
    const = sorted((k for k in mom if k != "cyclical"), key=float)
    if const:
        _panel(ax_m, mom, [float(k) for k in const], const, _style.color("onecycle"))
    if "cyclical" in mom:
        m, s, _ = mom["cyclical"]
        cm = base.get("cyclical_momentum", [0.85, 0.95])
        ax_m.axhline(
            100 * m,
            color=_style.color("cosine"),
            lw=2,
            label=f"cyclical {cm[1]:g} → {cm[0]:g} → {cm[1]:g}",
        )
        if s:
            ax_m.axhspan(100 * (m - s), 100 * (m + s), color=_style.color("cosine"), alpha=0.15)
        ax_m.legend(loc="lower left", fontsize=9.5)
    ax_m.set(xlabel="momentum (constant)", title="(b) momentum")

    bs = _stats(acc["batch_size"])
    bkeys = sorted(bs, key=int)
    _panel(ax_b, bs, [int(k) for k in bkeys], bkeys, _style.color("onecycle"))
    ax_b.set_xscale("log", base=2)
    ax_b.set_xticks([int(k) for k in bkeys], bkeys)
    ax_b.minorticks_off()
    ax_b.set(
        xlabel=f"batch size (log; same {summ.get('batch_protocol', 'epochs')})",
        title="(c) batch size",
    )
    allm = [100 * v[0] for st in (wd, mom, bs) for v in st.values() if v[0] > CHANCE]
    lo, hi = min(allm), max(allm)
    pad = max(0.5, 0.15 * (hi - lo))
    ax_wd.set_ylim(lo - 2.5 * pad, hi + pad)
    _style.title(
        fig, "F8 (SC Figs. 9–10, Tables 5–6): sweeps under 1cycle", preset(results, EXPERIMENTS[0])
    )
    _style.add_caption(
        fig,
        [f"{c.claim.capitalize()} — {c.verdict}: {c.ours}. Paper: {c.paper}." for c in cl],
    )
    return _style.save(fig, out, NAME)
