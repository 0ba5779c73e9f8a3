"""Run every experiment's preset at once: units in parallel processes, a hard deadline, summaries.

One command for a lent GPU machine (or a CPU-only smoke test). Every experiment's units of work
(one training run or one range test each; ``_common.plan``) become one child process each:
``--jobs`` at a time on ``--device`` for ``--preset``, and, in parallel, ``--cpu-jobs`` at a
time for ``--cpu-preset`` on CPU cores (one torch thread each, ``nice``-d so the GPU's feeder
processes keep their cores). Every unit is resumable (training runs checkpoint every
``checkpoint_every`` steps), so rerunning the same command continues where the last one stopped.

At ``--deadline`` seconds after the start no unit is launched any more; the running ones get
SIGUSR1 and stop at their next checkpoint (range tests, which cannot resume, stop at once),
then after ``--grace`` seconds whatever still runs is terminated. Finally every experiment is
summarised from what is on disk (``--summarize-only``): ``summary.json`` says ``complete``
false and lists each unit's status when a unit did not finish, and the figures mark such
results incomplete.

Layout: ``<out>/<preset>/<experiment>/<run>/`` (the ``gpu`` family in ``<out>/gpu``, the
``cpu`` family in ``<out>/cpu``), ``<out>/logs/<preset>/<experiment>/<unit>.log``, and
``<out>/run_all.json`` (every unit: estimate, start, end, exit code, status). Import into the
repository's ``results_gpu/`` and ``results_cpu/`` with ``--import-from <out>``.

Order: on the GPU the longest units start first (LPT: the best makespan); on CPU the shortest
first within each seed (the most finished units when the deadline cuts a family that needs
hours). ``--dry-run`` prints the plan with time estimates from ``--gpu-macs-per-s`` and
``--cpu-macs-per-s`` (multiply-accumulates per second: assumptions, not measurements).

Examples::

    python experiments/run_all.py --preset gpu --device cuda --jobs 8 \\
        --cpu-preset cpu --cpu-jobs 6 --data-root data --out /tmp/out --deadline 420
    python experiments/run_all.py --preset smoke --device cpu --jobs 2 --out /tmp/smoke
    python experiments/run_all.py --import-from /tmp/out
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))  # the checkout's hessian_lr, also when it is not installed

import _common  # noqa: E402
from _presets import scaled  # noqa: E402
from _results_io import import_results, prune_stale, thin_records  # noqa: E402, F401

from hessian_lr.records import to_jsonable  # noqa: E402

#: Experiments run_all knows, in figure order; F5 and F13-F15 join when their owners add them.
EXPERIMENTS = (
    "f2_range_test",
    "f3_onecycle_vs_pc",
    "f4_cycle_length",
    "f5_lr_estimates",
    "f6_limited_data",
    "f7_large_lr_regularization",
    "f8_sweeps",
    "f9_lenet_mnist",
    "f10_clr_vs_fixed",
    "f11_sgdr",
    "f12_curvature",
    "f13_noise_null",
    "f14_what_tracks",
    "f15_edge_of_stability",
)
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")


@dataclass
class Job:
    """One unit of one experiment in one family, and its process once launched."""

    experiment: str
    unit: str
    preset: str
    device: str
    seed_rank: int
    macs: float
    estimate_s: float
    proc: subprocess.Popen | None = None
    start: float | None = None
    end: float | None = None
    returncode: int | None = None
    signalled: list[str] = field(default_factory=list)
    config_key: str | None = None  # a training run's TrainConfig, as JSON (None: a range test)
    after: Job | None = None  # an earlier unit with the same config: wait, then copy its result

    @property
    def key(self) -> str:
        return f"{self.preset}/{self.experiment}/{self.unit}"


def _modules(names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        if not (HERE / f"{name}.py").exists():
            continue
        module = importlib.import_module(name)
        if hasattr(module, "PRESETS") and (hasattr(module, "arms") or hasattr(module, "plan")):
            out[name] = module
    return out


def make_jobs(
    preset: str, device: str, *, scale: float, only: list[str], macs_per_s: float
) -> list[Job]:
    """Every unit of every experiment that has ``preset``, with its cost estimate."""
    names = [e for e in EXPERIMENTS if not only or any(e.startswith(o) for o in only)]
    jobs = []
    for name, module in _modules(names).items():
        if preset not in module.PRESETS:
            continue
        cfg = scaled(module.PRESETS[preset], scale)
        seeds = list(cfg.seeds)
        configs = dict(_common.arm_units(module, cfg)) if not hasattr(module, "plan") else {}
        for unit in _common.plan(module, cfg):
            rank = seeds.index(unit["seed"]) if unit.get("seed") in seeds else 0
            job = Job(name, unit["name"], preset, device, rank, unit["macs"], 0.0)
            if unit["name"] in configs:
                tcfg = dataclasses.replace(configs[unit["name"]], device="cpu")
                job.config_key = json.dumps(to_jsonable(tcfg), sort_keys=True)
            jobs.append(job)
    first: dict[str, Job] = {}
    for job in jobs:  # a unit that repeats an earlier experiment's run copies it (find_twin)
        if job.config_key is not None:
            original = first.setdefault(job.config_key, job)
            if original is not job and original.experiment != job.experiment:
                job.after, job.macs = original, 0.0
        job.estimate_s = job.macs / macs_per_s
    return jobs


def _launchable(queue: list[Job]) -> Job | None:
    """The first queued unit that is not waiting for its twin to end (then it copies it)."""
    for job in queue:
        if job.after is None or job.after.end is not None:
            queue.remove(job)
            return job
    return None


def order(jobs: list[Job], policy: str) -> list[Job]:
    """``lpt``: longest first; ``short-first``: by seed, then shortest first."""
    if policy == "lpt":
        return sorted(jobs, key=lambda j: -j.macs)
    if policy == "short-first":
        return sorted(jobs, key=lambda j: (j.seed_rank, j.macs))
    raise ValueError(f"order must be 'lpt' or 'short-first', got {policy!r}")


def data_env(data_root: str | None, out: Path) -> str | None:
    """The ``HESSIAN_LR_DATA`` folder for ``--data-root``.

    The library looks for ``<HESSIAN_LR_DATA>/fashion-mnist/<IDX files>``; a folder that holds
    the IDX files itself is linked as ``<out>/.data/fashion-mnist``.
    """
    if data_root is None:
        return None
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise SystemExit(f"--data-root {root} is not a folder")
    holds = any((root / f).exists() or (root / f"{f}.gz").exists() for f in IDX_FILES)
    if not holds:
        return str(root)
    link_dir = out / ".data"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "fashion-mnist"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(root, target_is_directory=True)
    return str(link_dir)


def launch(job: Job, args: argparse.Namespace, env: dict[str, str], out: Path) -> None:
    log = out / "logs" / job.preset / job.experiment / f"{job.unit}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"{job.experiment}:{job.unit}",
        "--preset",
        job.preset,
        "--device",
        job.device,
        "--scale",
        str(args.scale if job.preset == args.preset else args.cpu_scale),
        "--out",
        str(out),
    ]
    child_env = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if job.device == "cpu":
        child_env["CUDA_VISIBLE_DEVICES"] = ""
        cmd += ["--nice", str(args.cpu_nice)]
    with open(log, "ab") as fh:
        job.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env)
    job.start = time.time()


def _status(out: Path, job: Job) -> str:
    meta = out / job.preset / job.experiment / job.unit / "meta.json"
    try:
        return json.loads(meta.read_text()).get("status", "missing")
    except (OSError, ValueError):
        return "missing"


def _report(jobs: list[Job], out: Path, t0: float, args: argparse.Namespace) -> None:
    rows = [
        {
            "unit": j.key,
            "device": j.device,
            "macs": j.macs,
            "estimate_s": round(j.estimate_s, 1),
            "start_s": None if j.start is None else round(j.start - t0, 1),
            "seconds": None if j.end is None or j.start is None else round(j.end - j.start, 1),
            "returncode": j.returncode,
            "signals": j.signalled,
            "status": _status(out, j),
        }
        for j in jobs
    ]
    info = {"argv": sys.argv[1:], "deadline_s": args.deadline, "wall_s": time.time() - t0}
    (out / "run_all.json").write_text(json.dumps({**info, "units": rows}, indent=1))


def _signal(job: Job, sig: int, name: str) -> None:
    if job.proc is not None and job.proc.poll() is None:
        try:
            job.proc.send_signal(sig)
            job.signalled.append(name)
        except ProcessLookupError:
            pass


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    queues, slots = _plan(args)
    if args.dry_run:
        return 0
    env = _environment(args, out)
    all_jobs = [j for q in queues.values() for j in q]
    t0 = time.time()
    try:
        _drive(queues, slots, args, env, out, t0)
    finally:
        _report(all_jobs, out, t0, args)
    summarize(queues, args, env, out)
    _report(all_jobs, out, t0, args)
    failed = [j.key for j in all_jobs if j.returncode not in (0, None) and not j.signalled]
    if failed:
        print(f"units that failed (not stopped by the deadline): {failed}", flush=True)
    print(f"wall {time.time() - t0:.0f}s; report: {out / 'run_all.json'}", flush=True)
    return 1 if failed else 0


def _plan(args: argparse.Namespace) -> tuple[dict[str, list[Job]], dict[str, int]]:
    """Each family's queue of units and number of slots, printed (every unit with --dry-run)."""
    only = [s.strip() for s in args.only.split(",")] if args.only else []
    families = [(args.preset, args.device, args.jobs, args.scale, args.gpu_macs_per_s)]
    if args.cpu_preset and args.cpu_jobs > 0:
        families.append(
            (args.cpu_preset, "cpu", args.cpu_jobs, args.cpu_scale, args.cpu_macs_per_s)
        )
    queues: dict[str, list[Job]] = {}
    slots: dict[str, int] = {}
    for preset, device, n, scale, rate in families:
        rate = rate if device != "cpu" else args.cpu_macs_per_s
        policy = args.order or ("short-first" if device == "cpu" else "lpt")
        jobs = make_jobs(preset, device, scale=scale, only=only, macs_per_s=rate)
        queues[preset] = order(jobs, policy)
        slots[preset] = n
        work = sum(j.estimate_s for j in jobs)
        # GPU: one aggregate rate shared by all slots; CPU: the rate of one core per slot.
        makespan = work if device != "cpu" else work / max(1, n)
        per_slot = rate / max(1, n) if device != "cpu" else rate
        risky = [j for j in jobs if j.macs / per_slot > args.deadline]
        print(
            f"[{preset} on {device}] {len(jobs)} units, {sum(j.macs for j in jobs):.3g} MACs; "
            f"at {rate:.2g} MAC/s{' per core' if device == 'cpu' else ''}: ~{makespan:.0f} s "
            f"on {n} slot(s) ({policy}); {len(risky)} unit(s) longer than the deadline at "
            f"1/{n} of the rate",
            flush=True,
        )
        if args.dry_run:
            for j in queues[preset]:
                alone = j.macs / (rate if device != "cpu" else rate)
                shared = j.macs / per_slot
                print(
                    f"  {j.key:58s} {j.macs:9.3g} MACs  ~{alone:6.0f} s alone, "
                    f"~{shared:6.0f} s sharing",
                    flush=True,
                )
    return queues, slots


