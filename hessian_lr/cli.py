"""The ``hessian-lr`` command: ``demo``, ``range-test``, ``train``, ``experiment``, ``figures``.

* ``hessian-lr demo [--out DIR] [--quick]`` -- the one-command tour (:mod:`hessian_lr.demo`):
  range test, 1cycle vs piecewise constant with the LR estimator on, figures and ``report.md``.
* ``hessian-lr range-test ...`` -- the LR range test (Smith 2017, CLR §3.3) on a dataset/model,
  printing the suggested bounds and writing ``range_test.json`` and ``range_test.png``.
* ``hessian-lr train ...`` -- one run of :func:`hessian_lr.train.train` with every
  ``TrainConfig`` field as a flag; ``--schedule`` takes JSON or a shorthand such as
  ``onecycle:max_lr=0.2`` (see :func:`parse_schedule`).
* ``hessian-lr experiment NAME [args...]`` -- runs ``experiments/NAME.py`` of the repository
  checkout (the scripts are not part of the installed package).
* ``hessian-lr figures [args...]`` -- runs ``python -m paper_figures`` of the checkout.

matplotlib and the training machinery are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_schedule", "repo_root", "find_experiment"]

# Shorthand names for ``--schedule`` -> schedule classes (``hessian_lr.schedules``).
SCHEDULE_ALIASES = {
    "constant": "Constant",
    "fixed": "Constant",
    "onecycle": "OneCycle",
    "1cycle": "OneCycle",
    "onecyclecosine": "OneCycleCosine",
    "onecycle-cos": "OneCycleCosine",
    "cyclic": "Cyclic",
    "clr": "Cyclic",
    "triangular": "Cyclic",
    "sgdr": "SGDR",
    "multistep": "MultiStep",
    "pc": "MultiStep",
    "step": "StepDecay",
    "exp": "ExpDecay",
    "inv": "InvDecay",
}

SCHEDULE_HELP = """\
--schedule takes JSON, e.g. '{"type": "OneCycle", "base_lr": 0.05, "max_lr": 0.2,
"step_size": 135, "total_steps": 300}', a bare number (a constant LR), or NAME[:key=value,...]
with NAME one of constant, onecycle (1cycle), onecycle-cos, cyclic (clr), sgdr, multistep (pc),
step, exp, inv, and values as JSON (lists in brackets: milestones=[600,900]).
Filled in from --steps when left out: OneCycle total_steps = steps, step_size = 0.45*steps,
base_lr = max_lr/4; OneCycleCosine total_steps = steps; MultiStep milestones at 62.5 % and
87.5 % of the steps (the Super-Convergence baseline). Examples:
  --schedule 0.1
  --schedule onecycle:max_lr=0.2
  --schedule cyclic:base_lr=0.01,max_lr=0.1,step_size_up=200,mode=triangular2
  --schedule multistep:base_lr=0.05"""


# ----------------------------------------------------------------------------- schedules
def _split_top(text: str) -> list[str]:
    """Split ``a=1,b=[2,3]`` at commas outside brackets/braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word, e.g. mode=triangular2


