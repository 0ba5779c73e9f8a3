"""The demo's text: the range-test description and ``report.md``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .config import METHOD_LABELS, RUN_LABELS, DemoConfig, _model_label
from .f16 import F16_LABELS, F16_SGD, F16_SOURCE, calibrated

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
        *_answer_section(numbers, rt, cfg),
        *_runs_section(numbers, cfg),
        *_trust_section(numbers),
        *_estimates_section(numbers, cfg),
        f"## Files (in `{out}`)",
        "",
        *[f"- {name}: `{os.path.relpath(path, out)}`" for name, path in files.items()],
        "",
    ]
    return "\n".join(lines)


def _answer_section(numbers: dict[str, Any], rt: Any, cfg: DemoConfig) -> list[str]:
    """The title, the setting, and section 1: both suggestions, how each was found, its cost."""
    f, r, b = numbers["finder"], numbers["range_test"], numbers["bounds"]
    lo, hi = f["interval"]
    steps = f"{f['num_steps'] / r['num_steps']:.0%}" if r["num_steps"] else "n/a"
    return [
        "# hessian-lr demo report",
        "",
        f"{_model_label(cfg.model)} on {cfg.dataset} ({numbers['data']['train']} training / "
        f"{numbers['data']['test']} test images), SGD momentum {cfg.momentum:g}, batch "
        f"{cfg.batch_size}, weight decay {cfg.weight_decay:g}, seed {cfg.seed}. Device "
        f"{numbers['device']}, torch {numbers['torch']}, {numbers['threads']} thread(s). Wall "
        f"time **{numbers['seconds']:.1f} s**" + (" (quick mode)." if numbers["quick"] else "."),
        "",
        "## 1. The LR to use, and what finding it cost",
        "",
        "| method | suggested max LR | band / rule | updates | seconds | HVPs |",
        "|---|---:|---|---:|---:|---:|",
        f"| `find_lr` (stability-aware) | **{_fmt(f['max_lr'], '.4g')}** | [{_fmt(lo, '.3g')}, "
        f"{_fmt(hi, '.3g')}] (×{f['factor']:.3g}); k·edge_lr, edge_lr = "
        f"{_fmt(f['edge_lr'], '.4g')}, k = {f['calibration']:.3g} | {f['num_steps']} | "
        f"{f['seconds']:.1f} | {f['num_hvps']} |",
        f"| classic range test | **{b['range_test']['max_lr']:.4g}** | "
        f"{b['range_test']['max_lr_rule']}; {rt.stop_reason or 'no divergence'} | "
        f"{r['num_steps']} | {r['seconds']:.1f} | {r['num_hvps']} |",
        "",
        f"`find_lr` raised the LR exponentially from {cfg.finder_start_lr:g} and measured "
        f"η·λ_max/c (c = 2 + 2β = {f['constant']:.3g}, heavy ball) every "
        f"{cfg.finder_measure_every} updates by warm-started Lanczos; it stopped "
        f"({f['stop_reason']}) when the ratio reached 1, after {f['num_steps']} updates "
        f"({steps} of the range test's), and suggests k·edge_lr with k and the band ×F from "
        f"study F16.{_sharpening(f)} The range test ran its whole linear ramp "
        f"{cfg.range_start_lr:g} → {cfg.range_end_lr:g} with test accuracy every "
        f"{cfg.range_val_every} updates (its HVPs: the curvature cross-check at the start):",
        "",
        "```",
        *describe_range_test(rt),
        "```",
        *[f"Note: {n}." for n in b["notes"]],
        "",
    ]


def _sharpening(f: dict[str, Any]) -> str:
    lam = f.get("sharpness_first_last")
    if not lam:
        return ""
    return (
        f" Along the ramp λ_max of the probe batch went from {lam[0]:.3g} (first measurement) "
        f"to {lam[1]:.3g} (last)."
    )


def _run_row(label: str, schedule: str, run: dict[str, Any]) -> str:
    return (
        f"| {label} | {schedule} | {run['iterations']} | **{_pct(run['final_test_accuracy'])}** "
        f"| {_pct(run['best_test_accuracy'])} ({run['best_at_iteration']}) | "
        f"{run['seconds']:.1f} s |"
    )


def _runs_section(numbers: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """Section 2: 1cycle at each suggestion and the baseline, same budget, final accuracies."""
    b, runs = numbers["bounds"], numbers["runs"]
    rows = []
    for name in ("finder", "range_test"):
        lo, hi = b[name]["base_lr"], b[name]["max_lr"]
        rows.append(
            _run_row(
                RUN_LABELS[name],
                f"{lo:.3g} → {hi:.3g} → {lo:.3g}, tail to {lo * 1e-3:.2g}; momentum 0.95 → "
                "0.85 → 0.95",
                runs[name],
            )
        )
    m = numbers["pc_milestones"]
    rows.append(
        _run_row(
            RUN_LABELS["pc"],
            f"{b['pc']['lr']:.3g} ({b['pc']['lr_rule']}), ×0.1 at {m[0]} and {m[1]}; momentum "
            f"{cfg.momentum:g}",
            runs["pc"],
        )
    )
    return [
        "## 2. Training at each suggestion (same budget)",
        "",
        "| run | schedule | iterations | final test acc. | best test acc. (at) | wall time |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"One test image is {100 / numbers['data']['test']:.2f} % of the test set; each run is "
        f"one seed (seed {cfg.seed}), so differences of a few images are noise.",
        "",
    ]


def _trust_rows(numbers: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(F16 name, this run's value, its calibrated reading, note) for each F16 estimator."""
    f, th = numbers["finder"], numbers["theta0"]["estimates"]
    rows = []
    for name in F16_SGD:
        if name == "ramp_cross":  # the finder's own reading, with its own (k, F)
            value, reading = f["edge_lr"], (f["max_lr"], *f["interval"])
            note = f"{f['num_hvps']} HVPs, {f['num_steps']} updates"
        elif name == "eta_div":
            value, reading = None, None
            note = "not measured: the demo's range test is linear and " + (
                "diverged" if numbers["range_test"]["stop_reason"] else "did not diverge"
            )
        else:
            value = th[name]["lr"]
            reading = calibrated(name, value)
            note = (
                f"{th[name]['num_hvps']} HVP(s)"
                if name != "eq8_p1"
                else (
                    f"{th[name]['noise_ratio']:.2f}× its noise null"
                    if th[name]["noise_ratio"] is not None
                    else "no noise ratio"
                )
            )
        rows.append((name, value, reading, note))
    order = {n: (not F16_SGD[n].predicts, F16_SGD[n].factor) for n in F16_SGD}
    return sorted(rows, key=lambda row: order[row[0]])


