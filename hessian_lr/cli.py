"""The ``hessian-lr`` command: ``demo``, ``range-test``, ``train`` (and pointers to the checkout).

* ``hessian-lr demo [--out DIR] [--quick]`` -- the one-command tour (:mod:`hessian_lr.demo`):
  range test, 1cycle vs piecewise constant with the LR estimator on, figures and ``report.md``.
* ``hessian-lr range-test ...`` -- the LR range test (Smith 2017, CLR §3.3) with every
  :class:`~hessian_lr.training.recipes.RangeTestSetup` field as a flag, printing the suggested
  bounds and writing ``range_test.json`` and ``range_test.png``.
* ``hessian-lr train ...`` -- one run of :func:`hessian_lr.training.runner.train` with every
  ``TrainConfig`` field as a flag (:mod:`hessian_lr.training.config` maps fields to flags);
  ``--schedule`` takes JSON, a number or ``NAME:key=value,...`` (see :func:`parse_schedule`);
  ``--log tensorboard:DIR`` (repeatable) sends the records to more sinks.
* ``hessian-lr experiment`` / ``hessian-lr figures`` -- the experiment scripts and the figures
  are scripts of the repository checkout, not part of the installed package: these commands
  print the command to run from the checkout and exit with status 2.

matplotlib and the training machinery are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_schedule", "CHECKOUT_COMMANDS"]

#: What ``hessian-lr experiment`` / ``figures`` print: the commands to run from a checkout.
CHECKOUT_COMMANDS = {
    "experiment": "python experiments/{name}.py --preset smoke",
    "figures": "python -m paper_figures {args}",
}


def parse_schedule(text: str, *, steps: int | None = None) -> dict[str, Any]:
    """Parse ``--schedule`` (JSON, a number, or ``NAME:key=value,...``) into a schedule dict.

    The same parser as ``TrainConfig(schedule="...")``
    (:func:`hessian_lr.training.config.schedule_spec`): missing lengths are filled in from
    ``steps``, and the result is validated by building the schedule.

    Raises:
        ValueError: unparsable text, unknown name, or a schedule its class rejects.

    Example:
        >>> parse_schedule("onecycle:max_lr=0.2", steps=100)["step_size"]
        45
    """
    from .training.config import schedule_spec

    return schedule_spec(text, steps=steps)


# ----------------------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _positive_int(text: str) -> int:
    """The --threads type: an integer ≥ 1 (``--threads 0`` is refused, not silently ignored)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be at least 1, got {value} (leave the option out for torch's default)"
        )
    return value


