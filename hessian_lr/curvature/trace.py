"""Stochastic trace estimators: Hutchinson, Hutch++, XTrace and XNysTrace.

Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines": for Rademacher z (independent ±1 entries), E[zᵀHz] = tr H and
Var[zᵀHz] = 2 Σ_{i≠j} H_ij², so the mean of n samples has standard error s/√n.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal stochastic trace estimation",
SOSA): with m matvecs, sketch Q = orth(H S) for S with m/3 random columns, take the trace of
H on range(Q) exactly, tr(QᵀHQ), and estimate the rest with Hutchinson on the projected
probes (I − QQᵀ)G. Error O(1/m) instead of O(1/√m) for matrices whose trace is dominated by a
few large eigenvalues (typical of neural-network Hessians).

XTrace and XNysTrace (Epperly, Tropp & Webber 2024, "XTrace: making the most of every sample in
stochastic trace estimation", SIAM J. Matrix Anal. Appl.) apply the *exchangeability* principle to
Hutch++: every probe ω_i serves both in the low-rank sketch and as a Hutchinson sample. For each i,
the sketch built from the other probes gives an exact part and ω_i estimates the rest, so each of
the m estimates is unbiased, and their mean has the Hutch++ O(1/m) error with a free standard
error (the spread of the m estimates). XTrace (any symmetric H) sketches range(H Ω) with 2m
products; XNysTrace (positive semi-definite H only, e.g. a Gauss-Newton matrix) uses the Nyström
approximation with m products. Both use probes uniform on the sphere of radius √N and the
paper's normalization of the Hutchinson part (exactly unbiased for rotation-invariant probes).
``trace_estimate`` picks a method by name; ``"xtrace"`` is the default (Hessians are indefinite).

Probes are applied in blocks of ``batch_size`` columns through ``op @ V`` so that a
``HessianOperator`` can vmap its Hessian-vector products.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ._host import read
from ._solver_utils import (
    apply_in_blocks,
    check_finite,
    check_operator,
    fixed_matrix,
    rademacher,
    randn,
    solver,
    work_dtype,
)
from ._space import space_of

__all__ = [
    "TraceResult",
    "hutchinson_trace",
    "hutchpp_trace",
    "xtrace",
    "xnystrace",
    "trace_estimate",
    "TRACE_METHODS",
]

TRACE_METHODS = ("xtrace", "xnystrace", "hutch++", "hutchinson")


@dataclass(frozen=True)
class TraceResult:
    """Result of :func:`hutchinson_trace` or :func:`hutchpp_trace`.

    Attributes:
        estimate: the trace estimate.
        std_error: standard error: sample standard deviation of the Hutchinson samples (or of
            the m exchangeable XTrace estimates) over √(number of samples); NaN with a single
            sample; 0 when the result is exact (a sketch that covers the whole space).
        num_matvecs: operator products spent.
        seconds: wall-clock time.
        method: ``"hutchinson"``, ``"hutch++"``, ``"xtrace"``, ``"xnystrace"`` or ``"exact"``.
    """

    estimate: float
    std_error: float
    num_matvecs: int
    seconds: float
    method: str


def _fixed(fn: Callable[..., TraceResult]) -> Callable[..., TraceResult]:
    """Warn after the estimate when the operator's products changed between passes."""

    @functools.wraps(fn)
    def wrapper(op: object, *args: Any, **kwargs: Any) -> TraceResult:
        res = fn(op, *args, **kwargs)
        fixed_matrix(op, fn.__name__)
        return res

    return wrapper


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def _quadratic_forms(op: object, Z: torch.Tensor, batch_size: int, caller: str) -> torch.Tensor:
    """zᵀHz for each column z of Z (N, n), in float64: (n,)."""
    # No read here: a NaN or inf in HZ makes its sample non-finite, which ``_mean_and_error``
    # reports when it reads the samples (one sync per estimate, issue 29).
    HZ = apply_in_blocks(op, Z.to(work_dtype(op.dtype)), batch_size)
    return space_of(op).reduce((Z.double() * HZ.double()).sum(dim=0))


def _mean_and_error(
    samples: torch.Tensor, op: object = None, caller: str = "trace"
) -> tuple[float, float]:
    """(mean, standard error) of the samples, read in one sync; raises on NaN or inf."""
    n = samples.shape[0]
    spread = samples.std(correction=1) if n >= 2 else samples.new_zeros(())
    mean, std, finite = read(samples.mean(), spread, torch.isfinite(samples).all())
    if not finite:
        check_finite(samples, caller, op)  # raises, naming NaN or inf
    if n < 2:
        return float(mean), math.nan
    return float(mean), float(std) / math.sqrt(n)


