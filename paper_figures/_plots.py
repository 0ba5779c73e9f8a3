"""Panels several figures share: test accuracy (or error) per arm over time, and the LR used."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hessian_lr.training.run import Run

from . import _style
from ._data import arm_curves


def curves_panel(
    ax,
    groups: dict[str, list[Run]],
    arms: Sequence[tuple[str, str]],
    *,
    key: str = "test_accuracy",
    per: float = 1.0,
    error: bool = False,
    colors: dict[str, str] | None = None,
    styles: dict[str, str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean (± min-max over seeds) of ``key`` per arm vs (step + 1) / ``per``.

    Args:
        ax: the axes.
        groups: arm -> runs (one per seed).
        arms: (arm, label) pairs in legend order; arms absent from ``groups`` are skipped.
        key: record key (``test_accuracy``, ``test_loss``, ``train_loss``).
        per: divide iterations by this (steps per epoch -> epochs).
        error: plot 1 - value (test error).
        colors, styles: per-arm overrides of colour and line style.

    Returns:
        arm -> (x, mean y) as drawn.
    """
    out = {}
    for i, (arm, label) in enumerate(arms):
        if arm not in groups:
            continue
        x, ys = arm_curves(groups[arm], key)
        if not len(x):
            continue
        if error:
            ys = 1.0 - ys
        x = (x + 1) / per
        c = (colors or {}).get(arm) or _style.color(arm, i)
        _style.band(ax, x, ys, label=label, c=c, ls=(styles or {}).get(arm, "-"))
        mean = np.nanmean(ys, axis=0)
        ax.plot(x[-1:], mean[-1:], "o", color=c, ms=6)
        out[arm] = (x, mean)
    return out


def lr_panel(
    ax,
    groups: dict[str, list[Run]],
    arms: Sequence[tuple[str, str]],
    *,
    per: float = 1.0,
    log: bool = False,
    colors: dict[str, str] | None = None,
    styles: dict[str, str] | None = None,
) -> None:
    """The LR each arm used (first seed) vs (step + 1) / ``per``."""
    for i, (arm, label) in enumerate(arms):
        if arm not in groups:
            continue
        x, lrs = arm_curves(groups[arm][:1], "lr")
        if not len(x):
            continue
        c = (colors or {}).get(arm) or _style.color(arm, i)
        ax.plot((x + 1) / per, lrs[0], color=c, ls=(styles or {}).get(arm, "-"), label=label)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate" + (" (log)" if log else ""))
