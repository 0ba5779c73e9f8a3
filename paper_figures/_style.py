"""One shared look for every paper figure: Agg backend, sizes for README width, colours per arm.

Figures are drawn at 10 in wide and saved at 100 dpi (PNG, ~1000 px: crisp when a README shows it
at ~800 px) and as PDF. Fonts are sized so that tick labels stay >= 9 px at README width. Each arm
(1cycle, piecewise constant, fixed, CLR, SGDR, ...) and each LR-estimate method has one colour
used by every figure, so a reader learns it once. Saved files carry no timestamps, so redrawing
from the same results gives the same PDF bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "ARM_COLORS",
    "METHOD_COLORS",
    "WIDTH",
    "apply",
    "color",
    "figure",
    "add_caption",
    "save",
    "band",
    "percent",
    "sequential",
    "title",
    "figure_with_legend",
    "legend_row",
]

WIDTH = 10.0  # inches; at DPI 100 that is 1000 px
DPI = 100

# Colour-blind-safe (Okabe-Ito / tab10 subset), one per arm across all figures.
ARM_COLORS: dict[str, str] = {
    "onecycle": "#0072B2",  # blue: the papers' proposal
    "pc": "#D55E00",  # vermilion: piecewise-constant / multistep baseline
    "pc_same": "#CC79A7",  # reddish purple: PC at 1cycle's iterations
    "step": "#D55E00",
    "inv": "#E69F00",  # orange
    "fixed": "#555555",  # grey
    "exp": "#999999",
    "clr": "#0072B2",
    "triangular": "#0072B2",
    "triangular2": "#009E73",  # green
    "exp_range": "#CC79A7",  # purple
    "sgdr": "#009E73",
    "cosine": "#56B4E9",  # sky blue
    "momentum": "#7F7F7F",
    "train": "#0072B2",
    "test": "#D55E00",
}

# LR-estimate methods (F5): the paper's cheap estimate strong, the exact ones distinct.
METHOD_COLORS: dict[str, str] = {
    "secant": "#000000",
    "secant_hvp": "#009E73",
    "quadratic": "#0072B2",
    "newton": "#E69F00",  # 1/lambda_max
    "stable": "#CC79A7",  # 2/lambda_max
    "lr": "#D55E00",  # the LR in use
}

_CYCLE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]


def apply() -> None:
    """Set the shared rcParams (idempotent)."""
    plt.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "font.size": 12,
            "axes.titlesize": 12.5,
            "axes.labelsize": 12,
            "xtick.labelsize": 11,
            "ytick.labelsize": 11,
            "legend.fontsize": 10.5,
            "legend.framealpha": 0.85,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "lines.linewidth": 1.8,
            "axes.prop_cycle": matplotlib.cycler(color=_CYCLE),
            "figure.titlesize": 14,
            "figure.titleweight": "bold",
            "pdf.fonttype": 42,
            "svg.hashsalt": "hessian_lr",
        }
    )


def color(arm: str, index: int = 0) -> str:
    """Colour of an arm (``"onecycle"``, ``"pc"``, ...); unknown arms take the cycle."""
    key = arm.lower()
    for name, c in ARM_COLORS.items():
        if key == name:
            return c
    for name, c in ARM_COLORS.items():
        if key.startswith(name):
            return c
    return _CYCLE[index % len(_CYCLE)]


def figure(nrows: int = 1, ncols: int = 1, *, height: float = 4.6, **kwargs):
    """A ``WIDTH``-wide figure with constrained layout; returns ``(fig, axes)``."""
    apply()
    kwargs.setdefault("squeeze", False)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, height), layout="constrained", **kwargs)
    return fig, axes


def add_caption(fig, lines: str | Sequence[str], *, width: int = 112) -> None:
    """Print the caption (setting + claim, ours vs the paper's) under the axes."""
    if isinstance(lines, str):
        lines = [lines]
    text = "\n".join(textwrap.fill(line, width) for line in lines if line)
    if not text:
        return
    fig.get_layout_engine().set(h_pad=0.08)
    # A zero-size axes below the others carries the text, so constrained layout makes room.
    fig.supxlabel(text, fontsize=10.5, ha="left", x=0.01, linespacing=1.35, color="#222222")


def save(fig, out: str | Path, name: str) -> list[Path]:
    """Write ``<out>/<name>.png`` and ``.pdf`` (no timestamps) and close the figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None})
    plt.close(fig)
    return [png, pdf]


def band(
    ax,
    x: np.ndarray,
    ys: Iterable[np.ndarray],
    *,
    label: str,
    c: str,
    ls: str = "-",
    lw: float | None = None,
    alpha: float = 0.18,
) -> None:
    """Mean line with a min-max band over seeds (a single seed: just the line)."""
    arr = np.asarray(list(ys), dtype=float)
    if arr.ndim == 1:
        arr = arr[None]
    mean = np.nanmean(arr, axis=0)
    n = arr.shape[0]
    marker = "o" if len(x) <= 40 else None
    ax.plot(
        x,
        mean,
        ls,
        color=c,
        lw=lw,
        marker=marker,
        ms=3.5,
        label=label + (f" (mean of {n} seeds)" if n > 1 else ""),
    )
    if n > 1:
        ax.fill_between(x, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=c, alpha=alpha)


def percent(ax, axis: str = "y") -> None:
    """Format an accuracy axis (fractions) as percent."""
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(
        PercentFormatter(1.0, decimals=None)
    )


def sequential(n: int, name: str = "viridis") -> list:
    """``n`` colours along a sequential colormap (for ordered settings: lengths, sizes)."""
    cmap = matplotlib.colormaps[name]
    return [cmap(0.12 + 0.72 * i / max(1, n - 1)) for i in range(n)]


def title(fig, text: str, preset: str) -> None:
    """Figure title: the figure, its paper source and what it shows, then the preset used."""
    fig.suptitle(f"{text} [{preset} preset]")


def figure_with_legend(
    nrows: int = 1,
    ncols: int = 2,
    *,
    height: float = 5.0,
    legend_ratio: float = 0.14,
    width_ratios: Sequence[float] | None = None,
):
    """A figure whose top row is one shared legend strip; returns ``(fig, axes, ax_legend)``.

    (A figure-level ``legend(loc="outside upper center")`` overlaps the suptitle under
    constrained layout, so the legend gets an axes of its own.)
    """
    apply()
    fig = plt.figure(figsize=(WIDTH, height), layout="constrained")
    grid = fig.add_gridspec(
        nrows + 1,
        ncols,
        height_ratios=[legend_ratio * nrows, *([1] * nrows)],
        width_ratios=width_ratios,
    )
    ax_leg = fig.add_subplot(grid[0, :])
    ax_leg.axis("off")
    axes = np.array([[fig.add_subplot(grid[r + 1, c]) for c in range(ncols)] for r in range(nrows)])
    return fig, axes, ax_leg


def legend_row(ax_leg, axes: Iterable, *, ncol: int = 4, fontsize: float = 10, extra=()) -> None:
    """One legend in ``ax_leg`` with every labelled artist of ``axes`` (first label wins)."""
    seen: dict[str, object] = {}
    for h in extra:
        seen.setdefault(h.get_label(), h)
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    ax_leg.legend(list(seen.values()), list(seen), loc="center", ncol=ncol, fontsize=fontsize)
