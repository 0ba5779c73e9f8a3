"""Reading the secant-study arms (F5, F13, F14): ``<results>/<experiment>/<arm>/arm.json``.

The experiments write one JSON per arm (``experiments/_secant_lab.py``) and a ``summary.json``;
the figures read only these. A missing experiment or arm raises :class:`MissingResults` with the
command that produces it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hessian_lr.records import read_json

from ._data import MissingResults, summary

__all__ = ["load_arm", "arm_series", "ema", "EMA_ALPHA", "EMA_INIT", "load_summary"]

EMA_ALPHA, EMA_INIT = 0.1, 0.1  # the paper's EMA (alpha, initial value)


def load_summary(results: str | Path, experiment: str) -> dict[str, Any]:
    return summary(results, experiment)


def load_arm(results: str | Path, experiment: str, name: str) -> dict[str, Any]:
    path = Path(results) / experiment / name / "arm.json"
    if not path.exists():
        raise MissingResults(experiment, results, f"arm {name} missing")
    return read_json(path)


def arm_series(arm: dict[str, Any], kind: str, spacing: int | None = None):
    """(steps, ratio estimate/ε, estimate in LR units) as arrays; finite values only."""
    block = arm["secant"][str(spacing)] if kind == "secant" else arm["same_batch"]
    lrs = arm["lr"]
    t = [s for s, r in zip(block["step"], block["ratio"]) if r is not None]
    r = [v for v in block["ratio"] if v is not None]
    est = [v * lrs[s] for s, v in zip(t, r)]
    return np.asarray(t, float), np.asarray(r, float), np.asarray(est, float)


def ema(values, alpha: float = EMA_ALPHA, init: float = EMA_INIT) -> np.ndarray:
    out, s = [], init
    for v in values:
        if v is not None and math.isfinite(v):
            s = alpha * v + (1 - alpha) * s
        out.append(s)
    return np.asarray(out, float)
