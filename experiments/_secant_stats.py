"""Statistics of the secant-study arms (F5, F13, F14): EMA, medians, windows, correlations.

Pure functions of the per-arm records written by ``_secant_lab.run_arm`` (lists, ``None`` for
non-finite values), so the summaries can be recomputed from the saved JSON without training.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "EMA_ALPHA",
    "EMA_INIT",
    "ema",
    "series",
    "estimates",
    "running_median",
    "med",
    "window_table",
    "corr_tables",
]

EMA_ALPHA, EMA_INIT = 0.1, 0.1  # the paper's EMA: LR <- α ε* + (1 − α) LR, started at 0.1


def ema(values: Sequence[float], alpha: float = EMA_ALPHA, init: float = EMA_INIT) -> list[float]:
    """The paper's EMA of a series (non-finite values leave it unchanged)."""
    out, s = [], init
    for v in values:
        if v is not None and math.isfinite(v):
            s = alpha * v + (1 - alpha) * s
        out.append(s)
    return out


def series(arm: dict[str, Any], kind: str, spacing: int | None = None) -> tuple[list, list]:
    """(steps, ratio estimate/ε) of ``secant`` at ``spacing`` or of ``same_batch``; finite only."""
    block = arm["secant"][str(spacing)] if kind == "secant" else arm["same_batch"]
    pairs = [(t, r) for t, r in zip(block["step"], block["ratio"]) if r is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def estimates(arm: dict[str, Any], kind: str, spacing: int | None = None) -> tuple[list, list]:
    """(steps, estimate in LR units = ratio × ε at the triple's first step)."""
    steps, ratios = series(arm, kind, spacing)
    lrs = arm["lr"]
    return steps, [r * lrs[t] for t, r in zip(steps, ratios)]


def running_median(values: Sequence[float], width: int = 5) -> list[float]:
    h = width // 2
    return [statistics.median(values[max(0, i - h) : i + h + 1]) for i in range(len(values))]


def med(values: Sequence[float]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(statistics.median(v)) if v else math.nan


def _geo(values: Sequence[float]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x) and x > 0]
    return float(math.exp(sum(map(math.log, v)) / len(v))) if v else math.nan


def window_table(arm: dict[str, Any], spacings: Sequence[int]) -> dict[str, list[float]]:
    """One row per exact-HVP probe (after the first): every estimate, in LR units.

    Per-step estimates (secant at each spacing, same-batch) are the geometric mean over the
    window since the previous probe (triples starting in it); the LR is the window's geometric
    mean; the exact-HVP estimates (both BN modes) are the probe's values.
    """
    probes = arm["probes"]
    lrs = arm["lr"]
    per_step = {f"secant_s{s}": estimates(arm, "secant", s) for s in spacings}
    per_step["same_batch"] = estimates(arm, "same_batch")
    table: dict[str, list[float]] = {"step": [], "lr": []}
    steps = probes["step"]
    for k in range(1, len(steps)):
        lo, hi = steps[k - 1], steps[k]
        table["step"].append(hi)
        table["lr"].append(_geo(lrs[lo:hi]))
        for name, (ts, vs) in per_step.items():
            table.setdefault(name, []).append(_geo([v for t, v in zip(ts, vs) if lo <= t < hi]))
        for mode in ("train", "eval"):
            if mode not in probes or not probes[mode]:
                continue
            for key, label in (
                ("secant_hvp", "sum|g|/sum|Hg|"),
                ("quadratic", "gg/gHg"),
                ("newton", "1/lambda_max"),
            ):
                vals = probes[mode].get(key, [])
                v = vals[k] if k < len(vals) and vals[k] is not None else math.nan
                table.setdefault(f"{label} [{mode}]", []).append(v)
    return table


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 4:
        return math.nan
    x, y = x[ok], y[ok]
    if np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _residual(v: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """v minus its least-squares fit on [1, log LR] (on a constant LR: minus its mean)."""
    out = np.full_like(v, np.nan)
    ok = np.isfinite(v) & np.isfinite(lr)
    if ok.sum() < 3:
        return out
    if np.std(lr[ok]) < 1e-12:
        out[ok] = v[ok] - v[ok].mean()
        return out
    a = np.stack([np.ones(ok.sum()), lr[ok]], axis=1)
    coef, *_ = np.linalg.lstsq(a, v[ok], rcond=None)
    out[ok] = v[ok] - a @ coef
    return out


def corr_tables(table: dict[str, list[float]]) -> dict[str, Any]:
    """Log-log correlations of every estimate with the LR and with each other, raw and with
    log LR partialled out (residuals of a linear fit on log LR)."""

    def log(vals):
        a = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, np.log(a), np.nan)

    names = [k for k in table if k not in ("step", "lr")]
    loglr = log(table["lr"])
    logs = {n: log(table[n]) for n in names}
    resid = {n: _residual(logs[n], loglr) for n in names}
    with_lr = {n: _corr(logs[n], loglr) for n in names}
    raw = [[_corr(logs[a], logs[b]) for b in names] for a in names]
    partial = [[_corr(resid[a], resid[b]) for b in names] for a in names]
    return {
        "names": names,
        "n": int(len(loglr)),
        "lr_varies": bool(np.nanstd(loglr) > 1e-12) if len(loglr) else False,
        "with_lr": with_lr,
        "raw": raw,
        "partial": partial,
    }


def pooled_corr(tables: Sequence[dict[str, list[float]]]) -> dict[str, Any]:
    """Correlations over the windows of several runs pooled; the LR is partialled out within
    each run (so a run's own level does not count as correlation), then residuals are pooled.

    Only runs whose LR varies enter ``with_lr``; every run enters ``partial``.
    """
    if not tables:
        return {}
    names = [k for k in tables[0] if k not in ("step", "lr")]

    def log(vals):
        a = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, np.log(a), np.nan)

    logs = {n: [] for n in names}
    resid = {n: [] for n in names}
    lr_logs, lr_var = [], []
    for t in tables:
        loglr = log(t["lr"])
        varies = bool(np.nanstd(loglr) > 1e-12)
        for n in names:
            v = log(t.get(n, [math.nan] * len(loglr)))
            resid[n].append(_residual(v, loglr))
            if varies:
                logs[n].append(v)
        if varies:
            lr_logs.append(loglr)
        lr_var.append(varies)
    cat = {n: np.concatenate(resid[n]) for n in names}
    with_lr = {}
    if lr_logs:
        lr_all = np.concatenate(lr_logs)
        with_lr = {n: _corr(np.concatenate(logs[n]), lr_all) for n in names}
    return {
        "names": names,
        "n": int(sum(len(t["lr"]) for t in tables)),
        "with_lr": with_lr,
        "partial": [[_corr(cat[a], cat[b]) for b in names] for a in names],
    }
