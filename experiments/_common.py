"""What every experiment script shares: presets, flags, and where results go.

Each script defines a frozen ``Config`` dataclass derived from ``_presets.Base``, ``PRESETS =
presets(Config, paper=..., gpu=..., cpu=..., smoke=...)`` and ``main(cfg, *, out, device,
progress) -> dict`` (a summary; a script made of training arms builds it with
``arms_main(arms, summarize, EXPERIMENT)``), and ends with ``cli(__doc__, PRESETS, main)``.
Its units of work (one training run or one range test each) are listed by ``arms(cfg, seed)``
(training runs) or by its own ``plan(cfg)`` / ``run_unit(cfg, name, ...)``, so ``run_all.py``
can run the units of every experiment in parallel processes and then call ``main`` with
``--summarize-only``.
Flags: ``--preset``, ``--out``, ``--device``, ``--seeds``, ``--scale`` and ``--<field> value``
for any field of the Config, parsed by the library's ``hessian_lr.training.config`` (the same
language as ``python -m hessian_lr train``: ``a,b,c`` or JSON for sequences, ``--x/--no-x``
for booleans). Results land in ``<out>/<experiment>/<run>/``
(``hessian_lr.records``); the summary in ``<out>/<experiment>/summary.json``, next to the
config that produced it (``experiment_config.json``). Rerunning resumes unfinished runs and skips
finished ones, so an interrupted sweep loses nothing already computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from _presets import scaled, train_fields, train_macs

from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.config import add_dataclass_args, dataclass_from_args
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, TrainResult, train
from hessian_lr.training.train_config import config_diff

__all__ = [
    "cli",
    "plan",
    "run_unit",
    "request_stop",
    "stop_check",
    "StopRequested",
    "result_from_folder",
    "run_train",
    "run_arms",
    "arms_main",
    "train_kwargs",
    "onecycle_pc_schedules",
    "save_summary",
    "experiment_name",
    "load_summary",
    "find_twin",
    "copy_twin",
]

# Files of a finished run that make it a result (checkpoints are not copied).
_RUN_FILES = ("config.json", "meta.json", "records.jsonl")


def experiment_name(file: str) -> str:
    """``experiments/f3_onecycle_vs_pc.py`` -> ``f3_onecycle_vs_pc``."""
    return Path(file).stem


def train_kwargs(cfg: Any, seed: int) -> dict[str, Any]:
    """The ``TrainConfig`` fields taken from the base preset (``_presets.train_fields``)."""
    return train_fields(cfg, seed)


# ------------------------------------------------------------------ modes: stop, summarize-only
_STATE = {"stop": False, "summarize_only": False}


class StopRequested(KeyboardInterrupt):
    """Raised inside a run when ``run_all`` asked this process to stop (at a checkpoint)."""


def request_stop(*_: Any) -> None:
    """Signal handler: stop the running unit at its next checkpoint boundary."""
    _STATE["stop"] = True


def stop_check(step: int, every: int) -> None:
    """Raise ``StopRequested`` if a stop was requested and ``step`` sits on a checkpoint.

    ``train()`` writes its checkpoint for step ``s`` at the end of update ``s - 1`` when
    ``s % checkpoint_every == 0``; raising in the callback of update ``s`` (before its record is
    written) loses nothing, and a resumed run continues from there.
    """
    if _STATE["stop"] and step >= 0 and step % max(1, every) == 0:
        raise StopRequested(f"stop requested at step {step}")


def _stop_callback(every: int) -> Callable[[int, Any, dict], None]:
    def callback(step: int, model: Any, record: dict) -> None:
        stop_check(step, every)

    return callback


def result_from_folder(out: str | Path, experiment: str, run: str) -> TrainResult:
    """A ``TrainResult`` read from a run folder without training (summarize-only mode).

    ``status`` is the folder's (``finished``, ``diverged``), ``interrupted`` for a run that
    stopped part-way (its records are kept), or ``missing`` when it never started.
    """
    run_obj = Run(out, experiment, run)
    if not run_obj.dir.exists():
        return TrainResult(run_obj.dir, "missing", 0, None, None, 0.0, None)
    meta = run_obj.meta()
    status = meta.get("status", "missing")
    if status not in ("finished", "diverged"):
        status = "interrupted"
    recs = run_obj.records() if run_obj.records_path.exists() else []
    accs = [r["test_accuracy"] for r in recs if r.get("test_accuracy") is not None]
    return TrainResult(
        run_obj.dir,
        status,
        meta.get("steps_done", len(recs)),
        accs[-1] if accs else None,
        max(accs) if accs else None,
        meta.get("seconds", 0.0),
        None,
    )


def find_twin(cfg: TrainConfig, out: str | Path, experiment: str, run: str) -> Path | None:
    """A finished run of another experiment under ``out`` with exactly this ``TrainConfig``.

    Experiments share arms (F4's 700-step cycle and F6's full-data arms are F3's runs), and a
    run is determined by its config and seed (training is deterministic on CPU), so training the
    same config twice only spends compute. Only ``finished``/``diverged`` runs count, the device
    is ignored, and the run's own folder is never its twin. ``None`` when there is none.
    """
    own = Run(out, experiment, run).dir.resolve()
    if (own / "meta.json").exists():
        return None  # started here already: resume or skip it as usual
    for config in sorted(Path(out).glob("*/*/config.json")):
        folder = config.parent
        if folder.resolve() == own or folder.parent.name == experiment:
            continue
        try:
            status = read_json(folder / "meta.json").get("status")
            same = status in ("finished", "diverged") and not config_diff(read_json(config), cfg)
        except (OSError, ValueError):
            continue
        if same and all((folder / f).exists() for f in _RUN_FILES):
            return folder
    return None


def copy_twin(src: Path, dst: Path) -> None:
    """Copy a finished run's result files to ``dst``; ``meta.json`` records ``copied_from``."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "records.jsonl").write_bytes((src / "records.jsonl").read_bytes())
    write_json_atomic(dst / "config.json", read_json(src / "config.json"))
    meta = read_json(src / "meta.json")
    meta["copied_from"] = f"{src.parent.name}/{src.name}"
    meta["experiment"] = dst.parent.name
    write_json_atomic(dst / "meta.json", meta)  # last: the folder counts as finished from here


def summarize_only() -> bool:
    """True when ``--summarize-only`` was given: units are read, never trained."""
    return _STATE["summarize_only"]


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

    ``train_fn`` is called as ``train_fn(cfg, root=, experiment=, run=, progress=, callback=)``
    (default: ``hessian_lr.training.runner.train``; ``callback`` stops the run at a checkpoint
    when ``run_all`` asks); a script that needs its own callback or preloaded data wraps it and
    calls ``stop_check`` from its callback. In summarize-only mode nothing trains: the result is
    read from the folder (``result_from_folder``).
    """
    if _STATE["summarize_only"]:
        return result_from_folder(out, experiment, run)
    cfg = dataclasses.replace(cfg, device=device)
    twin = find_twin(cfg, out, experiment, run)
    if twin is not None:
        copy_twin(twin, Run(out, experiment, run).dir)
        result = result_from_folder(out, experiment, run)
        print(f"  {experiment}/{run}: {result.status}, copied from {twin.parent.name}/{twin.name}")
        return result
    t0 = time.perf_counter()
    result = train_fn(
        cfg,
        root=out,
        experiment=experiment,
        run=run,
        progress=progress,
        callback=_stop_callback(cfg.checkpoint_every),
    )
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


def _test_size(dataset: str) -> int:
    return {"digits": 359, "cifar10": 10_000, "cifar100": 10_000}.get(dataset, 10_000)


def train_cost(cfg: Any, tcfg: TrainConfig) -> float:
    """Estimated multiply-accumulates of one run: its steps, plus its evaluations of the test set.

    ``cfg`` is the experiment's Config (model and width); ``tcfg`` the run.
    """
    steps = tcfg.steps
    evals = steps // max(1, tcfg.eval_every) + 1
    per_image = train_macs(cfg, 1, batch_size=1) / 3.0
    return (
        train_macs(cfg, steps, batch_size=tcfg.batch_size)
        + evals * _test_size(tcfg.dataset) * per_image
    )


def arm_units(module: Any, cfg: Any) -> list[tuple[str, TrainConfig]]:
    """``[(run name, TrainConfig)]`` of an experiment's ``arms(cfg, seed)``, seed-major."""
    return [
        (f"{name}_seed{seed}", tcfg)
        for seed in cfg.seeds
        for name, tcfg in module.arms(cfg, seed).items()
    ]


def plan(module: Any, cfg: Any) -> list[dict[str, Any]]:
    """The experiment's units of work: ``[{"name", "seed", "macs"}]`` in run order.

    A module with its own ``plan(cfg)`` (range tests) gives it; otherwise every arm of
    ``arms(cfg, seed)`` is one unit.
    """
    if hasattr(module, "plan"):
        return module.plan(cfg)
    factor = getattr(module, "COST_FACTOR", 1.0)  # e.g. curvature probes on top of training
    return [
        {"name": name, "seed": tcfg.seed, "macs": factor * train_cost(cfg, tcfg)}
        for name, tcfg in arm_units(module, cfg)
    ]


def run_unit(module: Any, cfg: Any, name: str, *, out: str | Path, device: str) -> Any:
    """Run (or resume, or skip if finished) one unit of ``plan(module, cfg)`` by name."""
    if hasattr(module, "run_unit"):
        return module.run_unit(cfg, name, out=out, device=device)
    for run, tcfg in arm_units(module, cfg):
        if run == name:
            return run_train(
                tcfg,
                out=out,
                experiment=module.EXPERIMENT,
                run=run,
                device=device,
                progress=False,
                train_fn=module.train_fn_for(cfg) if hasattr(module, "train_fn_for") else train,
            )
    raise KeyError(f"{module.EXPERIMENT} has no unit {name!r}")


def save_summary(out: str | Path, experiment: str, summary: dict[str, Any]) -> Path:
    """Write ``<out>/<experiment>/summary.json`` atomically and return its path."""
    path = Path(out) / experiment / "summary.json"
    write_json_atomic(path, summary)
    return path


def load_summary(out: str | Path, experiment: str) -> dict[str, Any]:
    return read_json(Path(out) / experiment / "summary.json")


def unit_status(module: Any, cfg: Any, out: str | Path) -> dict[str, dict[str, Any]]:
    """``{unit: {"status", "steps"}}`` read from the run folders (``missing`` if absent)."""
    status = {}
    for unit in plan(module, cfg):
        run = Run(out, module.EXPERIMENT, unit["name"])
        meta = run.meta() if run.dir.exists() else {}
        state = meta.get("status", "missing")
        if state not in ("finished", "diverged", "missing"):
            state = "interrupted"
        status[unit["name"]] = {"status": state, "steps": meta.get("steps_done")}
    return status


def arms_main(
    arms: Callable[[Any, int], dict[str, TrainConfig]],
    summarize: Callable[..., dict[str, Any]],
    experiment: str,
    *,
    train_fn_for: Callable[[Any], Callable[..., TrainResult]] | None = None,
) -> Callable[..., dict[str, Any]]:
    """The one ``main`` of every experiment made of training arms: run them all, then summarise.

    Args:
        arms: ``arms(cfg, seed) -> {arm name: TrainConfig}`` (the same names for every seed).
        summarize: ``summarize(cfg, results, out=) -> summary``, ``results`` as :func:`run_arms`
            returns them (arm -> one ``TrainResult`` per seed).
        experiment: the experiment's name (its results folder).
        train_fn_for: ``cfg -> train_fn`` for arms that train their own way (``run_train``).

    Returns:
        ``main(cfg, *, out, device, progress) -> summary``, for :func:`cli`.
    """

    def main(cfg: Any, *, out: str, device: str, progress: bool) -> dict[str, Any]:
        kw = {} if train_fn_for is None else {"train_fn": train_fn_for(cfg)}
        results = run_arms(
            lambda seed: arms(cfg, seed),
            cfg.seeds,
            out=out,
            experiment=experiment,
            device=device,
            progress=progress,
            **kw,
        )
        return summarize(cfg, results, out=out)

    main.__module__ = arms.__module__  # cli finds the experiment's module (and name) from it
    return main


def _parser(doc: str | None, presets: dict[str, Any]) -> argparse.ArgumentParser:
    """The flags every experiment takes, and ``--<field>`` for every field of its Config."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default="cpu",
        help="paper: the paper's setting (GPU days); gpu: the paper's protocol at a size one GPU "
        "runs in minutes; cpu: the same protocol for one CPU core per run; smoke: seconds, for "
        "tests (default: cpu). See experiments/_presets.py",
    )
    parser.add_argument("--out", default="results", help="results folder (default: results)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the preset's iteration counts by this (its Config's SCALED fields; "
        "run_all.py's --scale)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="train nothing: summarise the runs found in --out (unfinished ones are marked "
        "incomplete); run_all.py uses it after its parallel workers",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small models run faster and steadier so on a "
        "shared CPU; 0 keeps torch's default)",
    )
    default = presets["cpu"]
    group = parser.add_argument_group("overrides of the preset's Config (help shows preset cpu)")
    add_dataclass_args(group, type(default), defaults=default, skip=("seeds",), prefix="override_")
    return parser


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace, presets: dict) -> Any:
    """The preset, scaled, with the flags' overrides (parsed by ``hessian_lr.training.config``)."""
    cfg = scaled(presets[args.preset], args.scale)
    try:
        cfg = dataclass_from_args(type(cfg), args, base=cfg, prefix="override_")
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    return cfg


def cli(
    doc: str | None,
    presets: dict[str, Any],
    main: Callable[..., dict[str, Any]],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Parse flags, build the Config (preset + overrides), run ``main``, save the summary."""
    parser = _parser(doc, presets)
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    _STATE["summarize_only"] = args.summarize_only
    cfg = _config(parser, args, presets)
    module = sys.modules[main.__module__]
    experiment = experiment_name(module.__file__)
    print(f"{experiment} [{args.preset}] -> {Path(args.out) / experiment}", flush=True)
    write_json_atomic(
        Path(args.out) / experiment / "experiment_config.json",
        {"preset": args.preset, "scale": args.scale, "config": cfg},
    )
    t0 = time.perf_counter()
    try:
        summary = main(cfg, out=args.out, device=args.device, progress=not args.no_progress)
    except Exception as e:  # noqa: BLE001 - a partial set of runs may not summarise
        if not args.summarize_only:
            raise
        summary = {"error": f"{type(e).__name__}: {e}"}
    summary = {"experiment": experiment, "preset": args.preset, **summary}
    if hasattr(module, "arms") or hasattr(module, "plan"):
        status = unit_status(module, cfg, args.out)
        summary["complete"] = all(s["status"] in ("finished", "diverged") for s in status.values())
        summary["units"] = status
    # Wall time summed over invocations (a resumed or skipped rerun adds its own, not replaces).
    previous = Path(args.out) / experiment / "summary.json"
    before = 0.0
    if previous.exists():
        old = read_json(previous)
        before = old.get("seconds", 0.0) if old.get("preset") == args.preset else 0.0
    summary["seconds"] = before + (0.0 if args.summarize_only else time.perf_counter() - t0)
    path = save_summary(args.out, experiment, summary)
    print(f"summary: {path} ({summary['seconds']:.0f}s)", flush=True)
    return summary
