"""Issue 22: solver arguments that differ across ranks are detected on every rank (gloo)."""

from __future__ import annotations

import pytest
import torch
from harness import run_ranks
from torch import nn

pytestmark = pytest.mark.slow


def _rank(rank: int, world: int, which: str) -> str:
    from hessian_lr.curvature import HessianOperator
    from hessian_lr.curvature.lanczos import lanczos
    from hessian_lr.curvature.trace import hutchinson_trace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    g = torch.Generator().manual_seed(rank)
    batch = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randint(0, 2, (6,), generator=g),
    )
    op = HessianOperator(model, nn.CrossEntropyLoss(), batch)
    assert op.process_group is not None
    try:
        if which == "tol":
            lanczos(op, tol=1e-6 if rank == 0 else 1e-3)
        elif which == "probes":
            hutchinson_trace(op, num_probes=4 + rank)
        else:  # same arguments: runs
            return f"ok {lanczos(op, tol=1e-8).eigenvalues[0].item():.12f}"
    except ValueError as err:
        return str(err)
    return "no error"


@pytest.mark.parametrize("which", ["tol", "probes"])
def test_differing_solver_arguments_raise_on_every_rank(which):
    out = run_ranks(_rank, 2, which, timeout=90)
    for rank in range(2):
        status, msg = out[rank]
        assert status == "ok", out
        assert "arguments differ across the ranks" in msg, msg


def test_same_arguments_run_and_agree():
    out = run_ranks(_rank, 2, "same", timeout=90)
    assert out[0][0] == out[1][0] == "ok"
    assert out[0][1] == out[1][1] and out[0][1].startswith("ok")
