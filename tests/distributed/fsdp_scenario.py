"""What each rank runs in ``test_fsdp.py``: FSDP2 models, their data, and the measurements.

Kept apart from the test module so that spawned processes import only this (and the harness).
Every model is built from a fixed seed on every rank (``fully_shard`` keeps each rank's rows of
the same initial tensors), and the data is a fixed list of global batches dealt to the ranks by
batch index, so the union over the ranks -- and the objective -- is the same for every number of
ranks (train-mode BatchNorm normalises per batch: whole batches keep it the same objective).
"""

from __future__ import annotations

import time

import torch
from torch import nn

SIZES = (4, 3, 3, 2)  # the global batches' sizes
F64 = torch.float64


def bn_net(dtype: torch.dtype = F64) -> nn.Module:
    """A tanh MLP with a BatchNorm layer: N = 20 + 5 + 5 + 5 + 15 + 3 = 53."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.BatchNorm1d(5), nn.Linear(5, 3))
    with torch.no_grad():  # non-trivial running statistics for the eval mode
        net[2].running_mean.uniform_(-0.5, 0.5)
        net[2].running_var.uniform_(0.5, 2.0)
    return net.to(dtype)


class Tied(nn.Module):
    """Input and output maps share one weight (a tied embedding/decoder in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 4, bias=False)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, 4)
        self.out.weight = self.inp.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mid(torch.tanh(self.inp(x)))))


def tied_net() -> nn.Module:
    torch.manual_seed(1)
    return Tied().double()


def global_batches(n_in: int = 4, n_out: int = 3, dtype: torch.dtype = F64) -> list:
    g = torch.Generator().manual_seed(2)
    return [
        (
            torch.randn(n, n_in, generator=g, dtype=F64).to(dtype),
            torch.randn(n, n_out, generator=g, dtype=F64).to(dtype),
        )
        for n in SIZES
    ]


def deal(batches: list, rank: int, world: int, *, empty_last: bool = False) -> list:
    """Batch i goes to rank i mod world (or mod world − 1, the last rank then gets none)."""
    ways = world - 1 if empty_last and world > 1 else world
    if empty_last and world > 1 and rank == world - 1:
        return []
    return [b for i, b in enumerate(batches) if i % ways == rank]


def shard(net: nn.Module, *, units: bool = True) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    if units:
        for m in net:
            if isinstance(m, nn.Linear):
                fully_shard(m)
    fully_shard(net)
    return net


