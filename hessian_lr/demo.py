"""``hessian-lr demo``: range test, 1cycle vs piecewise constant and LR estimates, in minutes.

The Super-Convergence recipe (Smith & Topin 2017, §3; Smith 2017, *Cyclical Learning Rates*,
§3.3) end to end on the embedded 8×8 digits data with LeNet-5 and SGD (momentum 0.9, weight
decay 5e-4), on a CPU:

1. an **LR range test** (linear ramp, test accuracy every few steps): ``max_lr`` at the accuracy
   peak, ``base_lr = max_lr/4`` (SC §3), and the curvature cross-check 2/λ_max at the start;
2. two runs of ``hessian_lr.train.train``, both with the ``LREstimator`` on (``secant``, the
   paper's Hessian-free Eq. 8; ``quadratic`` gᵀg/gᵀHg; ``sharpness`` 1/λ_max by warm-started
   Lanczos): **1cycle** from ``base_lr`` to ``max_lr`` and back with an annihilation tail (momentum
   0.95 → 0.85 → 0.95), and a **piecewise-constant** baseline four times as long (the range test's
   steepest-descent LR, ×0.1 at 62.5 % and 87.5 % of the run: the SC paper's baseline shape);
3. three figures (PNG): the range test, the LR schedules and test accuracy, the LR estimates
   against the LR in use;
4. ``report.md`` and ``summary.json`` with every number (bounds, accuracies, iterations, estimator
   summary, wall time).

Everything goes under ``out`` (default ``./demo_out``); the two runs are ordinary run folders
(``<out>/runs/demo/{onecycle,pc}/``, see :mod:`hessian_lr.records`). Nothing here is imported by
the rest of the library.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "DemoResult", "DEFAULT", "QUICK", "run_demo", "describe_range_test"]

# One colour per arm and per estimate method (the palette of the paper figures).
ARM_COLORS = {"onecycle": "#0072B2", "pc": "#D55E00"}
METHOD_COLORS = {
    "secant": "#000000",
    "secant_hvp": "#009E73",
    "quadratic": "#0072B2",
    "sharpness": "#E69F00",
}
METHOD_LABELS = {
    "secant": "secant (SC Eq. 8, Hessian-free)",
    "secant_hvp": "Σ|g| / Σ|Hg|",
    "quadratic": "gᵀg / gᵀHg",
    "sharpness": "1/λ_max",
}
RUN_LABELS = {"onecycle": "1cycle", "pc": "piecewise constant"}
LR_IN_USE_COLOR = "#555555"
MODEL_LABELS = {"lenet5": "LeNet-5", "mlp": "MLP", "logreg": "logistic regression"}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. Steps are optimizer updates (batches of ``batch_size``).

    Attributes:
        dataset, model: data and network (``training.data`` / ``training.models`` names).
        batch_size, momentum, weight_decay: SGD settings of the range test and both runs.
        range_start_lr, range_end_lr, range_steps: the range test's linear ramp.
        range_val_every: test accuracy every this many range-test updates.
        onecycle_steps: length of the 1cycle run; ``pc_factor`` × that for the baseline.
        base_divisor: 1cycle ``base_lr = max_lr / base_divisor`` (4: SC §3; CLR §3.3 says 3-4).
        eval_every: test loss/accuracy every this many steps.
        estimator_methods, estimator_every: the ``LREstimator`` of both runs.
        seed: seeds the range test's model and both runs.
    """

    dataset: str = "digits"
    model: str = "lenet5"
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    range_start_lr: float = 0.0
    range_end_lr: float = 0.5
    range_steps: int = 200
    range_val_every: int = 5
    onecycle_steps: int = 300
    pc_factor: int = 4
    base_divisor: float = 4.0
    eval_every: int = 25
    estimator_methods: tuple[str, ...] = ("secant", "quadratic", "sharpness")
    estimator_every: int = 10
    seed: int = 0


