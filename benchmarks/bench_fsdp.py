"""The Hessian of an FSDP2 model: one sharded product ÷ one FSDP training step, memory per rank.

An MLP 784-512-512-512-10 (tanh, float32, N = 932,362), every Linear its own ``fully_shard``
unit plus the root, on p gloo processes (loopback, one intra-op thread each). Each rank holds
``batches`` batches of ``batch`` synthetic samples (fixed seed). Timed next to each other in
interleaved rounds (``_timing.interleaved``), per rank:

* ``train_step``: one FSDP training step on the rank's data (zero_grad, forward and backward
  over its batches, SGD step) -- the reference the issue's target (≤ 2.2×) is stated against;
* ``sharded_hvp``: ``op @ v`` of ``HessianOperator`` on the same FSDP model (the sharded route:
  central differences of two FSDP gradient passes, shards restored afterwards);
* ``replicated_hvp``: the data-parallel operator (``process_group``: all-reduced products,
  double backward) on an unsharded replica of the model -- what DDP users run.

Reported: the median over rounds of the paired ratios sharded_hvp / train_step and
replicated_hvp / train_step (the slowest rank), and memory per rank: the entries of one vector
(this rank's shard vs all N) and of a 30-vector Lanczos basis, the parameters each route keeps.
The expected ratio is ~2 (two gradient passes against one, the step's optimizer update is
cheap) plus the restore copies and one small all-reduce per batch (the failure protocol).

    python benchmarks/bench_fsdp.py --quick            # batch 64, 5 rounds, p = 2
    python benchmarks/bench_fsdp.py --procs 2,3 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WIDTHS = (784, 512, 512, 512, 10)


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def make_data(rank: int, batch: int, batches: int) -> list:
    g = torch.Generator().manual_seed(100 + rank)
    return [
        (torch.randn(batch, WIDTHS[0], generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(batches)
    ]


def run_rank(rank: int, world: int, cfg: dict) -> dict:
    from _timing import interleaved, paired_ratio
    from torch.distributed.fsdp import fully_shard

    from hessian_lr.curvature import HessianOperator

    loss_fn = nn.CrossEntropyLoss()
    data = make_data(rank, cfg["batch"], cfg["batches"])
    model = make_model()
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    replica = make_model()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        for x, y in data:
            loss_fn(model(x), y).backward()
        opt.step()

    op = HessianOperator(model, loss_fn, data)
    rep = HessianOperator(replica, loss_fn, data, backend="double-backward", cache_graph=False)
    v = op.vector_space.randn((), torch.Generator().manual_seed(1), torch.float32)
    w = torch.randn(rep.shape[0], generator=torch.Generator().manual_seed(1))
    t = interleaved(
        {
            "train_step": train_step,
            "sharded_hvp": lambda: op @ v,
            "replicated_hvp": lambda: rep @ w,
        },
        rounds=cfg["rounds"],
        warmup=1,
    )
    n_local, n = op.vector_space.local_size, op.shape[0]
    return dict(
        train_ms=1e3 * t["train_step"].median,
        sharded_ms=1e3 * t["sharded_hvp"].median,
        replicated_ms=1e3 * t["replicated_hvp"].median,
        ratio_sharded=paired_ratio(t["sharded_hvp"], t["train_step"]),
        ratio_replicated=paired_ratio(t["replicated_hvp"], t["train_step"]),
        n_local=n_local,
        n=n,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", default="2")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    cfg = dict(
        batch=64 if a.quick else a.batch, batches=a.batches, rounds=5 if a.quick else a.rounds
    )
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests", "distributed")
    )
    from harness import run_ranks

    rows = []
    print(
        f"# bench_fsdp: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"gloo on loopback, 1 thread per rank ({datetime.date.today()})"
    )
    print(
        f"# MLP {'-'.join(map(str, WIDTHS))} (tanh, float32), {cfg['batches']} batches of "
        f"{cfg['batch']} per rank, {cfg['rounds']} interleaved rounds; medians, slowest rank"
    )
    print(
        "| procs | N | local entries (max rank) | train step ms | sharded HVP ms | "
        "sharded / step | replicated HVP ms | replicated / step | Lanczos-30 basis MB/rank "
        "sharded vs replicated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for world in [int(x) for x in a.procs.split(",")]:
        res = run_ranks(run_rank, world, cfg, timeout=1200.0, pg_timeout=300.0)
        bad = {r: v for r, v in res.items() if v[0] != "ok"}
        if bad:
            raise SystemExit(f"procs={world}: {bad}")
        ranks = [v[1] for v in res.values()]
        worst = {k: max(r[k] for r in ranks) for k in ranks[0]}
        n, n_local = worst["n"], worst["n_local"]
        row = dict(
            procs=world,
            **worst,
            ratio_sharded_median=statistics.median(r["ratio_sharded"] for r in ranks),
        )
        rows.append(row)
        mb = 30 * 4 / 2**20
        print(
            f"| {world} | {n:,} | {n_local:,} | {worst['train_ms']:.1f} | "
            f"{worst['sharded_ms']:.1f} | {worst['ratio_sharded']:.2f} | "
            f"{worst['replicated_ms']:.1f} | {worst['ratio_replicated']:.2f} | "
            f"{mb * n_local:.1f} vs {mb * n:.1f} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(config=cfg, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
