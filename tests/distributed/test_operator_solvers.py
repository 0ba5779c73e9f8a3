"""The Hessian operator and the solvers over 3 gloo processes equal one process on the union.

One spawned run (process start-up dominates the cost) checks, in float64:

* dense products (``to_dense``) for an MLP with a mean loss on shards of unequal size with one
  rank empty, for a BatchNorm model in both BN modes (whole batches per rank: train-mode BN
  normalises per batch, so the union is "the same list of batches"), for a summed loss, and for
  a ``DistributedDataParallel``-wrapped model (whose buffers and flags stay untouched and which
  trains normally afterwards);
* Lanczos top-3, power iteration, Hutchinson and XTrace traces and SLQ nodes, with a generator
  seeded differently on every rank and with rank-dependent start vectors ``v0`` (the solvers
  broadcast rank 0's draws through ``op.agree_``): bitwise equal on every rank and equal to one
  process with rank 0's seed on the union to ~1e-12 relative; the caller's ``v0`` untouched;
* a rank raising in the middle of a product: every rank raises, within the time bound.
"""

from __future__ import annotations

import pytest
import torch
from harness import run_ranks
from torch import nn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:(power_iteration|lanczos).*:RuntimeWarning"),
]

WORLD = 3
F64 = torch.float64
SIZES = (7, 5, 6, 3)  # the global batches' sizes


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def bn_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():  # non-trivial running statistics for the eval mode
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def global_batches(regression: bool = False):
    g = torch.Generator().manual_seed(2)
    out = []
    for n in SIZES:
        x = torch.randn(n, 5, generator=g, dtype=torch.float64)
        y = (
            torch.randn(n, 3, generator=g, dtype=torch.float64)
            if regression
            else torch.randint(0, 3, (n,), generator=g)
        )
        out.append((x, y))
    return out


def sample_shard(batches, rank):
    """Rank 0: the first 4 samples of each batch, rank 1 the rest, rank 2 nothing."""
    if rank == WORLD - 1:
        return []
    sl = slice(0, 4) if rank == 0 else slice(4, None)
    return [(x[sl], y[sl]) for x, y in batches]


def batch_shard(batches, rank):
    """Whole batches: rank 0 gets 0 and 2, rank 1 gets 1 and 3, rank 2 nothing."""
    return [b for i, b in enumerate(batches) if rank < WORLD - 1 and i % 2 == rank]


CASES = {
    # name: (model factory, loss, data, shard, bn_mode)
    "mlp_mean": (mlp, nn.CrossEntropyLoss, False, sample_shard, "eval"),
    "mlp_sum": (mlp, lambda: nn.MSELoss(reduction="sum"), True, sample_shard, "eval"),
    "bn_train": (bn_net, nn.CrossEntropyLoss, False, batch_shard, "train"),
    "bn_eval": (bn_net, nn.CrossEntropyLoss, False, batch_shard, "eval"),
}


def solver_results(op, seed: int) -> dict:
    from hessian_lr.curvature import hutchinson_trace, lanczos, power_iteration, spectral_density
    from hessian_lr.curvature.trace import trace_estimate

    def gen():
        return torch.Generator().manual_seed(seed)

    lz = lanczos(op, k=3, tol=1e-10, generator=gen())
    pw = power_iteration(op, tol=1e-9, max_iter=500, generator=gen())
    hu = hutchinson_trace(op, num_probes=8, generator=gen())
    xt = trace_estimate(op, 12, method="xtrace", generator=gen())
    sd = spectral_density(op, num_probes=2, num_steps=8, generator=gen())
    v0 = torch.randn(op.shape[0], generator=gen(), dtype=torch.float64)
    mine = v0.clone()
    few = power_iteration(op, v0=v0, tol=1e-15, max_iter=4, generator=gen())  # depends on v0
    lz_v0 = lanczos(op, k=1, v0=v0, tol=1e-15, max_iter=5, generator=gen())
    return {
        "v0_untouched": torch.equal(v0, mine),
        "power_v0": few.eigenvalues.tolist(),
        "lanczos_v0": lz_v0.eigenvalues.tolist(),
        "lanczos": lz.eigenvalues.tolist(),
        "lanczos_steps": lz.num_steps,
        "power": [float(x) for x in torch.as_tensor(pw.eigenvalues).reshape(-1)],
        "power_iters": pw.num_matvecs,
        "hutchinson": hu.estimate,
        "xtrace": xt.estimate,
        "slq_nodes": sd.nodes.tolist(),
        "slq_weights": sd.weights.tolist(),
    }


