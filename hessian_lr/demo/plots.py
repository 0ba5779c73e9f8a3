"""The demo's three figures: the range test, LR schedules and accuracy, the LR estimates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    ARM_COLORS,
    LR_IN_USE_COLOR,
    METHOD_COLORS,
    METHOD_LABELS,
    RUN_LABELS,
    DemoConfig,
    _model_label,
)
from .report import _pct
from .run_numbers import _evals

__all__ = ["plot_range_test", "plot_finder", "plot_accuracy", "plot_estimates"]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _plot_range_test(rt: Any, cfg: DemoConfig, bounds: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    rt.plot(ax)
    # Show the whole descent of the training loss (from ln 10 at chance level) and the
    # divergence, not only the region around the minimum.
    # (The first values: the divergence at the end would flatten everything else.)
    curves = [v for v in (*rt.smoothed_losses[:1], *rt.val_losses[:1]) if math.isfinite(v)]
    if curves:
        ax.set_ylim(0.0, 1.1 * max(curves))
    ax.set_xlabel("learning rate (SGD step size, rising linearly with the update)")
    ax.set_ylabel("cross-entropy loss (nats)")
    for other in fig.axes:
        if other is not ax:
            other.set_ylabel("test accuracy (fraction)")
            other.set_ylim(0.0, 1.02)
    ax.set_title(
        f"LR range test: {_model_label(cfg.model)} on {cfg.dataset}, SGD momentum "
        f"{cfg.momentum:g}, LR {cfg.range_start_lr:g} → {cfg.range_end_lr:g} over "
        f"{cfg.range_steps} steps (val = test split)\n"
        f"→ 1cycle between base {bounds['range_test']['base_lr']:.3g} and max "
        f"{bounds['range_test']['max_lr']:.3g}; find_lr's max_lr "
        f"{bounds['finder']['max_lr']:.3g} (green); piecewise constant at "
        f"{bounds['pc']['lr']:.3g}",
        fontsize=10,
    )
    ax.axvline(bounds["finder"]["max_lr"], color=ARM_COLORS["finder"], lw=1.5, ls="--")
    return _save(fig, path)


def _plot_finder(finder: Any, numbers: dict[str, Any], path: Path) -> Path:
    """find_lr's ramp: loss and η·λ/c against the LR, the edge, max_lr and its band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    finder.plot(ax)
    rt = numbers["bounds"]["range_test"]["max_lr"]
    ax.axvline(rt, color=ARM_COLORS["range_test"], lw=1.5, ls="-.", label=f"range test {rt:.3g}")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("training loss (nats)")
    f = numbers["finder"]
    ax.set_title(
        f"find_lr: exponential LR ramp, η·λ_max/c measured every few updates (c = "
        f"{f['constant']:.3g});\nstopped at the edge after {f['num_steps']} updates, "
        f"{f['num_hvps']} HVPs, {f['seconds']:.1f} s (range test: "
        f"{numbers['range_test']['num_steps']} updates); grey: max_lr ÷/× F",
        fontsize=10,
    )
    return _save(fig, path)


def _plot_accuracy(records: dict[str, list], numbers: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax_lr, ax_acc = fig.subplots(2, 1, sharex=True, height_ratios=(1, 2))
    for name, recs in records.items():
        color = ARM_COLORS[name]
        it = [r["step"] + 1 for r in recs]
        ax_lr.plot(it, [r["lr"] for r in recs], color=color, lw=1.5, label=RUN_LABELS[name])
        steps, accs = _evals(recs)
        n = numbers["runs"][name]
        ax_acc.plot(
            steps,
            [100 * a for a in accs],
            "o-",
            ms=3,
            color=color,
            lw=1.5,
            label=f"{RUN_LABELS[name]}: {_pct(n['final_test_accuracy'])} after "
            f"{n['iterations']} iterations",
        )
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning-rate schedules, same budget (momentum: 0.95–0.85 cyclic for 1cycle)")
    ax_lr.legend(fontsize=9)
    ax_lr.grid(alpha=0.3)
    all_acc = [100 * a for recs in records.values() for a in _evals(recs)[1]]
    top = max(all_acc) if all_acc else 100.0
    ax_acc.set_ylim(max(0.0, min(top - 25.0, 80.0)), min(100.0, top + 2.0))
    ax_acc.set_xlabel("iteration (optimizer steps, batches of 128)")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("Test accuracy: 1cycle at each suggestion vs a piecewise-constant baseline")
    ax_acc.legend(fontsize=9, loc="lower right")
    ax_acc.grid(alpha=0.3)
    return _save(fig, path)


def _plot_estimates(records: dict[str, list], methods: Sequence[str], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2 * len(records)), layout="constrained")
    axes = fig.subplots(len(records), 1, sharex=False, squeeze=False)[:, 0]
    for ax, (name, recs) in zip(axes, records.items()):
        it = [r["step"] + 1 for r in recs]
        ax.plot(it, [r["lr"] for r in recs], color=LR_IN_USE_COLOR, lw=2.5, label="LR in use")
        est = [r for r in recs if "estimates" in r]
        for m in methods:
            color = METHOD_COLORS.get(m, "0.5")
            xs, ys, xe, ye = [], [], [], []
            for r in est:
                e = r["estimates"].get(m)
                if e is not None and e.get("lr") is not None and e["lr"] > 0:
                    xs.append(r["step"] + 1)
                    ys.append(e["lr"])
                sm = r.get("estimates_smoothed", {}).get(m)
                if sm is not None and m in r["estimates"]:
                    xe.append(r["step"] + 1)
                    ye.append(sm)
            ax.plot(xs, ys, ".", color=color, ms=4, alpha=0.45)
            if m == "secant":
                _null_band(ax, est)
            ax.plot(xe, ye, "-", color=color, lw=1.5, label=f"{METHOD_LABELS.get(m, m)} (EMA)")
        ax.set_yscale("log")
        ax.set_ylabel("learning rate (log scale)")
        ax.set_xlabel("iteration")
        ax.set_title(
            f"{RUN_LABELS[name]}: curvature LR estimates (dots: raw, lines: EMA α = 0.1) "
            "vs the LR in use",
            fontsize=10,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best", ncol=2)
    return _save(fig, path)


def _null_band(ax: Any, records: Sequence[dict[str, Any]], tol: float = 0.1) -> None:
    """The secant's momentum-noise null: what noise alone gives (estimate / noise ratio), ±tol."""
    xs, null = [], []
    for r in records:
        e = r["estimates"].get("secant")
        if e and e.get("noise_ratio") and e.get("raw_lr") and e["raw_lr"] > 0:
            xs.append(r["step"] + 1)
            null.append(e["raw_lr"] / e["noise_ratio"])
    if xs:
        lo, hi = [v / (1 + tol) for v in null], [v * (1 + tol) for v in null]
        ax.fill_between(xs, lo, hi, color="0.6", alpha=0.35, lw=0, label="secant's noise null")


plot_range_test = _plot_range_test
plot_finder = _plot_finder
plot_accuracy = _plot_accuracy
plot_estimates = _plot_estimates
