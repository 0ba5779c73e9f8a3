"""The demo's numbers: accuracy curves, estimator summaries, iterations to a target."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def _evals(records: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    pairs = [(r["step"] + 1, r["test_accuracy"]) for r in records if "test_accuracy" in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _estimate_rows(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per method: count, median raw estimate, median estimate / LR in use, final EMA, cost."""
    out: dict[str, Any] = {}
    est_recs = [r for r in records if "estimates" in r]
    for m in methods:
        vals, ratios, hvps, secs, flagged = [], [], 0, 0.0, 0
        for r in est_recs:
            e = r["estimates"].get(m)
            if e is None:
                continue
            hvps += int(e.get("num_hvps") or 0)
            secs += float(e.get("seconds") or 0.0)
            lr = e.get("lr")
            if lr is None or not lr > 0:
                flagged += 1
                continue
            vals.append(lr)
            if r.get("lr"):
                ratios.append(lr / r["lr"])
        smoothed = [r["estimates_smoothed"].get(m) for r in est_recs if "estimates_smoothed" in r]
        smoothed = [v for v in smoothed if v is not None]
        out[m] = {
            "num_estimates": len(vals),
            "num_flagged": flagged,
            "median_lr": statistics.median(vals) if vals else None,
            "min_lr": min(vals) if vals else None,
            "max_lr": max(vals) if vals else None,
            "median_ratio_to_lr_in_use": statistics.median(ratios) if ratios else None,
            "final_smoothed_lr": smoothed[-1] if smoothed else None,
            "num_hvps": hvps,
            "seconds": secs,
        }
        if m == "secant":
            out[m].update(_null_numbers([r for r in est_recs if m in r["estimates"]]))
    return out


def _null_numbers(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The secant against its momentum-noise null (:func:`hessian_lr.lr.secant_lr`).

    Over the unflagged estimates: ``noise_ratio`` is the estimate over what pure minibatch noise
    through momentum would give at the same LR and spacing (1: indistinguishable from noise);
    ``ratio_to_lr_used`` the estimate over the LR used across its spacing;
    ``null_ratio_to_lr_in_use`` the noise value as a multiple of that LR (estimate / LR /
    noise_ratio); ``tested`` /
    ``indistinguishable``: how many estimates had the window's bootstrap band tested, and in how
    many it reached the null.
    """
    ratios, used_ratios, nulls, tested, indist = [], [], [], 0, 0
    for r in records:
        e = r["estimates"]["secant"]
        q, lr, used = e.get("noise_ratio"), e.get("lr"), e.get("lr_used")
        if q is not None and q > 0 and lr is not None and lr > 0 and used:
            ratios.append(q)
            used_ratios.append(lr / used)
            nulls.append(lr / used / q)
        if e.get("indistinguishable_from_noise") is not None:
            tested += 1
            indist += bool(e["indistinguishable_from_noise"])
    return {
        "median_noise_ratio": statistics.median(ratios) if ratios else None,
        "median_ratio_to_lr_used": statistics.median(used_ratios) if used_ratios else None,
        "null_ratio_to_lr_in_use": statistics.median(nulls) if nulls else None,
        "noise_tested": tested,
        "noise_indistinguishable": indist,
    }


def _run_numbers(result: Any, records: Sequence[dict[str, Any]], methods) -> dict[str, Any]:
    steps, accs = _evals(records)
    lambdas = [
        r["estimates"]["sharpness"].get("lambda_max")
        for r in records
        if "estimates" in r and "sharpness" in r["estimates"]
    ]
    lambdas = [v for v in lambdas if v is not None]
    return {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "iterations": result.steps,
        "final_test_accuracy": result.final_test_accuracy,
        "best_test_accuracy": result.best_test_accuracy,
        "best_at_iteration": steps[accs.index(max(accs))] if accs else None,
        "seconds": result.seconds,
        "final_train_loss": next(
            (r["train_loss"] for r in reversed(records) if "train_loss" in r), None
        ),
        "lambda_max_first_last": [lambdas[0], lambdas[-1]] if lambdas else None,
        "estimator": _estimate_rows(records, methods),
    }


def _first_reaching(records: Sequence[dict[str, Any]], target: float | None) -> int | None:
    if target is None:
        return None
    for step, acc in zip(*_evals(records)):
        if acc >= target:
            return step
    return None
