"""Lanczos with full re-orthogonalization for extreme eigenpairs, and two stopping rules.

Lanczos (1950): the Ritz pairs (θ_i, y_i = Q_m s_i) of the tridiagonal T_m = Q_mᵀ H Q_m
approximate H's extreme eigenpairs; their residuals cost nothing, ‖H y_i − θ_i y_i‖ = |β_m s_{m,i}|
(Golub & Van Loan, *Matrix Computations*, §10.1; Parlett, *The Symmetric Eigenvalue Problem*,
ch. 11 and 13). The loop itself lives in ``_krylov`` (shared with SLQ, :mod:`.density`).

Two stopping rules (``stop``):

* ``"residual"`` (the default): every wanted Ritz pair has ‖H y − θ y‖ ≤ tol·|θ|. This bounds the
  eigenvalue error by tol·|θ| *and* makes the Ritz vectors accurate; it over-solves when only the
  eigenvalue is wanted.
* ``"eigenvalue"``: the a-posteriori eigenvalue error bound min(r, r²/gap) ≤ tol·|θ|, r the
  residual and gap = min_{j≠i}(|θ_i − θ_j| − r_j) the distance to the rest of the spectrum as
  resolved by the other Ritz values (Kato–Temple; Parlett §11.7). When the gap is not resolved
  (gap ≤ r, e.g. a cluster) the bound falls back to r. The error of a Ritz value falls like the
  square of its residual, so this rule stops after fewer products for the same accuracy. It
  also asks r ≤ √tol·|θ| (free when the gap is of the order of |θ|): the bound trusts that no
  eigenvalue hides between the Ritz values, which a too-early stop inside a dense cluster could
  violate.

Both return the bound in ``LanczosResult.error_bounds``. A residual or gap bound only says that
*some* eigenvalue lies near θ; it cannot see an eigenvalue the start vector has barely touched
(a warm start along the second eigenvector after the top two swapped stopped after 2 products at
λ₂ with a "bound" of 0.009, issue 22). So the extreme wanted value must also pass the
**unseen-eigenvalue test**, with either rule: the Krylov polynomial bounds the start vector's
weight on every eigenvalue beyond x by β_1⋯β_m/|π_m(x)| (π_m the characteristic polynomial of
T_m), and a random start puts weight ≥ t* = P_FAIL/√(2N/π) on any fixed direction with
probability ≥ 1 − P_FAIL (P_FAIL = 1e-3). The run converges only once that weight beyond
θ ± tol·|θ| is below t*; the reported bound of the extreme value is the smallest δ with weight
beyond θ ± δ below t* (λ_max ∈ [θ, θ + δ]; for ``"LM"`` a bound on ||λ| − |θ||). A warm
start ``v0`` is therefore mixed with a random vector, v0/‖v0‖ + 0.1·g/‖g‖ (t* then carries the
factor 0.1/1.1): the statement holds for every start, with probability ≥ 1 − 1e-3 over the
generator. The price (``benchmarks/``, measured in issue 22): about 1.5–2× the products of the
uncertified rule for λ_max at loose tolerances, little for k > 1, and a warm start no longer
saves products. The values beyond the extreme one carry the Kato–Temple bound above.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ._certify import WARM_MIX, extreme_bound, extreme_ends, log_threshold, unseen_ok
from ._host import read
from ._krylov import breakdown_tol, lanczos_run, tridiagonal_eigh
from ._solver_utils import (
    LOW_PRECISION,
    agree,
    check_finite,
    check_operator,
    check_positive,
    fixed_matrix,
    private_generator,
    randn,
    solver,
    work_dtype,
)
from ._space import space_of

__all__ = ["LanczosResult", "lanczos"]

_WHICH = ("LA", "SA", "LM")
_STOPS = ("residual", "eigenvalue")
DEFECT_FACTOR = 1e3  # a Gram-Schmidt defect above 1e3·eps·‖T‖ means the products are not one matrix


# ------------------------------------------------------------------------------ Ritz pairs
def _order(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted values of theta, in the order of ``which``."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "SA":
        return np.argsort(theta, kind="stable")[:k]
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def error_bounds(theta: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Eigenvalue error bounds min(r_i, r_i²/gap_i) for the Ritz values theta (m,), residuals res.

    gap_i = min_{j≠i} (|θ_i − θ_j| − r_j): the distance from θ_i to the nearest eigenvalue of
    the rest of the spectrum, each of which lies within r_j of its Ritz value. Where gap_i ≤ r_i
    the gap is not resolved and the bound is r_i (Weyl: some eigenvalue lies within r_i).
    """
    m = theta.shape[0]
    if m == 1:
        return res.copy()
    dist = np.abs(theta[:, None] - theta[None, :]) - res[None, :]
    np.fill_diagonal(dist, np.inf)
    gap = dist.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = np.where(gap > res, res * res / np.where(gap > 0, gap, 1.0), res)
    return np.minimum(res, quad)


