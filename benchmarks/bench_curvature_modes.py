"""Overhead of the curvature-set training modes per training step (issue 27).

For MLP and LeNet-5 on Fashion-MNIST (batch 64, heavy-ball SGD β = 0.9 and AdamW; F17's
models), each arm trains its own copy of the same θ₀ on the same batches in blocks of
``--block`` updates; the arms' blocks are interleaved round by round (rotating order), and the
overhead of a mode is the median over rounds of (block time of the mode) / (block time of plain
training) − 1 (``_timing.paired_ratio``), so load on the shared machine cancels. Arms: plain,
``stability_lr`` and ``update_direction_lr`` at measure_every k ∈ ``--every``. Also reported:
HVPs per training step (from the scheduler's ``overhead``), seconds per estimate, and the
finder of ``find_then_onecycle`` (200-step ramp) in equivalent training steps.

    python benchmarks/bench_curvature_modes.py            # MLP and LeNet-5, k = 10 and 50
    python benchmarks/bench_curvature_modes.py --quick    # MLP only, short blocks
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from _timing import configure_threads, paired_ratio  # noqa: E402

from hessian_lr.lr import stability_lr, update_direction_lr  # noqa: E402
from hessian_lr.range_test import find_lr  # noqa: E402
from hessian_lr.training.data import load_dataset  # noqa: E402
from hessian_lr.training.models import build_model  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "cpu_bench_curvature_modes.txt"


def make_opt(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def arm(name: str, model0: nn.Module, kind: str, every: int | None) -> dict:
    model = copy.deepcopy(model0)
    opt = make_opt(kind, model)
    loss_fn = nn.CrossEntropyLoss()
    sched = None
    if name != "plain":
        factory = stability_lr if name == "stability" else update_direction_lr
        sched = factory(model, loss_fn, opt, measure_every=every)
    return {"model": model, "opt": opt, "sched": sched, "step": 0, "times": []}


def run_block(a: dict, batches: list, n: int) -> None:
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(n):
        x, y = batches[a["step"] % len(batches)]
        a["opt"].zero_grad(set_to_none=True)
        loss_fn(a["model"](x), y).backward()
        a["opt"].step()
        if a["sched"] is not None:
            est = a["sched"].estimator
            est.step((x, y) if est.due else None)
            a["sched"].step()
        a["step"] += 1
    a["times"].append(time.perf_counter() - t0)


def bench(model_name: str, kind: str, everys: list[int], block: int, rounds: int, data) -> list:
    torch.manual_seed(0)
    x, y, classes = data
    model0 = build_model(model_name, num_classes=classes, in_channels=1, input_size=28)
    g = torch.Generator().manual_seed(0)
    batches = [
        (x[i], y[i]) for i in (torch.randint(0, len(x), (64,), generator=g) for _ in range(50))
    ]
    arms = {"plain": arm("plain", model0, kind, None)}
    for k in everys:
        for m in ("stability", "update"):
            arms[f"{m} k={k}"] = arm(m, model0, kind, k)
    names = list(arms)
    for r in range(rounds + 1):  # round 0 is warm-up, not timed
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            run_block(arms[n], batches, block)
    for a in arms.values():
        a["times"] = a["times"][1:]
    plain = arms["plain"]["times"]
    step_s = sorted(plain)[len(plain) // 2] / block
    rows = [f"{model_name} {kind} | plain: {1e3 * step_s:.2f} ms/step"]
    for n in names[1:]:
        s = arms[n]["sched"]
        per = s.overhead_per_call()
        ratio = paired_ratio(arms[n]["times"], plain) - 1.0
        rows.append(
            f"{model_name} {kind} | {n}: overhead {100 * ratio:+.1f} % per step, "
            f"{s.overhead['hvps'] / arms[n]['step']:.2f} HVPs/step, "
            f"{per['hvps']:.1f} HVPs and {1e3 * per['seconds']:.1f} ms per estimate"
        )
    model = copy.deepcopy(model0)
    opt = make_opt(kind, model)
    ramp = (1e-4, 30.0) if kind == "sgd" else (1e-5, 3.0)
    res = find_lr(model, nn.CrossEntropyLoss(), batches, opt, start_lr=ramp[0], end_lr=ramp[1],
                  num_steps=200, measure_every=5)  # fmt: skip
    rows.append(
        f"{model_name} {kind} | find_then_onecycle's finder: {res.num_steps} steps, "
        f"{res.num_hvps} HVPs, {res.seconds:.2f}s = {res.seconds / step_s:.0f} plain steps "
        f"({res.stop_reason}, max_lr {res.max_lr:.3g})"
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--every", type=int, nargs="+", default=[10, 50])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--block", type=int, default=100, help="updates per timed block")
    args = p.parse_args()
    configure_threads(1)
    ds = load_dataset("fashion-mnist", split="train")
    data = (ds.x, ds.y, ds.num_classes)
    models = ["mlp"] if args.quick else ["mlp", "lenet5"]
    block = 20 if args.quick else args.block
    lines = [
        f"bench_curvature_modes: batch 64, blocks of {block} updates, {args.rounds} interleaved "
        f"rounds (median paired ratio), torch {torch.__version__}, {platform.machine()}, 1 thread"
    ]
    for m in models:
        for kind in ("sgd", "adamw"):
            lines += bench(m, kind, args.every, block, args.rounds, data)
            print("\n".join(lines[-(2 * len(args.every) + 2) :]), flush=True)
    if not args.quick:
        OUT.write_text("\n".join(lines) + "\n")
        print(f"-> {OUT}")


if __name__ == "__main__":
    main()
