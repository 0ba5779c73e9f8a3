"""The Lanczos loop shared by :func:`~hessian_lr.curvature.lanczos.lanczos` and SLQ.

Lanczos (1950) builds an orthonormal basis Q_m of the Krylov space span{v, Hv, ..., H^{m-1}v} in
which H is the tridiagonal T_m = Q_mᵀ H Q_m (Golub & Van Loan, *Matrix Computations*, §10.1;
Parlett, *The Symmetric Eigenvalue Problem*, ch. 13). Full re-orthogonalization (the three-term
recurrence, then classical Gram-Schmidt against the whole basis, repeated when it cancels:
"twice is enough", Giraud et al. 2005) keeps Q_m orthonormal to working precision, so no spurious
copies of converged Ritz values appear; it is two matrix products per step on the operator's
device. The tridiagonal and every scalar are float64; the basis is in the operator's dtype, or
float32 for 16-bit operators. Several independent probes can run side by side so that ``op @ V``
batches their products (SLQ).

The Gram-Schmidt coefficients double as a free consistency check: for one fixed symmetric matrix
they are rounding noise, while an operator whose products change (a shuffling data loader) or
that is not symmetric leaves components of size ‖ΔH‖ there. Their largest relative size is
returned as ``defect``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from ._host import read, resolve_check_every
from ._krylov_deferred import deferred_run
from ._solver_utils import Progress, apply, check_finite, randn, work_dtype
from ._space import space_of

__all__: list[str] = []


@dataclass
class Krylov:
    """Output of :func:`lanczos_run` for p probes run side by side.

    Attributes:
        basis: (p, cap, N); rows [:steps[i]] of probe i are its orthonormal basis.
        alpha: (p, max_steps) float64, the diagonal of T.
        beta: (p, max_steps) float64; beta[i, j] couples q_j and q_{j+1} (0 at a restart).
        steps: (p,) int, the Krylov dimension reached per probe.
        num_matvecs: operator products spent.
        defect: (p,) largest Gram-Schmidt coefficient of a step relative to ‖T‖ (rounding level
            for a fixed symmetric matrix).
    """

    basis: torch.Tensor
    alpha: np.ndarray
    beta: np.ndarray
    steps: np.ndarray
    num_matvecs: int
    defect: np.ndarray


def breakdown_tol(dtype: torch.dtype) -> float:
    """Relative size of β below which a Lanczos step has found an invariant subspace."""
    return 100.0 * torch.finfo(work_dtype(dtype)).eps


def tridiagonal_eigh(
    alpha: np.ndarray, beta: np.ndarray, select: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the symmetric tridiagonal T (diagonal alpha (m,), off-diagonal beta (m-1,)).

    ``select=(lo, hi)`` restricts to eigenvalue indices lo..hi (ascending order, inclusive).
    ``scipy.linalg.eigh_tridiagonal``: its wrapper costs 40–90 µs a call against 7 µs for a
    direct LAPACK ``dstemr`` call (m ≤ 100, measured), well under 1 % of one HVP.
    """
    m = alpha.shape[0]
    if m == 1:
        return np.array(alpha, dtype=np.float64), np.ones((1, 1))
    if select is None or (select[0] == 0 and select[1] == m - 1):
        return scipy.linalg.eigh_tridiagonal(alpha, beta)
    return scipy.linalg.eigh_tridiagonal(alpha, beta, select="i", select_range=select)


