"""lr_range_test under torch.distributed (2 gloo processes) equals one process on the union.

One spawned run checks three scenarios (process start-up dominates the cost):
A. a DistributedDataParallel model, SGD with momentum, shards of unequal size (6 + 4 samples per
   update), held-out data all on rank 0 (rank 1 holds none);
B. a plain replicated model (gradients summed by the range test), Adam, 2 accumulation steps,
   held-out batches split unevenly;
C. rank 1's loss raises at its 4th call: both ranks raise (rank 1 its own error), in bounded
   time, and both restore their model.
Each is compared with a single-process run on the concatenated batches (float64, no BN or
dropout, so equal up to round-off), and the ranks with each other (bitwise).
"""

from __future__ import annotations

import pytest
import torch
from harness import run_ranks
from torch import nn

pytestmark = pytest.mark.slow

SPLIT = 6  # rank 0 holds the first 6 samples of each 10-sample batch, rank 1 the other 4
F64 = torch.float64
SETTINGS = dict(start_lr=1e-2, end_lr=20.0, num_steps=20, smoothing=0.5, curvature_check=False)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def global_data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(100, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (100,), generator=g)
    train = [(X[i * 10 : (i + 1) * 10], y[i * 10 : (i + 1) * 10]) for i in range(6)]
    val = [(X[60 + i * 15 : 75 + i * 15], y[60 + i * 15 : 75 + i * 15]) for i in range(2)]
    return train, val


def shard(batches, rank, split=SPLIT):
    sl = slice(0, split) if rank == 0 else slice(split, None)
    return [(x[sl], y[sl]) for x, y in batches]


def _state(model, opt):
    return [p.detach().clone() for p in model.parameters()], repr(opt.state_dict())


def _same_state(before, after) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before[0], after[0])) and before[1] == after[1]


def _summary(res):
    return {
        "lrs": list(res.lrs),
        "losses": list(res.losses),
        "smoothed": list(res.smoothed_losses),
        "grad_norms": list(res.grad_norms),
        "stop": res.stop_reason,
        "val_losses": list(res.val_losses),
        "val_accs": list(res.val_accuracies),
        "max_lr": res.suggestions.max_lr.lr if res.suggestions.max_lr else None,
        "world_size": res.config.get("world_size"),
        "lambda_max": None if res.curvature is None else res.curvature.lambda_max,
        "g_hg": None if res.curvature is None else res.curvature.g_hg,
    }


def run_single(case: str):
    from hessian_lr.range_test import lr_range_test

    train, val = global_data()
    model = make_model()
    if case == "A":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        res = lr_range_test(model, opt, train, loss_fn=nn.CrossEntropyLoss(),
                            val_data=val, **{**SETTINGS, "curvature_check": True})  # fmt: skip
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        res = lr_range_test(model, opt, train, loss_fn=nn.CrossEntropyLoss(), val_data=val,
                            accumulation_steps=2, **SETTINGS)  # fmt: skip
    return _summary(res)


def _ranks(rank, world):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from hessian_lr.curvature.distributed import DistributedCurvatureError
    from hessian_lr.range_test import lr_range_test

    train, val = global_data()
    out = {}
    # A: DDP, unequal train shards, every held-out batch on rank 0 and none on rank 1.
    model = DDP(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = _state(model, opt)
    res = lr_range_test(model, opt, shard(train, rank), loss_fn=nn.CrossEntropyLoss(),
                        val_data=val if rank == 0 else [],
                        **{**SETTINGS, "curvature_check": True})  # fmt: skip
    out["A"] = _summary(res)
    out["A_restored"] = _same_state(before, _state(model, opt))
    # B: plain replicated model, Adam, accumulation, held-out shards of unequal size.
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = _state(model, opt)
    res = lr_range_test(model, opt, shard(train, rank), loss_fn=nn.CrossEntropyLoss(),
                        val_data=shard(val, rank, 9), accumulation_steps=2,
                        **SETTINGS)  # fmt: skip
    out["B"] = _summary(res)
    out["B_restored"] = _same_state(before, _state(model, opt))
    # C: rank 1 fails at its 4th forward pass.
    calls = [0]

    def flaky(outputs, targets):
        calls[0] += 1
        if rank == 1 and calls[0] == 4:
            raise ValueError("bad batch on rank 1")
        return nn.functional.cross_entropy(outputs, targets)

    model = DDP(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _state(model, opt)
    try:
        lr_range_test(model, opt, shard(train, rank), loss_fn=flaky, **SETTINGS)
        out["C"] = ("none", "")
    except DistributedCurvatureError as err:
        out["C"] = ("peer", str(err))
    except ValueError as err:
        out["C"] = ("own", str(err))
    out["C_restored"] = _same_state(before, _state(model, opt))
    return out


def test_range_test_under_ddp_equals_one_process_on_the_union():
    res = run_ranks(_ranks, 2, timeout=240)
    assert all(status == "ok" for status, _ in res.values()), res
    r0, r1 = res[0][1], res[1][1]
    refs = {case: run_single(case) for case in ("A", "B")}
    for case in ("A", "B"):
        assert r0[case] == r1[case], case  # bitwise identical on every rank
        assert r0[f"{case}_restored"] and r1[f"{case}_restored"], case
        ref, got = refs[case], r0[case]
        assert got["world_size"] == 2 and ref["world_size"] is None
        assert got["lrs"] == ref["lrs"]  # same ladder, same stop step
        assert ref["stop"] is not None, "the reference run should diverge"
        assert got["stop"].split(":")[0] == ref["stop"].split(":")[0]  # same update, same LR
        for key in ("losses", "smoothed", "grad_norms", "val_losses"):
            torch.testing.assert_close(
                torch.tensor(got[key], dtype=F64),
                torch.tensor(ref[key], dtype=F64),
                rtol=1e-12,
                atol=0,
                msg=key,
            )
        assert got["val_accs"] == ref["val_accs"]
        assert len(got["val_losses"]) == len(ref["val_losses"]) > 0
        assert got["max_lr"] == ref["max_lr"]
    # The cross-check's Hessian is that of the union of the first update's shards.
    assert r0["A"]["lambda_max"] is not None and r0["A"]["lambda_max"] > 0
    for key in ("lambda_max", "g_hg"):
        torch.testing.assert_close(r0["A"][key], refs["A"][key], rtol=1e-9, atol=0)
    assert r1["C"] == ("own", "bad batch on rank 1")
    kind, msg = r0["C"]
    assert kind == "peer" and "rank 1: ValueError: bad batch on rank 1" in msg
    assert r0["C_restored"] and r1["C_restored"]