#: The full demo (about a minute on a 2-core CPU).
DEFAULT = DemoConfig()
#: Seconds, for tests: the same pipeline, a few dozen steps per stage.
QUICK = DemoConfig(
    range_steps=30,
    range_val_every=5,
    onecycle_steps=24,
    pc_factor=2,
    eval_every=8,
    estimator_every=4,
)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files and the headline numbers.

    Attributes:
        out: the output folder.
        report: ``report.md``; ``summary``: ``summary.json`` (also returned as ``numbers``).
        figures: {"range_test", "accuracy", "lr_estimates"} -> PNG path.
        runs: {"onecycle", "pc"} -> run folder.
        numbers: the content of ``summary.json``.
        seconds: wall time of the whole demo.
    """

    out: Path
    report: Path
    summary: Path
    figures: dict[str, Path]
    runs: dict[str, Path]
    numbers: dict[str, Any]
    seconds: float


# ----------------------------------------------------------------------------- text helpers
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


# ----------------------------------------------------------------------------- the stages
def _range_test(cfg: DemoConfig, train_data, test_data, device, progress: bool):
    import torch
    from torch import nn

    from .schedules.range_test import lr_range_test
    from .training.data import make_loader
    from .training.models import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        num_classes=train_data.num_classes,
        in_channels=train_data.in_channels,
        input_size=train_data.input_size,
    ).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loader = make_loader(train_data, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
    return lr_range_test(
        model,
        optimizer,
        loader,
        loss_fn=nn.CrossEntropyLoss(),
        start_lr=cfg.range_start_lr,
        end_lr=cfg.range_end_lr,
        num_steps=cfg.range_steps,
        ramp="linear",
        val_data=test_data.tensors,
        val_every=cfg.range_val_every,
        progress=progress,
    )


def _bounds(cfg: DemoConfig, rt: Any) -> dict[str, Any]:
    """1cycle bounds and the baseline's LR from the range test (with the rule that chose each)."""
    s = rt.suggestions
    notes = []
    max_lr, max_rule = s.max_lr.lr, s.max_lr.rule
    if max_lr is None or not max_lr > 0:
        max_lr, max_rule = (s.steepest.lr, "steepest_descent (no max_lr)")
        if max_lr is None or not max_lr > 0:
            max_lr, max_rule = cfg.range_end_lr / 4, "range_end_lr/4 (range test gave no LR)"
        notes.append(f"the range test gave no max_lr; used {max_rule}")
    base_lr = max_lr / cfg.base_divisor
    pc_lr, pc_rule = s.steepest.lr, "steepest_descent"
    if pc_lr is None or not pc_lr > 0:
        pc_lr, pc_rule = base_lr, f"max_lr/{cfg.base_divisor:g} (no steepest-descent point)"
    elif not base_lr <= pc_lr <= max_lr:
        clipped = min(max(pc_lr, base_lr), max_lr)
        pc_rule = f"steepest_descent {pc_lr:.4g}, clipped to [base_lr, max_lr]"
        pc_lr = clipped
    return {
        "max_lr": max_lr,
        "max_lr_rule": max_rule,
        "base_lr": base_lr,
        "base_lr_rule": f"max_lr/{cfg.base_divisor:g}",
        "pc_lr": pc_lr,
        "pc_lr_rule": pc_rule,
        "notes": notes,
    }


def _train_configs(cfg: DemoConfig, bounds: dict[str, Any], device: str) -> dict[str, Any]:
    from .schedules.closed_form import MultiStep, OneCycle
    from .training.runner import TrainConfig

    common = dict(
        dataset=cfg.dataset,
        model=cfg.model,
        batch_size=cfg.batch_size,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        eval_every=cfg.eval_every,
        estimator_methods=tuple(cfg.estimator_methods),
        estimator_every=cfg.estimator_every,
        seed=cfg.seed,
        device=device,
    )
    n1 = cfg.onecycle_steps
    onecycle = OneCycle(
        base_lr=bounds["base_lr"],
        max_lr=bounds["max_lr"],
        step_size=int(0.45 * n1),  # two half-cycles over 90 % of the run, then the tail
        total_steps=n1,
    )
    n2 = cfg.pc_factor * n1
    pc = MultiStep.from_fractions(base_lr=bounds["pc_lr"], total_steps=n2)
    return {
        "onecycle": TrainConfig(**common, steps=n1, schedule=onecycle.to_dict()),
        "pc": TrainConfig(**common, steps=n2, schedule=pc.to_dict()),
    }


