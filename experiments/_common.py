"""What every experiment script shares: presets, flags, and where results go.

Each script defines a frozen ``Config`` dataclass, ``PRESETS = {"paper": ..., "cpu": ...,
"smoke": ...}`` and ``main(cfg, *, out, device, progress) -> dict`` (a summary), and ends with
``cli(__doc__, PRESETS, main)``. Flags: ``--preset``, ``--out``, ``--device``, ``--seeds`` and
``--<field> value`` for any field of the Config. Results land in ``<out>/<experiment>/<run>/``
(``hessian_lr.records``); the summary in ``<out>/<experiment>/summary.json``, next to the
config that produced it (``experiment_config.json``). Rerunning resumes unfinished runs and skips
finished ones, so an interrupted sweep loses nothing already computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.runner import TrainConfig, TrainResult, train

__all__ = [
    "cli",
    "run_train",
    "run_arms",
    "train_kwargs",
    "onecycle_pc_schedules",
    "save_summary",
    "experiment_name",
    "load_summary",
]


def experiment_name(file: str) -> str:
    """``experiments/f3_onecycle_vs_pc.py`` -> ``f3_onecycle_vs_pc``."""
    return Path(file).stem


def train_kwargs(cfg: Any, seed: int) -> dict[str, Any]:
    """The ``TrainConfig`` fields most experiments take straight from their ``Config``.

    Reads ``dataset``, ``model``, ``batch_size``, ``weight_decay``, ``momentum`` and (when the
    Config has it) ``bn_momentum`` (ResNet only); augments on CIFAR. Scripts add the rest
    (steps, schedule, eval_every, ...).
    """
    bn_momentum = getattr(cfg, "bn_momentum", None)
    return dict(
        dataset=cfg.dataset,
        model=cfg.model,
        model_kwargs={} if bn_momentum is None else {"bn_momentum": bn_momentum},
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        seed=seed,
        augment=cfg.dataset.startswith("cifar"),
    )


def onecycle_pc_schedules(cfg: Any, n1: int, n2: int) -> dict[str, dict[str, Any]]:
    """The F3 pair of schedules: ``{"onecycle": ..., "pc": ...}`` (``Schedule.to_dict()`` form).

    1cycle over ``n1`` steps (``cfg.base_lr`` -> ``cfg.max_lr`` -> ``cfg.base_lr``, two
    half-cycles of ``int(0.45 * n1)`` steps, then the annihilation tail) and the piecewise-constant
    baseline over ``n2`` steps (``cfg.pc_lr``, x0.1 at 62.5 % and 87.5 % of ``n2``).
    """
    onecycle = {
        "type": "OneCycle",
        "base_lr": cfg.base_lr,
        "max_lr": cfg.max_lr,
        "step_size": int(0.45 * n1),  # two half-cycles over 90 % of the run, then the tail
        "total_steps": n1,
    }
    pc = {
        "type": "MultiStep",
        "base_lr": cfg.pc_lr,
        "milestones": [int(0.625 * n2), int(0.875 * n2)],
        "gamma": 0.1,
    }
    return {"onecycle": onecycle, "pc": pc}


def run_train(
    cfg: TrainConfig,
    *,
    out: str | Path,
    experiment: str,
    run: str,
    device: str,
    progress: bool,
    train_fn: Callable[..., TrainResult] = train,
) -> TrainResult:
    """Train (or resume, or skip if finished) one run and print one line about it.

    ``train_fn`` is called as ``train_fn(cfg, root=, experiment=, run=, progress=)`` (default:
    ``hessian_lr.train.train``); a script that needs a callback or preloaded data wraps it.
    """
    cfg = dataclasses.replace(cfg, device=device)
    t0 = time.perf_counter()
    result = train_fn(cfg, root=out, experiment=experiment, run=run, progress=progress)
    acc = (
        "n/a" if result.final_test_accuracy is None else f"{100 * result.final_test_accuracy:.2f}%"
    )
    note = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    print(
        f"  {experiment}/{run}: {result.status}, {result.steps} steps, test acc {acc}, "
        f"{time.perf_counter() - t0:.1f}s{note}",
        flush=True,
    )
    return result


def run_arms(
    configs_for_seed: Callable[[int], dict[str, TrainConfig]],
    seeds: Iterable[int],
    *,
    out: str | Path,
    experiment: str,
    device: str,
    progress: bool,
    train_fn: Callable[..., TrainResult] = train,
) -> dict[str, list[TrainResult]]:
    """Run every arm of every seed (seed-major) as ``<arm>_seed<seed>``.

    Args:
        configs_for_seed: ``seed -> {arm name: TrainConfig}``; the same names for every seed.
        seeds: the seeds, in run order.
        out, experiment, device, progress, train_fn: as in ``run_train``.

    Returns:
        ``{arm name: [TrainResult per seed, in seed order]}``, arms in ``configs_for_seed`` order.
    """
    results: dict[str, list[TrainResult]] = {}
    for seed in seeds:
        for name, tcfg in configs_for_seed(seed).items():
            res = run_train(
                tcfg,
                out=out,
                experiment=experiment,
                run=f"{name}_seed{seed}",
                device=device,
                progress=progress,
                train_fn=train_fn,
            )
            results.setdefault(name, []).append(res)
    return results


def save_summary(out: str | Path, experiment: str, summary: dict[str, Any]) -> Path:
    """Write ``<out>/<experiment>/summary.json`` atomically and return its path."""
    path = Path(out) / experiment / "summary.json"
    write_json_atomic(path, summary)
    return path


def load_summary(out: str | Path, experiment: str) -> dict[str, Any]:
    return read_json(Path(out) / experiment / "summary.json")


def _parse_value(text: str, annotation: Any) -> Any:
    """Turn a ``--field value`` string into the field's type (JSON for lists, dicts, tuples)."""
    if isinstance(annotation, str):
        annotation_text = annotation
    else:
        annotation_text = getattr(annotation, "__name__", str(annotation))
    if annotation_text in ("int",):
        return int(text)
    if annotation_text in ("float",):
        return float(text)
    if annotation_text in ("bool",):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if annotation_text in ("str",):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def cli(
    doc: str | None,
    presets: dict[str, Any],
    main: Callable[..., dict[str, Any]],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Parse flags, build the Config (preset + overrides), run ``main``, save the summary."""
    default = presets["cpu"]
    hints = typing.get_type_hints(type(default))
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default="cpu",
        help="paper: the paper's setting (GPU); cpu: same protocol scaled to a 2-core CPU in "
        "minutes; smoke: seconds, for tests (default: cpu)",
    )
    parser.add_argument("--out", default="results", help="results folder (default: results)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small models run faster and steadier so on a "
        "shared CPU; 0 keeps torch's default)",
    )
    for f in dataclasses.fields(default):
        if f.name == "seeds":
            continue
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"override_{f.name}",
            default=None,
            metavar=type(getattr(default, f.name)).__name__.upper(),
            help=f"override {f.name} (preset cpu: {getattr(default, f.name)!r})",
        )
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    cfg = presets[args.preset]
    changes = {}
    for f in dataclasses.fields(cfg):
        raw = getattr(args, f"override_{f.name}", None)
        if raw is not None:
            changes[f.name] = _parse_value(raw, hints.get(f.name, str))
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    cfg = dataclasses.replace(cfg, **changes)
    experiment = experiment_name(sys.modules[main.__module__].__file__)
    print(f"{experiment} [{args.preset}] -> {Path(args.out) / experiment}", flush=True)
    write_json_atomic(
        Path(args.out) / experiment / "experiment_config.json",
        {"preset": args.preset, "config": cfg},
    )
    t0 = time.perf_counter()
    summary = main(cfg, out=args.out, device=args.device, progress=not args.no_progress)
    summary = {"experiment": experiment, "preset": args.preset, **summary}
    # Wall time summed over invocations (a resumed or skipped rerun adds its own, not replaces).
    previous = Path(args.out) / experiment / "summary.json"
    before = 0.0
    if previous.exists():
        old = read_json(previous)
        before = old.get("seconds", 0.0) if old.get("preset") == args.preset else 0.0
    summary["seconds"] = before + time.perf_counter() - t0
    path = save_summary(args.out, experiment, summary)
    print(f"summary: {path} ({summary['seconds']:.0f}s)", flush=True)
    return summary