def _trust_section(numbers: dict[str, Any]) -> list[str]:
    """Section 3: which curvature estimate to trust, by F16's verdicts, each read calibrated."""
    lines = [
        "## 3. Which estimate to trust (study F16)",
        "",
        "F16 measured, over models × seeds with heavy-ball SGD, how well each estimate E predicts "
        "η_max, the largest constant LR that trains, once calibrated as k·E. Rows: F16's verdict "
        "first, then its factor error. Calibrated reading = k·E [÷F, ×F] for this run "
        f"({F16_SOURCE}).",
        "",
        "| estimate | F16: predicts? | factor error F [95 % CI] | Spearman ρ | this run E "
        "| calibrated reading | cost / note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, value, reading, note in _trust_rows(numbers):
        row = F16_SGD[name]
        read = (
            f"**{reading[0]:.3g}** [{_fmt(reading[1])}, {_fmt(reading[2])}]"
            if reading and reading[0] is not None
            else "n/a"
        )
        label = F16_LABELS[name].replace("|", "\\|")  # a pipe would split the table cell
        lines.append(
            f"| {label} | {'**yes**' if row.predicts else 'no'} | ×{row.factor:.3g} "
            f"[{_fmt(row.ci[0])}, {_fmt(row.ci[1])}] | {row.rho:.2f} | {_fmt(value, '.4g')} | "
            f"{read} | {note} |"
        )
    lines += ["", *_eq8_note(numbers), ""]
    return lines


def _eq8_verdict() -> str:
    """F16's reading of Eq. 8 at a probe LR, from the copied table (never a fixed sentence)."""
    row = F16_SGD["eq8_p1"]
    verdict = "predicts" if row.predicts else "does not predict"
    return (
        f"In F16 ({F16_SOURCE.split(':')[0]}) it {verdict} η_max: factor error ×{row.factor:.3g}, "
        f"ρ {row.rho:.2f}, worst left-out model ×{row.heldout:.3g}. It follows the probe LR "
        "(Eq. 8 ≈ c·η_p under momentum noise), not the curvature."
    )


def _eq8_note(numbers: dict[str, Any]) -> list[str]:
    e = numbers["theta0"]["estimates"]["eq8_p1"]
    if e["noise_ratio"] is None:
        return []
    return [
        f"Eq. 8 after {e['probe_steps']} steps at LR {e['probe_lr']:g} from θ₀ is {e['lr']:.3g}: "
        f"{e['lr'] / e['probe_lr']:.3g}× the probe LR, {e['noise_ratio']:.2f}× what momentum "
        f"noise alone gives there (c(μ, 1) = {e['noise_null']:.3g}). "
        + _eq8_verdict()
        + " The finder's "
        "edge is the reading measured along the LRs the run actually meets.",
    ]


def _estimates_section(numbers: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """Section 4: the LREstimator during the runs; the secant against its noise null first."""
    runs = numbers["runs"]
    lines = [
        "## 4. Curvature estimates during training (LREstimator)",
        "",
        f"Every {cfg.estimator_every} steps, on the training batch just used: "
        + "; ".join(f"`{m}` = {METHOD_LABELS.get(m, m)}" for m in cfg.estimator_methods)
        + ". EMA as in SC §5 (α = 0.1, initial 0.1). Ratio = estimate / LR in use.",
        "",
    ]
    for name, run in runs.items():
        sec = run["estimator"].get("secant")
        if sec and sec.get("median_noise_ratio") is not None:
            lines.append(
                f"- {RUN_LABELS[name]}: the secant (SC Eq. 8) is a median "
                f"{_fmt(sec['median_ratio_to_lr_used'])}× the LR in use; momentum noise alone "
                f"gives {_fmt(sec['null_ratio_to_lr_in_use'])}× (the null); estimate / null = "
                f"**{_fmt(sec['median_noise_ratio'])}**; the window's bootstrap band reached the "
                f"null in {sec['noise_indistinguishable']} of {sec['noise_tested']} tests."
            )
    lines += [
        "",
        "Near 1 the secant measures the LR in use and the noise, not the curvature (the "
        "figure's grey band is the null): read it against its null, never as an LR to use.",
        "",
        "| run | method | estimates | median | range | median ratio | final EMA | HVPs | time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in runs.items():
        for m, e in run["estimator"].items():
            flagged = f" (+{e['num_flagged']} flagged)" if e["num_flagged"] else ""
            lines.append(
                f"| {RUN_LABELS[name]} | `{m}` | {e['num_estimates']}{flagged} | "
                f"{_fmt(e['median_lr'])} | {_fmt(e['min_lr'])} – {_fmt(e['max_lr'])} | "
                f"{_fmt(e['median_ratio_to_lr_in_use'])} | {_fmt(e['final_smoothed_lr'])} | "
                f"{e['num_hvps']} | {e['seconds']:.1f} s |"
            )
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- entry point


def write_report(
    numbers: dict[str, Any], rt: Any, cfg: DemoConfig, files: dict[str, str], out: Path
) -> str:
    """The text of ``report.md`` (every number from ``numbers`` and the range test ``rt``)."""
    return _report(numbers, rt, cfg, files, out)