# ----------------------------------------------------------------------------- numbers
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
    return out


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


# ----------------------------------------------------------------------------- figures
def _model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


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
        f"→ 1cycle between base {bounds['base_lr']:.3g} and max {bounds['max_lr']:.3g}; "
        f"piecewise constant starts at {bounds['pc_lr']:.3g}",
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
    target = numbers["runs"]["onecycle"]["final_test_accuracy"]
    if target is not None:
        ax_acc.axhline(100 * target, color=ARM_COLORS["onecycle"], ls=":", lw=1)
    reach = numbers["pc_reaches_onecycle_accuracy_at"]
    if reach is not None:
        ax_acc.axvline(reach, color=ARM_COLORS["pc"], ls=":", lw=1)
        ax_acc.annotate(
            f"baseline reaches the 1cycle accuracy\nat iteration {reach}",
            xy=(reach, 100 * target),
            xytext=(40 if reach < 0.6 * numbers["runs"]["pc"]["iterations"] else -220, -70),
            textcoords="offset points",
            fontsize=9,
            arrowprops={"arrowstyle": "->", "lw": 0.8},
        )
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning-rate schedules (momentum: 0.95–0.85 cyclic for 1cycle, 0.9 fixed)")
    ax_lr.legend(fontsize=9)
    ax_lr.grid(alpha=0.3)
    all_acc = [100 * a for recs in records.values() for a in _evals(recs)[1]]
    top = max(all_acc) if all_acc else 100.0
    ax_acc.set_ylim(max(0.0, min(top - 25.0, 80.0)), min(100.0, top + 2.0))
    ax_acc.set_xlabel("iteration (optimizer steps, batches of 128)")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("Test accuracy: 1cycle vs a piecewise-constant baseline")
    ax_acc.legend(fontsize=9, loc="lower right")
    ax_acc.grid(alpha=0.3)
    return _save(fig, path)


def _plot_estimates(records: dict[str, list], methods: Sequence[str], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 7), layout="constrained")
    axes = fig.subplots(len(records), 1, sharex=False)
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


