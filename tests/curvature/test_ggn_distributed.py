"""GGN and empirical Fisher over a torch.distributed process group (gloo, CPU, 2 processes).

Each rank holds a shard of the batches (rank 1 two of three, unequal sizes); products and
gradients must equal the single-process operator on the union of the shards, on every rank.
(The Monte-Carlo Fisher seeds its labels by the batch's position on its rank, so a sharded run
draws other labels than a single process: another draw of the same random matrix, not tested
for equality here.)
"""

from __future__ import annotations

import os
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from zoo import ZOO

from hessian_lr.curvature import FisherOperator, GGNOperator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available"),
]
WORLD = 2


def _products(rank: int, out: dict) -> None:
    for name in ("ce_unequal_batches", "mse_sum_unequal_batches", "sequence_ignore_index"):
        case = ZOO[name]()
        batches = list(case.data)
        shard = [batches[:1], batches[1:]][rank]
        for cls in (GGNOperator, FisherOperator):
            for backend in ("forward-over-reverse", "double-backward"):
                local = cls(case.model, case.loss_fn, batches, process_group=False)
                op = cls(case.model, case.loss_fn, shard, backend=backend, single_batch=False)
                V = torch.randn(
                    op.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
                )
                key = f"{name}/{cls.__name__}/{backend}"
                out[key + "/GV"] = (op @ V, local @ V)
                out[key + "/grad"] = (op.gradient()[1], local.gradient()[1])


def _worker(rank: int, init_file: str, result_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    out: dict = {}
    try:
        _products(rank, out)
    except Exception:  # noqa: BLE001 - reported to the parent
        out["error"] = traceback.format_exc()
    finally:
        torch.save(out, os.path.join(result_dir, f"{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_ggn")
    ctx = mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=False)
    for p in ctx.processes:
        p.join(timeout=240)
    alive = [p for p in ctx.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung"
    return [torch.load(tmp / f"{r}.pt", weights_only=False) for r in range(WORLD)]


def test_no_rank_failed(results):
    for r, out in enumerate(results):
        assert "error" not in out, f"rank {r}:\n{out.get('error')}"


def test_products_and_gradients_equal_the_union_on_every_rank(results):
    keys = [k for k in results[0] if k.endswith(("/GV", "/grad"))]
    assert len(keys) == 24
    for out in results:
        for k in keys:
            got, want = out[k]
            err = float((got - want).norm() / want.norm())
            assert err < 1e-12, (k, err)
