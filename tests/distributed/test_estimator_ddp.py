"""LREstimator and CurvatureLR in a 2-process DDP loop equal one process on the global batches.

Each rank trains a ``DistributedDataParallel`` MLP (float64, no BatchNorm or dropout) on its half
of every global batch and steps an ``LREstimator`` built on the DDP model with that half; with a
mean loss and equal halves, DDP's averaged gradient and the all-reduced products equal the
full-batch ones, so every estimate must equal a single-process run over the global batches (up
to float round-off), be bitwise identical on both ranks, and the records file must be written
once (by rank 0: one line per estimation step, not two).
"""

from __future__ import annotations

import json

import pytest
import torch
from harness import run_ranks
from torch import nn

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:LREstimator:UserWarning")]

METHODS = ("secant", "secant_same_batch", "secant_hvp", "quadratic", "sharpness")
STEPS, EVERY, BATCH = 8, 2, 8


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def global_batches():
    g = torch.Generator().manual_seed(3)
    return [
        (
            torch.randn(BATCH, 5, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (BATCH,), generator=g),
        )
        for _ in range(STEPS)
    ]


def train(model, data, record_path, rank=None):
    from hessian_lr.lr.curvature_lr import CurvatureLR
    from hessian_lr.lr.estimator import LREstimator

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    est = LREstimator(model, methods=METHODS, every=EVERY, loss_fn=nn.CrossEntropyLoss(),
                      optimizer=opt, record_path=record_path, lanczos_tol=1e-6)  # fmt: skip
    sched = CurvatureLR(opt, est, method="quadratic", safety=0.5, max_lr=0.5)
    lrs = []
    for x, y in data:
        if rank is not None:
            half = slice(0, BATCH // 2) if rank == 0 else slice(BATCH // 2, None)
            x, y = x[half], y[half]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        est.step((x, y))
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    est.close()
    return {
        "history": [
            {m: rec["estimates"][m].get("lr") for m in rec["estimates"]} for rec in est.history
        ],
        "details": [
            {m: rec["estimates"][m].get(k) for m in rec["estimates"] for k in ("lambda_max",)}
            for rec in est.history
        ],
        "smoothed": dict(est._smoothed),
        "lrs": lrs,
        "params": [p.detach().clone() for p in model.parameters()],
    }


def _ranks(rank, world, record_path):
    from torch.nn.parallel import DistributedDataParallel as DDP

    return train(DDP(make_model()), global_batches(), record_path, rank)


def _values(rows):
    return [v for row in rows for _, v in sorted(row.items()) if v is not None]


def test_estimator_in_ddp_loop_equals_one_process(tmp_path):
    path = tmp_path / "estimates.jsonl"
    res = run_ranks(_ranks, 2, str(path), timeout=240)
    assert all(status == "ok" for status, _ in res.values()), res
    r0, r1 = res[0][1], res[1][1]
    for key in ("history", "smoothed", "lrs"):
        assert r0[key] == r1[key], key  # bitwise identical on both ranks
    ref = train(make_model(), global_batches(), tmp_path / "single.jsonl")
    assert len(r0["history"]) == len(ref["history"]) == STEPS // EVERY
    assert [sorted(h) for h in r0["history"]] == [sorted(h) for h in ref["history"]]
    got, want = _values(r0["history"]), _values(ref["history"])
    assert len(got) == len(want) and len(want) >= 4 * len(METHODS) - 1
    f64 = torch.float64
    torch.testing.assert_close(torch.tensor(got, dtype=f64), torch.tensor(want, dtype=f64),
                               rtol=1e-9, atol=0)  # fmt: skip
    lam, lam_ref = _values(r0["details"]), _values(ref["details"])
    assert len(lam) == len(lam_ref) == STEPS // EVERY
    torch.testing.assert_close(torch.tensor(lam, dtype=f64), torch.tensor(lam_ref, dtype=f64),
                               rtol=1e-9, atol=0)  # fmt: skip
    assert len(set(ref["lrs"])) > 2  # CurvatureLR moved the LR
    lrs, lrs_ref = torch.tensor(r0["lrs"], dtype=f64), torch.tensor(ref["lrs"], dtype=f64)
    torch.testing.assert_close(lrs, lrs_ref, rtol=1e-9, atol=0)
    for a, b in zip(r0["params"], ref["params"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    lines = path.read_text().splitlines()
    assert len(lines) == STEPS // EVERY  # written once (rank 0), not once per rank
    assert [json.loads(line)["step"] for line in lines] == [
        EVERY * (i + 1) for i in range(len(lines))
    ]
