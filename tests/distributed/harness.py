"""Spawn N gloo processes on loopback, run a function on each, collect results (bounded in time)."""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import traceback

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args, queue, pg_timeout):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=pg_timeout),
        )
        try:
            # Plain pickle (bytes): tensors must not travel as shared-memory handles, which die
            # with the child process before the parent reads them.
            queue.put((rank, "ok", pickle.dumps(fn(rank, world, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException as err:  # report, do not hang the parent
        queue.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def run_ranks(fn, world: int, *args, timeout: float = 120.0, pg_timeout: float = 30.0) -> dict:
    """Run ``fn(rank, world, *args)`` on ``world`` spawned processes; {rank: (status, value)}.

    Every process is joined or killed within ``timeout`` seconds; a missing rank is reported as
    ``("missing", None)``, so a hang shows up as a failed assertion, never a hung test run.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world, port, fn, args, queue, pg_timeout), daemon=True)
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results: dict = {}
    import queue as _q
    import time

    deadline = time.monotonic() + timeout
    while len(results) < world and time.monotonic() < deadline:
        try:
            rank, status, value = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            results[rank] = (status, pickle.loads(value) if status == "ok" else value)
        except _q.Empty:
            break
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    for r in range(world):
        results.setdefault(r, ("missing", None))
    return results