def parse_schedule(text: str, *, steps: int | None = None) -> dict[str, Any]:
    """Parse ``--schedule`` (JSON, a number, or ``NAME:key=value,...``) into a schedule dict.

    Missing lengths are filled in from ``steps`` (see ``SCHEDULE_HELP``); the result is
    validated by building the schedule.

    Args:
        text: the flag's value.
        steps: the run's length in optimizer steps.

    Returns:
        A ``Schedule.to_dict()``-style dict, e.g. ``{"type": "Constant", "base_lr": 0.1}``.

    Raises:
        ValueError: unparsable text, unknown name, or a schedule its class rejects.

    Example:
        >>> parse_schedule("onecycle:max_lr=0.2", steps=100)["step_size"]
        45
    """
    from .schedules.closed_form import schedule_from_dict

    text = text.strip()
    if not text:
        raise ValueError("--schedule is empty")
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--schedule is not valid JSON: {err}") from None
        if not isinstance(d, dict) or "type" not in d:
            raise ValueError('a JSON --schedule must be an object with a "type" key')
    else:
        try:
            return _fill(
                schedule_from_dict({"type": "Constant", "base_lr": float(text)}).to_dict(), steps
            )
        except ValueError:
            pass
        name, _, rest = text.partition(":")
        key = name.strip().lower().replace("_", "-")
        from .schedules.closed_form import _REGISTRY

        cls = SCHEDULE_ALIASES.get(key) or next(
            (c for c in _REGISTRY if c.lower() == key.replace("-", "")), None
        )
        if cls is None:
            raise ValueError(
                f"unknown schedule {name!r}; use one of {', '.join(sorted(SCHEDULE_ALIASES))} "
                "or JSON"
            )
        d = {"type": cls}
        for item in _split_top(rest):
            k, eq, v = item.partition("=")
            if not eq or not k.strip():
                raise ValueError(f"schedule option {item!r} is not key=value")
            d[k.strip()] = _value(v.strip())
    d = _fill(d, steps)
    try:
        return schedule_from_dict(d).to_dict()
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid schedule {d}: {err}") from None


def _fill(d: dict[str, Any], steps: int | None) -> dict[str, Any]:
    d = dict(d)
    kind = d.get("type")
    if steps is None:
        return d
    if kind == "OneCycle":
        d.setdefault("total_steps", steps)
        d.setdefault("step_size", int(0.45 * d["total_steps"]))
        if "base_lr" not in d and isinstance(d.get("max_lr"), (int, float)):
            d["base_lr"] = d["max_lr"] / 4
    elif kind == "OneCycleCosine":
        d.setdefault("total_steps", steps)
    elif kind == "MultiStep" and "milestones" not in d:
        d["milestones"] = [round(0.625 * steps), round(0.875 * steps)]
    return d