def _environment(args: argparse.Namespace, out: Path) -> dict[str, str]:
    """The workers' environment: this checkout on ``PYTHONPATH``, ``HESSIAN_LR_DATA``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    data = data_env(args.data_root, out)
    if data is not None:
        env["HESSIAN_LR_DATA"] = data
    return env


def _drive(
    queues: dict[str, list[Job]],
    slots: dict[str, int],
    args: argparse.Namespace,
    env: dict[str, str],
    out: Path,
    t0: float,
) -> None:
    """Launch units into free slots until the queues are empty or the deadline stops them."""
    pending = {p: list(q) for p, q in queues.items()}
    running: list[Job] = []
    stop_at = t0 + args.deadline
    stopping = False
    try:
        while True:
            now = time.time()
            for j in list(running):
                if j.proc.poll() is not None:
                    j.end, j.returncode = now, j.proc.returncode
                    running.remove(j)
                    print(
                        f"[{now - t0:6.0f}s] done {j.key} rc={j.returncode} "
                        f"{j.end - j.start:.0f}s (est {j.estimate_s:.0f}s) {_status(out, j)}",
                        flush=True,
                    )
            if not stopping and now >= stop_at - args.no_launch_window:
                stopping = True
                left = sum(len(q) for q in pending.values())
                print(f"[{now - t0:6.0f}s] deadline: {left} unit(s) not started", flush=True)
            if not stopping:
                for preset, q in pending.items():
                    busy = sum(j.preset == preset for j in running)
                    while q and busy < slots[preset]:
                        j = _launchable(q)
                        if j is None:
                            break
                        launch(j, args, env, out)
                        running.append(j)
                        busy += 1
                        print(
                            f"[{now - t0:6.0f}s] start {j.key} (est {j.estimate_s:.0f}s)",
                            flush=True,
                        )
            if not running and (stopping or not any(pending.values())):
                break
            if now >= stop_at and running:
                for j in running:
                    if "USR1" not in j.signalled:
                        _signal(j, signal.SIGUSR1, "USR1")
                if now >= stop_at + args.grace:
                    for j in running:
                        if "TERM" not in j.signalled:
                            _signal(j, signal.SIGTERM, "TERM")
                if now >= stop_at + args.grace + 10:
                    for j in running:
                        _signal(j, signal.SIGKILL, "KILL")
            time.sleep(0.5)
    except KeyboardInterrupt:
        for j in running:
            _signal(j, signal.SIGTERM, "TERM")
        raise


def summarize(queues: dict[str, list[Job]], args: argparse.Namespace, env, out: Path) -> None:
    """``<experiment>.py --summarize-only`` for every experiment of every family, in parallel."""
    procs = []
    for preset, jobs in queues.items():
        scale = args.scale if preset == args.preset else args.cpu_scale
        for experiment in sorted({j.experiment for j in jobs}):
            cmd = [
                sys.executable,
                str(HERE / f"{experiment}.py"),
                "--preset",
                preset,
                "--scale",
                str(scale),
                "--out",
                str(out / preset),
                "--summarize-only",
                "--no-progress",
            ]
            log = out / "logs" / preset / experiment / "summary.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as fh:
                child_env = dict(env, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
                procs.append(
                    (experiment, subprocess.Popen(cmd, stdout=fh, stderr=fh, env=child_env))
                )
    for experiment, p in procs:
        try:
            rc = p.wait(timeout=args.summary_timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "timeout"
        print(f"summary {experiment}: rc={rc}", flush=True)


def worker(args: argparse.Namespace) -> int:
    """One unit in this process (``--worker experiment:unit``)."""
    import torch

    experiment, unit = args.worker.split(":", 1)
    if args.nice:
        os.nice(args.nice)
    torch.set_num_threads(1)
    module = importlib.import_module(experiment)
    cfg = scaled(module.PRESETS[args.preset], args.scale)
    resumable = hasattr(module, "arms") or getattr(module, "RESUMABLE", False)

    def on_usr1(signum: int, frame: Any) -> None:
        if resumable:
            _common.request_stop()
        else:
            raise KeyboardInterrupt("deadline")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    try:
        _common.run_unit(module, cfg, unit, out=Path(args.out) / args.preset, device=args.device)
    except KeyboardInterrupt as e:
        print(
            f"{experiment}/{unit}: stopped ({e}) after {time.perf_counter() - t0:.0f}s", flush=True
        )
        return 3
    print(f"{experiment}/{unit}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="gpu", help="family for --device (default gpu)")
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--jobs", type=int, default=8, help="parallel units on --device (default 8)")
    p.add_argument("--scale", type=float, default=1.0, help="iteration-count factor for --preset")
    p.add_argument("--cpu-preset", default=None, help="family run on CPU cores beside (e.g. cpu)")
    p.add_argument("--cpu-jobs", type=int, default=0, help="parallel CPU units (one thread each)")
    p.add_argument("--cpu-scale", type=float, default=1.0, help="iteration factor, --cpu-preset")
    p.add_argument("--cpu-nice", type=int, default=5, help="niceness of the CPU units")
    p.add_argument("--out", default="run_all_out", help="output folder")
    p.add_argument("--data-root", default=None, help="folder with fashion-mnist IDX .gz files")
    p.add_argument("--deadline", type=float, default=420.0, help="seconds; then stop (default 420)")
    p.add_argument("--grace", type=float, default=20.0, help="seconds to reach a checkpoint")
    p.add_argument("--no-launch-window", type=float, default=10.0, help="no launches this close")
    p.add_argument("--summary-timeout", type=float, default=120.0)
    p.add_argument("--only", default="", help="comma-separated experiment prefixes (f3,f6)")
    p.add_argument("--order", choices=("lpt", "short-first"), default=None)
    p.add_argument(
        "--gpu-macs-per-s",
        type=float,
        default=3.5e12,
        help="aggregate GPU rate, multiply-accumulates/s (default 3.5e12: measured on an H200, "
        "6 ResNet-20 runs of batch 512 on Fashion-MNIST side by side, 5.8e11 each, while 8 CPU "
        "runs shared the cores; Python-bound small models (LeNet-5) run below it)",
    )
    p.add_argument(
        "--cpu-macs-per-s",
        type=float,
        default=1.6e10,
        help="assumed rate of one core (default 1.6e10: measured here, ResNet-8 w16, batch 128, "
        "one thread on a loaded 2-core machine, 0.22 s/iteration)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimates only")
    p.add_argument("--import-from", default=None, help="copy <dir>/gpu, <dir>/cpu into results_*")
    p.add_argument("--thin", type=int, default=5, help="--import-from: keep every k-th step")
    p.add_argument(
        "--prune-stale",
        action="store_true",
        help="remove results_cpu/results_gpu folders made by an earlier preset (also done "
        "after --import-from)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args)
    if args.import_from:
        import_results(args.import_from, thin=args.thin)
        prune_stale()
        return 0
    if args.prune_stale:
        prune_stale()
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
