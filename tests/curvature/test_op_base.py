"""The curvature operator base hosts a second operator: a GGN in a few lines, against a dense
float64 reference built independently (jacrev of the outputs, closed-form cross-entropy Hessian)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp
from zoo import rel_error

from hessian_lr.curvature import CurvatureOperator, lanczos
from hessian_lr.curvature.linop import params_to_vector

DT = torch.float64


# ---- the GGN, written on the base: one per-batch product (Gauss-Newton: Jᵀ ∇²ℓ(f) J) ----------
class GGNOperator(CurvatureOperator):
    """G = Σ_b c_b J_bᵀ H_ℓ J_b / Σ_b c_b with J_b the Jacobian of the outputs on batch b."""

    def _matmat_batch(self, index, batch, V):
        theta, targets = self._theta(), batch[1]

        def outputs(*th):
            return self._predict(th, batch)[0]

        out, pullback = vjp(outputs, *theta)
        loss_grad = grad(lambda z: self._loss_impl(z, targets))
        cols = []
        for v in V.T:
            Jv = jvp(outputs, theta, tuple(self._split(v)))[1]
            HJv = jvp(loss_grad, (out.detach(),), (Jv,))[1]
            cols.append(params_to_vector(pullback(HJv)))
        return torch.stack(cols, dim=1)


# ---- the reference ---------------------------------------------------------------------------
def dense_ggn(model, batches):
    """(1/n) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i over all samples: mean CE, closed form."""
    names = [n for n, _ in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def logits(flat, x):
        pieces = torch.split(flat, [s.numel() for s in shapes])
        ps = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return functional_call(model, ps, (x,))

    x = torch.cat([b[0] for b in batches])
    J = jacrev(logits)(theta, x)  # (n, C, N)
    p = torch.softmax(logits(theta, x), dim=1)  # (n, C)
    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncN,ncd,ndM->NM", J, H, J) / x.shape[0]


def _case():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    batches = [
        (torch.randn(n, 4, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g))
        for n in (5, 9)  # unequal sizes: the base must weight by counted samples
    ]
    return model, batches


def test_a_ggn_on_the_base_matches_the_dense_reference():
    model, batches = _case()
    op = GGNOperator(model, nn.CrossEntropyLoss(), batches)
    G = dense_ggn(model, batches)
    assert G.shape == op.shape and torch.linalg.eigvalsh(G).min() > -1e-12  # PSD, as a GGN is
    V = torch.randn(op.shape[0], 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    assert rel_error(op @ V, G @ V) < 1e-12
    assert rel_error(op.to_dense(), G) < 1e-12
    assert op.asymmetry is not None and op.asymmetry < 1e-12  # the probe ran and passed
    top = lanczos(op, k=1, tol=1e-10, generator=torch.Generator().manual_seed(2), progress=False)
    assert float(top.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-9)


def test_the_base_gives_the_ggn_the_same_gradient_as_the_loss():
    model, batches = _case()
    op = GGNOperator(model, nn.CrossEntropyLoss(), batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    ref = torch.autograd.grad(nn.CrossEntropyLoss()(model(x), y), list(model.parameters()))
    loss, g = op.gradient()
    assert rel_error(g, params_to_vector(ref)) < 1e-13
    assert loss == pytest.approx(float(nn.CrossEntropyLoss()(model(x), y).detach()), rel=1e-14)