@dataclass(frozen=True)
class _Ritz:
    theta: np.ndarray  # (k,) wanted Ritz values, ordered for ``which``
    S: np.ndarray  # (m, k) their eigenvectors of T
    res: np.ndarray  # (k,) residual norms
    bound: np.ndarray  # (k,) eigenvalue error bounds
    ok: bool


def _last_block(
    alpha: np.ndarray, beta: np.ndarray, theta_all: np.ndarray
) -> tuple[int, np.ndarray, float]:
    """Start of the last Lanczos block (after the last restart), its Ritz values, log Πβ."""
    m = alpha.shape[0]
    restarts = np.flatnonzero(beta[: m - 1] == 0.0)
    b0 = int(restarts[-1]) + 1 if restarts.size else 0
    t_b = theta_all if b0 == 0 else tridiagonal_eigh(alpha[b0:], beta[b0 : m - 1])[0]
    with np.errstate(divide="ignore"):
        log_beta = float(np.sum(np.log(beta[b0:m])))
    return b0, t_b, log_beta


def _ritz(
    alpha: np.ndarray,
    beta: np.ndarray,
    k: int,
    which: str,
    tol: float,
    stop: str,
    floor: float,
    log_t: tuple[float, float],
    final: bool = True,
) -> _Ritz:
    """The k wanted Ritz pairs of T_m (alpha (m,), beta (m,), β_m = beta[-1]) and the test.

    A pair passes when its residual (``stop="residual"``) or its error bound
    (``"eigenvalue"``) is ≤ tol·|θ|, or its residual is at the working-precision floor. The
    extreme wanted value must also pass the unseen-eigenvalue test (module docstring): the
    start vector's weight beyond θ ± tol·|θ| is below t* (``log_t``: for a first block from a
    warm start, for a random block). After a restart (β_j = 0 at a breakdown) the earlier
    blocks are invariant subspaces; the test runs on the last, random, block.
    """
    m = alpha.shape[0]
    theta_all, S_all = tridiagonal_eigh(alpha, beta[: m - 1])
    res_all = np.abs(beta[m - 1] * S_all[m - 1])
    bound_all = error_bounds(theta_all, res_all)
    sel = _order(theta_all, k, which)
    if stop == "residual":
        measure = res_all
    else:  # the bound, and a residual of at most √tol·|θ|: a guard against a missed eigenvalue
        measure = np.maximum(bound_all, res_all * np.sqrt(tol))
    ok = bool(
        sel.shape[0] == k
        and np.all((measure[sel] <= tol * np.abs(theta_all[sel])) | (res_all[sel] <= floor))
    )
    b0, t_b, log_beta = _last_block(alpha, beta, theta_all)
    lt = log_t[1] if b0 > 0 else log_t[0]
    lo, hi = float(theta_all.min()), float(theta_all.max())
    th = float(theta_all[sel[0]])
    delta = max(tol * abs(th), floor)
    ok = ok and unseen_ok(t_b, log_beta, extreme_ends(th, lo, hi, delta, which), lt)
    bound = bound_all[sel].copy()
    if final:  # the reported bound of the extreme value: how far an unseen eigenvalue may lie
        bound[0] = max(extreme_bound(t_b, log_beta, lt, th, lo, hi, floor, which), floor)
    return _Ritz(theta_all[sel], S_all[:, sel], res_all[sel], bound, ok)


