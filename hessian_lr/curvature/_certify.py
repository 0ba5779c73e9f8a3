"""Certifying Lanczos' extreme Ritz value against eigenvalues the start vector has not shown.

A residual or gap bound says that *some* eigenvalue lies near a Ritz value θ; whether it is
λ_max depends on eigenvalues the Krylov space has not resolved yet. The Lanczos recurrence gives
β_1⋯β_m q_{m+1} = π_m(H) q_1, π_m(λ) = Π_i (λ − θ_i) (Golub & Van Loan §10.1), so the start
vector's weight on eigenvalues beyond x (x outside the Ritz values) is at most
β_1⋯β_m/|π_m(x)|. A random start puts weight ≥ t* on any fixed direction with probability
≥ 1 − P_FAIL (the density of uᵀv for v uniform on the sphere is ≤ √((N−1)/(2π))): once the
bound beyond θ_max + δ is below t*, λ_max ≤ θ_max + δ with that probability, whatever the
operator; θ_max ≤ λ_max by interlacing. This is the a-posteriori form of the probabilistic
Lanczos bounds of Kuczyński & Woźniakowski (SIAM J. Matrix Anal. Appl. 13, 1992).
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []

P_FAIL = 1e-3  # probability, over the random start, that a converged bound is wrong
WARM_MIX = 0.1  # a warm start v0 becomes v0/‖v0‖ + WARM_MIX·g/‖g‖, g Gaussian


def log_threshold(N: int, warm: bool) -> float:
    """Log t*: a random start puts weight ≥ t* on any fixed unit vector with prob. ≥ 1 − P_FAIL.

    For v = g/‖g‖ uniform on the sphere S^{N−1}, the density of uᵀv is at most
    √((N − 1)/(2π)), so P(|uᵀv| ≤ t) ≤ t·√(2N/π). A warm start mixed as v ∝ w + ρ·g/‖g‖
    (‖w‖ = 1, ρ = :data:`WARM_MIX`, w independent of g) has ‖v‖ ≤ 1 + ρ and the same bound with
    t·(1 + ρ)/ρ, whatever w is.
    """
    t = P_FAIL / np.sqrt(2.0 * N / np.pi)
    if warm:
        t *= WARM_MIX / (1.0 + WARM_MIX)
    return float(np.log(t))


def _log_weight(x: float, theta: np.ndarray, log_beta: float) -> float:
    """Log of an upper bound on the start vector's weight on eigenvalues at or beyond x.

    The next Lanczos vector satisfies β_1⋯β_m q_{m+1} = π_m(H) q_1 with π_m(λ) = Π (λ − θ_i),
    so for every eigenpair (λ, u): |uᵀq_1|·|π_m(λ)| ≤ β_1⋯β_m. Beyond the outermost Ritz value
    |π_m| grows monotonically, hence the weight on all eigenvalues beyond x is at most
    β_1⋯β_m / |π_m(x)|.
    """
    if log_beta == -np.inf:  # β_m = 0: an invariant subspace, nothing left unseen
        return -np.inf
    with np.errstate(divide="ignore"):
        return log_beta - float(np.sum(np.log(np.abs(x - theta))))


def unseen_ok(theta_b: np.ndarray, log_beta: float, ends: list[float], log_t: float) -> bool:
    return all(_log_weight(x, theta_b, log_beta) <= log_t for x in ends)


def unseen_bound(
    theta_b: np.ndarray, log_beta: float, top: float, log_t: float, floor: float
) -> float:
    """Smallest δ ≥ floor with weight(top + δ) ≤ t* (``top`` ≥ every θ; mirror for the bottom)."""
    if _log_weight(top + floor, theta_b, log_beta) <= log_t:
        return floor
    hi = max(floor, 1e-300, 1e-8 * abs(top))
    for _ in range(2100):
        if _log_weight(top + hi, theta_b, log_beta) <= log_t:
            break
        hi *= 2.0
    else:
        return float("inf")
    lo = floor
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _log_weight(top + mid, theta_b, log_beta) <= log_t:
            hi = mid
        else:
            lo = mid
    return hi


def extreme_ends(theta: float, lo: float, hi: float, delta: float, which: str) -> list[float]:
    """Points beyond which an unseen eigenvalue would make θ wrong by more than δ."""
    if which == "LA":
        return [hi + delta]
    if which == "SA":
        return [lo - delta]
    return [abs(theta) + delta, -(abs(theta) + delta)]


def extreme_bound(
    t_b: np.ndarray,
    log_beta: float,
    lt: float,
    th: float,
    lo: float,
    hi: float,
    floor: float,
    which: str,
) -> float:
    """Bound on the error of the extreme wanted Ritz value θ from the unseen-weight test.

    Interlacing puts λ_max ≥ θ_max (λ_min ≤ θ_min); the test puts λ_max ≤ θ_max + δ (with
    probability ≥ 1 − P_FAIL). For ``"LM"`` the bound is on ||λ| − |θ||.
    """
    if which == "LA":
        return unseen_bound(t_b, log_beta, hi, lt, floor)
    if which == "SA":
        return unseen_bound(-t_b, log_beta, -lo, lt, floor)
    up = unseen_bound(t_b, log_beta, hi, lt, floor)
    down = unseen_bound(-t_b, log_beta, -lo, lt, floor)
    return max(hi + up - abs(th), -lo + down - abs(th), 0.0)