def _add_common(p: argparse.ArgumentParser, *, threads_default: int | None = None) -> None:
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=threads_default,
        help="torch CPU threads (default: torch's choice; 1 is fastest for tiny models, "
        "especially on a shared machine)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _checkout_parser(sub: Any, name: str, what: str) -> None:
    p = sub.add_parser(
        name,
        help=f"{what} (a script of the repository checkout: prints the command)",
        description=f"{what} are scripts of the repository checkout, not part of the installed "
        "package. Run them from a checkout's root, e.g.\n  "
        + CHECKOUT_COMMANDS[name].format(name="f3_onecycle_vs_pc", args="F3"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hessian-lr`` (its subcommands and their flags)."""
    from .training.config import SCHEDULE_HELP, add_dataclass_args
    from .training.recipes import RangeTestSetup
    from .training.train_config import TrainConfig

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
    _add_common(demo, threads_default=1)

    rt = sub.add_parser(
        "range-test",
        help="LR range test: suggested bounds, range_test.json and .png",
        description="The LR range test (Smith 2017, CLR §3.3; Smith & Topin 2017, SC §3): train "
        "briefly while the LR rises from --start-lr to --end-lr, record the loss and held-out "
        "accuracy, and suggest max_lr (accuracy peak), base_lr = max_lr/3 or /4, and the "
        "steepest-descent LR; the curvature cross-check adds 2/lambda_max at the start.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rt.set_defaults(subparser=rt)
    add_dataclass_args(rt, RangeTestSetup)
    rt.add_argument("--no-val", dest="val_examples", action="store_const", const=0,
                    help="no held-out evaluation (= --val-examples 0)")  # fmt: skip
    rt.add_argument("--no-curvature", dest="curvature_check", action="store_false",
                    help="skip the 2/lambda_max check (= --no-curvature-check)")  # fmt: skip
    rt.add_argument("--out", default="range_test_out", help="output folder")
    _add_common(rt)

    tr = sub.add_parser(
        "train",
        help="train one configuration (hessian_lr.training.runner), resumable, with records",
        description="Train one TrainConfig into <out>/<experiment>/<run>/ (config.json, "
        "meta.json, records.jsonl). Rerunning the same command resumes from the last checkpoint "
        "or skips a finished run; rerunning it with other values is refused unless "
        "--allow-config-change.\n\n" + SCHEDULE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr.set_defaults(subparser=tr)  # for its error messages
    add_dataclass_args(tr, TrainConfig)
    tr.add_argument("--out", default="results", help="results root (default results)")
    tr.add_argument("--experiment", default="train", help="experiment folder (default train)")
    tr.add_argument("--run", default=None, help="run folder (default seed<seed>)")
    tr.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="KIND:PATH",
        help="also send the records to tensorboard:DIR, csv:PATH or jsonl:PATH (repeatable)",
    )
    tr.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a run folder made with other values (the change is noted in meta.json)",
    )
    _add_common(tr)

    _checkout_parser(sub, "experiment", "The experiments")
    _checkout_parser(sub, "figures", "The paper figures")
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
    from .training.config import dataclass_from_args
    from .training.recipes import RangeTestSetup

    try:
        cfg = dataclass_from_args(RangeTestSetup, args)
    except (TypeError, ValueError) as err:
        args.subparser.error(str(err))
    _set_threads(args.threads)
    from matplotlib.figure import Figure

    from .demo import describe_range_test
    from .records import to_jsonable, write_json_atomic
    from .training.recipes import range_test_from_config
    from .training.setup import resolve_device

    print(
        f"LR range test: {cfg.model} on {cfg.dataset}, {cfg.optimizer}, LR {cfg.start_lr:g} -> "
        f"{cfg.end_lr:g} ({cfg.ramp}) over {cfg.num_steps} updates, device "
        f"{resolve_device(cfg.device)}",
        flush=True,
    )
    result = range_test_from_config(cfg, progress=not args.no_progress)
    for line in describe_range_test(result):
        print("  " + line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["cli"] = {**to_jsonable(cfg), "out": args.out, "threads": args.threads}
    write_json_atomic(out / "range_test.json", payload)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    result.plot(ax)
    ax.set_xlabel(f"learning rate ({cfg.ramp} ramp)")
    ax.set_ylabel("cross-entropy loss (nats)")
    for other in fig.axes:
        if other is not ax:
            other.set_ylabel("held-out accuracy (fraction)")
    ax.set_title(
        f"LR range test: {cfg.model} on {cfg.dataset}, {cfg.optimizer} "
        f"(momentum {cfg.momentum:g}), {cfg.num_steps} updates",
        fontsize=10,
    )
    fig.savefig(out / "range_test.png", dpi=110)
    print(f"wrote {out / 'range_test.json'} and {out / 'range_test.png'} ({result.seconds:.1f} s)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .records import make_sink
    from .training.config import dataclass_from_args
    from .training.run import RunLockedError
    from .training.runner import ConfigMismatchError, TrainConfig, train

    parser = args.subparser
    try:
        cfg = dataclass_from_args(TrainConfig, args)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    try:
        sinks = [make_sink(spec) for spec in args.log]
    except (ImportError, TypeError, ValueError) as err:
        parser.error(f"--log: {err}")
    from .training.run import check_folder_names

    try:  # before anything is created: --run ../x must not write outside the experiment
        check_folder_names(args.experiment, args.run or f"seed{cfg.seed}")
    except ValueError as err:
        parser.error(str(err))
    _set_threads(args.threads)
    from .training.distributed import DistContext, init_from_env

    started_group = init_from_env(cfg.device)  # under torchrun: gloo on CPU, NCCL on GPUs
    main_rank = DistContext.detect().is_main
    say = print if main_rank else (lambda *a, **k: None)
    run = args.run or f"seed{cfg.seed}"
    say(f"train -> {Path(args.out) / args.experiment / run}", flush=True)
    say(f"  schedule: {json.dumps(cfg.schedule)}", flush=True)
    t0 = time.perf_counter()
    try:
        res = train(
            cfg,
            root=args.out,
            experiment=args.experiment,
            run=run,
            progress=not args.no_progress,
            sinks=sinks,
            allow_config_change=args.allow_config_change,
        )
    except (RunLockedError, ConfigMismatchError) as err:
        say(f"hessian-lr train: {err}", file=sys.stderr)
        return 2
    finally:
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f} %"

    note = f", resumed at step {res.resumed_from}" if res.resumed_from else ""
    say(
        f"  {res.status}: {res.steps} steps, final test accuracy {pct(res.final_test_accuracy)}, "
        f"best {pct(res.best_test_accuracy)} ({time.perf_counter() - t0:.1f} s{note})"
    )
    say(f"  records: {res.run_dir / 'records.jsonl'}")
    return 0 if res.status in ("finished", "diverged") else 1


def _cmd_checkout(command: str, rest: Sequence[str]) -> int:
    """Explain that experiments/figures are checkout scripts, with the exact command."""
    rest = [a for a in rest if a != "--"]
    if command == "experiment":
        name, extra = (rest[0], rest[1:]) if rest else ("f3_onecycle_vs_pc", ["--preset", "smoke"])
        name = name.removesuffix(".py")
        cmd = f"python experiments/{name}.py " + " ".join(map(shlex.quote, extra))
        what = "the experiments are scripts of the repository checkout"
    else:
        cmd = "python -m paper_figures " + " ".join(map(shlex.quote, rest))
        what = "paper_figures is a package of the repository checkout"
    print(
        f"hessian-lr {command}: {what}, not part of the installed package. From the root of a "
        f"checkout (git clone ...; pip install -e .), run:\n    {cmd.strip()}",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hessian-lr`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m hessian_lr.cli -- train ...` (see the README)
        argv = argv[1:]
    if argv[:1] in (["experiment"], ["figures"]) and argv[1:] not in (["-h"], ["--help"]):
        return _cmd_checkout(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "range-test":
        return _cmd_range_test(args)
    if args.command == "train":
        return _cmd_train(args)
    if args.command in ("experiment", "figures"):
        return _cmd_checkout(args.command, [a for a in [args.name, *args.args] if a])
    parser.error(f"unknown command {args.command!r}")  # unreachable: argparse checks choices
    return 2


if __name__ == "__main__":
    sys.exit(main())
