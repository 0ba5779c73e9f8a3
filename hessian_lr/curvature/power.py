"""Power iteration with deflation for the top eigenvalues of a symmetric operator.

The classic method (von Mises & Pollaczek-Geiringer 1929) as used on neural-network Hessians by
PyHessian (Yao et al. 2020, "PyHessian: Neural networks through the lens of the Hessian") and by
the sharpness literature (Cohen et al. 2021): v ← Hv / ‖Hv‖. Top-k by deflation: eigenvector j
is iterated in the orthogonal complement of the ones already found (projection deflation, which
for a symmetric operator equals Hotelling deflation H − Σ λ_i u_i u_iᵀ without its error
build-up).

Stopping rule: the eigen-residual ‖Hv − λv‖ ≤ tol·|λ| (λ = vᵀHv, v unit). Unlike the relative
change of the Rayleigh quotient (PyHessian's rule), a wrong answer cannot pass it: a vector that
is not close to an eigenvector has a large residual, however still λ stands (two eigenvalues of
opposite sign and equal magnitude freeze λ anywhere between them), and when it passes some
eigenvalue lies within tol·|λ| of λ (Weyl). What it does not certify is that this eigenvalue is
the largest: a start vector (a warm start especially) with a tiny component along the top
eigenvector converges to the runner-up first, with a small residual. Certifying the top the way
:func:`~hessian_lr.curvature.lanczos` does (issue 22) would take ~ln(√N/1e-3)/tol products for
power iteration's polynomial λᵗ (over 10⁵ at tol 1e-4), so it is not offered: use ``lanczos``
when ``converged`` must mean λ_max. Each iteration costs exactly one matvec; the error
of λ shrinks like (λ₂/λ₁)^{2t}, so a small gap makes it slow: ``lanczos`` needs several times
fewer matvecs for the same accuracy. Power iteration is kept as the simple baseline that PyHessian
and the Super-Convergence-era tools use. Scalars are float64; vectors are float32 for 16-bit
operators (flagged ``low_precision``).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from ._host import read, resolve_check_every
from ._power_deferred import iterate_deferred
from ._solver_utils import (
    LOW_PRECISION,
    agree,
    apply,
    check_finite,
    check_operator,
    check_positive,
    fixed_matrix,
    randn,
    solver,
    work_dtype,
)
from ._space import space_of

__all__ = ["PowerIterationResult", "power_iteration"]


@dataclass(frozen=True)
class PowerIterationResult:
    """Result of :func:`power_iteration`.

    Attributes:
        eigenvalues: (k,) float64 on the CPU, Rayleigh quotients, sorted by decreasing value
            (``which="LA"``) or decreasing magnitude (``which="LM"``).
        eigenvectors: (N, k) unit columns in the operator's dtype and device.
        num_matvecs: operator products spent (one per iteration).
        num_iterations: iterations over all eigenpairs (equals ``num_matvecs``).
        converged: whether every eigenpair met the residual test within ``max_iter``.
        seconds: wall-clock time.
        residuals: (k,) float64, ‖Hv − λv‖ at the last iteration of each pair (deflated).
        low_precision: the operator computes in float16/bfloat16 (products carry that
            dtype's rounding, ~1e-3 relative, which bounds the attainable residual).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    num_matvecs: int
    num_iterations: int
    converged: bool
    seconds: float
    residuals: torch.Tensor | None = None
    low_precision: bool = False


@dataclass
class _Pair:
    lam: float  # Rayleigh quotient of H (unshifted)
    vec: torch.Tensor
    iterations: int
    status: str  # "converged", "pair" (a ±λ pair stalls the iteration), "max_iter"
    residual: float
    rho: float  # largest ‖(H + sI) v‖ seen: a lower bound on ‖H + sI‖
    spent: int = 0  # products spent (> iterations when the tests were read in windows)


def _orthogonalize(v: torch.Tensor, U: torch.Tensor | None, space: object) -> torch.Tensor:
    """Remove from v (N,) its components along the orthonormal columns of U (N, j), twice."""
    if U is None or U.shape[1] == 0:
        return v
    for _ in range(2):
        v = v - U @ space.reduce(U.T @ v)
    return v


def _iterate(
    op: object,
    v: torch.Tensor,
    U: torch.Tensor | None,
    *,
    shift: float,
    tol: float,
    max_iter: int,
    generator: torch.Generator | None,
    detect_pair: bool,
    check_every: int | str = 1,
) -> _Pair:
    """Power iteration on (H + shift·I) restricted to the complement of U's columns.

    Stops when ‖P(H + sI)v − (λ + s)v‖ ≤ tol·|λ| (or at the working-precision floor). With
    ``detect_pair`` it also stops, with status ``"pair"``, when nothing moves any more (‖Hv‖ and
    λ both stalled) while v is still far from an eigenvector: the signature of two dominant
    eigenvalues of opposite sign, which power iteration cannot separate.
    """
    sp = space_of(op)  # contractions over the vector go through sp (sharded: reduced)
    N = sp.dim
    eps = torch.finfo(v.dtype).eps
    v = _orthogonalize(v, U, sp)
    norm = float(read(sp.norm(v))[0])
    if not norm > 0:  # a warm start inside span(U): draw a fresh direction
        v = _orthogonalize(randn((N,), op, generator, dtype=v.dtype), U, sp)
        norm = float(read(sp.norm(v))[0])
    v = v / norm
    if check_every != 1:  # --- issue 29: the scalars stay on the device between checks
        lam, v, it, status, r, rho_max, spent = iterate_deferred(
            op,
            v,
            U,
            space=sp,
            shift=shift,
            tol=tol,
            max_iter=max_iter,
            detect_pair=detect_pair,
            check_every=check_every,
        )
        return _Pair(lam, v, it, status, r, rho_max, spent)
    lam = rho_old = lam_old = math.nan
    rho_max, r = 0.0, math.inf
    # A stall: λ and ‖Hv‖ move by ≤ stall·ρ per step while r/ρ ≥ 10·√stall. In ordinary
    # convergence Δλ ≳ (1 + λ₂/λ₁)·r²/ρ, so only a ±λ pair (λ₂/λ₁ → −1) stalls like that.
    stall = max(1e-8, 10 * eps)
    for it in range(1, max_iter + 1):
        w = apply(op, v)
        if shift != 0.0:
            w = w + shift * v
        w = _orthogonalize(w, U, sp)
        lam_s = sp.dot(v.double(), w.double())
        resid = sp.norm(w.double() - lam_s * v.double())
        host = read(lam_s, sp.norm(w.double()), resid)
        lam_s, rho, r = (float(x) for x in host)  # one device sync per iteration
        if not all(math.isfinite(x) for x in (lam_s, rho, r)):
            check_finite(w, "power_iteration", op)  # raises, naming NaN or inf
            raise ValueError("power_iteration: the iteration overflowed (inf)")
        lam = lam_s - shift
        rho_max = max(rho_max, rho)
        if rho == 0.0:  # v is in the null space of the shifted, deflated operator: exact
            return _Pair(lam, v, it, "converged", 0.0, rho_max)
        if r <= tol * abs(lam) or r <= 100 * eps * rho_max:
            return _Pair(lam, v, it, "converged", r, rho_max)
        if (
            detect_pair
            and it >= 3
            and abs(rho - rho_old) <= stall * rho
            and abs(lam - lam_old) <= stall * rho
            and r >= 10 * math.sqrt(stall) * rho
        ):
            return _Pair(lam, v, it, "pair", r, rho_max)
        lam_old, rho_old = lam, rho
        v = w / rho
    return _Pair(lam, v, max_iter, "max_iter", r, rho_max)


def _check_v0(v0: torch.Tensor | None, N: int, op: object) -> torch.Tensor | None:
    if v0 is None:
        return None
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a torch.Tensor, got {type(v0).__name__}")
    if v0.ndim == 1:
        v0 = v0.unsqueeze(1)
    N = space_of(op).local_size  # this process's part of the vector (all unless sharded)
    if v0.ndim != 2 or v0.shape[0] != N:
        raise ValueError(f"v0 must have shape ({N},) or ({N}, j), got {tuple(v0.shape)}")
    v0 = agree(op, v0.to(device=op.device, dtype=work_dtype(op.dtype), copy=True))  # rank 0's
    check_finite(v0, "power_iteration: v0")
    return v0


@solver
def power_iteration(
    op: object,
    *,
    k: int = 1,
    which: Literal["LA", "LM"] = "LA",
    tol: float = 1e-4,
    max_iter: int = 200,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    check_every: int | Literal["auto"] | None = None,
) -> PowerIterationResult:
    """Top-k eigenpairs of a symmetric operator by power iteration with deflation.

    Eigenpair j is found by iterating v ← P H v / ‖P H v‖ with P the projector onto the
    complement of the eigenvectors already found, until the eigen-residual satisfies
    ‖Hv − λv‖ ≤ tol·|λ|, λ = vᵀHv. Then some eigenvalue lies within tol·|λ| of λ.

    ``which="LA"`` (the default, as in :func:`~hessian_lr.curvature.lanczos`) returns the
    largest algebraic eigenvalues (λ_max first). The dominant eigenvalue is found first; if it
    is positive it is λ_max and is kept; otherwise (it is negative, or a ±λ pair of equal
    magnitude stalls the iteration) the pairs come from power iteration on H + ρ·I, ρ ≈ ‖H‖,
    whose spectrum is non-negative with the same order as H's. The shift slows convergence
    (the gap ratio becomes (λ₂ + ρ)/(λ₁ + ρ)). ``which="LM"`` is plain power iteration: the
    eigenvalues largest in magnitude (λ_max may then come out negative; a ±λ pair never
    converges and is reported as such).

    Args:
        op: symmetric linear operator (N, N) with ``op @ v`` (e.g. ``HessianOperator``,
            ``DenseOperator``).
        k: number of eigenpairs, 1 ≤ k ≤ N.
        which: ``"LA"`` (largest algebraic, default) or ``"LM"`` (largest magnitude).
        tol: relative eigen-residual ‖Hv − λv‖/|λ| at which an eigenpair is accepted (> 0).
        max_iter: maximum iterations (= matvecs) per eigenpair.
        v0: warm start, (N,) for the first eigenvector or (N, j) for the first j (e.g. the
            eigenvectors of a previous call while tracking λ_max during training). Other
            eigenpairs start from Gaussian random vectors.
        generator: random source for the start vectors.
        check_every: how often the residual test reads its scalars on the host (issue 29):
            1 after every iteration; k or ``"auto"`` (fewer than 5 % extra products): every k
            iterations (at most 32), the iteration running on the device in between; the
            result is that of the per-iteration test, ``num_matvecs`` counts the products
            spent. Default None: 1 on the CPU, ``"auto"`` on an accelerator.

    Returns:
        A :class:`PowerIterationResult`; ``converged`` is False (with a ``RuntimeWarning``)
        when some eigenpair did not pass the residual test within ``max_iter`` iterations.

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
        raise ValueError(f"which must be 'LA' or 'LM' for power iteration, got {which!r}")
    check_positive("tol", tol)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    v0 = _check_v0(v0, N, op)
    every = resolve_check_every(check_every, op.device)
    pairs, iterations, statuses, spent = _solve(
        op, N, k, which, tol, max_iter, v0, generator, every
    )
    converged = all(s == "converged" for s in statuses)
    vals = torch.tensor([p.lam for p in pairs], dtype=torch.float64)
    key = vals.abs() if which == "LM" else vals
    order = torch.argsort(key, descending=True, stable=True)
    low = op.dtype in LOW_PRECISION
    if converged and low and tol < torch.finfo(op.dtype).eps:
        converged = False
        warnings.warn(
            f"power_iteration: the operator computes in {op.dtype} (relative error "
            f"~{torch.finfo(op.dtype).eps:.0e} per product); tol={tol} asks for more than it can "
            "deliver: converged=False, low_precision=True. Use a float32 operator",
            RuntimeWarning,
            stacklevel=2,
        )
    elif not converged:
        stalled = "pair" in statuses or (
            which == "LM" and any(p.residual >= 0.1 * p.rho for p in pairs)
        )
        why = (
            "; two eigenvalues of opposite sign seem to share the largest magnitude, which "
            "power iteration cannot separate: use which='LA' or hessian_lr.curvature.lanczos"
            if stalled
            else "; increase max_iter or use hessian_lr.curvature.lanczos"
        )
        warnings.warn(
            f"power_iteration: not all {k} eigenpairs passed the residual test (tol={tol}) in "
            f"max_iter={max_iter} iterations{why}",
            RuntimeWarning,
            stacklevel=2,
        )
    converged = fixed_matrix(op, "power_iteration") and converged
    vectors = torch.stack([p.vec for p in pairs], dim=1)[:, order.to(op.device)]
    return PowerIterationResult(
        eigenvalues=vals[order],
        eigenvectors=vectors.to(op.dtype),
        num_matvecs=spent,
        num_iterations=iterations,
        converged=converged,
        seconds=time.perf_counter() - t0,
        residuals=torch.tensor([p.residual for p in pairs], dtype=torch.float64)[order],
        low_precision=low,
    )


def _solve(
    op: object,
    N: int,
    k: int,
    which: str,
    tol: float,
    max_iter: int,
    v0: torch.Tensor | None,
    generator: torch.Generator | None,
    check_every: int | str = 1,
) -> tuple:
    """The k eigenpairs (see :func:`power_iteration`); (pairs, iterations, statuses, spent)."""
    pairs: list[_Pair] = []
    statuses: list[str] = []
    iterations = spent = 0
    shift = 0.0
    j_start = 0  # index into v0 of the next warm-start column
    dtype = work_dtype(op.dtype)

    def start() -> torch.Tensor:
        nonlocal j_start
        j_start += 1
        if v0 is not None and j_start - 1 < v0.shape[1]:
            return v0[:, j_start - 1].clone()
        return randn((N,), op, generator, dtype=dtype)

    def U() -> torch.Tensor | None:
        return torch.stack([p.vec for p in pairs], dim=1) if pairs else None

    if which == "LA":
        first = _iterate(
            op,
            start(),
            None,
            shift=0.0,
            tol=tol,
            max_iter=max_iter,
            generator=generator,
            detect_pair=True,
            check_every=check_every,
        )
        iterations += first.iterations
        spent += first.spent or first.iterations
        if first.lam >= 0 and first.status != "pair":  # dominant and positive: it is λ_max
            pairs.append(first)
            statuses.append(first.status)
        # Shift so that H + s I is positive semi-definite: |λ| ≤ ‖H‖ ≈ ρ for every eigenvalue.
        shift = max(abs(first.lam), first.rho)

    while len(pairs) < k:
        p = _iterate(
            op,
            start(),
            U(),
            shift=shift,
            tol=tol,
            max_iter=max_iter,
            generator=generator,
            detect_pair=which == "LM",  # after the LA shift the spectrum is non-negative
            check_every=check_every,
        )
        iterations += p.iterations
        spent += p.spent or p.iterations
        if shift > 0 and p.lam + shift < 0:  # the shift was too small: not the wanted pair
            p.status = "max_iter"
        pairs.append(p)
        statuses.append(p.status)
    return pairs, iterations, statuses, spent