# ----------------------------------------------------------------------------- the report
def _report(
    numbers: dict[str, Any], rt: Any, cfg: DemoConfig, files: dict[str, str], out: Path
) -> str:
    b = numbers["bounds"]
    r1, r2 = numbers["runs"]["onecycle"], numbers["runs"]["pc"]
    lines = [
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
    lines += [
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
        f"## Files (in `{out}`)",
        "",
        *[f"- {name}: `{os.path.relpath(path, out)}`" for name, path in files.items()],
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point
def run_demo(
    out: str | Path = "demo_out",
    *,
    quick: bool = False,
    config: DemoConfig | None = None,
    device: str = "auto",
    threads: int | None = 1,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
) -> DemoResult:
    """Run the demo into ``out`` and return where everything went.

    Args:
        out: output folder (created; the demo's own run folders in it are replaced).
        quick: the ``QUICK`` configuration (seconds; for tests).
        config: a ``DemoConfig`` overriding ``DEFAULT`` / ``QUICK``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        threads: torch intra-op threads for the duration of the demo (restored afterwards);
            ``None`` keeps torch's setting. One thread is fastest for these tiny models, and
            much faster than several when other processes share the cores.
        progress: tqdm bars.
        echo: where progress lines go (``print`` by default).

    Returns:
        A :class:`DemoResult`.
    """
    import torch

    from .records import Run, write_json_atomic
    from .training.data import load_dataset
    from .training.runner import resolve_device, train

    cfg = config if config is not None else (QUICK if quick else DEFAULT)
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for torch's default), got {threads}")
        torch.set_num_threads(threads)
    try:
        dev = resolve_device(device)
        echo(f"hessian-lr demo -> {out.resolve()}  ({cfg.model} on {cfg.dataset}, device {dev})")
        train_data = load_dataset(cfg.dataset, split="train")
        test_data = load_dataset(cfg.dataset, split="test")

        echo(
            f"[1/4] LR range test: LR {cfg.range_start_lr:g} -> {cfg.range_end_lr:g} "
            f"over {cfg.range_steps} steps"
        )
        rt = _range_test(cfg, train_data, test_data, dev, progress)
        for line in describe_range_test(rt):
            echo("      " + line)
        bounds = _bounds(cfg, rt)
        echo(
            f"      -> 1cycle {bounds['base_lr']:.4g} <-> {bounds['max_lr']:.4g}; piecewise "
            f"constant from {bounds['pc_lr']:.4g}"
        )
        rt_json = out / "range_test.json"
        write_json_atomic(rt_json, rt.to_dict())

        configs = _train_configs(cfg, bounds, device)
        results, records = {}, {}
        runs_root = out / "runs"
        for i, (name, tcfg) in enumerate(configs.items()):
            echo(
                f"[{2 + i}/4] train {RUN_LABELS[name]}: {tcfg.steps} iterations, estimator "
                f"{', '.join(cfg.estimator_methods)} every {cfg.estimator_every} steps"
            )
            run = Run(runs_root, "demo", name)
            if run.dir.exists():  # the demo's own earlier output: start fresh
                shutil.rmtree(run.dir)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="LREstimator: the secant estimate")
                res = train(
                    tcfg,
                    root=runs_root,
                    experiment="demo",
                    run=name,
                    progress=progress,
                    train_data=train_data,
                    test_data=test_data,
                )
            results[name], records[name] = res, run.records()
            echo(
                f"      {res.status}: test accuracy {_pct(res.final_test_accuracy)} after "
                f"{res.steps} iterations ({res.seconds:.1f} s)"
            )

        methods = tuple(cfg.estimator_methods)
        numbers: dict[str, Any] = {
            "quick": quick and config is None,
            "config": dataclasses.asdict(cfg),
            "device": str(dev),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "data": {"train": len(train_data), "test": len(test_data)},
            "range_test": {
                "seconds": rt.seconds,
                "stop_reason": rt.stop_reason,
                "suggestions": {k: v.lr for k, v in rt.suggestions.as_dict().items()},
                "flags": {k: list(v.flags) for k, v in rt.suggestions.as_dict().items()},
                "plateau_lrs": rt.suggestions.plateau_lrs,
                "two_over_lambda_max": rt.curvature.two_over_lambda if rt.curvature else None,
                "quadratic_lr": rt.curvature.quadratic_lr if rt.curvature else None,
            },
            "bounds": bounds,
            "pc_milestones": list(configs["pc"].schedule["milestones"]),
            "runs": {n: _run_numbers(results[n], records[n], methods) for n in results},
        }
        numbers["pc_reaches_onecycle_accuracy_at"] = _first_reaching(
            records["pc"], numbers["runs"]["onecycle"]["final_test_accuracy"]
        )

        echo("[4/4] figures and report")
        figures = {
            "range_test": _plot_range_test(rt, cfg, bounds, out / "range_test.png"),
            "accuracy": _plot_accuracy(records, numbers, out / "accuracy.png"),
            "lr_estimates": _plot_estimates(records, methods, out / "lr_estimates.png"),
        }
        report_path, summary_path = out / "report.md", out / "summary.json"
        numbers["seconds"] = time.perf_counter() - t0
        files = {
            "report": str(report_path),
            "summary": str(summary_path),
            "range test (JSON)": str(rt_json),
            **{f"figure {k}": str(v) for k, v in figures.items()},
            **{f"run {k}": str(v.run_dir) for k, v in results.items()},
        }
        numbers["files"] = files
        report_path.write_text(_report(numbers, rt, cfg, files, out), encoding="utf-8")
        write_json_atomic(summary_path, numbers)
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    echo(f"done in {seconds:.1f} s. Wrote:")
    for name, path in files.items():
        echo(f"  {name:>20}: {path}")
    return DemoResult(
        out=out,
        report=report_path,
        summary=summary_path,
        figures=figures,
        runs={k: Path(v.run_dir) for k, v in results.items()},
        numbers=json.loads(summary_path.read_text(encoding="utf-8")),
        seconds=seconds,
    )