def full_vector(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _state(net: nn.Module) -> dict:
    """Local shards, .grad objects, buffers and the global RNG state, for the restoration check."""
    return {
        "params": [p.to_local().clone() for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
        "buffers": [b.clone() for b in net.buffers()],
        "rng": torch.get_rng_state(),
        "training": [m.training for m in net.modules()],
    }


def _same_state(a: dict, b: dict) -> bool:
    return (
        all(torch.equal(x, y) for x, y in zip(a["params"], b["params"]))
        and all(x is y for x, y in zip(a["grads"], b["grads"]))
        and all(torch.equal(x, y) for x, y in zip(a["buffers"], b["buffers"]))
        and torch.equal(a["rng"], b["rng"])
        and a["training"] == b["training"]
    )


def measure(rank: int, world: int, heavy: bool = False) -> dict:
    """The numbers ``test_fsdp.py`` compares, from one rank of a ``world``-rank FSDP2 run.

    ``heavy`` adds the solvers that take many products (power iteration, XTrace, SLQ).
    """
    from hessian_lr.curvature import HessianOperator, lanczos, power_iteration
    from hessian_lr.curvature.density import spectral_density
    from hessian_lr.curvature.trace import hutchinson_trace, xtrace
    from hessian_lr.lr import CurvatureOptions, estimate_lrs

    out: dict = {}
    mse = nn.MSELoss()
    data = deal(global_batches(), rank, world)
    net = shard(bn_net())
    net.train()  # the caller's modes: the operator must leave them
    for p in net.parameters():  # a caller's accumulated gradient: must survive untouched
        p.grad = torch.zeros_like(p)
    before = _state(net)
    op = HessianOperator(net, mse, data)
    out["type"] = type(op).__name__
    out["local_size"] = op.vector_space.local_size
    n = op.shape[0]
    v = full_vector(n, 3)
    out["hv_eval"] = op.gather(op @ op.local_part(v))
    out["hv_block"] = op.gather(op @ op.local_part(torch.stack([v, 2 * v, 0 * v], 1)))
    loss, g = op.gradient()
    out["loss"], out["grad"] = loss, op.gather(g)
    out["restored"] = _same_state(before, _state(net))
    gen = torch.Generator().manual_seed(0)
    res = lanczos(op, tol=1e-8, stop="eigenvalue", generator=gen, progress=False)
    out["lanczos"] = float(res.eigenvalues[0])
    out["lanczos_vec"] = op.gather(res.eigenvectors[:, 0])
    hut = hutchinson_trace(op, num_probes=3, generator=torch.Generator().manual_seed(4))
    out["hutchinson"] = hut.estimate
    probes = torch.Generator().manual_seed(4)
    out["probes"] = [op.gather(op.vector_space.rademacher((), probes, F64)) for _ in range(3)]
    if heavy:
        gen = torch.Generator().manual_seed(0)
        power = power_iteration(op, tol=1e-4, max_iter=80, generator=gen)
        out["power"], out["power_ok"] = float(power.eigenvalues[0]), power.converged
        gen = torch.Generator().manual_seed(5)
        out["xtrace"] = xtrace(op, num_matvecs=6, generator=gen).estimate
        out["xtrace_exact"] = xtrace(op, num_matvecs=op.shape[0]).estimate
        slq = spectral_density(
            op,
            num_probes=2,
            num_steps=4,
            batch_size=2,
            generator=torch.Generator().manual_seed(6),
            progress=False,
        )
        out["slq_nodes"], out["slq_weights"] = slq.nodes, slq.weights
    est = estimate_lrs(net, mse, data, methods=("quadratic", "sharpness"), lanczos_tol=1e-5)
    out["lr_quadratic"] = est["quadratic"].lr
    out["lr_sharpness"] = est["sharpness"].lambda_max
    eval_mode = CurvatureOptions(bn_mode="eval")
    est = estimate_lrs(net, mse, data, methods=("quadratic",), curvature=eval_mode)
    out["lr_quadratic_eval"] = est["quadratic"].lr
    out["restored_after_all"] = _same_state(before, _state(net))

    train = HessianOperator(net, mse, data, bn_mode="train")
    out["hv_train"] = train.gather(train @ train.local_part(v))

    net32 = shard(bn_net(torch.float32))
    op32 = HessianOperator(net32, mse, deal(global_batches(dtype=torch.float32), rank, world))
    out["hv_f32"] = op32.gather(op32 @ op32.local_part(v.float()))

    tied = shard(tied_net(), units=False)
    opt = HessianOperator(tied, mse, deal(global_batches(4, 4), rank, world))
    out["tied_n"] = opt.shape[0]
    out["hv_tied"] = opt.gather(opt @ opt.local_part(full_vector(opt.shape[0], 7)))

    if world == 2:
        out.update(_in_training(rank, world))
    if world > 1:
        empty = HessianOperator(net, mse, deal(global_batches(), rank, world, empty_last=True))
        out["hv_empty"] = empty.gather(empty @ empty.local_part(v))
        out.update(_failures(net, data, rank, v))
    return out


def _in_training(rank: int, world: int) -> dict:
    """LREstimator (quadratic, sharpness) and the EoS observer after one FSDP SGD step."""
    from hessian_lr.lr import CurvatureOptions, LREstimator
    from hessian_lr.lr.eos import EdgeOfStability
    from hessian_lr.observe import StepContext

    net, data, mse = shard(bn_net()), deal(global_batches(), rank, world), nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    est = LREstimator(net, methods=("quadratic", "sharpness"), every=1, loss_fn=mse, optimizer=opt)
    eos = EdgeOfStability(
        loss_fn=mse, batch=data, lanczos_tol=1e-6, curvature=CurvatureOptions(bn_mode="eval")
    )
    opt.zero_grad()
    net.eval()  # BN's running statistics stay the same on every rank (no SyncBatchNorm here)
    for x, y in data:
        (mse(net(x), y) * y.numel() / sum(t.numel() for _, t in data)).backward()
    opt.step()
    net.train()
    res = est.step(data)
    rec = eos.observe(StepContext(step=0, model=net, optimizer=opt))
    theta = torch.cat([p.full_tensor().reshape(-1) for p in net.parameters()])
    return {
        "trained_theta": theta,
        "trained_buffers": [b.clone() for b in net.buffers()],
        "estimator_quadratic": res["quadratic"].lr,
        "estimator_sharpness": res["sharpness"].lambda_max,
        "eos_sharpness": rec["eos_sharpness"],
        "eos_threshold": rec["eos_threshold"],
    }


def _failures(net: nn.Module, data: list, rank: int, v: torch.Tensor) -> dict:
    """A NaN loss on rank 1, then a loss_fn raising on rank 1: every rank must raise."""
    from hessian_lr.curvature import HessianOperator

    out = {}
    bad = [(x * float("nan"), y) for x, y in data] if rank == 1 else data
    t0 = time.perf_counter()
    try:
        op = HessianOperator(net, nn.MSELoss(), bad)
        op @ op.local_part(v)
        out["nan_error"] = None
    except Exception as err:  # noqa: BLE001 - the test reads which error each rank raised
        out["nan_error"] = f"{type(err).__name__}: {err}"

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if rank == 1:
            raise KeyError("broken loss on rank 1")
        return nn.functional.mse_loss(outputs, targets)

    try:
        op = HessianOperator(net, loss_fn, data, reduction="mean")
        op @ op.local_part(v)
        out["raise_error"] = None
    except Exception as err:  # noqa: BLE001
        out["raise_error"] = f"{type(err).__name__}: {err}"
    out["failure_seconds"] = time.perf_counter() - t0
    return out
