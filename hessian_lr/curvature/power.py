"""Power iteration with deflation for the top eigenvalues of a symmetric operator.

The classic method (von Mises & Pollaczek-Geiringer 1929) as used on neural-network Hessians by
PyHessian (Yao et al. 2020, "PyHessian: Neural networks through the lens of the Hessian") and by
the sharpness literature (Cohen et al. 2021): v ← Hv / ‖Hv‖, stop when the Rayleigh quotient
vᵀHv changes by at most ``tol`` relative to itself. Top-k by deflation: eigenvector j is
iterated in the orthogonal complement of the ones already found (projection deflation, which for
a symmetric operator equals Hotelling deflation H - Σ λ_i u_i u_iᵀ without its error build-up).

Each iteration costs exactly one matvec. The error of the Rayleigh quotient shrinks like
(λ₂/λ₁)^{2t}, so a small gap makes it slow: ``lanczos`` needs several times
fewer matvecs for the same accuracy (methods notes §2); power iteration is kept as the simple
baseline that PyHessian and the Super-Convergence-era tools use.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from ._solver_utils import check_finite, check_operator, check_positive, randn

__all__ = ["PowerIterationResult", "power_iteration"]


@dataclass(frozen=True)
class PowerIterationResult:
    """Result of :func:`power_iteration`.

    Attributes:
        eigenvalues: (k,) float64 on the CPU, Rayleigh quotients, sorted by decreasing magnitude
            (``which="LM"``) or decreasing value (``which="LA"``).
        eigenvectors: (N, k) unit columns in the operator's dtype and device.
        num_matvecs: operator products spent (one per iteration).
        num_iterations: iterations over all eigenpairs (equals ``num_matvecs``).
        converged: whether every eigenpair met ``tol`` within ``max_iter`` iterations.
        seconds: wall-clock time.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    num_matvecs: int
    num_iterations: int
    converged: bool
    seconds: float


def _orthogonalize(v: torch.Tensor, U: torch.Tensor | None) -> torch.Tensor:
    """Remove from v (N,) its components along the orthonormal columns of U (N, j), twice."""
    if U is None or U.shape[1] == 0:
        return v
    for _ in range(2):
        v = v - U @ (U.T @ v)
    return v


