"""Plot an estimator's records: raw and smoothed estimates, the LR in use, the secant's null.

Reads records only (``LREstimator.history``, the lines of its ``record_path`` JSONL, or a run's
``records.jsonl``), never live objects, so the same function draws a finished run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["plot_estimates"]


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _series(records: Sequence[Mapping[str, Any]], method: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("step", "raw", "ema", "null", "lo", "hi")}
    for rec in records:
        est = (rec.get("estimates") or {}).get(method)
        if not isinstance(est, Mapping):
            continue
        smoothed = rec.get("smoothed") or rec.get("estimates_smoothed") or {}
        raw = _num(est.get("raw_lr", est.get("lr")))
        out["step"].append(_num(rec.get("step")))
        out["raw"].append(raw)
        out["ema"].append(_num(smoothed.get(method)))
        ratio = _num(est.get("noise_ratio"))
        null = raw / ratio if ratio and math.isfinite(ratio) and ratio > 0 else math.nan
        band = est.get("noise_band") or (math.nan, math.nan)
        out["null"].append(null)
        out["lo"].append(null * _num(band[0]) / ratio if math.isfinite(null) else math.nan)
        out["hi"].append(null * _num(band[1]) / ratio if math.isfinite(null) else math.nan)
    return out


def plot_estimates(
    records: Iterable[Mapping[str, Any]],
    methods: Sequence[str] | None = None,
    *,
    ax: Any = None,
    log: bool = True,
) -> Any:
    """Draw each method's raw estimates (dots) and EMA (line) against the LR in use (black).

    For the secant, the momentum-noise null ε·c(μ, s) is drawn dashed (the value Eq. 8 returns
    on pure minibatch noise; derived from each record's ``raw_lr / noise_ratio``), with the
    bootstrap band of the recent ratios shaded where it was computed. Flagged estimates (``lr``
    nan) are drawn from ``raw_lr``.

    Args:
        records: dicts with ``step``, ``lr`` and ``estimates`` (method -> result dict), plus
            ``smoothed`` or ``estimates_smoothed`` (method -> EMA).
        methods: which methods to draw (default: every method found).
        ax: a matplotlib Axes to draw into (default: a new figure).
        log: logarithmic LR axis.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    records = [r for r in records if isinstance(r, Mapping)]
    found: list[str] = []
    for rec in records:
        for m in rec.get("estimates") or {}:
            if m not in found:
                found.append(m)
    methods = list(methods) if methods is not None else found
    if not methods:
        raise ValueError("no estimates in the records (expected an 'estimates' mapping per record)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    steps = [_num(r.get("step")) for r in records if r.get("lr") is not None]
    lrs = [_num(r.get("lr")) for r in records if r.get("lr") is not None]
    if steps:
        ax.plot(steps, lrs, color="black", lw=1.5, label="LR in use ε")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        s = _series(records, m)
        c = colors[i % len(colors)]
        ax.plot(s["step"], s["raw"], ".", ms=3, alpha=0.5, color=c, label=f"{m} (raw)")
        ax.plot(s["step"], s["ema"], "-", lw=1.2, color=c, label=f"{m} (EMA)")
        if any(math.isfinite(v) for v in s["null"]):
            ax.plot(s["step"], s["null"], "--", lw=1, color=c, label=f"{m}: noise null ε·c(μ, s)")
            ax.fill_between(s["step"], s["lo"], s["hi"], color=c, alpha=0.12, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=7, loc="best")
    return fig