@_fixed
@solver
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
    estimate, std_error = _mean_and_error(torch.cat(samples), op, "hutchinson_trace")
    return TraceResult(
        estimate=estimate,
        std_error=std_error,
        num_matvecs=num_probes,
        seconds=time.perf_counter() - t0,
        method="hutchinson",
    )


@_fixed
@solver
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
    check_finite(HS, "hutchpp_trace", op)
    sp = space_of(op)  # contractions over the vector go through sp (sharded: reduced)
    Q, _ = sp.qr(HS)  # (N, min(N, s)), orthonormal columns
    HQ = apply_in_blocks(op, Q, batch_size)
    used += Q.shape[1]
    check_finite(HQ, "hutchpp_trace", op)
    exact_part = float(read(sp.reduce((Q.double() * HQ.double()).sum()))[0])
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
        G = G - Q @ sp.reduce(Q.T @ G)
    samples = _quadratic_forms(op, G, batch_size, "hutchpp_trace")
    used += g
    mean, std_error = _mean_and_error(samples, op, "hutchpp_trace")
    return TraceResult(
        estimate=exact_part + mean,
        std_error=std_error,
        num_matvecs=used,
        seconds=time.perf_counter() - t0,
        method="hutch++",
    )


# ----------------------------------------------------------------------------- XTrace family
def _sphere(N: int, m: int, op: object, generator: torch.Generator | None) -> torch.Tensor:
    """Draw m probes uniform on the sphere of radius √N, as columns (N, m) in float64."""
    G = randn((m, N), op, generator, dtype=torch.float64).T
    return G * (math.sqrt(N) / space_of(op).norm(G, dim=0, keepdim=True))


def _products(op: object, V: torch.Tensor, batch_size: int, caller: str) -> torch.Tensor:
    """Products ``op @ V`` for float64 V (N, k), in the op's working precision, as float64."""
    HV = apply_in_blocks(op, V.to(work_dtype(op.dtype)), batch_size).double()
    check_finite(HV, caller, op)
    return HV


def _result(ests: torch.Tensor, used: int, t0: float, method: str) -> TraceResult:
    mean, std_error = _mean_and_error(ests)
    return TraceResult(mean, std_error, used, time.perf_counter() - t0, method)


def _exact_trace(op: object, N: int, batch_size: int, t0: float, caller: str) -> TraceResult:
    """The exact tr H from the N products with the identity (budget ≥ N: no estimate needed)."""
    sp = space_of(op)
    eye = sp.eye(torch.float64, op.device)
    tr = float(read(sp.diagonal_sum(_products(op, eye, batch_size, caller)))[0])
    return TraceResult(tr, 0.0, N, time.perf_counter() - t0, "exact")


def _check_budget(num_matvecs: int, least: int, caller: str) -> None:
    if not isinstance(num_matvecs, int) or num_matvecs < least:
        raise ValueError(f"{caller}: num_matvecs must be an integer ≥ {least}, got {num_matvecs}")


