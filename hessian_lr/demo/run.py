"""The demo's stages: range test, bounds, the two training runs, then figures and report.

Built from the pieces the experiments use: the range test from
:func:`hessian_lr.training.recipes.range_test_from_config` (the one range-test setup), training
runs from :func:`hessian_lr.training.runner.train`.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DEFAULT, QUICK, RUN_LABELS, DemoConfig, DemoResult
from .finder import finder_phase, theta0_estimates
from .plots import _plot_accuracy, _plot_estimates, _plot_finder, _plot_range_test
from .report import _fmt, _pct, _report, describe_range_test
from .run_numbers import _run_numbers

__all__ = ["run_demo"]

_STAGES = 6  # range test, find_lr, three runs, figures


def _range_test(cfg: DemoConfig, train_data, test_data, device, progress: bool):
    """The range test of the demo, set up by the library's one recipe (as F2 and the CLI do)."""
    from ..training.recipes import RangeTestSetup, range_test_from_config

    setup = RangeTestSetup(
        dataset=cfg.dataset,
        model=cfg.model,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        start_lr=cfg.range_start_lr,
        end_lr=cfg.range_end_lr,
        num_steps=cfg.range_steps,
        val_every=cfg.range_val_every,
        seed=cfg.seed,
        device=str(device),
    )
    return range_test_from_config(
        setup, train_data=train_data, val_data=test_data.tensors, progress=progress
    )


def _range_test_max(cfg: DemoConfig, rt: Any) -> tuple[float, str, list[str]]:
    """The range test's max_lr (accuracy peak), with the fallbacks and the rule that chose it."""
    s = rt.suggestions
    max_lr, rule = s.max_lr.lr, s.max_lr.rule
    if max_lr is not None and max_lr > 0:
        return max_lr, rule, []
    max_lr, rule = s.steepest.lr, "steepest_descent (no max_lr)"
    if max_lr is None or not max_lr > 0:
        max_lr, rule = cfg.range_end_lr / 4, "range_end_lr/4 (range test gave no LR)"
    return max_lr, rule, [f"the range test gave no max_lr; used {rule}"]


def _bounds(cfg: DemoConfig, rt: Any, finder: dict[str, Any]) -> dict[str, Any]:
    """Each run's LRs: 1cycle at find_lr's and at the range test's max_lr, the baseline's LR."""
    rt_max, rt_rule, notes = _range_test_max(cfg, rt)
    f_max, f_rule = finder["max_lr"], f"find_lr: k·edge_lr, k = {finder['calibration']:.3g}"
    if f_max is None or not f_max > 0:
        f_max, f_rule = rt_max, "the range test's (find_lr found no edge)"
        notes.append("find_lr found no edge on its ladder; its 1cycle run uses the range test's")
    div = cfg.base_divisor
    base = rt_max / div
    pc_lr, pc_rule = rt.suggestions.steepest.lr, "range test steepest_descent"
    if pc_lr is None or not pc_lr > 0:
        pc_lr, pc_rule = base, f"range test max_lr/{div:g} (no steepest-descent point)"
    elif not base <= pc_lr <= rt_max:
        pc_rule = f"range test steepest_descent {pc_lr:.4g}, clipped to [base_lr, max_lr]"
        pc_lr = min(max(pc_lr, base), rt_max)
    return {
        "finder": {"max_lr": f_max, "max_lr_rule": f_rule, "base_lr": f_max / div},
        "range_test": {"max_lr": rt_max, "max_lr_rule": rt_rule, "base_lr": base},
        "pc": {"lr": pc_lr, "lr_rule": pc_rule},
        "base_lr_rule": f"max_lr/{div:g}",
        "notes": notes,
    }


def _train_configs(cfg: DemoConfig, bounds: dict[str, Any], device: str) -> dict[str, Any]:
    from ..schedules import MultiStep, OneCycle
    from ..training.runner import TrainConfig

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
    n1, n2 = cfg.onecycle_steps, cfg.pc_factor * cfg.onecycle_steps
    configs = {}
    for name in ("finder", "range_test"):
        onecycle = OneCycle(
            base_lr=bounds[name]["base_lr"],
            max_lr=bounds[name]["max_lr"],
            step_size=int(0.45 * n1),  # two half-cycles over 90 % of the run, then the tail
            total_steps=n1,
        )
        configs[name] = TrainConfig(**common, steps=n1, schedule=onecycle.to_dict())
    pc = MultiStep.from_fractions(base_lr=bounds["pc"]["lr"], total_steps=n2)
    configs["pc"] = TrainConfig(**common, steps=n2, schedule=pc.to_dict())
    return configs


def _figures(rt: Any, finder: Any, cfg: DemoConfig, records: dict, numbers: dict, out: Path):
    """The range test, finder, accuracy and LR-estimate figures; their paths by name."""
    methods = tuple(cfg.estimator_methods)
    return {
        "range_test": _plot_range_test(rt, cfg, numbers["bounds"], out / "range_test.png"),
        "lr_finder": _plot_finder(finder, numbers, out / "lr_finder.png"),
        "accuracy": _plot_accuracy(records, numbers, out / "accuracy.png"),
        "lr_estimates": _plot_estimates(records, methods, out / "lr_estimates.png"),
    }