# ----------------------------------------------------------------------------- checkout
def repo_root() -> Path | None:
    """The repository checkout holding ``experiments/`` (an editable install, or the cwd)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here, Path.cwd()):
        if (candidate / "experiments" / "_common.py").is_file():
            return candidate
    return None


def _no_checkout(what: str) -> str:
    return (
        f"hessian-lr: {what} not found. The experiment scripts and paper_figures live in the "
        "repository checkout, not in the installed package: clone the repository, install it "
        "with `pip install -e .` and run this command again (or run it from the checkout's root)."
    )


def available_experiments(root: Path) -> list[str]:
    """Names of the experiment scripts (``experiments/f*.py``), sorted by figure number."""

    def key(name: str) -> tuple[int, str]:
        head = name.split("_", 1)[0].lstrip("f")
        return (int(head) if head.isdigit() else 10**6, name)

    names = [p.stem for p in (root / "experiments").glob("*.py") if not p.stem.startswith("_")]
    return sorted(names, key=key)


def find_experiment(name: str, root: Path) -> Path:
    """``experiments/<name>.py``; ``name`` may be the full stem or its figure prefix (``f3``).

    Raises:
        LookupError: no (or no unique) match; the message lists the experiments.
    """
    names = available_experiments(root)
    stem = name[:-3] if name.endswith(".py") else name
    if stem in names:
        return root / "experiments" / f"{stem}.py"
    matches = [n for n in names if n.startswith(stem + "_")]
    if len(matches) == 1:
        return root / "experiments" / f"{matches[0]}.py"
    reason = "is ambiguous" if matches else "is unknown"
    raise LookupError(
        f"experiment {name!r} {reason}; available: {', '.join(names) or '(none)'} "
        f"(in {root / 'experiments'})"
    )


def _run_python(args: list[str], root: Path) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], env=env, check=False).returncode


# ----------------------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest for tiny models, "
        "especially on a shared machine)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _train_field_arg(p: argparse.ArgumentParser, f: dataclasses.Field, hint: Any) -> None:
    from .training.runner import TrainConfig

    default = getattr(TrainConfig(), f.name)
    flag = "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"dest": f.name, "default": None}
    if f.name == "schedule":
        p.add_argument(flag, **kw, metavar="SPEC", help=f"LR schedule (default {default}); below")
        return
    if f.name == "estimator_methods":
        kw.update(
            type=lambda s: tuple(m.strip() for m in s.split(",") if m.strip()),
            metavar="M1,M2",
            help="LR estimates to record: secant, secant_hvp, quadratic, sharpness "
            "(comma-separated; default none)",
        )
    elif f.name == "model_kwargs":
        kw.update(type=json.loads, metavar="JSON", help="model keywords, e.g. '{\"hidden\": [64]}'")
    elif f.name == "subset":
        kw.update(
            type=lambda s: int(s) if s.isdigit() else float(s),
            metavar="FRACTION|COUNT",
            help="stratified subset of the training set (0.25 or 500)",
        )
    elif f.name == "optimizer":
        kw.update(choices=("sgd", "nesterov", "adam"), help=f"(default {default!r})")
    elif hint is bool:
        kw.update(action=argparse.BooleanOptionalAction, help=f"(default {default})")
        p.add_argument(flag, **kw)
        return
    else:
        base = {int: int, float: float}.get(hint, str)
        kw.update(type=base, metavar=base.__name__.upper(), help=f"(default {default!r})")
    p.add_argument(flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hessian-lr`` (its subcommands and their flags)."""
    parser = argparse.ArgumentParser(
        prog="hessian-lr",
        description="Learning rates from curvature while a network trains: the LR range test, "
        "1cycle/CLR/SGDR schedules and per-iteration LR estimates (Smith & Topin, "
        "Super-Convergence; Smith, Cyclical Learning Rates).",
        epilog="Start with `hessian-lr demo` (about a minute or two on a laptop CPU).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="range test, 1cycle vs piecewise constant with the LR estimator, figures, report",
        description="On the embedded digits data (no download): an LR range test, then 1cycle "
        "(bounds from the range test) vs a piecewise-constant baseline 4x as long, both with the "
        "curvature LR estimator on; draws the range test, accuracy and LR-estimate curves (PNG) "
        "and writes report.md. About 1-2 minutes on 2 CPU cores.",
        formatter_class=_Formatter,
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a few dozen steps (seconds): a test")
    demo.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    demo.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")

    rt = sub.add_parser(
        "range-test",
        help="LR range test: suggested bounds, range_test.json and .png",
        description="The LR range test (Smith 2017, CLR §3.3; Smith & Topin 2017, SC §3): train "
        "briefly while the LR rises from --start-lr to --end-lr, record the loss and held-out "
        "accuracy, and suggest max_lr (accuracy peak), base_lr = max_lr/3 or /4, and the "
        "steepest-descent LR; the curvature cross-check adds 2/lambda_max at the start.",
        formatter_class=_Formatter,
    )
    rt.add_argument("--dataset", default="digits", help="digits, mnist, fashion-mnist, cifar10")
    rt.add_argument("--data-root", default=None, help="folder with the dataset files")
    rt.add_argument("--download", action="store_true", help="download missing dataset files")
    rt.add_argument("--subset", type=float, default=None, help="training fraction (0-1]")
    rt.add_argument("--model", default="lenet5", help="mlp, logreg, lenet5, resnet20, ...")
    rt.add_argument("--model-kwargs", type=json.loads, default={}, metavar="JSON")
    rt.add_argument("--optimizer", choices=("sgd", "nesterov", "adam"), default="sgd")
    rt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / Adam beta1")
    rt.add_argument("--weight-decay", type=float, default=5e-4)
    rt.add_argument("--batch-size", type=int, default=128)
    rt.add_argument("--start-lr", type=float, default=0.0)
    rt.add_argument("--end-lr", type=float, default=1.0)
    rt.add_argument("--num-steps", type=int, default=200, help="optimizer updates")
    rt.add_argument("--ramp", choices=("linear", "exp"), default="linear")
    rt.add_argument("--val-every", type=int, default=5, help="held-out evaluation interval")
    rt.add_argument(
        "--val-examples",
        type=int,
        default=2000,
        help="held-out examples (a stratified part of the test split)",
    )
    rt.add_argument("--no-val", action="store_true", help="no held-out evaluation")
    rt.add_argument("--no-curvature", action="store_true", help="skip the 2/lambda_max check")
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--out", default="range_test_out", help="output folder")
    _add_common(rt)

    tr = sub.add_parser(
        "train",
        help="train one configuration (hessian_lr.training.runner), resumable, with records",
        description="Train one TrainConfig into <out>/<experiment>/<run>/ (config.json, "
        "meta.json, records.jsonl). Rerunning the same command resumes from the last checkpoint "
        "or skips a finished run.\n\n" + SCHEDULE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr.set_defaults(subparser=tr)  # for its error messages
    from .training.runner import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        _train_field_arg(tr, f, hints.get(f.name))
    tr.add_argument("--out", default="results", help="results root (default results)")
    tr.add_argument("--experiment", default="train", help="experiment folder (default train)")
    tr.add_argument("--run", default=None, help="run folder (default seed<seed>)")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    tr.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")

    ex = sub.add_parser(
        "experiment",
        help="run experiments/NAME.py of the repository checkout",
        description="Run one study script of the repository checkout, e.g. `hessian-lr "
        "experiment f3_onecycle_vs_pc --preset smoke` (or just `f3`). Arguments after NAME go "
        "to the script (try `hessian-lr experiment NAME --help`). Without NAME: list them.",
    )
    ex.add_argument("name", nargs="?", help="experiment name or its figure prefix (f3)")
    ex.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")

    fg = sub.add_parser(
        "figures",
        help="run `python -m paper_figures` of the repository checkout",
        description="Redraw the papers' figures from saved results; every argument is passed "
        "to `python -m paper_figures` (see `hessian-lr figures -- --help`).",
    )
    fg.add_argument("args", nargs=argparse.REMAINDER, help="passed to paper_figures")
    return parser


# ----------------------------------------------------------------------------- commands
def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        quick=args.quick,
        device=args.device,
        threads=args.threads or None,
        progress=not args.no_progress,
    )
    return 0


def _cmd_range_test(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    import torch
    from matplotlib.figure import Figure
    from torch import nn

    from .demo import describe_range_test
    from .records import write_json_atomic
    from .schedules.range_test import lr_range_test
    from .training.data import load_dataset, make_loader
    from .training.models import build_model
    from .training.runner import make_optimizer, resolve_device

    device = resolve_device(args.device)
    train_data = load_dataset(
        args.dataset,
        split="train",
        root=args.data_root,
        download=args.download,
        subset=args.subset,
        seed=args.seed,
    )
    val = None
    if not args.no_val:
        test = load_dataset(args.dataset, split="test", root=args.data_root, download=args.download)
        if len(test) > args.val_examples:
            test = test.subset(args.val_examples, seed=args.seed)
        val = test.tensors
    torch.manual_seed(args.seed)
    model = build_model(
        args.model,
        num_classes=train_data.num_classes,
        in_channels=train_data.in_channels,
        input_size=train_data.input_size,
        **args.model_kwargs,
    ).to(device)
    initial_lr = args.start_lr if args.start_lr > 0 else 1e-3
    optimizer = make_optimizer(
        args.optimizer,
        model.parameters(),
        lr=initial_lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
    )
    loader = make_loader(train_data, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    print(
        f"LR range test: {args.model} on {args.dataset} ({len(train_data)} examples), "
        f"{args.optimizer}, LR {args.start_lr:g} -> {args.end_lr:g} ({args.ramp}) over "
        f"{args.num_steps} updates, device {device}",
        flush=True,
    )
    result = lr_range_test(
        model,
        optimizer,
        loader,
        loss_fn=nn.CrossEntropyLoss(),
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_steps=args.num_steps,
        ramp=args.ramp,
        val_data=val,
        val_every=args.val_every,
        curvature_check=not args.no_curvature,
        progress=not args.no_progress,
    )
    for line in describe_range_test(result):
        print("  " + line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["cli"] = {k: v for k, v in vars(args).items() if k != "func"}
    write_json_atomic(out / "range_test.json", payload)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    result.plot(ax)
    ax.set_xlabel(f"learning rate ({args.ramp} ramp)")
    ax.set_ylabel("cross-entropy loss (nats)")
    for other in fig.axes:
        if other is not ax:
            other.set_ylabel("held-out accuracy (fraction)")
    ax.set_title(
        f"LR range test: {args.model} on {args.dataset}, {args.optimizer} "
        f"(momentum {args.momentum:g}), {args.num_steps} updates",
        fontsize=10,
    )
    fig.savefig(out / "range_test.png", dpi=110)
    print(f"wrote {out / 'range_test.json'} and {out / 'range_test.png'} ({result.seconds:.1f} s)")
    return 0


def _cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .training.runner import TrainConfig, train

    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    steps = changes.get("steps", TrainConfig().steps)
    if "schedule" in changes:
        try:
            changes["schedule"] = parse_schedule(changes["schedule"], steps=steps)
        except ValueError as err:
            parser.error(str(err))
    try:
        cfg = TrainConfig(**changes)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    _set_threads(args.threads)
    run = args.run or f"seed{cfg.seed}"
    print(f"train -> {Path(args.out) / args.experiment / run}", flush=True)
    print(f"  schedule: {json.dumps(cfg.schedule)}", flush=True)
    t0 = time.perf_counter()
    res = train(
        cfg, root=args.out, experiment=args.experiment, run=run, progress=not args.no_progress
    )

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f} %"

    note = f", resumed at step {res.resumed_from}" if res.resumed_from else ""
    print(
        f"  {res.status}: {res.steps} steps, final test accuracy {pct(res.final_test_accuracy)}, "
        f"best {pct(res.best_test_accuracy)} ({time.perf_counter() - t0:.1f} s{note})"
    )
    print(f"  records: {res.run_dir / 'records.jsonl'}")
    return 0 if res.status in ("finished", "diverged") else 1


def _cmd_experiment(args: argparse.Namespace) -> int:
    root = repo_root()
    if root is None:
        print(_no_checkout("the experiments/ folder"), file=sys.stderr)
        return 2
    if not args.name:
        print("experiments (run `hessian-lr experiment NAME --help`):")
        for name in available_experiments(root):
            print(f"  {name}")
        return 0
    try:
        script = find_experiment(args.name, root)
    except LookupError as err:
        print(f"hessian-lr: {err.args[0]}", file=sys.stderr)
        return 2
    return _run_python([str(script), *args.args], root)


def _cmd_figures(args: argparse.Namespace) -> int:
    root = repo_root()
    if root is None or not (root / "paper_figures" / "__main__.py").is_file():
        print(_no_checkout("the paper_figures package"), file=sys.stderr)
        return 2
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return _run_python(["-m", "paper_figures", *extra], root)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hessian-lr`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["figures"] and argv[1:] not in (["-h"], ["--help"]):
        # Pass everything through untouched (argparse would claim options like --results).
        return _cmd_figures(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "range-test":
        return _cmd_range_test(args)
    if args.command == "train":
        return _cmd_train(args, args.subparser)
    if args.command == "experiment":
        return _cmd_experiment(args)
    if args.command == "figures":
        return _cmd_figures(args)
    parser.error(f"unknown command {args.command!r}")  # unreachable: argparse checks choices
    return 2


if __name__ == "__main__":
    sys.exit(main())
