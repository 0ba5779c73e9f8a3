"""The demo's text: the range-test description and ``report.md``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .config import METHOD_LABELS, DemoConfig, _model_label

__all__ = ["describe_range_test", "write_report"]


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{spec}}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def describe_range_test(result: Any) -> list[str]:
    """Human-readable lines for a ``RangeTestResult``: suggestions, flags, curvature check."""
    s = result.suggestions
    lines = []
    stop = result.stop_reason or "reached end_lr without diverging"
    lines.append(f"updates: {result.num_updates} of {len(result.lrs)} records; {stop}")
    for name, sug in s.as_dict().items():
        flags = f"  [{', '.join(sug.flags)}]" if sug.flags else ""
        lines.append(f"{name:>16}: {_fmt(sug.lr, '.4g'):>9}  ({sug.rule}){flags}")
    if s.plateau_lrs is not None:
        lo, hi = s.plateau_lrs
        lines.append(
            f"{'plateau':>16}: accuracy within 5 % of its peak for LR in [{lo:.4g}, {hi:.4g}] "
            f"(ratio {_fmt(s.plateau_ratio)})"
        )
    c = result.curvature
    if c is not None and c.lambda_max is not None:
        mom = f", (2+2β)/λ_max = {c.momentum_bound:.4g}" if c.momentum_bound else ""
        lines.append(
            f"{'curvature':>16}: λ_max = {c.lambda_max:.4g} → 2/λ_max = "
            f"{_fmt(c.two_over_lambda, '.4g')}{mom}; gᵀg/gᵀHg = {_fmt(c.quadratic_lr, '.4g')} "
            f"({c.num_hvps} HVPs)"
        )
    return lines


def _report(
    numbers: dict[str, Any], rt: Any, cfg: DemoConfig, files: dict[str, str], out: Path
) -> str:
    lines = [
        *_range_section(numbers, rt, cfg),
        *_runs_section(numbers, cfg),
        *_estimates_section(numbers, cfg),
        f"## Files (in `{out}`)",
        "",
        *[f"- {name}: `{os.path.relpath(path, out)}`" for name, path in files.items()],
        "",
    ]
    return "\n".join(lines)


def _range_section(numbers: dict[str, Any], rt: Any, cfg: DemoConfig) -> list[str]:
    """The title, the setting, and section 1 (the range test and the bounds chosen from it)."""
    b = numbers["bounds"]
    return [
        "# hessian-lr demo report",
        "",
        f"{_model_label(cfg.model)} on {cfg.dataset} ({numbers['data']['train']} training / "
        f"{numbers['data']['test']} test images), SGD, batch {cfg.batch_size}, weight decay "
        f"{cfg.weight_decay:g}, seed {cfg.seed}. Device {numbers['device']}, torch "
        f"{numbers['torch']}, {numbers['threads']} thread(s). Wall time "
        f"**{numbers['seconds']:.1f} s**" + (" (quick mode)." if numbers["quick"] else "."),
        "",
        "## 1. LR range test",
        "",
        f"LR {cfg.range_start_lr:g} → {cfg.range_end_lr:g} (linear) over {cfg.range_steps} "
        f"updates, momentum {cfg.momentum:g}, test accuracy every {cfg.range_val_every} updates "
        f"({numbers['range_test']['seconds']:.1f} s).",
        "",
        "```",
        *describe_range_test(rt),
        "```",
        "",
        f"Chosen: 1cycle **max_lr = {b['max_lr']:.4g}** ({b['max_lr_rule']}), **base_lr = "
        f"{b['base_lr']:.4g}** ({b['base_lr_rule']}); piecewise constant starts at "
        f"**{b['pc_lr']:.4g}** ({b['pc_lr_rule']}).",
        *[f"Note: {n}." for n in b["notes"]],
        "",
    ]


def _runs_section(numbers: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """Section 2: the two runs side by side, and when the baseline reaches 1cycle's accuracy."""
    b = numbers["bounds"]
    r1, r2 = numbers["runs"]["onecycle"], numbers["runs"]["pc"]
    lines = [
        "## 2. 1cycle vs piecewise constant",
        "",
        "| run | schedule | iterations | final test acc. | best test acc. (at) | wall time |",
        "|---|---|---:|---:|---:|---:|",
        f"| 1cycle | {b['base_lr']:.3g} → {b['max_lr']:.3g} → {b['base_lr']:.3g}, tail to "
        f"{b['base_lr'] * 1e-3:.2g}; momentum 0.95 → 0.85 → 0.95 | {r1['iterations']} | "
        f"{_pct(r1['final_test_accuracy'])} | {_pct(r1['best_test_accuracy'])} "
        f"({r1['best_at_iteration']}) | {r1['seconds']:.1f} s |",
        f"| piecewise constant | {b['pc_lr']:.3g}, ×0.1 at {numbers['pc_milestones'][0]} and "
        f"{numbers['pc_milestones'][1]}; momentum {cfg.momentum:g} | {r2['iterations']} | "
        f"{_pct(r2['final_test_accuracy'])} | {_pct(r2['best_test_accuracy'])} "
        f"({r2['best_at_iteration']}) | {r2['seconds']:.1f} s |",
        "",
    ]
    reach = numbers["pc_reaches_onecycle_accuracy_at"]
    lines.append(
        f"The baseline first reaches the 1cycle run's final accuracy "
        f"({_pct(r1['final_test_accuracy'])}) at iteration **{reach}** of {r2['iterations']}."
        if reach is not None
        else f"The baseline never reaches the 1cycle run's final accuracy "
        f"({_pct(r1['final_test_accuracy'])}) in {r2['iterations']} iterations."
    )
    lines.append(
        f"One test image is {100 / numbers['data']['test']:.2f} % of the test set; the runs are "
        f"single seeds (seed {cfg.seed}), so differences of a few images are noise."
    )
    return lines


