"""Issue 22: ``preconditioned_sharpness`` and ``update`` use the same Adam/RMSprop preconditioner.

Behaviour chosen: the current batch's gradient is folded into v before the division (what torch
does on the next step), in both. Checked against a hand-computed P and a dense float64 Hessian of
a least-squares model (H = 2XᵀX/n, closed form).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.lr.stability import preconditioned_sharpness, preconditioner_diagonal
from hessian_lr.lr.update import update_direction

DT = torch.float64


def _problem(opt_name: str):
    torch.manual_seed(0)
    X = torch.randn(40, 5, dtype=DT) * torch.tensor([3.0, 1.0, 0.3, 0.1, 2.0], dtype=DT)
    y = torch.randn(40, 1, dtype=DT)
    model = nn.Linear(5, 1, bias=False).double()
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    else:
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-8)
    batches = [(X[:20], y[:20]), (X[20:], y[20:])]
    # one step on the first half: early training, where the current gradient weighs most
    opt.zero_grad()
    nn.MSELoss()(model(batches[0][0]), batches[0][1]).backward()
    opt.step()
    return model, opt, batches[1]


def _hand_p(opt_name, opt, p, g):
    state, group = opt.state[p], opt.param_groups[0]
    if opt_name == "adam":
        b2 = group["betas"][1]
        t = float(state["step"]) + 1
        v = b2 * state["exp_avg_sq"].double() + (1 - b2) * g * g
        return (v / (1 - b2**t)).sqrt() + group["eps"]
    a = group["alpha"]
    v = a * state["square_avg"].double() + (1 - a) * g * g
    return v.sqrt() + group["eps"]


@pytest.mark.parametrize("opt_name", ["adam", "rmsprop"])
def test_preconditioner_of_both_methods_is_the_hand_computed_one(opt_name):
    model, opt, (x, y) = _problem(opt_name)
    w = model.weight
    n = x.shape[0]
    g = (2.0 / n) * ((x @ w.detach().T - y).T @ x)  # ∂ MSE / ∂w, (1, 5)
    P = _hand_p(opt_name, opt, w, g)
    q = preconditioner_diagonal(opt, [w], gradient=[g])
    torch.testing.assert_close(q, P.reshape(-1), rtol=1e-14, atol=0)
    # update's direction divides by the same P
    d = update_direction(opt, [w], [g]).direction[0]
    if opt_name == "rmsprop":
        torch.testing.assert_close(d, -g / P, rtol=1e-13, atol=0)
    else:
        st, b1 = opt.state[w], opt.param_groups[0]["betas"][0]
        t = float(st["step"]) + 1
        m = (b1 * st["exp_avg"].double() + (1 - b1) * g) / (1 - b1**t)
        torch.testing.assert_close(d, -m / P, rtol=1e-13, atol=0)
    # preconditioned_sharpness: λ_max(P^-1/2 H P^-1/2), H = 2XᵀX/n in closed form
    H = (2.0 / n) * (x.T @ x).numpy()
    p = P.reshape(-1).numpy()
    want = np.linalg.eigvalsh(H / np.sqrt(np.outer(p, p)))[-1]
    res = preconditioned_sharpness(
        model,
        nn.MSELoss(),
        (x, y),
        opt,
        lanczos_tol=1e-10,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.lambda_max == pytest.approx(want, rel=1e-8)
    # the old preconditioner (state after the last step, no current gradient) is far off here
    old = preconditioner_diagonal(opt, [w]).numpy()
    lam_old = np.linalg.eigvalsh(H / np.sqrt(np.outer(old, old)))[-1]
    assert not math.isclose(lam_old, want, rel_tol=1e-2)
