"""The one seam through which the solvers read device tensors on the host (issue 29).

Every read of a device value on the host (``.item()``, ``float(t)``, ``.cpu()``, ``bool(t)``)
waits for the device to finish everything queued before it: on a GPU, a read per Lanczos step
or per product stalls the launch pipeline once per step. The solvers therefore keep their
scalars (α, β, norms, finiteness flags) as device tensors and read them through :func:`read`
only at checks every few steps; this module counts those reads, so a test can hold a solve to
its budget (``reads ≤ ⌈steps / k⌉ + constant``, ``tests/curvature/test_host_reads.py``).

On the CPU there is no device to wait for and a read costs nothing but Python; the same code
runs, and the same counts hold.

* :func:`read`: tensors -> one float64 NumPy array (stacked on the device, one transfer).
* :func:`reads`: the number of reads so far (a plain counter, per process).
* :class:`FiniteLog`: an operator's NaN/inf checks accumulated on the device during a solve and
  read once, with the index of the first failing check recovered exactly.
* :func:`check_schedule`: the steps at which a recurrence reads its convergence test.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = [
    "read",
    "reads",
    "around_reads",
    "FiniteLog",
    "check_schedule",
    "resolve_check_every",
    "AUTO_FRACTION",
]

_state = threading.local()
_count = [0]

#: The "auto" schedule checks when the steps since the last check reach this fraction of the
#: steps so far, so a solve that could have stopped at step m spends < 5 % more products.
AUTO_FRACTION = 0.05


def reads() -> int:
    """How many host reads :func:`read` has made in this process."""
    return _count[0]


def in_read() -> bool:
    """Whether the current thread is inside :func:`read` (test doubles skip those reads)."""
    return getattr(_state, "inside", False)


def read(*tensors: torch.Tensor) -> np.ndarray:
    """The values of ``tensors`` on the host as one flat float64 array: one synchronization.

    Tensors of any shape and device are flattened, cast to float64 and concatenated on their
    (common) device before the single transfer; booleans read as 0.0/1.0.
    """
    _count[0] += 1
    _state.inside = True
    try:
        with _around[-1]() if _around else contextlib.nullcontext():
            flat = [t.detach().reshape(-1).to(torch.float64) for t in tensors]
            dev = flat[0].device
            joined = torch.cat([f.to(dev) for f in flat]) if len(flat) > 1 else flat[0]
            return joined.cpu().numpy()
    finally:
        _state.inside = False


_around: list[Callable[[], contextlib.AbstractContextManager]] = []


@contextlib.contextmanager
def around_reads(factory: Callable[[], contextlib.AbstractContextManager]) -> Iterator[None]:
    """Enter ``factory()`` around every :func:`read` made inside this block (a test hook).

    The CUDA tests run a solve under ``torch.cuda.set_sync_debug_mode("error")`` and lift it
    here, so that any synchronization that does not go through :func:`read` raises.
    """
    _around.append(factory)
    try:
        yield
    finally:
        _around.pop()


class FiniteLog:
    """NaN/inf checks of one solve, accumulated on the device and read once.

    ``add(what, t)`` records whether ``t`` is finite (one reduction, no read); the device keeps
    the index of the first check that failed. ``first_failure()`` reads it (one sync) and
    returns ``(index, what)`` of that check, or None.
    """

    def __init__(self) -> None:
        self._first: torch.Tensor | None = None
        self._labels: list[str] = []

    def add(self, what: str, t: torch.Tensor) -> None:
        n = len(self._labels)
        self._labels.append(what)
        ok = torch.isfinite(t.detach().sum())  # a finite sum proves every entry finite
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.int64, device=t.device)
        fresh = (self._first < 0) & ~ok
        self._first = torch.where(fresh, torch.full_like(self._first, n), self._first)

    def __len__(self) -> int:
        return len(self._labels)

    def first_failure(self) -> tuple[int, str] | None:
        if self._first is None:
            return None
        i = int(read(self._first)[0])
        return None if i < 0 else (i, self._labels[i])


def resolve_check_every(check_every: int | str | None, device: torch.device) -> int | str:
    """``check_every`` as an int ≥ 1 or ``"auto"``; None: 1 on the CPU, ``"auto"`` elsewhere.

    On the CPU a read costs no synchronization, so the default checks after every step (the
    fewest products); on an accelerator ``"auto"`` (:func:`check_schedule`).
    """
    if check_every is None:
        return 1 if torch.device(device).type == "cpu" else "auto"
    if check_every == "auto":
        return "auto"
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer or 'auto', got {check_every!r}")
    return check_every


def check_schedule(last: int, check_every: int | str) -> int:
    """The step count at which to check next, after a check at ``last`` steps.

    An int k: every k steps. ``"auto"``: after max(1, ⌊0.05·last⌋) more steps, so the products
    spent past the step where the test first passes are < 5 % of the steps (every step up to
    20, every 5 at 100, every 25 at 500: ≈ 20 + 20·ln(m/20) checks for m steps).
    """
    if check_every == "auto":
        return last + max(1, math.floor(AUTO_FRACTION * last))
    return last + int(check_every)
