"""HessianOperator over a torch.distributed process group (gloo, CPU, 3 processes on loopback).

Each rank holds a shard of the data (unequal sizes, one rank empty); products, gradients and a
Lanczos run must equal the single-process operator on the union of the shards, on every rank; a
rank that raises makes every rank raise instead of hanging (issue 14, operator part)."""

from __future__ import annotations

import os
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from zoo import ZOO

from hessian_lr.curvature.hessian import HessianOperator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available"),
]
WORLD = 3


def _shards(batches, rank):
    """Rank 0: the first batch; rank 1: the rest; rank 2: nothing."""
    return [batches[:1], batches[1:], []][rank]


def _products(rank, out):
    from hessian_lr.curvature.lanczos import lanczos

    for name, bn_mode in [
        ("ce_unequal_batches", "eval"),
        ("mse_sum_unequal_batches", "eval"),
        ("sequence_ignore_index", "eval"),
    ]:
        case = ZOO[name]()
        batches = list(case.data)
        local = HessianOperator(
            case.model, case.loss_fn, batches, bn_mode=bn_mode, process_group=False
        )
        shard = _shards(batches, rank)
        for backend in ["forward-over-reverse", "double-backward"]:
            op = HessianOperator(
                case.model,
                case.loss_fn,
                shard,
                backend=backend,
                bn_mode=bn_mode,
                single_batch=False,
            )
            V = torch.randn(
                op.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
            )
            out[f"{name}/{backend}/HV"] = (op @ V, local @ V)
            out[f"{name}/{backend}/grad"] = (op.gradient()[1], local.gradient()[1])
            out[f"{name}/{backend}/loss"] = (
                torch.tensor(op.gradient()[0]),
                torch.tensor(local.gradient()[0]),
            )
        res = lanczos(
            op, k=3, tol=1e-10, generator=torch.Generator().manual_seed(1), progress=False
        )
        ref = lanczos(
            local, k=3, tol=1e-10, generator=torch.Generator().manual_seed(1), progress=False
        )
        out[f"{name}/lanczos"] = (res.eigenvalues, ref.eigenvalues)
    # BatchNorm in train mode: each rank one batch of its own size.
    case = ZOO["bn_resnet"]()
    x, y = case.data
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    local = HessianOperator(case.model, case.loss_fn, batches, bn_mode="train", process_group=False)
    op = HessianOperator(
        case.model, case.loss_fn, _shards(batches, rank), bn_mode="train", single_batch=False
    )
    v = torch.randn(op.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out["bn_train/HV"] = (op @ v, local @ v)


def _ddp_and_errors(rank, out):
    from torch.nn.parallel import DistributedDataParallel as DDP

    case = ZOO["ce_unequal_batches"]()
    batches = list(case.data)
    ddp = DDP(case.model)
    flags = [m.training for m in ddp.modules()]
    before = {k: v.clone() for k, v in ddp.state_dict().items()}
    op = HessianOperator(ddp, case.loss_fn, _shards(batches, rank), single_batch=False)
    local = HessianOperator(case.model, case.loss_fn, batches, process_group=False)
    v = torch.randn(op.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out["ddp/HV"] = (op @ v, local @ v)
    out["ddp/untouched"] = torch.tensor(
        [m.training for m in ddp.modules()] == flags
        and all(torch.equal(v2, before[k]) for k, v2 in ddp.state_dict().items())
    )
    assert op.process_group is not None
    # The wrapper still trains: no "reduction not finished" at its next forward/backward.
    for _ in range(2):
        x, y = batches[1]
        case.loss_fn(ddp(x), y).backward()
    # agree_: rank 0's tensor on every rank.
    out["agree"] = op.agree_(torch.full((3,), float(rank), dtype=torch.float64))
    # A NaN on rank 1 only: every rank raises (rank 1 its own error, the others a remote one).
    bad = [(b[0].clone(), b[1]) for b in _shards(batches, rank)]
    if rank == 1:
        bad[0][0][0, 0] = float("nan")
    op = HessianOperator(case.model, case.loss_fn, bad, single_batch=False)
    try:
        op @ v
        out["nan/raised"] = "nothing"
    except Exception as err:  # noqa: BLE001
        out["nan/raised"] = type(err).__name__
    # Parameters that differ across ranks are refused at construction.
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.fill_(float(rank))
    try:
        HessianOperator(model, nn.MSELoss(), (torch.zeros(2, 3, dtype=torch.float64),) * 2)
        out["replicated/raised"] = "nothing"
    except ValueError as err:
        out["replicated/raised"] = "ValueError" if "differ across ranks" in str(err) else str(err)


def _worker(rank, init_file, result_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    out = {}
    try:
        _products(rank, out)
        _ddp_and_errors(rank, out)
    except Exception:  # noqa: BLE001 - reported to the parent
        out["error"] = traceback.format_exc()
    finally:
        torch.save(out, os.path.join(result_dir, f"{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
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


def test_products_equal_the_union_on_every_rank(results):
    keys = [k for k in results[0] if k.endswith(("/HV", "/grad", "/loss", "/lanczos"))]
    assert len(keys) >= 20
    for out in results:
        for k in keys:
            got, want = out[k]
            err = float((got - want).norm() / want.norm())
            assert err < 1e-12, (k, err)
    for k in keys:  # and bit-identical across ranks
        assert all(torch.equal(results[0][k][0], out[k][0]) for out in results[1:]), k


def test_ddp_model_untouched(results):
    assert all(bool(out["ddp/untouched"]) for out in results)
    assert all(torch.equal(out["agree"], torch.zeros(3, dtype=torch.float64)) for out in results)


def test_a_failing_rank_makes_every_rank_raise(results):
    assert [out["nan/raised"] for out in results] == ["NonFiniteError"] * WORLD
    assert [out["replicated/raised"] for out in results] == ["ValueError"] * WORLD