class _Loop:
    """State of one :func:`lanczos_run` (kept in a class so each step reads in parts)."""

    def __init__(
        self,
        op: object,
        V0: torch.Tensor,
        max_steps: int,
        caller: str,
        preallocate: bool = False,
        semi: bool = False,
        keep_basis: bool = True,
    ) -> None:
        p, n = V0.shape  # n: this process's part of R^N (all of it unless sharded)
        self.space = sp = space_of(op)
        N = sp.dim
        self.op, self.p, self.N, self.caller = op, p, N, caller
        self.max_steps = min(max_steps, N)
        self.dtype, self.device = work_dtype(op.dtype), V0.device
        # Small to start (a λ_max run needs ~10 steps), then doubled. With several probes the
        # basis is zeros, not empty: rows of finished probes stay 0 (never NaN garbage) in the
        # batched products; one probe only ever reads rows it has written.
        self.alloc = torch.empty if p == 1 else torch.zeros
        self.cap = self.max_steps + 1 if preallocate else min(self.max_steps, 16) + 1
        self.ring = not keep_basis  # plain three-term recurrence: only q_{j-1}, q_j, q_{j+1}
        if self.ring:
            self.cap = 3
        self.Q = self.alloc((p, self.cap, n), dtype=self.dtype, device=self.device)
        V0 = V0.to(self.dtype)
        norms = sp.norm(V0, dim=1, keepdim=True)
        if not read((norms > 0).all())[0]:
            raise ValueError(f"{caller}: the start vector v0 is zero")
        self.Q[:, 0] = V0 / norms
        self.alpha = np.zeros((p, self.max_steps))
        self.beta = np.zeros((p, self.max_steps))
        self.beta_prev = torch.zeros((p, 1), dtype=self.dtype, device=self.device)
        self.steps = np.zeros(p, dtype=np.int64)
        self.active = np.ones(p, dtype=bool)
        self.anorm = np.zeros(p)
        self.defect = np.zeros(p)
        self.num_matvecs = 0
        self.tiny = breakdown_tol(op.dtype)
        self.eps = float(torch.finfo(self.dtype).eps)
        self.semi = semi

    def row(self, j: int) -> int:
        """Where q_j is stored: row j of the basis, or j mod 3 without re-orthogonalization."""
        return j % 3 if self.ring else j

    def grow(self, j: int) -> None:
        if not self.ring and j + 1 >= self.cap:  # grow the preallocated basis geometrically
            new_cap = min(2 * self.cap, self.max_steps + 1)
            Q_new = self.alloc(
                (self.p, new_cap, self.Q.shape[2]), dtype=self.dtype, device=self.device
            )
            Q_new[:, : self.cap] = self.Q
            self.Q, self.cap = Q_new, new_cap

    def product(self, j: int, idx: np.ndarray) -> torch.Tensor:
        q = self.Q[:, self.row(j)]  # (p, N)
        if self.p == 1:
            W = apply(self.op, q[0]).unsqueeze(0)
        elif idx.size == self.p:
            W = apply(self.op, q.T.contiguous()).T.contiguous()
        else:  # finished probes get w = 0 and are ignored below
            W = torch.zeros_like(q)
            sel = torch.as_tensor(idx, device=self.device)
            W[sel] = apply(self.op, q[sel].T.contiguous()).T
        self.num_matvecs += idx.size
        return W

    def to_host(self, W: torch.Tensor, rows: list[torch.Tensor]) -> np.ndarray:
        """The (p,) scalars ``rows`` as one float64 array (one sync); raises on NaN or inf."""
        host = read(*rows).reshape(len(rows), -1)
        if not np.isfinite(host).all():
            check_finite(W, self.caller, self.op)  # raises, naming NaN or inf
            raise ValueError(f"{self.caller}: the Lanczos recurrence overflowed (inf)")
        return host

    def orthogonalize(self, j: int, W: torch.Tensor, idx: np.ndarray) -> tuple:
        """Three-term recurrence then Gram-Schmidt (twice if needed); (W, α, β, ‖h‖) on the host.

        With ``semi`` the coefficients h = Q_jᵀw are always measured (one pass over the basis),
        but subtracted in full (a second pass) only when some |h_k| > √eps·‖w‖ for k < j − 1;
        otherwise only along q_j and q_{j−1}. Each new vector is then semi-orthogonal to the
        basis by measurement, which keeps T (Ritz values, quadrature weights) accurate to
        working precision (Simon 1984; Parlett ch. 13) at half the memory traffic.
        """
        q = self.Q[:, self.row(j)]
        sp = self.space  # contractions over the vector dimension go through sp (sharded: reduced)
        a = sp.reduce(torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).squeeze(2))  # (p, 1)
        W = torch.addcmul(W, a, q, value=-1)  # a new tensor: the op's output is left alone
        if j > 0:
            W.addcmul_(self.beta_prev, self.Q[:, self.row(j - 1)], value=-1)
        if self.ring:  # no re-orthogonalization: one more local pass keeps α accurate
            a2 = sp.reduce(torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).squeeze(2))
            W.addcmul_(a2, q, value=-1)
            host = self.to_host(W, [(a + a2).squeeze(1), sp.norm(W, dim=1)])
            return W, host[0], host[1], np.zeros(self.p)
        basis = self.Q[:, : j + 1]  # (p, j+1, N)
        norm_in = sp.norm(W, dim=1)
        h = sp.reduce(torch.bmm(basis, W.unsqueeze(2)).squeeze(2))  # (p, j+1)
        far = h[:, : max(j - 1, 0)].abs().amax(dim=1) if j >= 2 else torch.zeros_like(norm_in)
        h_norm = torch.linalg.vector_norm(h, dim=1)
        host = self.to_host(W, [a.squeeze(1), norm_in, h_norm, far])
        if self.semi and np.all(host[3, idx] <= math.sqrt(self.eps) * host[1, idx]):
            W.addcmul_(h[:, j : j + 1], q, value=-1)  # local re-orthogonalization only
            if j > 0:
                W.addcmul_(h[:, j - 1 : j], self.Q[:, j - 1], value=-1)
            tail = read(h[:, j], sp.norm(W, dim=1)).reshape(2, -1)
            return W, host[0] + tail[0], tail[1], host[2]
        W = torch.baddbmm(W.unsqueeze(2), basis.transpose(1, 2), h.unsqueeze(2), alpha=-1)
        W = W.squeeze(2)
        tail = read(h[:, j], sp.norm(W, dim=1)).reshape(2, -1)
        a_np, b_np = host[0] + tail[0], tail[1]
        if np.any(b_np[idx] < 0.7071 * host[1, idx]):  # DGKS: a second pass is needed
            W, h2 = _gram_schmidt(W, basis, sp)
            tail = read(h2[:, j], sp.norm(W, dim=1)).reshape(2, -1)
            a_np, b_np = a_np + tail[0], tail[1]
        return W, a_np, b_np, host[2]

    def restart_vector(self, i: int, j: int, generator: torch.Generator | None) -> bool:
        """Put a random unit vector orthogonal to probe i's basis at row j + 1, if one exists."""
        r = randn((self.N,), self.op, generator, dtype=self.dtype)
        for _ in range(2):
            r = r - self.Q[i, : j + 1].T @ self.space.reduce(self.Q[i, : j + 1] @ r)
        r_norm = float(read(self.space.norm(r))[0])
        if r_norm > self.tiny * math.sqrt(self.N):
            self.Q[i, j + 1] = r / r_norm
            return True
        return False


