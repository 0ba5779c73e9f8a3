"""Lanczos with full re-orthogonalization; spectral density by stochastic Lanczos quadrature.

Lanczos (1950) builds an orthonormal basis Q_m of the Krylov space span{v, Hv, ..., H^{m-1}v} in
which H is the tridiagonal T_m = Q_mᵀ H Q_m; the eigenpairs (θ_i, s_i) of T_m give Ritz pairs
(θ_i, Q_m s_i) whose residual is ‖H Q_m s_i − θ_i Q_m s_i‖ = |β_m s_{m,i}| (Golub & Van Loan,
*Matrix Computations*, §10.1; Parlett, *The Symmetric Eigenvalue Problem*, ch. 13). Full
re-orthogonalization (the three-term recurrence, then classical Gram-Schmidt against the whole
basis, repeated when it cancels: "twice is enough", Giraud et al. 2005) keeps Q_m orthonormal
to working precision, so no spurious copies appear; it is done with matrix products on the
operator's device. The tridiagonal and every scalar are float64. A breakdown (β ≈ 0: an
invariant subspace) restarts from a random vector orthogonal to the basis.

``spectral_density`` is stochastic Lanczos quadrature (SLQ; Lin, Saad & Yang 2016, "Approximating
spectral densities of large matrices", SIAM Review; Ghorbani, Krishnan & Xiao 2019, "An
investigation into neural net optimization via Hessian eigenvalue density", ICML; Golub & Meurant
1994): for a unit probe v, the m-point Gauss quadrature of the spectral measure
Σ_j (vᵀu_j)² δ(λ − λ_j) has nodes θ_i (Ritz values) and weights s_{1,i}² (squared first components
of T_m's eigenvectors). Averaging over random probes estimates the spectral density
φ(λ) = N⁻¹ Σ_j δ(λ − λ_j); Gaussian broadening turns it into a smooth curve.

Both use one Lanczos loop (``_lanczos_run``), which also runs several independent probes in
lock-step so that ``op @ V`` can batch their products.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch

from ._solver_utils import check_finite, check_operator, check_positive, rademacher, randn

__all__ = ["LanczosResult", "SpectralDensity", "lanczos", "spectral_density"]

_WHICH = ("LA", "SA", "LM")


# ----------------------------------------------------------------------------- the Lanczos loop
@dataclass
class _Krylov:
    """Output of ``_lanczos_run`` for p probes run side by side."""

    basis: torch.Tensor  # (p, cap, N); rows [:steps[i]] of probe i are its orthonormal basis
    alpha: np.ndarray  # (p, max_steps) float64, diagonal of T
    beta: np.ndarray  # (p, max_steps) float64, beta[i, j] couples q_j and q_{j+1}
    steps: np.ndarray  # (p,) int, Krylov dimension reached per probe
    num_matvecs: int


def _breakdown_tol(dtype: torch.dtype) -> float:
    return 100.0 * torch.finfo(dtype).eps


def _lanczos_run(
    op: object,
    V0: torch.Tensor,
    max_steps: int,
    *,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    restart_generator: torch.Generator | None = None,
    restart: bool = False,
    v0_is_random: bool = True,
    caller: str = "lanczos",
) -> _Krylov:
    """Run Lanczos with full re-orthogonalization from the p rows of V0 (p, N), side by side.

    Step j applies the operator to q_j of every probe still running (one ``op @`` call, p
    columns), subtracts the three-term recurrence w = Hq_j − α_j q_j − β_{j−1} q_{j−1}, then
    re-orthogonalizes w against the whole basis by classical Gram-Schmidt with batched matrix
    products, a second time when the first pass shrank ‖w‖ by more than 1/√2 (the
    Daniel-Gragg-Kaufman-Stewart criterion; "twice is enough", Giraud et al. 2005). α_j and
    β_j = ‖w‖ are stored in float64.

    A probe whose β_j falls below 100·eps·‖T‖ has reached an invariant subspace: its Ritz values
    are exact. With ``restart`` (single probe only) the run continues from a random vector
    orthogonal to the basis (β_j = 0, T becomes block diagonal), so a start vector that lies in
    an invariant subspace (an eigenvector) cannot hide the rest of the spectrum; otherwise the
    probe stops. ``stop(alpha, beta)`` (single probe only) is asked after every step and ends the
    run when it returns True; not after a breakdown that ends a block started from a
    caller-chosen vector (``v0_is_random=False``): such a block's exact Ritz values say nothing
    about the rest of the spectrum, while a random block that breaks down holds every distinct
    eigenvalue of the space it explored (with probability one).
    """
    p, N = V0.shape
    max_steps = min(max_steps, N)
    dtype, device = V0.dtype, V0.device
    # Small to start (a λ_max run needs ~10 steps), then doubled. With several probes the basis
    # is zeros, not empty: rows of finished probes stay 0 (never NaN garbage) in the batched
    # products; one probe only ever reads rows it has written.
    alloc = torch.empty if p == 1 else torch.zeros
    cap = min(max_steps, 16) + 1
    Q = alloc((p, cap, N), dtype=dtype, device=device)
    norms = torch.linalg.vector_norm(V0, dim=1, keepdim=True)
    if not bool((norms > 0).all()):
        raise ValueError(f"{caller}: the start vector v0 is zero")
    Q[:, 0] = V0 / norms
    alpha = np.zeros((p, max_steps))
    beta = np.zeros((p, max_steps))
    beta_prev = torch.zeros((p, 1), dtype=dtype, device=device)  # β_{j-1}, 0 after a restart
    steps = np.zeros(p, dtype=np.int64)
    active = np.ones(p, dtype=bool)
    anorm = np.zeros(p)
    num_matvecs = 0
    block_random = v0_is_random  # whether the current block started from a random vector
    tiny = _breakdown_tol(dtype)

    def gram_schmidt(W: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.bmm(basis, W.unsqueeze(2))  # (p, j+1, 1)
        W = torch.baddbmm(W.unsqueeze(2), basis.transpose(1, 2), h, alpha=-1).squeeze(2)
        return W, h.squeeze(2)

    for j in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        if j + 1 >= cap:  # grow the preallocated basis geometrically
            new_cap = min(2 * cap, max_steps + 1)
            Q_new = alloc((p, new_cap, N), dtype=dtype, device=device)
            Q_new[:, :cap] = Q
            Q, cap = Q_new, new_cap
        q = Q[:, j]  # (p, N)
        if idx.size == p:
            W = (op @ q[0]).unsqueeze(0) if p == 1 else (op @ q.T.contiguous()).T.contiguous()
        else:  # finished probes get w = 0 and are ignored below
            W = torch.zeros_like(q)
            sel = torch.as_tensor(idx, device=device)
            W[sel] = (op @ q[sel].T.contiguous()).T
        num_matvecs += idx.size
        # three-term recurrence, then full re-orthogonalization (the basis includes q_j, q_{j-1})
        a = torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).squeeze(2)  # (p, 1)
        W = torch.addcmul(W, a, q, value=-1)  # a new tensor: the op's output is left alone
        if j > 0:
            W.addcmul_(beta_prev, Q[:, j - 1], value=-1)
        basis = Q[:, : j + 1]  # (p, j+1, N)
        norm_in = torch.linalg.vector_norm(W, dim=1)
        W, h = gram_schmidt(W, basis)
        norm_out = torch.linalg.vector_norm(W, dim=1)
        a = a.squeeze(1) + h[:, j]
        host = torch.stack([a, norm_in, norm_out]).double().cpu().numpy()  # one sync
        if not np.isfinite(host).all():
            check_finite(W, caller)  # raises, naming NaN or inf
            raise ValueError(f"{caller}: the Lanczos recurrence overflowed (inf)")
        a_np, b_np = host[0], host[2]
        if np.any(host[2, idx] < 0.7071 * host[1, idx]):  # DGKS: a second pass is needed
            W, h = gram_schmidt(W, basis)
            a_np = a_np + h[:, j].double().cpu().numpy()
            b_np = torch.linalg.vector_norm(W, dim=1).double().cpu().numpy()

        broke = []
        completed_random = block_random
        for i in idx:
            alpha[i, j] = a_np[i]
            anorm[i] = max(anorm[i], abs(a_np[i]), b_np[i], beta[i, j - 1] if j > 0 else 0.0)
            steps[i] = j + 1
            if b_np[i] <= tiny * anorm[i] or j + 1 == N:
                broke.append(i)
        for i in idx:
            if i in broke:
                beta[i, j] = 0.0
                beta_prev[i] = 0.0
                if restart and j + 1 < max_steps:
                    r = randn((N,), op, restart_generator)
                    for _ in range(2):
                        r = r - Q[i, : j + 1].T @ (Q[i, : j + 1] @ r)
                    r_norm = float(torch.linalg.vector_norm(r))
                    if r_norm > tiny * math.sqrt(N):
                        Q[i, j + 1] = r / r_norm
                        block_random = True
                        continue
                active[i] = False
            else:
                beta[i, j] = b_np[i]
                beta_prev[i] = float(b_np[i])
                Q[i, j + 1] = W[i] / float(b_np[i])

        if stop is not None and (not broke or completed_random):
            if stop(alpha[0, : j + 1], beta[0, : j + 1]):
                break
    return _Krylov(basis=Q, alpha=alpha, beta=beta, steps=steps, num_matvecs=num_matvecs)


# ------------------------------------------------------------------------------ Ritz pairs
def _tridiagonal_eigh(
    alpha: np.ndarray, beta: np.ndarray, select: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the symmetric tridiagonal T (diagonal alpha (m,), off-diagonal beta (m-1,)).

    ``select=(lo, hi)`` restricts to eigenvalue indices lo..hi (ascending order, inclusive).
    Calls LAPACK's ``dstemr`` (MRRR) directly: the convergence check runs after every Lanczos
    step, and ``scipy.linalg.eigh_tridiagonal``'s wrapper costs ~10× the solve for small m.
    """
    m = alpha.shape[0]
    if m == 1:
        return alpha.copy(), np.ones((1, 1))
    lo, hi = (0, m - 1) if select is None else select
    e = np.zeros(m)
    e[: m - 1] = beta
    count, w, z, info = scipy.linalg.lapack.dstemr(
        np.array(alpha, dtype=np.float64), e, 2, 0.0, 0.0, lo + 1, hi + 1
    )
    if info != 0 or count != hi - lo + 1:  # fall back on scipy's driver selection
        return scipy.linalg.eigh_tridiagonal(alpha, beta, select="i", select_range=(lo, hi))
    return w[:count], z[:, :count]


