"""What every experiment script shares: presets, flags, and where results go.

Each script defines a frozen ``Config`` dataclass, ``PRESETS = {"paper": ..., "cpu": ...,
"smoke": ...}`` and ``main(cfg, *, out, device, progress) -> dict`` (a summary), and ends with
``cli(__doc__, PRESETS, main)``. Flags: ``--preset``, ``--out``, ``--device``, ``--seeds`` and
``--<field> value`` for any field of the Config. Results land in ``<out>/<experiment>/<run>/``
(``hessian_lr.results``); the summary in ``<out>/<experiment>/summary.json``, next to the
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hessian_lr.results import read_json, write_json_atomic
from hessian_lr.train import TrainConfig, TrainResult, train

__all__ = ["cli", "run_train", "save_summary", "experiment_name", "load_summary"]


def experiment_name(file: str) -> str:
    """``experiments/f3_onecycle_vs_pc.py`` -> ``f3_onecycle_vs_pc``."""
    return Path(file).stem


def run_train(
    cfg: TrainConfig, *, out: str | Path, experiment: str, run: str, device: str, progress: bool
) -> TrainResult:
    """Train (or resume, or skip if finished) one run and print one line about it."""
    cfg = dataclasses.replace(cfg, device=device)
    t0 = time.perf_counter()
    result = train(cfg, root=out, experiment=experiment, run=run, progress=progress)
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
