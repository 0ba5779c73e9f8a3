"""The Reducer's collectives on real gloo process groups (2-3 processes on loopback)."""

from __future__ import annotations

import pytest
import torch
from harness import run_ranks

pytestmark = pytest.mark.slow


def _sums(rank, world):
    from hessian_lr.curvature.distributed import Reducer, resolve_process_group

    red = Reducer(resolve_process_group())
    t = torch.arange(4, dtype=torch.float64) * (rank + 1)
    (s,), (c,) = red.sum_([t], [float(rank + 1)])
    v = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(rank))
    red.agree_(v)
    return s.tolist(), c, v.tolist()


def _one_rank_fails(rank, world):
    from hessian_lr.curvature.distributed import DistributedCurvatureError, Reducer

    red = Reducer(resolve())
    err = ValueError("bad batch on rank 1") if rank == 1 else None
    try:
        red.sum_([torch.ones(3)], error=err)
    except DistributedCurvatureError as e:
        return ("peer", str(e))
    except ValueError as e:
        return ("own", str(e))
    return ("none", "")


def resolve():
    from hessian_lr.curvature.distributed import resolve_process_group

    return resolve_process_group()


def _both(rank, world):
    return _sums(rank, world), _one_rank_fails(rank, world)


def test_sum_agree_and_failure_on_every_rank():
    res = run_ranks(_both, 3, timeout=120)  # one spawn for both checks
    assert all(status == "ok" for status, _ in res.values()), res
    total = sum(range(1, 4))
    for _, ((s, c, v), _) in res.values():
        assert s == [0.0, total, 2.0 * total, 3.0 * total]
        assert c == total
        assert v == res[0][1][0][2]  # rank 0's draw everywhere
    # A rank that fails: it raises its own error, every other rank a DistributedCurvatureError.
    assert res[1][1][1] == ("own", "bad batch on rank 1")
    for r in (0, 2):
        kind, msg = res[r][1][1]
        assert kind == "peer" and "rank 1: ValueError: bad batch on rank 1" in msg


def test_no_group_means_no_reduction():
    from hessian_lr.curvature.distributed import resolve_process_group

    assert resolve_process_group() is None
    assert resolve_process_group(False) is None
    with pytest.raises(ValueError, match="not initialized"):
        resolve_process_group(object())