def _suggest_phase(
    cfg: DemoConfig,
    train_data: Any,
    test_data: Any,
    device: Any,
    progress: bool,
    echo: Callable[[str], Any],
) -> tuple[Any, Any, dict[str, Any]]:
    """Steps 1-2: the range test, then find_lr and the θ₀ estimates on the same model and data."""
    echo(
        f"[1/{_STAGES}] LR range test: LR {cfg.range_start_lr:g} -> {cfg.range_end_lr:g} "
        f"over {cfg.range_steps} steps"
    )
    rt = _range_test(cfg, train_data, test_data, device, progress)
    for line in describe_range_test(rt):
        echo("      " + line)
    echo(
        f"[2/{_STAGES}] find_lr: LR {cfg.finder_start_lr:g} -> {cfg.finder_end_lr:g} "
        f"(exponential, at most {cfg.finder_steps} steps), η·λ/c every "
        f"{cfg.finder_measure_every} steps"
    )
    finder, finder_numbers = finder_phase(cfg, train_data, device)
    echo(
        f"      edge_lr {_fmt(finder_numbers['edge_lr'], '.4g')} after {finder.num_steps} "
        f"steps ({finder.num_hvps} HVPs, {finder.seconds:.1f} s) -> max_lr "
        f"{_fmt(finder_numbers['max_lr'], '.4g')}"
    )
    theta0 = theta0_estimates(cfg, train_data, device)
    numbers = {
        "range_test": _range_test_numbers(rt),
        "finder": finder_numbers,
        "theta0": theta0,
        "bounds": _bounds(cfg, rt, finder_numbers),
    }
    return rt, finder, numbers


def _train_runs(
    cfg: DemoConfig,
    configs: dict[str, Any],
    runs_root: Path,
    train_data: Any,
    test_data: Any,
    *,
    progress: bool,
    echo: Callable[[str], Any],
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Train the demo's runs (each from scratch); their results and records, by run name."""
    from ..training.run import Run
    from ..training.runner import train

    results, records = {}, {}
    for i, (name, tcfg) in enumerate(configs.items()):
        echo(
            f"[{3 + i}/{_STAGES}] train {RUN_LABELS[name]}: {tcfg.steps} iterations, estimator "
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
    return results, records


def _range_test_numbers(rt: Any) -> dict[str, Any]:
    """The range test's numbers in the summary: suggestions, flags, curvature cross-check."""
    return {
        "seconds": rt.seconds,
        "num_steps": rt.num_updates,
        "num_hvps": rt.curvature.num_hvps if rt.curvature else 0,
        "stop_reason": rt.stop_reason,
        "suggestions": {k: v.lr for k, v in rt.suggestions.as_dict().items()},
        "flags": {k: list(v.flags) for k, v in rt.suggestions.as_dict().items()},
        "plateau_lrs": rt.suggestions.plateau_lrs,
        "two_over_lambda_max": rt.curvature.two_over_lambda if rt.curvature else None,
        "quadratic_lr": rt.curvature.quadratic_lr if rt.curvature else None,
    }


def _write_outputs(
    numbers: dict[str, Any],
    rt: Any,
    cfg: DemoConfig,
    out: Path,
    rt_json: Path,
    figures: dict[str, Path],
    results: dict[str, Any],
    t0: float,
) -> dict[str, str]:
    """``report.md`` and ``summary.json`` (the same numbers); the files written, by name."""
    from ..records import write_json_atomic

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
    return files


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

    from ..records import write_json_atomic
    from ..training.data import load_dataset
    from ..training.setup import resolve_device

    cfg = config if config is not None else (QUICK if quick else DEFAULT)
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for torch's default), got {threads}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dev = resolve_device(device)
        echo(f"hessian-lr demo -> {out.resolve()}  ({cfg.model} on {cfg.dataset}, device {dev})")
        train_data = load_dataset(cfg.dataset, split="train")
        test_data = load_dataset(cfg.dataset, split="test")

        rt, finder, numbers = _suggest_phase(cfg, train_data, test_data, dev, progress, echo)
        rt_json = out / "range_test.json"
        write_json_atomic(rt_json, rt.to_dict())
        configs = _train_configs(cfg, numbers["bounds"], device)
        results, records = _train_runs(
            cfg, configs, out / "runs", train_data, test_data, progress=progress, echo=echo
        )
        numbers = {
            "quick": quick and config is None,
            "config": dataclasses.asdict(cfg),
            "device": str(dev),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "data": {"train": len(train_data), "test": len(test_data)},
            **numbers,
            "pc_milestones": list(configs["pc"].schedule["milestones"]),
            "runs": {
                n: _run_numbers(results[n], records[n], tuple(cfg.estimator_methods))
                for n in results
            },
        }
        echo(f"[{_STAGES}/{_STAGES}] figures and report")
        figures = _figures(rt, finder, cfg, records, numbers, out)
        files = _write_outputs(numbers, rt, cfg, out, rt_json, figures, results, t0)
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    echo(f"done in {seconds:.1f} s. Wrote:")
    for name, path in files.items():
        echo(f"  {name:>20}: {path}")
    return DemoResult(
        out=out,
        report=out / "report.md",
        summary=out / "summary.json",
        figures=figures,
        runs={k: Path(v.run_dir) for k, v in results.items()},
        numbers=json.loads((out / "summary.json").read_text(encoding="utf-8")),
        seconds=seconds,
    )
