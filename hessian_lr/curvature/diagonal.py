"""Diagonals of curvature operators: exact for small problems, Hutchinson and XDiag otherwise.

Per-parameter step sizes (AdaHessian, Yao et al. 2021; Sophia, Liu et al. 2023) read the
diagonal of a Hessian or a GGN.

* :func:`diagonal_estimate` -- any symmetric operator's diagonal with a standard error per entry:

  - ``"hutchinson"`` (Bekas, Kokiopoulou & Saad 2007, "An estimator for the diagonal of a
    matrix"): d̂ = (1/m) Σᵢ zᵢ ⊙ A zᵢ with Rademacher zᵢ; standard error = the per-entry
    spread of the m terms / √m. m products.
  - ``"xdiag"`` (Epperly, Tropp & Webber 2024, "XTrace: making the most of every sample in
    stochastic trace estimation", §2.3): exchangeable low-rank + Hutchinson. With Ω (N x m
    Rademacher), Y = AΩ = QR, for each i the basis Q₋ᵢ of AΩ₋ᵢ (a rank-one downdate of Q) gives
    the unbiased d⁽ⁱ⁾ = diag(Q₋ᵢQ₋ᵢᵀA) + ωᵢ ⊙ (I − Q₋ᵢQ₋ᵢᵀ)Aωᵢ; the estimate is their mean and
    its standard error their spread / √m (exchangeable, not independent: somewhat optimistic
    on fast-decaying spectra, as for XTrace). 2m products; far more accurate than Hutchinson
    when a few directions dominate A (neural-network curvature).
* :func:`exact_diagonal` -- diag(A) from N products with the unit vectors (tests, small N);
  :func:`hessian_diagonal` is that for a Hessian operator.
* :func:`ggn_diagonal` -- the exact diagonal of a GGN or Fisher operator from P backward passes
  per batch, P the number of outputs of a batch: diag(JᵀMJ) = Σ_c (Jᵀs_c)² with M = Σ_c s_c s_cᵀ
  (the output-space matrix's eigen-factor). Cheaper than N products when P ≪ N (small output
  dimension: classifiers with few classes on small batches).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.func import vjp, vmap

from ._jacobian import model_outputs, split_batch
from ._solver_utils import check_operator, rademacher, solver, work_dtype
from .linop import params_to_vector

__all__ = [
    "DiagonalEstimate",
    "diagonal_estimate",
    "exact_diagonal",
    "hessian_diagonal",
    "ggn_diagonal",
    "DIAGONAL_METHODS",
]

DIAGONAL_METHODS = ("hutchinson", "xdiag")


@dataclass(frozen=True)
class DiagonalEstimate:
    """An estimate of an operator's diagonal.

    Attributes:
        diagonal: (N,) the estimate, in the operator's dtype and device.
        std_error: (N,) its standard error per entry (zeros for an exact diagonal).
        method: ``"hutchinson"``, ``"xdiag"`` or ``"exact"``.
        num_matvecs: operator products spent.
        seconds: wall-clock time.
    """

    diagonal: torch.Tensor
    std_error: torch.Tensor
    method: str
    num_matvecs: int
    seconds: float


def _apply(op: Any, V: torch.Tensor, batch_size: int) -> torch.Tensor:
    cols = [op @ V[:, s : s + batch_size] for s in range(0, V.shape[1], batch_size)]
    return torch.cat(cols, dim=1)


@solver
def diagonal_estimate(
    op: Any,
    num_matvecs: int,
    *,
    method: Literal["hutchinson", "xdiag"] = "xdiag",
    batch_size: int = 8,
    generator: torch.Generator | None = None,
) -> DiagonalEstimate:
    """The diagonal of a symmetric operator with a standard error per entry.

    Args:
        op: a linear operator (``shape``, ``dtype``, ``device``, ``op @ V``).
        num_matvecs: budget of products (≥ 2 for Hutchinson, ≥ 4 for XDiag; an odd XDiag
            budget leaves one unused). A budget ≥ N returns the exact diagonal from N products.
        method: ``"hutchinson"`` or ``"xdiag"`` (module docstring).
        batch_size: columns per ``op @ V`` call.
        generator: random source of the probes (default: seeded 0; the global RNG is not used).

    Returns:
        A :class:`DiagonalEstimate`.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> A = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
        >>> A[0, 1] = A[1, 0] = 0.5
        >>> est = diagonal_estimate(DenseOperator(A), 6, method="hutchinson")
        >>> est.diagonal.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # budget ≥ N: exact
        True
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if method not in DIAGONAL_METHODS:
        raise ValueError(f"method must be one of {DIAGONAL_METHODS}, got {method!r}")
    least = 2 if method == "hutchinson" else 4
    if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, int) or num_matvecs < least:
        raise ValueError(f"{method} needs num_matvecs ≥ {least}, got {num_matvecs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_matvecs >= N:
        d = exact_diagonal(op, batch_size=batch_size)
        return DiagonalEstimate(d, torch.zeros_like(d), "exact", N, time.perf_counter() - t0)
    if method == "hutchinson":
        terms = _hutchinson_terms(op, N, num_matvecs, batch_size, generator)
        used = num_matvecs
    else:
        terms = _xdiag_terms(op, N, num_matvecs // 2, batch_size, generator)
        used = 2 * (num_matvecs // 2)
    m = terms.shape[1]
    d = terms.mean(dim=1)
    se = terms.std(dim=1, correction=1) / math.sqrt(m)
    dt = op.dtype
    return DiagonalEstimate(d.to(dt), se.to(dt), method, used, time.perf_counter() - t0)


def _hutchinson_terms(
    op: Any, N: int, m: int, batch_size: int, generator: torch.Generator | None
) -> torch.Tensor:
    Z = rademacher((N, m), op, generator).to(op.dtype)
    return (Z * _apply(op, Z, batch_size)).to(work_dtype(op.dtype))


def _xdiag_terms(
    op: Any, N: int, m: int, batch_size: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(N, m): the m exchangeable unbiased estimates d⁽ⁱ⁾ (module docstring)."""
    Om = rademacher((N, m), op, generator).to(op.dtype)
    Y = _apply(op, Om, batch_size)
    wd = torch.float64 if op.dtype == torch.float64 else work_dtype(op.dtype)
    Om, Y = Om.to(wd), Y.to(wd)
    Q, R = torch.linalg.qr(Y)
    sv = torch.linalg.svdvals(R)
    if float(sv[-1]) <= 1e3 * torch.finfo(wd).eps * float(sv[0]):
        # A has rank < m on these probes: range(AΩ₋ᵢ) = range(AΩ) for every i (A is captured
        # exactly); the Hutchinson part only sees rounding.
        U, s, _ = torch.linalg.svd(Y, full_matrices=False)
        Q = U[:, s > 1e3 * torch.finfo(wd).eps * s[0]]
        Z = _apply(op, Q.to(op.dtype), batch_size).to(wd)
        low = (Q * Z).sum(1, keepdim=True)
        resid = Y - Q @ (Q.T @ Y)
        return low + Om * resid
    Z = _apply(op, Q.to(op.dtype), batch_size).to(wd)  # A Q
    T = Z.T @ Om  # QᵀAωᵢ (A symmetric)
    Rinv = torch.linalg.solve_triangular(R, torch.eye(m, dtype=wd, device=R.device), upper=True)
    S = Rinv.T / torch.linalg.vector_norm(Rinv.T, dim=0, keepdim=True)
    QS, ZS = Q @ S, Z @ S
    dQZ = (Q * Z).sum(1, keepdim=True)  # diag(QQᵀA)
    low = dQZ - QS * ZS  # diag(Q₋ᵢQ₋ᵢᵀA), column i
    sT = (S * T).sum(0)  # sᵢᵀ Tᵢ
    hutch = Om * (Y - Q @ T + QS * sT)  # ωᵢ ⊙ (I − Q₋ᵢQ₋ᵢᵀ)Aωᵢ
    return low + hutch


def exact_diagonal(op: Any, *, batch_size: int = 64) -> torch.Tensor:
    """diag(A) from N products with unit vectors, ``batch_size`` at a time (small N only)."""
    N = check_operator(op)
    out = torch.empty(N, dtype=op.dtype, device=op.device)
    for s in range(0, N, batch_size):
        k = min(batch_size, N - s)
        E = torch.zeros(N, k, dtype=op.dtype, device=op.device)
        E[torch.arange(s, s + k), torch.arange(k)] = 1
        out[s : s + k] = (op @ E)[torch.arange(s, s + k), torch.arange(k)]
    return out


def hessian_diagonal(op: Any, *, batch_size: int = 64) -> torch.Tensor:
    """The exact diagonal of a Hessian operator (N Hessian-vector products; for tests)."""
    return exact_diagonal(op, batch_size=batch_size)


def ggn_diagonal(op: Any, *, max_outputs: int = 4096) -> torch.Tensor:
    """The exact diagonal of a :class:`GGNOperator` or :class:`FisherOperator`.

    Per batch: the dense output-space matrix M_b (P x P, P = the batch's number of outputs,
    from P applications of the operator's output-space product), its factor M_b = S Sᵀ (S = U
    √max(Λ, 0) from ``eigh``) and Σ_c (J_bᵀ s_c)² by P vmapped VJPs; batches weighted as the
    operator's products. Memory O(P·N).

    Args:
        op: a ``GGNOperator`` or ``FisherOperator`` (``kind="empirical"`` or ``"mc"``).
        max_outputs: refuse batches with more outputs than this (use
            :func:`diagonal_estimate` there).
    """
    if not hasattr(op, "_middle"):
        raise TypeError(
            "ggn_diagonal needs a GGNOperator or FisherOperator; for any operator use "
            "diagonal_estimate or exact_diagonal"
        )
    op._refresh()

    def local() -> tuple[torch.Tensor | None, float, float]:
        out, total = None, 0.0
        for index, c, batch in op._batches():
            d = _batch_ggn_diagonal(op, index, batch, max_outputs)
            out = d.mul_(c) if out is None else out.add_(d, alpha=c)
            total += c
            op._forget_batch()
        return out, total, 0.0

    with op._pass():
        d, _ = op._finish(local, (op.shape[0],), op._like)
    return d


def _batch_ggn_diagonal(op: Any, index: int, batch: Any, max_outputs: int) -> torch.Tensor:
    _, targets = split_batch(batch)
    theta = op._theta()
    out, vjp_fn = vjp(lambda th: model_outputs(op, th, batch), theta)
    if not isinstance(out, torch.Tensor):
        raise ValueError("ggn_diagonal needs a model that returns one tensor of outputs")
    P = out.numel()
    if P > max_outputs:
        raise ValueError(
            f"the batch has {P} outputs > max_outputs={max_outputs}: the exact diagonal would "
            "need that many backward passes; use diagonal_estimate(op, ...) instead"
        )
    out = out.detach()
    eye = torch.eye(P, dtype=out.dtype, device=out.device).reshape(P, *out.shape)
    M = op._middle(index, batch, out, targets, eye).reshape(P, P)
    evals, evecs = torch.linalg.eigh((M + M.T) / 2)
    S = evecs * evals.clamp_min(0).sqrt()  # (P, P), columns s_c
    cols = S.T.reshape(P, *out.shape)
    JtS = vmap(lambda w: params_to_vector(vjp_fn(w)[0]))(cols)  # (P, N)
    return (JtS**2).sum(0)
