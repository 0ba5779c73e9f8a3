"""The Lanczos loop of ``_krylov`` with its scalars on the device, read every few steps (issue 29).

:func:`~._krylov.lanczos_run` reads α_j, β_j and the Gram-Schmidt measures on the host after
every step: on a GPU each read waits for the queue to drain, so the device idles once per
product. Here a step never reads: α_j, β_j and ‖h_j‖ go into device tensors, q_{j+1} = w/β_j is
formed on the device, and the decisions that used a read per step are made without one:

* the DGKS second Gram-Schmidt pass (``reorth="full"``) is always made ("twice is enough",
  Giraud et al. 2005) instead of when ‖w‖ shrank by 1/√2; ``semi`` keeps its test
  (far coefficients ≤ √eps‖w‖ → only the local ones are subtracted) as a device-side mask;
* a breakdown (β_j ≤ 100·eps·‖T‖) is found at the next check; the steps after it are discarded
  and the run resumes from step j + 1 exactly as the per-step loop would have (a restart
  vector, or the probe stops). The products spent on the discarded steps are counted;
* a NaN or inf is found at the next check, at the exact step it first appeared.

At a check (:func:`._host.check_schedule`: every k steps, or ``"auto"`` so that the products
past the first passing step stay below 5 %), the window's scalars are read in one transfer,
the bookkeeping of the per-step loop is replayed on the host, and ``stop`` is asked at the
window's last step; when it passes there, the earlier steps of the window are asked in order
and the run ends at the first that passes, so the Krylov dimension, T and the Ritz values are
those of the per-step loop; only ``num_matvecs`` (the products actually spent) may be larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ._host import check_schedule, read
from ._solver_utils import Progress, flush_operator

__all__: list[str] = []


def _step(s: object, j: int, idx: np.ndarray, d: dict[str, torch.Tensor]) -> None:
    """One Lanczos step on the device: product, recurrence, Gram-Schmidt, q_{j+1}; no read."""
    sp = s.space  # contractions over the vector dimension go through sp (sharded: reduced)
    W = s.product(j, idx)
    q = s.Q[:, s.row(j)]
    a = sp.reduce(torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).squeeze(2))  # (p, 1)
    W = torch.addcmul(W, a, q, value=-1)
    if j > 0:
        W.addcmul_(s.beta_prev, s.Q[:, s.row(j - 1)], value=-1)
    if s.ring:
        a2 = sp.reduce(torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).squeeze(2))
        W.addcmul_(a2, q, value=-1)
        a = a + a2
    else:
        basis = s.Q[:, : j + 1]
        norm_in = sp.norm(W, dim=1)
        h = sp.reduce(torch.bmm(basis, W.unsqueeze(2)).squeeze(2))  # (p, j+1)
        d["hnorm"][:, j] = torch.linalg.vector_norm(h, dim=1).double()
        h_sub = h
        if s.semi and j >= 2:  # subtract far coefficients only where orthogonality slipped
            far = h[:, : j - 1].abs().amax(dim=1) > math.sqrt(s.eps) * norm_in
            local = torch.arange(j + 1, device=h.device) >= j - 1
            h_sub = h * (far.unsqueeze(1) | local.unsqueeze(0)).to(h.dtype)
        W = torch.baddbmm(W.unsqueeze(2), basis.transpose(1, 2), h_sub.unsqueeze(2), alpha=-1)
        W = W.squeeze(2)
        a = a + h[:, j : j + 1]
        if not s.semi:  # the second pass, always: deciding it would need a read
            h2 = sp.reduce(torch.bmm(basis, W.unsqueeze(2)))
            W = torch.baddbmm(W.unsqueeze(2), basis.transpose(1, 2), h2, alpha=-1).squeeze(2)
            a = a + h2[:, j]
    b = sp.norm(W, dim=1, keepdim=True)
    d["alpha"][:, j] = a.squeeze(1).double()
    d["beta"][:, j] = b.squeeze(1).double()
    # a breakdown (b ≈ 0) leaves a meaningless but finite q_{j+1}; the check rolls it back
    torch.div(W, b.clamp_min(torch.finfo(b.dtype).tiny), out=s.Q[:, s.row(j + 1)])
    s.beta_prev = b


class _Replay:
    """The host side: the per-step loop's bookkeeping over a window of read scalars."""

    def __init__(self, s: object, stop: Callable | None, restart: bool, gen: object) -> None:
        self.s, self.stop, self.restart, self.gen = s, stop, restart, gen
        self.ratio = np.zeros_like(s.alpha)  # ‖h_j‖/‖T‖ per step (defect = its running max)

    def window(self, lo: int, hi: int, vals: np.ndarray, block_random: bool) -> tuple:
        """Replay steps lo..hi; -> (next step to run or None to end, block_random)."""
        s = self.s
        w = hi - lo + 1
        a_w, b_w, h_w = vals.reshape(3, s.p, w)
        for t in range(lo, hi + 1):
            c = t - lo
            idx = np.flatnonzero(s.active)
            if idx.size == 0:
                return None, block_random
            bad = ~np.isfinite(np.concatenate([a_w[idx, c], b_w[idx, c], h_w[idx, c]]))
            if bad.any():
                flush_operator(s.op)  # the operator's own error first (which product)
                nan = np.isnan(np.concatenate([a_w[idx, c], b_w[idx, c]])).any()
                kind = "NaN" if nan else "inf"
                raise ValueError(
                    f"{s.caller}: the operator returned {kind} (NaN or inf in `op @ v`) at "
                    f"Lanczos step {t + 1}; check the model's loss and parameters for NaN/inf, "
                    "or the operator's inputs"
                )
            broke, completed_random = [], block_random
            for i in idx:
                a, b = a_w[i, c], b_w[i, c]
                s.alpha[i, t] = a
                prev = s.beta[i, t - 1] if t > 0 else 0.0
                s.anorm[i] = max(s.anorm[i], abs(a), b, prev)
                self.ratio[i, t] = h_w[i, c] / s.anorm[i] if s.anorm[i] > 0 else 0.0
                s.steps[i] = t + 1
                if b <= s.tiny * s.anorm[i] or t + 1 == s.N:
                    broke.append(i)
                    s.beta[i, t] = 0.0
                else:
                    s.beta[i, t] = b
            if not broke:
                continue
            if s.p > 1:  # side-by-side probes (SLQ): a finished probe stops, the others go on
                s.active[broke] = False
                continue
            if self.stop is not None and self._first_pass(lo, t - 1):
                return None, block_random  # the per-step loop had stopped before t
            if self.stop is not None and completed_random and self._ask(t):
                return None, block_random
            if self.restart and not s.ring and t + 1 < s.max_steps:
                if s.restart_vector(0, t, self.gen):
                    s.beta_prev = torch.zeros_like(s.beta_prev)
                    return t + 1, True  # resume after the breakdown: later steps discarded
            s.active[0] = False
            return None, block_random
        if self.stop is not None and self._ask(hi):
            self._first_pass(lo, hi - 1)  # the first step that passes, as the per-step loop
            return None, block_random
        return hi + 1, block_random

    def _first_pass(self, lo: int, hi: int) -> bool:
        """Ask ``stop`` at steps lo..hi in order; truncate the run at the first that passes."""
        for t in range(lo, hi + 1):
            if self._ask(t):
                self._truncate(t)
                return True
        return False

    def _ask(self, t: int) -> bool:
        return bool(self.stop(self.s.alpha[0, : t + 1], self.s.beta[0, : t + 1]))

    def _truncate(self, t: int) -> None:
        s = self.s
        s.steps[0] = t + 1
        s.alpha[0, t + 1 :] = 0.0
        s.beta[0, t + 1 :] = 0.0

    def defect(self) -> np.ndarray:
        s = self.s
        return np.array([self.ratio[i, : s.steps[i]].max(initial=0.0) for i in range(s.p)])