def _gram_schmidt(
    W: torch.Tensor, basis: torch.Tensor, space: object
) -> tuple[torch.Tensor, torch.Tensor]:
    h = space.reduce(torch.bmm(basis, W.unsqueeze(2)))  # (p, j+1, 1)
    W = torch.baddbmm(W.unsqueeze(2), basis.transpose(1, 2), h, alpha=-1).squeeze(2)
    return W, h.squeeze(2)


def lanczos_run(
    op: object,
    V0: torch.Tensor,
    max_steps: int,
    *,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    restart_generator: torch.Generator | None = None,
    restart: bool = False,
    v0_is_random: bool = True,
    caller: str = "lanczos",
    progress: bool | None = False,
    preallocate: bool = False,
    semi: bool = False,
    reorthogonalize: bool = True,
    check_every: int | str | None = 1,
) -> Krylov:
    """Run Lanczos with full re-orthogonalization from the p rows of V0 (p, N), side by side.

    Step j applies the operator to q_j of every probe still running (one ``op @`` call, p
    columns), subtracts the three-term recurrence w = Hq_j − α_j q_j − β_{j−1} q_{j−1}, then
    re-orthogonalizes w against the whole basis by classical Gram-Schmidt with batched matrix
    products, a second time when the first pass shrank ‖w‖ by more than 1/√2 (the
    Daniel-Gragg-Kaufman-Stewart criterion). α_j and β_j = ‖w‖ are stored in float64.

    A probe whose β_j falls below 100·eps·‖T‖ (eps of the working precision, never of a 16-bit
    dtype) has reached an invariant subspace: its Ritz values are exact. With ``restart``
    (single probe only) the run continues from a random vector orthogonal to the basis (β_j = 0,
    T becomes block diagonal), so a start vector in an invariant subspace cannot hide the rest
    of the spectrum; otherwise the probe stops. ``stop(alpha, beta)`` (single probe only) is
    asked after every step and ends the run when it returns True; not after a breakdown that
    ends a block started from a caller-chosen vector (``v0_is_random=False``): such a block's
    exact Ritz values say nothing about the rest of the spectrum, while a random block that
    breaks down holds every distinct eigenvalue of the space it explored (with probability one).

    ``preallocate`` reserves the whole basis at once (SLQ, which always runs every step) instead
    of growing it geometrically (a λ_max run usually stops after a few dozen steps). ``semi``
    (SLQ) subtracts the Gram-Schmidt projection only when the measured loss of orthogonality
    exceeds √eps (see ``_Loop.orthogonalize``); ``defect`` is measured either way.
    ``reorthogonalize=False`` runs the plain three-term recurrence and keeps only three vectors
    per probe (3N memory instead of (m + 1)N, no pass over the basis): the returned ``basis``
    then holds the last vectors only, ``defect`` is not measured, and ``restart`` is ignored.

    ``check_every`` (issue 29): 1 reads the scalars after every step (this loop); an int k > 1
    or ``"auto"`` keeps them on the device and reads them every k steps
    (:mod:`._krylov_deferred`: same T and stopping step, possibly a few more products spent);
    None: 1 on the CPU, ``"auto"`` on an accelerator (:func:`._host.resolve_check_every`).
    """
    s = _Loop(op, V0, max_steps, caller, preallocate, semi, keep_basis=reorthogonalize)
    check_every = resolve_check_every(check_every, s.device)
    if check_every != 1:  # --- issue 29: device-resident scalars, reads at checks only
        defect, _ = deferred_run(
            s,
            stop=stop,
            restart_generator=restart_generator,
            restart=restart,
            v0_is_random=v0_is_random,
            progress=progress,
            check_every=check_every,
        )
        return Krylov(s.Q, s.alpha, s.beta, s.steps, s.num_matvecs, defect)
    bar = Progress(s.max_steps * s.p, caller, progress)
    block_random = v0_is_random  # whether the current block started from a random vector
    try:
        for j in range(s.max_steps):
            idx = np.flatnonzero(s.active)
            if idx.size == 0:
                break
            s.grow(j)
            W = s.product(j, idx)
            bar.update(idx.size)
            W, a_np, b_np, h_norm = s.orthogonalize(j, W, idx)
            broke = []
            completed_random = block_random
            for i in idx:
                s.alpha[i, j] = a_np[i]
                prev = s.beta[i, j - 1] if j > 0 else 0.0
                s.anorm[i] = max(s.anorm[i], abs(a_np[i]), b_np[i], prev)
                if s.anorm[i] > 0:
                    s.defect[i] = max(s.defect[i], h_norm[i] / s.anorm[i])
                s.steps[i] = j + 1
                if b_np[i] <= s.tiny * s.anorm[i] or j + 1 == s.N:
                    broke.append(i)
            for i in idx:
                if i not in broke:
                    s.beta[i, j] = b_np[i]
                    s.beta_prev[i] = float(b_np[i])
                    torch.div(W[i], float(b_np[i]), out=s.Q[i, s.row(j + 1)])
                    continue
                s.beta[i, j] = 0.0
                s.beta_prev[i] = 0.0
                if (
                    restart
                    and not s.ring
                    and j + 1 < s.max_steps
                    and s.restart_vector(i, j, restart_generator)
                ):
                    block_random = True
                    continue
                s.active[i] = False
            if stop is not None and (not broke or completed_random):
                if stop(s.alpha[0, : j + 1], s.beta[0, : j + 1]):
                    break
    finally:
        bar.close()
    return Krylov(
        basis=s.Q,
        alpha=s.alpha,
        beta=s.beta,
        steps=s.steps,
        num_matvecs=s.num_matvecs,
        defect=s.defect,
    )