# --------------------------------------------------------------------------------- lanczos
@dataclass(frozen=True)
class LanczosResult:
    """Result of :func:`lanczos`.

    Attributes:
        eigenvalues: (k,) float64 on the CPU: Ritz values, in decreasing order for ``"LA"``,
            increasing for ``"SA"``, decreasing magnitude for ``"LM"``.
        eigenvectors: (N, k) unit Ritz vectors in the operator's dtype and device, or None.
        residuals: (k,) float64 on the CPU, Ritz residual norms |β_m s_{m,i}| =
            ‖H y_i − θ_i y_i‖ (absolute; divide by |θ_i| for the relative residual).
        converged: whether all k pairs met ``tol`` under the ``stop`` rule, on an operator
            that behaved as one fixed symmetric matrix.
        num_matvecs: operator products spent.
        num_steps: Krylov dimension m reached.
        seconds: wall-clock time.
        error_bounds: (k,) float64, a-posteriori bounds on |θ_i − λ_i|: for the extreme
            value the unseen-eigenvalue bound (holds with probability ≥ 1 − 1e-3 over the
            random start, see the module docstring), for the others min(r, r²/gap).
        stop: the stopping rule used, ``"residual"`` or ``"eigenvalue"``.
        low_precision: the operator computes in float16/bfloat16: its products carry relative
            errors of that dtype's eps (~1e-3), which bounds the attainable accuracy.
        defect: largest out-of-recurrence Gram-Schmidt coefficient relative to ‖T‖; rounding
            level (≲ 1e-13 in float64, 1e-6 in float32) for a fixed symmetric matrix, large when
            products of one vector change (shuffled data) or the operator is not symmetric.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    converged: bool
    num_matvecs: int
    num_steps: int
    seconds: float
    error_bounds: torch.Tensor | None = None
    stop: str = "residual"
    low_precision: bool = False
    defect: float = 0.0


def _prepare_v0(v0: torch.Tensor, N: int, op: object, caller: str) -> torch.Tensor:
    space = space_of(op)
    N = space.local_size  # this process's part of the vector (all of it unless sharded)
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"{caller}: v0 must be a torch.Tensor, got {type(v0).__name__}")
    if v0.ndim == 2 and v0.shape[0] == N:
        if v0.shape[1] == 0:
            raise ValueError(f"{caller}: v0 has no columns; pass None for a random start")
        cols = v0 / space.norm(v0, dim=0, keepdim=True).clamp_min(1e-300)
        v0 = cols.sum(dim=1)
    if v0.ndim != 1 or v0.shape[0] != N:
        raise ValueError(f"{caller}: v0 must have shape ({N},) or ({N}, j), got {tuple(v0.shape)}")
    v0 = agree(op, v0.to(device=op.device, dtype=work_dtype(op.dtype), copy=True))  # rank 0's
    check_finite(v0, f"{caller}: v0")
    if not float(read(space.norm(v0))[0]) > 0:
        raise ValueError(f"{caller}: the start vector v0 is zero")
    return v0


def _check_args(
    op: object, k: int, which: str, tol: float, max_iter: int | None, stop: str
) -> tuple[int, int]:
    N = check_operator(op)
    if not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an integer in [1, N={N}], got {k}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if stop not in _STOPS:
        raise ValueError(f"stop must be one of {_STOPS}, got {stop!r}")
    check_positive("tol", tol)
    if max_iter is None:
        max_iter = min(N, max(2 * k + 40, 100))
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    max_iter = min(max_iter, N)
    if max_iter < k:
        raise ValueError(f"max_iter={max_iter} is smaller than k={k}; it must be at least k")
    return N, max_iter


@solver
def lanczos(
    op: object,
    *,
    k: int = 1,
    which: Literal["LA", "SA", "LM"] = "LA",
    tol: float = 1e-6,
    max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_eigenvectors: bool = True,
    stop: Literal["residual", "eigenvalue"] = "residual",
    progress: bool | None = None,
    check_every: int | Literal["auto"] | None = None,
) -> LanczosResult:
    """The k extreme eigenpairs of a symmetric operator by Lanczos with full re-orthogonalization.

    After every step the tridiagonal T_m (float64, a few hundred rows at most) is solved and the
    run stops as soon as each wanted pair passes the ``stop`` rule (module docstring), or is at
    working precision (residual ≤ 100·eps·‖T_m‖, so zero eigenvalues and float32 operators
    terminate). No matvec is spent beyond that step.

    Warm start: pass the previous eigenvector(s) as ``v0`` when tracking λ_max during training;
    it is mixed with a random vector (module docstring) so that the top cannot hide from it. A
    start vector in an invariant subspace is detected (β ≈ 0) and the run continues from a
    random vector orthogonal to the basis.

    A single Krylov sequence holds one direction per distinct eigenvalue: other copies of an
    exactly repeated eigenvalue only enter through rounding and may be missed for k > 1 when
    the gap is small (ARPACK behaves the same); :func:`~hessian_lr.curvature.power_iteration`
    (deflation) finds exact multiplicities.

    Trust: if the operator can tell whether it is one fixed matrix (``is_deterministic`` /
    ``check_deterministic()`` of a ``HessianOperator`` over a data loader) and it is not, the
    result is not converged (with a warning). Independently, the Gram-Schmidt coefficients are
    watched (``defect``): products that do not come from one fixed symmetric matrix give
    ``converged=False`` with a warning. Operators in float16 or bfloat16 run with a float32
    basis and float64 scalars, are flagged ``low_precision`` and are never reported converged
    below the accuracy their products carry.

    Args:
        op: symmetric linear operator (N, N) with ``op @ v``.
        k: number of eigenpairs, 1 ≤ k ≤ N.
        which: ``"LA"`` largest algebraic (λ_max, the default), ``"SA"`` smallest algebraic,
            ``"LM"`` largest magnitude.
        tol: relative accuracy at which a pair is converged (> 0): of the residual
            (``stop="residual"``) or of the eigenvalue error bound (``"eigenvalue"``).
        max_iter: maximum Krylov dimension (= matvecs); default min(N, max(2k + 40, 100)).
        v0: start vector (N,), or (N, j) whose unit columns are summed (the previous top-j
            eigenvectors); default a Gaussian random vector.
        generator: random source for the start vector, the warm-start mix and restarts;
            default a private generator seeded 0 (never torch's global RNG).
        return_eigenvectors: form the (N, k) Ritz vectors (one (N, m) × (m, k) product).
        stop: ``"residual"`` (accurate vectors too) or ``"eigenvalue"`` (fewer products when
            only eigenvalues are needed, e.g. an LR from λ_max).
        progress: a tqdm bar: True, False, or None (shown once a run takes over 3 s).
        check_every: how often the stopping test reads the recurrence's scalars on the host
            (issue 29): 1 after every step; k every k steps, ``"auto"`` after 5 % more steps
            (fewer than 5 % extra products); between checks α, β and the Gram-Schmidt
            measures stay on the device (no host synchronization per step). The result (T,
            Krylov dimension, Ritz pairs) is that of the per-step test; ``num_matvecs`` counts
            the products spent, possibly a few past the stopping step. Default None: 1 on the
            CPU (a read costs no synchronization there), ``"auto"`` on an accelerator.

    Returns:
        A :class:`LanczosResult`; ``converged`` is False (with a ``RuntimeWarning``) when
        ``max_iter`` steps did not suffice or the operator could not be trusted.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)))
        >>> res = lanczos(op, k=2, generator=torch.Generator().manual_seed(0))
        >>> [round(x, 8) for x in res.eigenvalues.tolist()]
        [100.0, 99.0]
    """
    t0 = time.perf_counter()
    N, max_iter = _check_args(op, k, which, tol, max_iter, stop)
    generator = private_generator(generator)
    if v0 is None:
        v = randn((N,), op, generator)
    else:  # mixed with a random vector, so that no eigenvalue can hide from the start
        v = _prepare_v0(v0, N, op, "lanczos")
        g = randn((N,), op, generator, dtype=v.dtype)
        v = v / torch.linalg.vector_norm(v) + WARM_MIX * g / torch.linalg.vector_norm(g)
    log_t = (log_threshold(N, warm=v0 is not None), log_threshold(N, warm=False))
    low = op.dtype in LOW_PRECISION

    def floor(alpha: np.ndarray, beta: np.ndarray) -> float:
        return breakdown_tol(op.dtype) * max(np.abs(alpha).max(), np.abs(beta).max())

    def stop_now(alpha: np.ndarray, beta: np.ndarray) -> bool:
        m = alpha.shape[0]
        # The check costs O(m²); beyond a few hundred steps it runs less often.
        if m < k or (m > 256 and m % (m // 256 + 1) != 0):
            return False
        return _ritz(alpha, beta, k, which, tol, stop, floor(alpha, beta), log_t, False).ok

    kr = lanczos_run(
        op,
        v.unsqueeze(0),
        max_iter,
        stop=stop_now,
        restart_generator=generator,
        restart=True,
        v0_is_random=v0 is None,
        progress=progress,
        check_every=check_every,
    )
    m = int(kr.steps[0])
    a, b = kr.alpha[0, :m], kr.beta[0, :m]
    rz = _ritz(a, b, k, which, tol, stop, floor(a, b), log_t)
    converged = rz.ok or (m == N and rz.theta.shape[0] == k)  # the whole space: exact
    anorm = max(np.abs(a).max(), np.abs(b).max())
    converged = _trust(converged, rz, kr, anorm, tol, low, op.dtype, k, max_iter, stop)
    converged = fixed_matrix(op, "lanczos") and converged
    vectors = None
    if return_eigenvectors:
        S_t = torch.as_tensor(rz.S, dtype=kr.basis.dtype, device=kr.basis.device)
        vectors = kr.basis[0, :m].T @ S_t
        norms = space_of(op).norm(vectors, dim=0, keepdim=True)
        vectors = (vectors / norms).to(op.dtype)
    return LanczosResult(
        eigenvalues=torch.as_tensor(rz.theta, dtype=torch.float64),
        eigenvectors=vectors,
        residuals=torch.as_tensor(rz.res, dtype=torch.float64),
        converged=converged,
        num_matvecs=kr.num_matvecs,
        num_steps=m,
        seconds=time.perf_counter() - t0,
        error_bounds=torch.as_tensor(rz.bound, dtype=torch.float64),
        stop=stop,
        low_precision=low,
        defect=float(kr.defect[0]),
    )


def _trust(
    converged: bool,
    rz: _Ritz,
    kr: object,
    anorm: float,
    tol: float,
    low: bool,
    dtype: torch.dtype,
    k: int,
    max_iter: int,
    stop: str,
) -> bool:
    """Final verdict: the stopping test, and whether the products could support it."""
    scale = np.abs(rz.theta).min() / anorm if anorm > 0 else 1.0
    defect = float(kr.defect[0])
    # rounding of the products themselves: 1e3·eps of the basis, or 10·eps of a 16-bit dtype
    eps_products = max(
        DEFECT_FACTOR * torch.finfo(work_dtype(dtype)).eps, 10 * torch.finfo(dtype).eps
    )
    limit = max(eps_products, tol * scale)
    if defect > limit:
        warnings.warn(
            f"lanczos: the products do not behave as one fixed symmetric matrix (Gram-Schmidt "
            f"defect {defect:.1e} of ‖T‖ > {limit:.1e}): the data changes between products "
            "(shuffling loader, train-mode BatchNorm over changing batches) or the operator "
            "is not symmetric; converged=False",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    if not converged:
        worst = float(np.max(rz.res / np.maximum(np.abs(rz.theta), 1e-300)))
        warnings.warn(
            f"lanczos: the {k} wanted Ritz pairs did not reach tol={tol} (stop={stop!r}) within "
            f"max_iter={max_iter} steps (largest relative residual {worst:.2e}); increase "
            "max_iter",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    eps_op = torch.finfo(dtype).eps
    if low and tol * scale < eps_op:
        warnings.warn(
            f"lanczos: the operator computes in {dtype} (relative error ~{eps_op:.0e} per "
            f"product); tol={tol} asks for more than it can deliver: converged=False, "
            "low_precision=True. Use a float32 operator for this accuracy",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True
