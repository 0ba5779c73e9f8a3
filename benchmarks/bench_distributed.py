"""Hessian-vector products over torch.distributed: wall time and bytes per product vs processes.

One global batch (synthetic Fashion-MNIST-shaped data, fixed seed) and an MLP 784-256-128-10
(tanh, float32, N = 235,146 parameters). For p = 1, 2, ... processes (gloo on loopback, one
intra-op thread each) every rank holds 1/p of the batch and applies ``HessianOperator`` to the
same vectors; p = 1 is the plain single-process operator (no group). Reported per product:

* median wall time (the slowest rank's, per product);
* bytes handed to ``all_reduce`` per product (counted by wrapping ``torch.distributed``'s
  collectives in this script) and the ring all-reduce's bytes on the wire per rank,
  2(p−1)/p · payload;
* the time of one all-reduce of the same payload alone (the communication share);
* the relative difference of the product from the single-process one (exactness check).

On a shared 2-core machine p = 2 can only show the overheads (two processes share the cores that
one process had); the cost model in docs/readme/distributed.md says what to expect on GPUs. No
GPU was lent to this session, so there is no NCCL measurement here.

    python benchmarks/bench_distributed.py --quick        # batch 256, 5 products (< 1 min)
    python benchmarks/bench_distributed.py                # batch 1024, 20 products
    python benchmarks/bench_distributed.py --procs 1,2,3 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Config:
    batch: int = 1024
    products: int = 20
    warmup: int = 2
    procs: tuple[int, ...] = (1, 2)
    seed: int = 0
    timeout: float = 600.0


QUICK = dict(batch=256, products=5, warmup=1)


def make_problem(cfg: Config):
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 128), nn.Tanh(),
        nn.Linear(128, 10),
    )  # fmt: skip
    g = torch.Generator().manual_seed(cfg.seed + 1)
    x = torch.randn(cfg.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (cfg.batch,), generator=g)
    n = sum(p.numel() for p in model.parameters())
    vs = torch.randn(cfg.products + cfg.warmup, n, generator=g)
    return model, x, y, vs


def _count_collectives(counter: dict) -> None:
    """Wrap torch.distributed's collectives to count the bytes handed to them."""
    import torch.distributed as dist

    for name in ("all_reduce", "broadcast"):
        orig = getattr(dist, name)

        def wrapped(tensor, *a, _orig=orig, _name=name, **k):
            counter[_name] = counter.get(_name, 0) + tensor.numel() * tensor.element_size()
            counter[_name + "_calls"] = counter.get(_name + "_calls", 0) + 1
            return _orig(tensor, *a, **k)

        setattr(dist, name, wrapped)


def _rank(rank: int, world: int, port: int, cfg: Config, queue) -> None:
    torch.set_num_threads(1)
    try:
        import torch.distributed as dist

        counter: dict = {}
        if world > 1:
            dist.init_process_group(
                "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                timeout=datetime.timedelta(seconds=cfg.timeout),
            )  # fmt: skip
            _count_collectives(counter)
        from hessian_lr.curvature import HessianOperator

        model, x, y, vs = make_problem(cfg)
        xs, ys = torch.tensor_split(x, world)[rank], torch.tensor_split(y, world)[rank]
        op = HessianOperator(model, nn.CrossEntropyLoss(), (xs, ys), backend="double-backward",
                             cache_graph=False)  # fmt: skip
        times, outs = [], []
        before = dict(counter)
        for i, v in enumerate(vs):
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            hv = op @ v
            dt = time.perf_counter() - t0
            if i >= cfg.warmup:
                times.append(dt)
                outs.append(hv)
            if i == cfg.warmup - 1:
                before = dict(counter)
        per = {k: (counter.get(k, 0) - before.get(k, 0)) / cfg.products for k in counter}
        comm = []
        if world > 1:
            buf = torch.zeros(vs.shape[1], dtype=torch.float64)
            for _ in range(cfg.products):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                comm.append(time.perf_counter() - t0)
            dist.destroy_process_group()
        queue.put((rank, "ok", (times, comm, per, torch.stack(outs).numpy().tobytes())))
    except BaseException as err:  # report, never hang the parent
        queue.put((rank, "error", f"{type(err).__name__}: {err}"))


def run(world: int, cfg: Config) -> dict:
    import queue as _q

    import numpy as np
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank, args=(r, world, port, cfg, queue)) for r in range(world)]
    for p in procs:
        p.start()
    res = {}
    deadline = time.monotonic() + cfg.timeout
    while len(res) < world:
        try:
            r, status, value = queue.get(timeout=max(1.0, deadline - time.monotonic()))
        except _q.Empty:
            break
        if status != "ok":
            raise RuntimeError(f"rank {r}: {value}")
        res[r] = value
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    if len(res) < world:
        raise RuntimeError(f"only {len(res)} of {world} ranks reported within {cfg.timeout} s")
    slowest = [max(res[r][0][i] for r in res) for i in range(cfg.products)]
    comm = [max(res[r][1][i] for r in res) for i in range(cfg.products)] if world > 1 else []
    payload = res[0][2].get("all_reduce", 0.0)
    out = np.frombuffer(res[0][3], dtype=np.float32).reshape(cfg.products, -1)
    return {
        "processes": world,
        "local_samples": cfg.batch // world,
        "hvp_ms": 1e3 * statistics.median(slowest),
        "allreduce_calls_per_hvp": res[0][2].get("all_reduce_calls", 0.0),
        "payload_bytes_per_hvp": payload,
        "wire_bytes_per_rank": 2 * (world - 1) / world * payload,
        "allreduce_alone_ms": 1e3 * statistics.median(comm) if comm else 0.0,
        "_out": out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--procs", default=None, help="comma-separated process counts, e.g. 1,2")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--products", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    kw: dict = dict(QUICK) if args.quick else {}
    if args.procs:
        kw["procs"] = tuple(int(p) for p in args.procs.split(","))
    if args.batch:
        kw["batch"] = args.batch
    if args.products:
        kw["products"] = args.products
    cfg = Config(**kw)
    cpu = platform.processor() or platform.machine()
    print(f"# bench_distributed: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          "gloo on loopback, 1 thread per rank")  # fmt: skip
    print(f"# MLP 784-256-128-10 (N=235,146, float32), global batch {cfg.batch}, "
          f"{cfg.products} products (median of the slowest rank), synthetic data")  # fmt: skip
    rows = [run(p, cfg) for p in cfg.procs]
    ref = rows[0]["_out"]
    hdr = ("procs", "local B", "HVP ms", "all-reduces", "payload MB", "wire MB/rank",
           "all-reduce ms", "max rel diff")  # fmt: skip
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in rows:
        out = row.pop("_out")
        diff = float(abs(out - ref).max() / abs(ref).max())
        row["max_rel_diff_vs_first"] = diff
        print(
            f"| {row['processes']} | {row['local_samples']} | {row['hvp_ms']:.1f} | "
            f"{row['allreduce_calls_per_hvp']:.0f} | {row['payload_bytes_per_hvp'] / 1e6:.2f} | "
            f"{row['wire_bytes_per_rank'] / 1e6:.2f} | {row['allreduce_alone_ms']:.1f} | "
            f"{diff:.1e} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": asdict(cfg), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