def _start_vector(
    j: int, N: int, op: object, v0: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    if v0 is not None and j < v0.shape[1]:
        return v0[:, j].clone()
    return randn((N,), op, generator)


def _iterate(
    op: object,
    v: torch.Tensor,
    U: torch.Tensor | None,
    *,
    shift: float,
    tol: float,
    max_iter: int,
    N: int,
    generator: torch.Generator | None,
) -> tuple[float, torch.Tensor, int, bool]:
    """Power iteration on (H + shift·I) restricted to the complement of U's columns.

    Returns (Rayleigh quotient of H, unit eigenvector estimate, iterations, converged).
    """
    v = _orthogonalize(v, U)
    norm = float(torch.linalg.vector_norm(v))
    if not norm > 0:  # a warm start inside span(U): draw a fresh direction
        v = _orthogonalize(randn((N,), op, generator), U)
        norm = float(torch.linalg.vector_norm(v))
    v = v / norm
    lam_old = math.nan
    lam = math.nan
    for it in range(1, max_iter + 1):
        w = op @ v
        if shift != 0.0:
            w = w + shift * v
        w = _orthogonalize(w, U)
        host = torch.stack([torch.dot(v, w), torch.linalg.vector_norm(w)]).double().cpu()
        lam_shifted, w_norm = float(host[0]), float(host[1])  # one device sync per iteration
        if not (math.isfinite(lam_shifted) and math.isfinite(w_norm)):
            check_finite(w, "power_iteration")  # raises, naming NaN or inf
            raise ValueError("power_iteration: the iteration overflowed (inf)")
        lam = lam_shifted - shift
        if w_norm == 0.0:  # v is in the null space of the shifted, deflated operator: exact
            return lam, v, it, True
        v_new = w / w_norm
        if abs(lam - lam_old) <= tol * abs(lam):
            return lam, v_new, it, True
        lam_old = lam
        v = v_new
    return lam, v, max_iter, False


def power_iteration(
    op: object,
    *,
    k: int = 1,
    which: Literal["LM", "LA"] = "LM",
    tol: float = 1e-4,
    max_iter: int = 200,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PowerIterationResult:
    """Top-k eigenpairs of a symmetric operator by power iteration with deflation.

    Eigenpair j is found by iterating v ← P H v / ‖P H v‖ with P the projector onto the
    complement of the eigenvectors already found, until the Rayleigh quotient λ = vᵀHv satisfies
    |λ_t - λ_{t-1}| ≤ tol·|λ_t|. This stopping rule bounds the *change*, not the error: with a
    gap ratio r = |λ₂/λ₁| the error is about tol / (1 - r²), so use a smaller ``tol`` (or
    :func:`hessian_lr.curvature.lanczos`) when the gap is small.

    ``which="LM"`` returns the eigenvalues largest in magnitude (plain power iteration).
    ``which="LA"`` returns the largest algebraic ones: the first LM eigenvalue λ_LM is found
    first; if it is positive it is the largest algebraic eigenvalue and is kept, and the remaining
    pairs (or all of them, if λ_LM < 0) come from power iteration on H + |λ_LM|·I, whose spectrum
    is non-negative with the same order as H's. The shift slows convergence (the gap ratio
    becomes (λ₂ + s)/(λ₁ + s)).

    Args:
        op: symmetric linear operator (N, N) with ``op @ v`` (e.g. ``HessianOperator``,
            ``DenseOperator``).
        k: number of eigenpairs, 1 ≤ k ≤ N.
        which: ``"LM"`` (largest magnitude) or ``"LA"`` (largest algebraic).
        tol: relative change of the Rayleigh quotient at which an eigenpair is accepted (> 0).
        max_iter: maximum iterations (= matvecs) per eigenpair.
        v0: warm start, (N,) for the first eigenvector or (N, j) for the first j (e.g. the
            eigenvectors of a previous call while tracking λ_max during training). Other
            eigenpairs start from Gaussian random vectors.
        generator: random source for the start vectors.

    Returns:
        A :class:`PowerIterationResult`; ``converged`` is False (with a ``RuntimeWarning``)
        when some eigenpair used up ``max_iter`` iterations.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)))
        >>> res = power_iteration(op, tol=1e-10, generator=torch.Generator().manual_seed(0))
        >>> round(res.eigenvalues[0].item(), 6)
        10.0
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an integer in [1, N={N}], got {k}")
    if which not in ("LM", "LA"):
        raise ValueError(f"which must be 'LM' or 'LA' for power iteration, got {which!r}")
    check_positive("tol", tol)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    if v0 is not None:
        if not isinstance(v0, torch.Tensor):
            raise TypeError(f"v0 must be a torch.Tensor, got {type(v0).__name__}")
        if v0.ndim == 1:
            v0 = v0.unsqueeze(1)
        if v0.ndim != 2 or v0.shape[0] != N:
            raise ValueError(f"v0 must have shape ({N},) or ({N}, j), got {tuple(v0.shape)}")
        v0 = v0.to(device=op.device, dtype=op.dtype)
        check_finite(v0, "power_iteration: v0")

    eigenvalues: list[float] = []
    vectors: list[torch.Tensor] = []
    iterations = 0
    converged = True
    shift = 0.0
    j_start = 0  # index into v0 of the next warm-start column

    def U() -> torch.Tensor | None:
        return torch.stack(vectors, dim=1) if vectors else None

    if which == "LA":
        v = _start_vector(0, N, op, v0, generator)
        lam, u, it, ok = _iterate(
            op, v, None, shift=0.0, tol=tol, max_iter=max_iter, N=N, generator=generator
        )
        iterations += it
        j_start = 1
        if lam >= 0:  # the dominant eigenvalue is the largest algebraic one
            eigenvalues.append(lam)
            vectors.append(u)
            converged &= ok
        # Shift so that H + s I is positive semi-definite: |λ| ≤ |λ_LM| for every eigenvalue.
        shift = abs(lam)

    while len(vectors) < k:
        v = _start_vector(j_start, N, op, v0, generator)
        j_start += 1
        lam, u, it, ok = _iterate(
            op, v, U(), shift=shift, tol=tol, max_iter=max_iter, N=N, generator=generator
        )
        iterations += it
        converged &= ok
        eigenvalues.append(lam)
        vectors.append(u)

    vals = torch.tensor(eigenvalues, dtype=torch.float64)
    key = vals.abs() if which == "LM" else vals
    order = torch.argsort(key, descending=True, stable=True)
    if not converged:
        warnings.warn(
            f"power_iteration: not all {k} eigenpairs reached tol={tol} in max_iter={max_iter} "
            "iterations; increase max_iter or use hessian_lr.curvature.lanczos",
            RuntimeWarning,
            stacklevel=2,
        )
    return PowerIterationResult(
        eigenvalues=vals[order],
        eigenvectors=torch.stack(vectors, dim=1)[:, order.to(op.device)],
        num_matvecs=iterations,
        num_iterations=iterations,
        converged=converged,
        seconds=time.perf_counter() - t0,
    )