def dense(name: str, rank: int | None):
    """The dense Hessian of case ``name``: rank's shard (a group exists) or the union."""
    from hessian_lr.curvature import HessianOperator

    make, loss, regression, shard, bn_mode = CASES[name]
    data = global_batches(regression)
    if rank is not None:
        data = shard(data, rank)
    op = HessianOperator(make(), loss(), data, bn_mode=bn_mode, single_batch=False)
    return op, op.to_dense()


def _ranks(rank, world):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from hessian_lr.curvature import HessianOperator

    out = {}
    for name in CASES:
        out[name] = dense(name, rank)[1]
    op = dense("mlp_mean", rank)[0]
    out["solvers"] = solver_results(op, seed=rank)  # rank 0's draws are broadcast (op.agree_)
    # A DDP-wrapped model: products on the module inside; DDP still trains afterwards.
    model = DDP(mlp())
    flags = (model.require_backward_grad_sync, model.require_forward_param_sync, model.training)
    op = HessianOperator(model, nn.CrossEntropyLoss(), sample_shard(global_batches(), rank),
                         single_batch=False)  # fmt: skip
    out["ddp"] = op.to_dense()
    out["ddp_flags"] = flags == (
        model.require_backward_grad_sync, model.require_forward_param_sync, model.training,
    )  # fmt: skip
    x, y = global_batches()[0]
    nn.functional.cross_entropy(model(x), y).backward()  # DDP's own reduction still works
    out["ddp_grad"] = model.module[0].weight.grad.clone()
    # A rank raising in the middle of a product.
    calls = [0]

    def flaky(outputs, targets):
        calls[0] += 1
        if rank == 1 and calls[0] == 3:
            raise ValueError("bad batch on rank 1")
        return nn.functional.cross_entropy(outputs, targets)

    op = HessianOperator(mlp(), flaky, sample_shard(global_batches(), rank), single_batch=False,
                         reduction="mean")  # fmt: skip
    try:
        op @ torch.ones(op.shape[0], dtype=torch.float64)
        out["fail"] = ("none", "")
    except ValueError as err:
        out["fail"] = ("own", str(err))
    except RuntimeError as err:
        out["fail"] = ("peer", f"{type(err).__name__}: {err}")
    return out


def test_operator_and_solvers_over_three_ranks_equal_one_process_on_the_union():
    res = run_ranks(_ranks, WORLD, timeout=300)
    assert all(status == "ok" for status, _ in res.values()), res
    outs = [res[r][1] for r in range(WORLD)]
    for name in CASES:
        ref = dense(name, None)[1]
        assert ref.abs().max() > 0
        for o in outs:
            assert torch.equal(o[name], outs[0][name]), name  # bitwise identical on every rank
        torch.testing.assert_close(outs[0][name], ref, rtol=1e-12, atol=1e-14 * ref.abs().max())
    ref = dense("mlp_mean", None)[1]
    for o in outs:
        assert o["ddp_flags"]
        torch.testing.assert_close(o["ddp"], ref, rtol=1e-12, atol=1e-14 * ref.abs().max())
        assert o["ddp_grad"].abs().max() > 0
    assert all(torch.equal(o["ddp_grad"], outs[0]["ddp_grad"]) for o in outs)

    single = solver_results(dense("mlp_mean", None)[0], seed=0)
    for o in outs:
        assert o["solvers"] == outs[0]["solvers"]  # every rank ran the same recurrence
    got = outs[0]["solvers"]
    assert got["lanczos_steps"] == single["lanczos_steps"]
    assert got["v0_untouched"] and single["v0_untouched"]
    keys = ("lanczos", "power", "hutchinson", "xtrace", "slq_nodes", "slq_weights", "power_v0")
    for key in (*keys, "lanczos_v0"):
        torch.testing.assert_close(
            torch.tensor(got[key], dtype=F64),
            torch.tensor(single[key], dtype=F64),
            rtol=1e-10,
            atol=1e-12,
            msg=key,
        )
    evals = torch.linalg.eigvalsh(ref).flip(0)[:3]
    torch.testing.assert_close(
        torch.tensor(got["lanczos"], dtype=F64), evals, rtol=1e-9, atol=1e-12
    )

    assert outs[1]["fail"] == ("own", "bad batch on rank 1")
    for r in (0, 2):
        kind, msg = outs[r]["fail"]
        assert kind == "peer" and "rank" in msg, msg