@_fixed
@solver
def xtrace(
    op: object,
    *,
    num_matvecs: int = 40,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> TraceResult:
    """XTrace estimate of tr H for a symmetric operator (Epperly, Tropp & Webber 2024).

    m = ⌊num_matvecs/2⌋ probes Ω (uniform on the sphere of radius √N) give Y = HΩ = QR and
    Z = HQ (2m products). For each i, Q_i = an orthonormal basis of H Ω_{−i} (the sketch without
    probe i, obtained from Q by a rank-one downdate: Q_iQ_iᵀ = Q(I − s_is_iᵀ)Qᵀ with s_i the
    normalized i-th column of R⁻ᵀ) and the estimate

        t_i = tr(Q_iᵀHQ_i) + (N − m + 1) · (P_iω_i)ᵀH(P_iω_i) / ‖P_iω_i‖²,  P_i = I − Q_iQ_iᵀ,

    is unbiased (ω_i is independent of Q_i). The result is the mean of the t_i, and the standard
    error their standard deviation over √m (the paper's estimate). The t_i are exchangeable,
    not independent, so on fast-decaying spectra this is somewhat optimistic: measured over 300
    seeds, ±2 s.e. covered the truth 92 % of the time on a Hessian-like spectrum (outliers and
    a bulk), 94 % on a flat one and 86 % on a power-law λ_j ∝ j^-1.5. All the small algebra is
    float64.

    Args:
        op: symmetric linear operator (N, N) with ``op @ V``.
        num_matvecs: budget (≥ 4); an odd budget leaves one product unused. A budget ≥ N
            returns the exact trace from N products instead.
        batch_size: probes per ``op @ V`` call (vmapped HVPs); memory grows with it.
        generator: random source for the probes.

    Returns:
        A :class:`TraceResult` (``method="xtrace"``).

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> A = torch.diag(torch.linspace(1.0, 2.0, 60, dtype=torch.float64))
        >>> g = torch.Generator().manual_seed(0)
        >>> res = xtrace(DenseOperator(A), num_matvecs=20, generator=g)
        >>> abs(res.estimate - 90.0) < 4 * res.std_error
        True
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    _check_budget(num_matvecs, 4, "xtrace")
    _check_batch_size(batch_size)
    if num_matvecs >= N:
        return _exact_trace(op, N, batch_size, t0, "xtrace")
    m = num_matvecs // 2
    Om = _sphere(N, m, op, generator)
    Y = _products(op, Om, batch_size, "xtrace")
    sp = space_of(op)  # contractions over the vector go through sp (sharded: reduced)
    Q, R = sp.qr(Y)
    sv = torch.linalg.svdvals(R)
    sv_lo, sv_hi = read(sv[-1], sv[0])
    if sv_lo <= 1e3 * torch.finfo(work_dtype(op.dtype)).eps * sv_hi:
        return _low_rank_trace(op, N, Q, R, num_matvecs - m, batch_size, generator, t0)
    Z = _products(op, Q, batch_size, "xtrace")
    H = sp.reduce(Q.T @ Z)
    H = (H + H.T) / 2
    W = sp.reduce(Q.T @ Om)  # c_i = Qᵀω_i
    Rinv = torch.linalg.solve_triangular(
        R, torch.eye(m, dtype=R.dtype, device=R.device), upper=True
    )
    S = Rinv.T / torch.linalg.vector_norm(Rinv.T, dim=0, keepdim=True)  # s_i ⟂ r_j, j ≠ i
    T = sp.reduce(Z.T @ Om)  # Zᵀω_i
    D = W - S * (S * W).sum(0)  # d_i = (I − s_is_iᵀ)c_i: Q_iᵀω_i in the basis Q
    proj = sp.reduce((Om * Om).sum(0)) - (D * D).sum(0)  # ‖P_iω_i‖²
    form = sp.reduce((Om * Y).sum(0)) - (D * T).sum(0) - (D * R).sum(0) + (D * (H @ D)).sum(0)
    ests = torch.trace(H) - (S * (H @ S)).sum(0) + (N - m + 1) * form / proj
    return _result(ests, 2 * m, t0, "xtrace")


def _low_rank_trace(
    op: object,
    N: int,
    Q: torch.Tensor,
    R: torch.Tensor,
    budget: int,
    batch_size: int,
    generator: torch.Generator | None,
    t0: float,
) -> TraceResult:
    """H Ω is rank-deficient: H (numerically) has rank r < m and range(HΩ) = range(H).

    The trace is tr(Q_rᵀHQ_r) on that range (r products) plus Hutchinson on its complement with
    the rest of the budget (≈ 0 when H is exactly low rank; it guards against near-rank-deficiency).
    """
    U, sv, _ = torch.linalg.svd(R)
    r = int((sv > 1e3 * torch.finfo(work_dtype(op.dtype)).eps * sv[0]).sum())
    Qr = Q @ U[:, :r]
    sp = space_of(op)
    exact = (
        float(read(sp.reduce((Qr * _products(op, Qr, batch_size, "xtrace")).sum()))[0])
        if r > 0
        else 0.0
    )
    g = budget - r
    if g < 1:
        return TraceResult(exact, math.nan, Q.shape[1] + r, time.perf_counter() - t0, "xtrace")
    G = rademacher((g, N), op, generator, dtype=torch.float64).T
    for _ in range(2):
        G = G - Qr @ sp.reduce(Qr.T @ G)
    samples = sp.reduce((G * _products(op, G, batch_size, "xtrace")).sum(0))
    mean, se = _mean_and_error(samples)
    return TraceResult(exact + mean, se, Q.shape[1] + r + g, time.perf_counter() - t0, "xtrace")


@_fixed
@solver
def xnystrace(
    op: object,
    *,
    num_matvecs: int = 40,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> TraceResult:
    """XNysTrace estimate of tr H for a positive semi-definite operator (Epperly et al. 2024).

    m = num_matvecs probes Ω (sphere of radius √N), Y = (H + νI)Ω with a tiny shift ν for
    stability (subtracted at the end). For each i, the Nyström approximation from the other
    probes, Â_i = Y_{−i}(Ω_{−i}ᵀY_{−i})⁻¹Y_{−i}ᵀ, is taken exactly and ω_i estimates the rest:
    t_i = tr Â_i + (N − m + 1)·ω_iᵀ(H − Â_i)ω_i/‖P_iω_i‖². With G = ΩᵀY = LLᵀ, all of these are
    m×m computations: tr Â_i = ‖X‖²_F − ‖X f_i‖²/‖f_i‖² and ω_iᵀ(H − Â_i)ω_i = 1/‖f_i‖², for
    X = R L⁻ᵀ (Y = QR) and f_i the i-th column of L⁻¹. Half the products of XTrace for the same
    number of samples, but only valid for H ⪰ 0 (a Gauss-Newton matrix, not a general Hessian).

    Args:
        op: symmetric positive semi-definite operator (N, N).
        num_matvecs: budget = number of probes (≥ 2); ≥ N returns the exact trace.
        batch_size: probes per ``op @ V`` call.
        generator: random source for the probes.

    Returns:
        A :class:`TraceResult` (``method="xnystrace"``).

    Raises:
        ValueError: the operator is visibly indefinite (Ωᵀ(H + νI)Ω is not positive definite).
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    _check_budget(num_matvecs, 2, "xnystrace")
    _check_batch_size(batch_size)
    if num_matvecs >= N:
        return _exact_trace(op, N, batch_size, t0, "xnystrace")
    m = num_matvecs
    Om = _sphere(N, m, op, generator)
    Y = _products(op, Om, batch_size, "xnystrace")
    sp = space_of(op)  # contractions over the vector go through sp (sharded: reduced)
    nu = 10 * torch.finfo(work_dtype(op.dtype)).eps * float(read(sp.norm(Y))[0]) / math.sqrt(m)
    Y = Y + nu * Om
    G = sp.reduce(Om.T @ Y)
    L, info = torch.linalg.cholesky_ex((G + G.T) / 2)
    if int(info) != 0:
        raise ValueError(
            "xnystrace: ΩᵀHΩ is not positive definite, so the operator is not positive "
            "semi-definite (a Hessian usually is not): use xtrace or hutch++"
        )
    _, R = sp.qr(Y)
    eye = torch.eye(m, dtype=G.dtype, device=G.device)
    F = torch.linalg.solve_triangular(L, eye, upper=False)  # L⁻¹
    X = torch.linalg.solve_triangular(L, R.T, upper=False).T  # R L⁻ᵀ
    f2 = (F * F).sum(0)  # ‖f_i‖² = (G⁻¹)_ii
    XF = X @ F
    tr_hat = (X * X).sum() - (XF * XF).sum(0) / f2
    Oinv = torch.cholesky_inverse(torch.linalg.cholesky(sp.reduce(Om.T @ Om)))
    proj = 1.0 / torch.diagonal(Oinv)  # ‖P_iω_i‖², P_i ⟂ range(Ω_{−i})
    ests = tr_hat + (N - m + 1) / (f2 * proj) - nu * N
    return _result(ests, m, t0, "xnystrace")


@solver
def trace_estimate(
    op: object,
    num_matvecs: int = 40,
    *,
    method: Literal["xtrace", "xnystrace", "hutch++", "hutchinson"] = "xtrace",
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> TraceResult:
    """Estimate tr H with a budget of ``num_matvecs`` products by the chosen method.

    ``"xtrace"`` (default) is the most accurate per product on indefinite operators such as
    Hessians; ``"xnystrace"`` is better still for positive semi-definite ones (Gauss-Newton);
    ``"hutch++"`` and ``"hutchinson"`` are the classics. Every method reports a standard error.

    Args:
        op: symmetric linear operator (N, N).
        num_matvecs: product budget (Hutchinson: number of probes).
        method: one of :data:`TRACE_METHODS`.
        batch_size: probes per ``op @ V`` call.
        generator: random source for the probes.

    Returns:
        A :class:`TraceResult`.
    """
    if method == "xtrace":
        return xtrace(op, num_matvecs=num_matvecs, batch_size=batch_size, generator=generator)
    if method == "xnystrace":
        return xnystrace(op, num_matvecs=num_matvecs, batch_size=batch_size, generator=generator)
    if method == "hutch++":
        return hutchpp_trace(
            op, num_matvecs=num_matvecs, batch_size=batch_size, generator=generator
        )
    if method == "hutchinson":
        return hutchinson_trace(
            op, num_probes=num_matvecs, batch_size=batch_size, generator=generator
        )
    raise ValueError(f"method must be one of {TRACE_METHODS}, got {method!r}")
