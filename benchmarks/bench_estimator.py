"""Training-loop overhead of ``LREstimator``, per method, measured in one run (issue 3).

LeNet-5 on Fashion-MNIST (1,024 training images; synthetic data of the same shape when the
dataset is not installed, said in the output), plain SGD, batch 128: the wall time of N training
steps with the estimator every 10 steps, divided by the same loop without it. Each method runs in
its own loop (own model copy and optimizer, same batches); the loops advance in lockstep, each
taking its step in turn (rotated order), so that load spikes on a shared machine hit every loop
alike; the ratio is the median over rounds. One intra-op thread by default (``--threads``):
oversubscribed threads on a busy 2-core machine made timings erratic.

Targets (issue 3): ``secant`` <= 1.05x, one-HVP methods (``secant_hvp``, ``quadratic``) <= 1.5x,
``sharpness`` with warm-started Lanczos <= 2x. Also reported: HVPs per sharpness estimate, cold
(random start every time) vs warm (previous top eigenvector).

    python benchmarks/bench_estimator.py            # 200 steps, 3 rounds (several minutes)
    python benchmarks/bench_estimator.py --quick    # 40 steps, 1 round (< 2 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import configure_threads  # noqa: E402

from hessian_lr.lr.estimator import LREstimator  # noqa: E402


@dataclass(frozen=True)
class Config:
    steps: int = 200
    every: int = 10
    batch_size: int = 128
    images: int = 1024
    rounds: int = 3
    lr: float = 0.05
    lanczos_tol: float = 1e-2
    threads: int | None = 1
    seed: int = 0
    device: str = "cpu"


QUICK = dict(steps=40, rounds=1)

# name -> (methods, warm_start, target ratio)
RUNS = {
    "secant": (("secant",), True, 1.05),
    "secant_hvp": (("secant_hvp",), True, 1.5),
    "quadratic": (("quadratic",), True, 1.5),
    "sharpness (warm)": (("sharpness",), True, 2.0),
    "sharpness (cold)": (("sharpness",), False, None),
}


def lenet() -> nn.Module:
    try:
        from hessian_lr.training.models import LeNet5

        return LeNet5(1, 10, input_size=28)
    except ImportError:  # a local LeNet-5 (same layer stack) if models.py is absent
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip


def load_data(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from hessian_lr.training.data import load_dataset

        ds = load_dataset("fashion-mnist", subset=cfg.images, seed=cfg.seed)
        return ds.x, ds.y, f"Fashion-MNIST ({len(ds)} training images)"
    except Exception as err:  # not installed: synthetic data of the same shape
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(cfg.images, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (cfg.images,), generator=g)
        return x, y, f"SYNTHETIC data of Fashion-MNIST's shape ({type(err).__name__}: {err})"


def make_batches(x: torch.Tensor, y: torch.Tensor, cfg: Config) -> list[tuple]:
    g = torch.Generator().manual_seed(cfg.seed)
    out = []
    while len(out) < cfg.steps:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            out.append((x[idx].to(cfg.device), y[idx].to(cfg.device)))
    return out[: cfg.steps]


class Loop:
    """One training loop (own model copy, optimizer, estimator), advanced one step at a time."""

    def __init__(self, name: str, init: nn.Module, cfg: Config, loss_fn: nn.Module) -> None:
        self.name = name
        self.model = copy.deepcopy(init).to(cfg.device)
        self.sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else lambda: None
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.loss_fn = loss_fn
        self.seconds = 0.0
        self.est = None
        if name != "none":
            methods, warm, _ = RUNS[name]
            self.est = LREstimator(
                self.model,
                methods=methods,
                every=cfg.every,
                loss_fn=loss_fn,
                optimizer=self.opt,
                warm_start=warm,
                lanczos_tol=cfg.lanczos_tol,
                generator=torch.Generator(cfg.device).manual_seed(cfg.seed),
            )

    def step(self, bx: torch.Tensor, by: torch.Tensor) -> None:
        self.sync()
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.loss_fn(self.model(bx), by).backward()
        self.opt.step()
        if self.est is not None:
            self.est.step((bx, by) if self.est.due else None)
        self.sync()
        self.seconds += time.perf_counter() - t0


def run_round(names: list[str], init, cfg: Config, loss_fn, batches, steps: int) -> dict:
    """All loops in lockstep: at every step each loop takes its step, in a rotated order, so
    that a load spike on the shared machine hits all of them alike."""
    loops = [Loop(n, init, cfg, loss_fn) for n in names]
    for s, (bx, by) in enumerate(batches[:steps]):
        for i in range(len(loops)):
            loops[(s + i) % len(loops)].step(bx, by)
    return {lp.name: lp for lp in loops}


def main(cfg: Config) -> dict:
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    x, y, source = load_data(cfg)
    batches = make_batches(x, y, cfg)
    init = lenet()
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in init.parameters())
    names = ["none", *RUNS]

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Lanczos non-convergence is recorded
        run_round(names, init, cfg, loss_fn, batches, min(cfg.every, cfg.steps))  # warm-up
        rounds = [
            run_round(names, init, cfg, loss_fn, batches, cfg.steps) for _ in range(cfg.rounds)
        ]
    wall = time.perf_counter() - t0

    rows = []
    for name in RUNS:
        hist = rounds[-1][name].est.history
        hvps = [r["num_hvps"] for r in hist]
        secs = [r["seconds"] for r in hist]
        target = RUNS[name][2]
        ratio = statistics.median(r[name].seconds / r["none"].seconds for r in rounds)
        rows.append(
            dict(
                method=name,
                seconds=statistics.median(r[name].seconds for r in rounds),
                ratio=ratio,
                ratios=[r[name].seconds / r["none"].seconds for r in rounds],
                target=target,
                ok=None if target is None else ratio <= target,
                # overhead ∝ 1/every: the smallest spacing that meets the target
                every_for_target=None
                if target is None
                else max(1, math.ceil(cfg.every * (ratio - 1) / (target - 1))),
                estimates=len(hist),
                hvps_per_estimate=statistics.mean(hvps) if hvps else 0.0,
                hvps_first=hvps[0] if hvps else 0,
                hvps_after_first=statistics.mean(hvps[1:]) if len(hvps) > 1 else float("nan"),
                seconds_per_estimate=statistics.mean(secs) if secs else 0.0,
                last_smoothed=hist[-1]["smoothed"] if hist else None,
            )
        )
    base = statistics.median(r["none"].seconds for r in rounds)
    result = dict(
        config=asdict(cfg),
        data=source,
        params=n_params,
        threads=threads,
        torch=torch.__version__,
        machine=platform.machine(),
        baseline_seconds=base,
        baseline_step_ms=1e3 * base / cfg.steps,
        rows=rows,
        wall_seconds=wall,
    )
    report(result)
    return result


def report(r: dict) -> None:
    cfg = r["config"]
    print(
        f"LREstimator overhead: LeNet-5 ({r['params']:,} params), {r['data']}, batch "
        f"{cfg['batch_size']}, plain SGD lr {cfg['lr']}, {cfg['steps']} steps, estimate every "
        f"{cfg['every']} steps; torch {r['torch']}, {r['threads']} threads, {cfg['device']}"
    )
    print(
        f"baseline (no estimator): {r['baseline_seconds']:.2f} s median "
        f"({r['baseline_step_ms']:.1f} ms/step); {cfg['rounds']} round(s), loops interleaved "
        "step by step; ratio = median over rounds of (time with) / (time without)"
    )
    print(
        f"{'method':<18}{'time s':>8}{'ratio':>8}{'target':>8}{'':>6}{'HVPs/est':>10}{'s/est':>8}"
    )
    for row in r["rows"]:
        target = "-" if row["target"] is None else f"<={row['target']:.2f}"
        verdict = "" if row["ok"] is None else ("ok" if row["ok"] else "MISS")
        print(
            f"{row['method']:<18}{row['seconds']:>8.2f}{row['ratio']:>8.3f}{target:>8}"
            f"{verdict:>6}{row['hvps_per_estimate']:>10.1f}{row['seconds_per_estimate']:>8.3f}"
            f"{'-' if row['every_for_target'] is None else row['every_for_target']:>18}"
        )
    warm = next(x for x in r["rows"] if x["method"] == "sharpness (warm)")
    cold = next(x for x in r["rows"] if x["method"] == "sharpness (cold)")
    print(
        f"HVPs per sharpness estimate (Lanczos tol {cfg['lanczos_tol']:g}): cold "
        f"{cold['hvps_per_estimate']:.1f}; warm {warm['hvps_after_first']:.1f} after a cold "
        f"first estimate of {warm['hvps_first']}"
    )
    print(f"total benchmark wall time {r['wall_seconds']:.0f} s")


def parse_args(argv: list[str] | None = None) -> tuple[Config, str | None]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="40 steps, 1 round (< 2 min)")
    for f, default in asdict(Config()).items():
        kind = str if isinstance(default, str) else float if isinstance(default, float) else int
        p.add_argument(f"--{f.replace('_', '-')}", type=kind, default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    values = dict(QUICK) if a.quick else {}
    values.update({f: getattr(a, f) for f in asdict(Config()) if getattr(a, f) is not None})
    return Config(**values), a.json


if __name__ == "__main__":
    config, json_path = parse_args()
    out = main(config)
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2))
