"""Power iteration with its scalars on the device, read every few iterations (issue 29).

:func:`~hessian_lr.curvature.power._iterate` reads (λ, ‖Hv‖, ‖Hv − λv‖) on the host after every
product. Here the iteration v ← w/‖w‖ runs on the device; the three scalars of each iteration
go into a device array and the vectors of the current window into a small buffer. At a check
(:func:`._host.check_schedule`, at most :data:`MAX_WINDOW` iterations apart, since the buffer
holds one vector per iteration) the window is read in one transfer and the per-iteration tests
are replayed in order: the run ends at the first iteration that passes, with that iteration's
λ, vector and residual, exactly as the per-iteration loop would have; only ``num_matvecs``
(the products actually spent) may be larger.
"""

from __future__ import annotations

import math

import torch

from ._host import check_schedule, read
from ._solver_utils import apply, flush_operator

__all__: list[str] = []

MAX_WINDOW = 32  # iterations between checks at most (the window buffer holds one vector each)


def _orthogonalize(v: torch.Tensor, U: torch.Tensor | None, space: object) -> torch.Tensor:
    if U is None or U.shape[1] == 0:
        return v
    for _ in range(2):
        v = v - U @ space.reduce(U.T @ v)
    return v


class _Replay:
    """The per-iteration tests of ``power._iterate``, replayed over a window of read scalars."""

    def __init__(self, shift: float, tol: float, eps: float, detect_pair: bool) -> None:
        self.shift, self.tol, self.eps, self.detect_pair = shift, tol, eps, detect_pair
        self.lam = self.lam_old = self.rho_old = math.nan
        self.rho_max, self.r = 0.0, math.inf
        self.stall = max(1e-8, 10 * eps)

    def test(self, it: int, lam_s: float, rho: float, r: float) -> str | None:
        """The status at iteration ``it`` ("converged", "pair") or None to go on."""
        lam = self.lam = lam_s - self.shift
        self.r = r
        self.rho_max = max(self.rho_max, rho)
        if rho == 0.0:
            self.r = 0.0
            return "converged"
        if r <= self.tol * abs(lam) or r <= 100 * self.eps * self.rho_max:
            return "converged"
        stall = self.stall
        if (
            self.detect_pair
            and it >= 3
            and abs(rho - self.rho_old) <= stall * rho
            and abs(lam - self.lam_old) <= stall * rho
            and r >= 10 * math.sqrt(stall) * rho
        ):
            return "pair"
        self.lam_old, self.rho_old = lam, rho
        return None


def iterate_deferred(
    op: object,
    v: torch.Tensor,
    U: torch.Tensor | None,
    *,
    space: object,
    shift: float,
    tol: float,
    max_iter: int,
    detect_pair: bool,
    check_every: int | str,
) -> tuple[float, torch.Tensor, int, str, float, float, int]:
    """Power iteration on P(H + sI) from the unit vector v (see ``power._iterate``).

    Returns (λ, vector, iterations, status, residual, ρ_max, products spent).
    """
    eps = torch.finfo(v.dtype).eps
    rep = _Replay(shift, tol, eps, detect_pair)
    scal = torch.zeros((3, max_iter), dtype=torch.float64, device=v.device)
    window = torch.empty((MAX_WINDOW, v.shape[0]), dtype=v.dtype, device=v.device)
    lo, spent = 0, 0
    due = min(check_schedule(0, check_every), MAX_WINDOW)
    for it in range(1, max_iter + 1):
        window[it - 1 - lo] = v
        w = apply(op, v)
        spent += 1
        if shift != 0.0:
            w = w + shift * v
        w = _orthogonalize(w, U, space)
        lam_s = space.dot(v.double(), w.double())
        rho = space.norm(w.double())
        scal[0, it - 1], scal[1, it - 1] = lam_s, rho
        scal[2, it - 1] = space.norm(w.double() - lam_s * v.double())
        v = w / rho.to(w.dtype).clamp_min(torch.finfo(w.dtype).tiny)
        if it < due and it < max_iter:
            continue
        vals = read(scal[:, lo:it]).reshape(3, it - lo)
        for c in range(it - lo):
            lam_c, rho_c, r_c = (float(x) for x in vals[:, c])
            if not all(math.isfinite(x) for x in (lam_c, rho_c, r_c)):
                flush_operator(op)  # the operator's own error first (which product)
                kind = "NaN" if any(math.isnan(x) for x in (lam_c, rho_c, r_c)) else "inf"
                raise ValueError(
                    f"power_iteration: the operator returned {kind} (NaN or inf in `op @ v`) "
                    f"at iteration {lo + c + 1}; check the model's loss and parameters for "
                    "NaN/inf, or the operator's inputs"
                )
            status = rep.test(lo + c + 1, lam_c, rho_c, r_c)
            if status is not None:
                return rep.lam, window[c].clone(), lo + c + 1, status, rep.r, rep.rho_max, spent
        lo = it
        due = min(check_schedule(it, check_every), it + MAX_WINDOW)
    return rep.lam, v, max_iter, "max_iter", rep.r, rep.rho_max, spent


def window_reads(iterations: int, check_every: int | str) -> int:
    """How many reads ``iterate_deferred`` makes for a run of ``iterations`` (for tests)."""
    last, n = 0, 0
    while last < iterations:
        last = min(check_schedule(last, check_every), last + MAX_WINDOW, iterations)
        n += 1
    return n
