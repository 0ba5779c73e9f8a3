"""Stochastic trace estimators: Hutchinson and Hutch++.

Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines": for Rademacher z (independent ±1 entries), E[zᵀHz] = tr H and
Var[zᵀHz] = 2 Σ_{i≠j} H_ij², so the mean of n samples has standard error s/√n.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal stochastic trace estimation",
SOSA): with m matvecs, sketch Q = orth(H S) for S with m/3 random columns, take the trace of
H on range(Q) exactly, tr(QᵀHQ), and estimate the rest with Hutchinson on the projected
probes (I − QQᵀ)G. Error O(1/m) instead of O(1/√m) for matrices whose trace is dominated by a
few large eigenvalues (typical of neural-network Hessians).

Probes are applied in blocks of ``batch_size`` columns through ``op @ V`` so that a
``HessianOperator`` can vmap its Hessian-vector products.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ._solver_utils import apply_in_blocks, check_finite, check_operator, rademacher

__all__ = ["TraceResult", "hutchinson_trace", "hutchpp_trace"]


@dataclass(frozen=True)
class TraceResult:
    """Result of :func:`hutchinson_trace` or :func:`hutchpp_trace`.

    Attributes:
        estimate: the trace estimate.
        std_error: standard error of the stochastic part: sample standard deviation of the
            Hutchinson samples over √(number of samples) (NaN with a single sample; 0 when
            Hutch++'s sketch covers the whole space).
        num_matvecs: operator products spent.
        seconds: wall-clock time.
        method: ``"hutchinson"`` or ``"hutch++"``.
    """

    estimate: float
    std_error: float
    num_matvecs: int
    seconds: float
    method: str


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def _quadratic_forms(op: object, Z: torch.Tensor, batch_size: int, caller: str) -> torch.Tensor:
    """zᵀHz for each column z of Z (N, n), in float64: (n,)."""
    HZ = apply_in_blocks(op, Z, batch_size)
    check_finite(HZ, caller)
    return (Z.double() * HZ.double()).sum(dim=0)


def _mean_and_error(samples: torch.Tensor) -> tuple[float, float]:
    n = samples.shape[0]
    mean = float(samples.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(samples.std(correction=1)) / math.sqrt(n)


def hutchinson_trace(
    op: object,
    *,
    num_probes: int = 100,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> TraceResult:
    """Hutchinson's estimate of tr H from ``num_probes`` Rademacher probes.

    Args:
        op: square linear operator (N, N) with ``op @ v`` / ``op @ V``.
        num_probes: number of probes = matvecs (≥ 1; ≥ 2 for a standard error).
        batch_size: probes per ``op @ V`` call (vmapped HVPs); memory grows with it.
        generator: random source for the probes.

    Returns:
        A :class:`TraceResult`; ``std_error`` = sample std / √num_probes.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> hutchinson_trace(op, num_probes=10).estimate  # exact for a diagonal matrix
        6.0
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes}")
    _check_batch_size(batch_size)
    samples = []
    for start in range(0, num_probes, batch_size):
        b = min(batch_size, num_probes - start)
        Z = rademacher((b, N), op, generator).T
        samples.append(_quadratic_forms(op, Z, batch_size, "hutchinson_trace"))
    estimate, std_error = _mean_and_error(torch.cat(samples))
    return TraceResult(
        estimate=estimate,
        std_error=std_error,
        num_matvecs=num_probes,
        seconds=time.perf_counter() - t0,
        method="hutchinson",
    )


def hutchpp_trace(
    op: object,
    *,
    num_matvecs: int = 99,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> TraceResult:
    """Hutch++ estimate of tr H with a budget of ``num_matvecs`` products (Meyer et al. 2021).

    The budget is split in thirds: s = ⌊num_matvecs/3⌋ sketch probes S give Q = orth(H S)
    (s products), the exact trace on range(Q) is tr(QᵀHQ) (s more products), and the remaining
    num_matvecs − 2s probes G estimate tr((I − QQᵀ) H (I − QQᵀ)) by Hutchinson. When s ≥ N the
    sketch spans the whole space and the result is exact (N products for H Q).

    Args:
        op: square linear operator (N, N) with ``op @ v`` / ``op @ V``.
        num_matvecs: total budget (≥ 3).
        batch_size: probes per ``op @ V`` call (vmapped HVPs); memory grows with it.
        generator: random source for the probes.

    Returns:
        A :class:`TraceResult` whose ``std_error`` is that of the Hutchinson part (the sketch
        part has no sample variance to report).
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if not isinstance(num_matvecs, int) or num_matvecs < 3:
        raise ValueError(f"num_matvecs must be an integer ≥ 3, got {num_matvecs}")
    _check_batch_size(batch_size)
    s = num_matvecs // 3
    g = num_matvecs - 2 * s
    used = 0
    S = rademacher((s, N), op, generator).T
    HS = apply_in_blocks(op, S, batch_size)
    used += s
    check_finite(HS, "hutchpp_trace")
    Q, _ = torch.linalg.qr(HS)  # (N, min(N, s)), orthonormal columns
    HQ = apply_in_blocks(op, Q, batch_size)
    used += Q.shape[1]
    check_finite(HQ, "hutchpp_trace")
    exact_part = float((Q.double() * HQ.double()).sum())
    if Q.shape[1] >= N:  # the sketch spans R^N: the trace is exact
        return TraceResult(
            estimate=exact_part,
            std_error=0.0,
            num_matvecs=used,
            seconds=time.perf_counter() - t0,
            method="hutch++",
        )
    G = rademacher((g, N), op, generator).T
    for _ in range(2):  # project out range(Q), twice for orthogonality to working precision
        G = G - Q @ (Q.T @ G)
    samples = _quadratic_forms(op, G, batch_size, "hutchpp_trace")
    used += g
    mean, std_error = _mean_and_error(samples)
    return TraceResult(
        estimate=exact_part + mean,
        std_error=std_error,
        num_matvecs=used,
        seconds=time.perf_counter() - t0,
        method="hutch++",
    )
