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
from .plots import _plot_accuracy, _plot_estimates, _plot_range_test
from .report import _pct, _report, describe_range_test
from .run_numbers import _first_reaching, _run_numbers

__all__ = ["run_demo"]


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


def _figures(rt: Any, cfg: DemoConfig, bounds: dict, records: dict, numbers: dict, out: Path):
    """Step 4: the range test, accuracy and LR-estimate figures; their paths by name."""
    methods = tuple(cfg.estimator_methods)
    return {
        "range_test": _plot_range_test(rt, cfg, bounds, out / "range_test.png"),
        "accuracy": _plot_accuracy(records, numbers, out / "accuracy.png"),
        "lr_estimates": _plot_estimates(records, methods, out / "lr_estimates.png"),
    }


def _range_test_phase(
    cfg: DemoConfig,
    train_data: Any,
    test_data: Any,
    device: Any,
    progress: bool,
    echo: Callable[[str], Any],
) -> tuple[Any, dict[str, Any]]:
    """Step 1: the range test, what it says, and the LR bounds of both runs read from it."""
    echo(
        f"[1/4] LR range test: LR {cfg.range_start_lr:g} -> {cfg.range_end_lr:g} "
        f"over {cfg.range_steps} steps"
    )
    rt = _range_test(cfg, train_data, test_data, device, progress)
    for line in describe_range_test(rt):
        echo("      " + line)
    bounds = _bounds(cfg, rt)
    echo(
        f"      -> 1cycle {bounds['base_lr']:.4g} <-> {bounds['max_lr']:.4g}; piecewise "
        f"constant from {bounds['pc_lr']:.4g}"
    )
    return rt, bounds


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
    return results, records


def _range_test_numbers(rt: Any) -> dict[str, Any]:
    """The range test's numbers in the summary: suggestions, flags, curvature cross-check."""
    return {
        "seconds": rt.seconds,
        "stop_reason": rt.stop_reason,
        "suggestions": {k: v.lr for k, v in rt.suggestions.as_dict().items()},
        "flags": {k: list(v.flags) for k, v in rt.suggestions.as_dict().items()},
        "plateau_lrs": rt.suggestions.plateau_lrs,
        "two_over_lambda_max": rt.curvature.two_over_lambda if rt.curvature else None,
        "quadratic_lr": rt.curvature.quadratic_lr if rt.curvature else None,
    }


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

        rt, bounds = _range_test_phase(cfg, train_data, test_data, dev, progress, echo)
        rt_json = out / "range_test.json"
        write_json_atomic(rt_json, rt.to_dict())
        configs = _train_configs(cfg, bounds, device)
        results, records = _train_runs(
            cfg, configs, out / "runs", train_data, test_data, progress=progress, echo=echo
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
            "range_test": _range_test_numbers(rt),
            "bounds": bounds,
            "pc_milestones": list(configs["pc"].schedule["milestones"]),
            "runs": {n: _run_numbers(results[n], records[n], methods) for n in results},
        }
        numbers["pc_reaches_onecycle_accuracy_at"] = _first_reaching(
            records["pc"], numbers["runs"]["onecycle"]["final_test_accuracy"]
        )

        echo("[4/4] figures and report")
        figures = _figures(rt, cfg, bounds, records, numbers, out)
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