def _wanted_ritz(
    alpha: np.ndarray, beta: np.ndarray, k: int, which: str
) -> tuple[np.ndarray, np.ndarray]:
    """The k wanted Ritz values (sorted for ``which``) and their eigenvectors S (m, k) of T."""
    m = alpha.shape[0]
    k = min(k, m)
    if which == "LA":
        theta, S = _tridiagonal_eigh(alpha, beta, (m - k, m - 1))
        order = np.argsort(-theta, kind="stable")
    elif which == "SA":
        theta, S = _tridiagonal_eigh(alpha, beta, (0, k - 1))
        order = np.argsort(theta, kind="stable")
    else:  # LM: the k largest |θ| are among the k smallest and the k largest
        if 2 * k >= m:
            theta, S = _tridiagonal_eigh(alpha, beta)
        else:
            t_lo, s_lo = _tridiagonal_eigh(alpha, beta, (0, k - 1))
            t_hi, s_hi = _tridiagonal_eigh(alpha, beta, (m - k, m - 1))
            theta, S = np.concatenate([t_lo, t_hi]), np.concatenate([s_lo, s_hi], axis=1)
        order = np.argsort(-np.abs(theta), kind="stable")[:k]
    return theta[order], S[:, order]


def _ritz_check(
    alpha: np.ndarray, beta: np.ndarray, k: int, which: str, tol: float, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The k wanted Ritz pairs of T_m and whether they passed the residual test.

    alpha (m,), beta (m,): β_m = beta[-1] couples T_m to the next Lanczos vector. A pair passes
    when |β_m s_{m,i}| ≤ tol·|θ_i|, or at the working-precision floor 100·eps·‖T_m‖ (zero
    eigenvalues, float32 operators). Returns (θ (k,), S (m, k), residuals (k,), converged).

    After a restart (β_j = 0 at a breakdown) the Ritz values of earlier blocks are exact, but
    those of the current block may still grow past them: the run is accepted only once the
    current block's own extreme Ritz value(s) on the wanted side(s) pass the test too.
    """
    m = alpha.shape[0]
    theta, S = _wanted_ritz(alpha, beta[: m - 1], k, which)
    res = np.abs(beta[m - 1] * S[m - 1])
    floor = _breakdown_tol(dtype) * max(np.abs(alpha).max(), np.abs(beta).max())

    def passed(t: np.ndarray, r: np.ndarray) -> bool:
        return bool(np.all((r <= tol * np.abs(t)) | (r <= floor)))

    ok = theta.shape[0] == k and passed(theta, res)
    restarts = np.flatnonzero(beta[: m - 1] == 0.0)
    if ok and restarts.size > 0:
        b0 = int(restarts[-1]) + 1
        for side in ("SA", "LA") if which == "LM" else (which,):
            t_b, s_b = _wanted_ritz(alpha[b0:], beta[b0 : m - 1], 1, side)
            ok = ok and passed(t_b, np.abs(beta[m - 1] * s_b[-1]))
    return theta, S, res, ok


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
        converged: whether all k residuals met ``tol``.
        num_matvecs: operator products spent.
        num_steps: Krylov dimension m reached.
        seconds: wall-clock time.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    converged: bool
    num_matvecs: int
    num_steps: int
    seconds: float


def _prepare_v0(v0: torch.Tensor, N: int, op: object, caller: str) -> torch.Tensor:
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"{caller}: v0 must be a torch.Tensor, got {type(v0).__name__}")
    if v0.ndim == 2 and v0.shape[0] == N:
        cols = v0 / torch.linalg.vector_norm(v0, dim=0, keepdim=True).clamp_min(1e-300)
        v0 = cols.sum(dim=1)
    if v0.ndim != 1 or v0.shape[0] != N:
        raise ValueError(f"{caller}: v0 must have shape ({N},) or ({N}, j), got {tuple(v0.shape)}")
    v0 = v0.to(device=op.device, dtype=op.dtype)
    check_finite(v0, f"{caller}: v0")
    if not float(torch.linalg.vector_norm(v0)) > 0:
        raise ValueError(f"{caller}: the start vector v0 is zero")
    return v0


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
) -> LanczosResult:
    """k extreme eigenpairs of a symmetric operator by Lanczos with full re-orthogonalization.

    After every step the tridiagonal T_m (float64, a few hundred rows at most) is solved for the
    k wanted Ritz pairs, and the run stops as soon as each satisfies the Ritz residual test
    ‖H y_i − θ_i y_i‖ = |β_m s_{m,i}| ≤ tol·|θ_i| (or is at working precision,
    ≤ 100·eps·‖T_m‖, so zero eigenvalues and float32 operators terminate). No matvec is spent
    beyond that step. The eigenvalue error is at most the residual, and typically its square
    over the gap to the rest of the spectrum.

    Warm start: pass the previous eigenvector(s) as ``v0`` when tracking λ_max during training;
    a start vector close to the wanted eigenvector needs far fewer steps. A start vector in an
    invariant subspace (an exact eigenvector) is detected (β ≈ 0) and the run continues from a
    random vector orthogonal to the basis, so the answer is still the extreme part of the whole
    spectrum.

    A single Krylov sequence holds one direction per distinct eigenvalue: the other copies of an
    exactly repeated eigenvalue only enter through rounding. They are found when the gap to the
    rest of the spectrum is large (the rounding components grow fast), but may be missed for
    k > 1 when it is small, or when the operator has fewer distinct eigenvalues than steps (the
    run then ends exactly, with the distinct values). ARPACK (``scipy.sparse.linalg.eigsh``)
    behaves the same. Use :func:`hessian_lr.power_iteration` (deflation) when exact
    multiplicities matter.

    Args:
        op: symmetric linear operator (N, N) with ``op @ v``.
        k: number of eigenpairs, 1 ≤ k ≤ N.
        which: ``"LA"`` largest algebraic (λ_max, the default), ``"SA"`` smallest algebraic,
            ``"LM"`` largest magnitude.
        tol: relative Ritz residual at which a pair is converged (> 0).
        max_iter: maximum Krylov dimension (= matvecs); default min(N, max(2k + 40, 100)).
            Up to N is allowed (then the answer is exact).
        v0: start vector (N,), or (N, j) whose unit columns are summed (the previous top-j
            eigenvectors); default a Gaussian random vector.
        generator: random source for the start vector and restarts.
        return_eigenvectors: form the (N, k) Ritz vectors (one (N, m) × (m, k) product).

    Returns:
        A :class:`LanczosResult`; ``converged`` is False (with a ``RuntimeWarning``) when
        ``max_iter`` steps did not suffice.

    Example:
        >>> import torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)))
        >>> res = lanczos(op, k=2, generator=torch.Generator().manual_seed(0))
        >>> [round(x, 8) for x in res.eigenvalues.tolist()]
        [100.0, 99.0]
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an integer in [1, N={N}], got {k}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    check_positive("tol", tol)
    if max_iter is None:
        max_iter = min(N, max(2 * k + 40, 100))
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    max_iter = min(max_iter, N)
    if max_iter < k:
        raise ValueError(f"max_iter={max_iter} is smaller than k={k}; it must be at least k")
    v = randn((N,), op, generator) if v0 is None else _prepare_v0(v0, N, op, "lanczos")

    def stop(alpha: np.ndarray, beta: np.ndarray) -> bool:
        m = alpha.shape[0]
        # The check costs O(m k) for LA/SA; beyond a few hundred steps it runs less often.
        if m < k or (m > 256 and m % (m // 256 + 1) != 0):
            return False
        return _ritz_check(alpha, beta, k, which, tol, op.dtype)[3]

    kr = _lanczos_run(
        op,
        v.unsqueeze(0),
        max_iter,
        stop=stop,
        restart_generator=generator,
        restart=True,
        v0_is_random=v0 is None,
    )
    m = int(kr.steps[0])
    theta, S, res, converged = _ritz_check(kr.alpha[0, :m], kr.beta[0, :m], k, which, tol, op.dtype)
    if m == N:
        converged = theta.shape[0] == k  # the whole space: the Ritz pairs are exact
    if not converged:
        worst = float(np.max(res / np.maximum(np.abs(theta), 1e-300)))
        warnings.warn(
            f"lanczos: the {k} wanted Ritz pairs did not reach tol={tol} within max_iter={max_iter}"
            f" steps (largest relative residual {worst:.2e}); increase max_iter",
            RuntimeWarning,
            stacklevel=2,
        )
    vectors = None
    if return_eigenvectors:
        S_t = torch.as_tensor(S, dtype=op.dtype, device=op.device)
        vectors = kr.basis[0, :m].T @ S_t
        vectors = vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    return LanczosResult(
        eigenvalues=torch.as_tensor(theta, dtype=torch.float64),
        eigenvectors=vectors,
        residuals=torch.as_tensor(res, dtype=torch.float64),
        converged=converged,
        num_matvecs=kr.num_matvecs,
        num_steps=m,
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------ spectral density
@dataclass(frozen=True)
class SpectralDensity:
    """Result of :func:`spectral_density`: SLQ quadrature rules and the smoothed density.

    Attributes:
        nodes: (num_probes, m) float64 Ritz values per probe (Gauss quadrature nodes).
        weights: (num_probes, m) float64 squared first components of T's eigenvectors; each row
            sums to 1. A probe that reached an invariant subspace in m' < m steps is padded with
            zero weights (nodes repeated).
        grid: (num_grid,) float64 points where the density is evaluated.
        density: (num_grid,) float64 Gaussian-broadened density on ``grid``, normalized so that
            ``np.trapezoid(density, grid) == 1``.
        sigma: the Gaussian broadening (standard deviation, in eigenvalue units).
        dim: N, the operator's dimension.
        num_matvecs: operator products spent.
        seconds: wall-clock time.
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    dim: int
    num_matvecs: int
    seconds: float

    def expectation(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """Estimate of tr f(H) / N: Σ_i w_i f(θ_i) averaged over the probes (f vectorized)."""
        return float(np.mean(np.sum(self.weights * f(self.nodes), axis=1)))

    def trace(self) -> float:
        """Estimate of tr H = N · mean over probes of Σ_i w_i θ_i (Hutchinson with SLQ)."""
        return self.dim * self.expectation(lambda x: x)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Unsmoothed spectral distribution #{λ_j ≤ x} / N estimated by the quadrature rules."""
        x = np.asarray(x, dtype=np.float64)
        nodes, w = self.nodes.reshape(-1), self.weights.reshape(-1) / self.nodes.shape[0]
        order = np.argsort(nodes, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(w[order])])
        return cum[np.searchsorted(nodes[order], x, side="right")]


def spectral_density(
    op: object,
    *,
    num_probes: int = 1,
    num_steps: int = 100,
    sigma: float | None = None,
    grid: np.ndarray | None = None,
    num_grid: int = 1000,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

    For each of ``num_probes`` random unit probes v, ``num_steps`` Lanczos steps (full
    re-orthogonalization) give T_m = S diag(θ) Sᵀ; the quadrature nodes are the θ_i and the
    weights are S_{1,i}². The density estimate is
    φ(x) = mean over probes of Σ_i w_i 𝒩(x; θ_i, σ²), evaluated on a grid and normalized so
    ``np.trapezoid(density, grid) == 1`` (on a grid that covers only part of the spectrum this
    renormalizes the part covered). The nodes and weights are returned too, so any other
    smoothing, the CDF (:meth:`SpectralDensity.cdf`) or tr f(H) (``expectation``) can be
    computed without new products.

    Args:
        op: symmetric linear operator (N, N) with ``op @ v``.
        num_probes: independent random probes (≥ 1). Ghorbani et al. find 1 probe
            enough in high dimension; more probes reduce the variance of the weights.
        num_steps: Lanczos steps per probe (≥ 1; capped at N), i.e. quadrature nodes.
        sigma: Gaussian broadening; default 1 % of the node range
            (max θ − min θ) over all probes (1 % of max |θ|, or 1, if the range is 0).
        grid: points (G,) where the density is evaluated; default ``num_grid`` equally spaced
            points on [min θ − 3σ, max θ + 3σ].
        num_grid: grid size when ``grid`` is not given (≥ 2).
        probe: ``"rademacher"`` (±1 entries, default) or ``"gaussian"``; normalized to unit norm.
        batch_size: probes run side by side so that their products are one ``op @ V`` call
            (vmapped HVPs on a GPU). Memory grows as batch_size × (num_steps + 1) × N.
        generator: random source for the probes.

    Returns:
        A :class:`SpectralDensity`.

    Example:
        >>> import numpy as np, torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.linspace(0, 1, 50, dtype=torch.float64)))
        >>> sd = spectral_density(op, num_steps=20, generator=torch.Generator().manual_seed(0))
        >>> round(float(np.trapezoid(sd.density, sd.grid)), 6)
        1.0
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    if sigma is not None:
        check_positive("sigma", sigma)
    if grid is None and (not isinstance(num_grid, int) or num_grid < 2):
        raise ValueError(f"num_grid must be an integer ≥ 2, got {num_grid}")
    num_steps = min(num_steps, N)
    draw = rademacher if probe == "rademacher" else randn

    nodes = np.zeros((num_probes, num_steps))
    weights = np.zeros((num_probes, num_steps))
    num_matvecs = 0
    for start in range(0, num_probes, batch_size):
        p = min(batch_size, num_probes - start)
        V0 = draw((p, N), op, generator)
        kr = _lanczos_run(op, V0, num_steps, caller="spectral_density")
        num_matvecs += kr.num_matvecs
        for i in range(p):
            m = int(kr.steps[i])
            theta, S = _tridiagonal_eigh(kr.alpha[i, :m], kr.beta[i, : m - 1])
            nodes[start + i, :m] = theta
            nodes[start + i, m:] = theta[-1]
            weights[start + i, :m] = S[0] ** 2

    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = hi - lo
        sigma = 0.01 * spread if spread > 0 else 0.01 * max(abs(hi), abs(lo), 1.0)
    if grid is None:
        grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, num_grid)
    else:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.shape[0] < 2 or not np.all(np.diff(grid) > 0):
            raise ValueError("grid must be a 1-D increasing array with at least 2 points")
    if np.max(np.diff(grid)) > sigma:
        warnings.warn(
            f"spectral_density: grid spacing {np.max(np.diff(grid)):.3g} exceeds sigma={sigma:.3g};"
            " the density is under-resolved (use more grid points or a larger sigma)",
            RuntimeWarning,
            stacklevel=2,
        )
    density = np.zeros_like(grid)
    w_flat, n_flat = weights.reshape(-1), nodes.reshape(-1)
    keep = w_flat > 0
    w_flat, n_flat = w_flat[keep], n_flat[keep]
    for chunk in range(0, n_flat.shape[0], 256):  # bounded memory: (G, 256) at a time
        d = (grid[:, None] - n_flat[None, chunk : chunk + 256]) / sigma
        density += np.exp(-0.5 * d * d) @ w_flat[chunk : chunk + 256]
    density /= num_probes * sigma * math.sqrt(2 * math.pi)
    total = float(np.trapezoid(density, grid))
    if not total > 0:
        raise ValueError(
            "spectral_density: the density vanishes on the given grid; it misses the spectrum "
            f"[{lo:.3g}, {hi:.3g}]"
        )
    density /= total
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=density,
        sigma=float(sigma),
        dim=N,
        num_matvecs=num_matvecs,
        seconds=time.perf_counter() - t0,
    )
