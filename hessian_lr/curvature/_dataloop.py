"""The shared base of data-defined curvature operators: one data loop, weights, chunks, checks.

``DataLoopOperator`` applies Σ_b c_b M_b V (divided by Σ_b c_b for a mean) where M_b is a
per-batch symmetric matrix that a subclass applies in ``_matmat_batch(index, batch, V)`` -- the
layout of curvlinops' ``CurvatureLinearOperator``. The base owns:

* the data: one batch or an iterable of batches (``_batches.is_single_batch``), one-shot
  iterators materialized, tensors moved to the device (and upcast for mixed precision);
* the objective: ``reduction`` "mean" (weights c_b = counted elements, see
  ``_batches.element_count_fn``, or ``batch_size_fn``) or "sum";
* the passes: global RNG and loader generators left as found
  (``_batches.preserved_loader_rng``);
* chunks of ``chunk_size`` columns accumulated in place (memory: the output plus one chunk);
* the fixed-matrix check: two passes of one product compared (``check_data``), so that a
  solver never runs on data that changes between passes;
* finite checks and counters (``num_hvps``, ``seconds``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ._batches import (
    cast_floating,
    changed_data_message,
    element_count_fn,
    first_tensor,
    is_single_batch,
    move_to_device,
    objective_reduction,
    preserved_loader_rng,
)
from ._distributed import reduce_pass
from ._host import read
from .linop import LinearOperator

__all__ = ["DataLoopOperator", "NonFiniteError", "DataChangedError"]

Batch = Any


class NonFiniteError(ValueError):
    """The loss, the gradient or a Hessian-vector product is NaN or infinite."""


class DataChangedError(RuntimeError):
    """Two passes over the data gave different products: the operator is not a fixed matrix."""


class DataLoopOperator(LinearOperator):
    """Σ_b c_b M_b (/ Σ_b c_b) over the batches of ``data``; subclasses write ``_matmat_batch``.

    Subclasses (``_base.CurvatureOperator``) set ``self.closure``, ``self.chunk_size``,
    ``self.check_finite``, ``self._upcast`` and call ``_setup_data`` and ``_setup_objective`` in
    their constructor.
    """

    model: nn.Module
    closure: bool
    bn_mode: str
    chunk_size: int | None
    check_finite: bool
    _upcast: bool
    notes: list[str]
    _group: Any = None  # a torch.distributed process group, or None (one process)

    @property
    def _weighted(self) -> bool:
        """Batches are weighted (several batches, here or on other ranks, and a mean)."""
        return self.reduction == "mean" and (not self._single or self._group is not None)

    # ----------------------------------------------------------------------------- set-up
    def _setup_data(self, data: Any, single_batch: bool | None, check_data: bool | None) -> None:
        if single_batch is None:
            single_batch = is_single_batch(data, closure=self.closure)
        if single_batch:
            self._data: Any = [data]
        elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise TypeError(
                f"data must be one batch or an iterable of batches, got {type(data).__name__}"
            )
        elif isinstance(data, Iterator):  # (never iter(data): a DataLoader would draw a seed)
            self._data = list(data)  # one-shot: materialize so that every pass sees it
        else:
            self._data = data
        self._is_list = isinstance(self._data, (list, tuple))
        if self._is_list and len(self._data) == 0 and self._group is None:
            raise ValueError("data is empty: no batches to evaluate the loss on")
        if single_batch and self._group is None and not self.closure:
            t = first_tensor(data)
            if t is not None and t.ndim > 0 and t.shape[0] == 0:  # 0/0 would read as NaN loss
                raise ValueError(
                    f"the batch is empty (its first tensor has shape {tuple(t.shape)}): there "
                    "is no loss to differentiate. Check the data (a filter that kept nothing, "
                    "a split of size 0, a last batch cut to 0 examples)"
                )
        self._single = self._is_list and len(self._data) == 1
        self._check_data = (not self._is_list) if check_data is None else bool(check_data)
        self._deterministic: bool | None = None
        self._bypass_cache = False
        self.num_hvps = 0
        self.seconds = 0.0

    def _setup_objective(
        self, loss_fn: Any, reduction: str | None, batch_size_fn: Callable | None
    ) -> None:
        r = objective_reduction(loss_fn, reduction, closure=self.closure)
        if r is None:
            if self.closure and (not self._single or self._group is not None):
                raise ValueError(
                    "several batches with closure=True: say how batch losses combine, "
                    "reduction='mean' (weighted by batch_size_fn, default the batch size) or "
                    "reduction='sum' (the objective is the sum of the closure's values)"
                )
            r = "mean"
        self.reduction: str = r
        self._count = batch_size_fn or element_count_fn(loss_fn, closure=self.closure)
        if not self._single:
            how = "mean over all counted elements" if r == "mean" else "sum over batches"
            self.notes.append(f"objective: {how} of the batches' losses")

    # ----------------------------------------------------------------------------- hooks
    def _matmat_batch(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        """M_b V for batch ``index`` (N, k) -> (N, k). Subclasses implement it."""
        raise NotImplementedError

    def _apply_with_fallback(self, V: torch.Tensor) -> torch.Tensor:
        """One pass of ``_apply``; subclasses may retry with another back end."""
        return self._apply(V)

    def _refresh(self) -> None:
        """Drop caches that no longer match the model (subclasses with caches override)."""

    def _forget_batch(self) -> None:
        """Called after each batch of a pass (subclasses free per-batch state)."""

    # ----------------------------------------------------------------------------- the loop
    @contextmanager
    def _pass(self) -> Iterator[None]:
        """A public call's passes over the data: RNG states of a loader preserved, grad on."""
        with ExitStack() as stack:
            if not self._is_list:
                stack.enter_context(preserved_loader_rng(self._data))
            stack.enter_context(torch.enable_grad())
            yield

    def _batches(self) -> Iterator[tuple[int, float, Batch]]:
        """(index, weight c_b, batch) over one pass; batches with nothing to count skipped."""
        count = 0
        weighted = self._weighted
        for index, batch in enumerate(self._data):
            batch = move_to_device(batch, self.device)
            if self._upcast:
                batch = cast_floating(batch, self.dtype)
            count += 1
            c = float(self._count(batch)) if weighted else 1.0
            if c < 0 or not math.isfinite(c):
                raise ValueError(f"batch {index} has weight {c}; batch weights must be ≥ 0")
            if c == 0:
                continue  # e.g. every target is ignore_index: no term in the mean
            yield index, c, batch
        if count == 0 and self._group is None:
            raise ValueError("data is empty: no batches to evaluate the loss on")

    def _combine(self, fn: Callable[[int, Batch], torch.Tensor]) -> tuple[Any, float]:
        """(Σ_b c_b fn(b) or None, Σ_b c_b) over this process's batches."""
        out, total = None, 0.0
        for index, c, batch in self._batches():
            h = fn(index, batch)
            if out is None:
                out = h if c == 1.0 else h.mul_(c)
            else:
                out.add_(h, alpha=c)
            total += c
            self._forget_batch()
        return out, total

    def _finish(
        self,
        local: Callable[[], tuple[torch.Tensor | None, float, float]],
        shape: tuple[int, ...],
        like: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """One pass: ``local() -> (Σ c_b x_b, Σ c_b, Σ c_b s_b)`` -> (x, s).

        Summed over the process group if any, then divided by Σ c_b for a mean.
        """
        if self._group is None:
            out, total, scalar = local()
        else:
            out, total, scalar = reduce_pass(local, shape, like, self._reducer)
        if out is None or total == 0:
            raise ValueError("no batch has anything to count (e.g. every target is ignored)")
        if self._weighted:
            out.div_(total)
            scalar /= total
        return out, scalar

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        """Σ_b c_b M_b V (/ Σ c_b), V in chunks of ``chunk_size``: the output + one chunk."""
        k = V.shape[1]
        step = k if self.chunk_size is None else self.chunk_size

        def local() -> tuple[torch.Tensor | None, float, float]:
            if k <= step:
                return (*self._combine(lambda i, b: self._matmat_batch(i, b, V)), 0.0)
            out, total = None, 0.0
            for index, c, batch in self._batches():
                out = V.new_zeros(V.shape) if out is None else out
                for s in range(0, k, step):
                    h = self._matmat_batch(index, batch, V[:, s : s + step])
                    out[:, s : s + step].add_(h, alpha=c)
                total += c
                self._forget_batch()
            return out, total, 0.0

        return self._finish(local, tuple(V.shape), V)[0]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        if V.shape[1] == 0:
            return V.new_zeros(V.shape)
        self._refresh()
        with self._pass():
            out = self._apply_with_fallback(V)
            if self._check_data and self._deterministic is not True:
                self._verify_fixed(V, out)
        self._check_finite("a Hessian-vector product", out, defer=True)
        self.num_hvps += V.shape[1]
        self.seconds += time.perf_counter() - t0
        return out

    def _check_finite(self, what: str, t: torch.Tensor, defer: bool = False) -> None:
        # One reduction; a finite sum proves every entry finite. Products (``defer``) inside a
        # solve keep the flag on the device, read once at the end (``solving``, issue 29);
        # losses and gradients (once per solve at most) raise at once.
        if not self.check_finite:
            return
        log = getattr(self, "_finite_log", None) if defer else None
        if log is not None:
            log.add(what, t)
            return
        if bool(read(torch.isfinite(t.sum()))[0]):
            return
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"{what} is NaN or infinite; check the learning rate, the data and the model "
                "(a diverged run has no meaningful curvature)"
            )

    # ----------------------------------------------------------------------------- fixed data
    @property
    def is_deterministic(self) -> bool | None:
        """Whether the operator is a fixed matrix (None: an iterable not checked yet).

        True for a list of batches or after a passed check, False after a failed one.
        """
        return True if self._is_list and self._deterministic is None else self._deterministic

    def check_deterministic(
        self, v: torch.Tensor | None = None, *, rtol: float | None = None
    ) -> bool:
        """Apply the operator to one vector in two passes over the data; True if they agree.

        Solvers call this (or read ``is_deterministic``) before claiming convergence. ``v``
        defaults to a fixed pseudo-random vector (a private generator: global RNG untouched);
        ``rtol`` to max(√ε, 1e-7) of the compute dtype.
        """
        if v is None:
            g = torch.Generator(device="cpu").manual_seed(0)
            v = torch.randn(self.shape[0], generator=g, dtype=self.dtype).to(self.device)
        self._check(v)
        self._refresh()
        V = v.reshape(-1, 1)
        with self._pass():
            first = self._apply_with_fallback(V)
            return self._compare_passes(V, first[:, 0], rtol=rtol, raise_error=False)

    def _verify_fixed(self, V: torch.Tensor, out: torch.Tensor) -> None:
        nonzero = torch.nonzero(out.norm(dim=0) > 0)
        if len(nonzero) == 0:
            return  # nothing to compare yet; check on a later product
        j = int(nonzero[0])
        self._compare_passes(V[:, j : j + 1], out[:, j], rtol=None, raise_error=True)

    def _compare_passes(
        self, v: torch.Tensor, first: torch.Tensor, *, rtol: float | None, raise_error: bool
    ) -> bool:
        self._bypass_cache = True  # a second pass must not reuse the first pass's graphs
        try:
            second = self._apply(v)[:, 0]
        finally:
            self._bypass_cache = False
        tol = rtol if rtol is not None else max(math.sqrt(torch.finfo(self.dtype).eps), 1e-7)
        denom = float(first.norm())
        diff = float((second - first).norm()) / (denom if denom > 0 else 1.0)
        self._deterministic = bool(diff <= tol)
        if not self._deterministic and raise_error:
            raise DataChangedError(changed_data_message(diff, tol))
        return self._deterministic