def _estimates_section(numbers: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """Section 3: the LREstimator's estimates of both runs, λ_max first and last, the caveat."""
    r1, r2 = numbers["runs"]["onecycle"], numbers["runs"]["pc"]
    lines = [
        "",
        "## 3. Curvature LR estimates (LREstimator)",
        "",
        f"Every {cfg.estimator_every} steps, on the training batch just used: "
        + "; ".join(f"`{m}` = {METHOD_LABELS.get(m, m)}" for m in cfg.estimator_methods)
        + ". EMA as in SC §5 (α = 0.1, initial 0.1). Ratio = estimate / LR in use.",
        "",
        "| run | method | estimates | median | range | median ratio | final EMA | HVPs | time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in (("1cycle", r1), ("piecewise constant", r2)):
        for m, e in run["estimator"].items():
            flagged = f" (+{e['num_flagged']} flagged)" if e["num_flagged"] else ""
            lines.append(
                f"| {name} | `{m}` | {e['num_estimates']}{flagged} | {_fmt(e['median_lr'])} | "
                f"{_fmt(e['min_lr'])} – {_fmt(e['max_lr'])} | "
                f"{_fmt(e['median_ratio_to_lr_in_use'])} | {_fmt(e['final_smoothed_lr'])} | "
                f"{e['num_hvps']} | {e['seconds']:.1f} s |"
            )
    for name, run in (("1cycle", r1), ("piecewise constant", r2)):
        lam = run["lambda_max_first_last"]
        if lam:
            lines.append(
                f"\n{name}: λ_max of the batch loss {lam[0]:.4g} at the first estimate, "
                f"{lam[1]:.4g} at the last (2/λ_max = {2 / lam[0]:.3g} → {2 / lam[1]:.3g})."
            )
    lines += [
        "",
        "Caveat: the secant estimate (SC Eq. 8) is derived for plain SGD; these runs use "
        "momentum and weight decay (the estimator records this with each estimate).",
        "",
    ]
    return lines


# ----------------------------------------------------------------------------- entry point


def write_report(
    numbers: dict[str, Any], rt: Any, cfg: DemoConfig, files: dict[str, str], out: Path
) -> str:
    """The text of ``report.md`` (every number from ``numbers`` and the range test ``rt``)."""
    return _report(numbers, rt, cfg, files, out)