def deferred_run(
    s: object,
    *,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None,
    restart_generator: torch.Generator | None,
    restart: bool,
    v0_is_random: bool,
    progress: bool | None,
    check_every: int | str,
) -> tuple[np.ndarray, int]:
    """Run the loop state ``s`` (a ``_krylov._Loop``) with reads at checks only.

    Returns (defect per probe, number of checks). ``s`` holds the basis, α, β and the steps.
    """
    d = {
        key: torch.zeros((s.p, s.max_steps), dtype=torch.float64, device=s.device)
        for key in ("alpha", "beta", "hnorm")
    }
    replay = _Replay(s, stop, restart, restart_generator)
    bar = Progress(s.max_steps * s.p, s.caller, progress)
    block_random, j, lo, checks = v0_is_random, 0, 0, 0
    due = check_schedule(0, check_every)
    try:
        while j is not None and j < s.max_steps:
            idx = np.flatnonzero(s.active)
            s.grow(j)
            _step(s, j, idx, d)
            bar.update(idx.size)
            if j + 1 < due and j + 1 < s.max_steps:
                j += 1
                continue
            vals = read(*(d[key][:, lo : j + 1] for key in ("alpha", "beta", "hnorm")))
            checks += 1
            j, block_random = replay.window(lo, j, vals, block_random)
            if j is not None:
                lo, due = j, check_schedule(j, check_every)
                if not s.active.any():
                    break
    finally:
        bar.close()
    return replay.defect(), checks
