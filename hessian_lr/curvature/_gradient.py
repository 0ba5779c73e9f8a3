"""The first-order side of a curvature operator: the gradient, its graph, and their caches.

A mixin of :class:`._base.CurvatureOperator`: the gradient of the objective over the data
(``gradient``, ``gradient_at``), the per-batch first-order graph that double-backward products
reuse, and the invalidation of both when the model changes -- any parameter or floating buffer,
by storage, version counter or values (:func:`._evaluation.fingerprint`), checked before each
public call, or once per solver call inside ``solving()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ._dataloop import NonFiniteError
from ._evaluation import fingerprint
from ._host import FiniteLog, read
from .linop import params_to_vector
from .products import FirstOrderGraph

__all__ = ["GradientCache"]

Batch = Any


class GradientCache:
    """Gradient and first-order graph caches (mixed into ``CurvatureOperator``)."""

    _graphs: dict[int, FirstOrderGraph]
    _transient: tuple[int, FirstOrderGraph] | None
    _grad_cache: tuple[float, torch.Tensor] | None
    _key: tuple | None
    _solving: bool
    unreached: list[str] | None
    num_gradients: int
    cache_graph: bool

    def _refresh(self) -> None:
        """Drop caches when the model changed since they were built."""
        if self._solving:
            return  # checked once for the whole solve (``solving``)
        if self._graphs or self._grad_cache is not None:
            if fingerprint(self._state) != self._key:
                self.release_graph()

    @contextmanager
    def solving(self) -> Iterator[None]:
        """One solver call: the model is fingerprinted on entry and exit, not at every product.

        The fingerprint (a projection per tensor and a host sync) would otherwise be taken
        before each product. A model that changes during the solve (another thread training
        it) would make the result mix two matrices: that raises ``RuntimeError`` at the exit.
        Nested solver calls (``trace_estimate`` calling ``xtrace``) check at the outer one.
        """
        if self._solving:
            yield
            return
        entry = fingerprint(self._state)  # one read; also decides whether the caches are stale
        if (self._graphs or self._grad_cache is not None) and entry != self._key:
            self.release_graph()
        self._solving, self._entry_key = True, entry
        self._finite_log = FiniteLog()  # NaN/inf checks stay on the device until the exit
        try:
            yield
            self._flush_finite()
        finally:
            self._solving, self._entry_key = False, None
            self._finite_log = None
        if fingerprint(self._state) != entry:
            self.release_graph()
            raise RuntimeError(
                f"the model's parameters or buffers changed while a solver was using this "
                f"{type(self).__name__}: its products mixed two matrices; rerun the solver on a "
                "model that does not change during the call"
            )

    def _flush_finite(self) -> None:
        """Read the NaN/inf checks accumulated during a solve (one sync); raise on a failure.

        The error names the first failing check and its index among the solve's checks, as
        the per-product check outside a solve would have (issue 29).
        """
        log = getattr(self, "_finite_log", None)
        failed = None if log is None else log.first_failure()
        if failed is not None:
            index, what = failed
            raise NonFiniteError(
                f"{what} is NaN or infinite (check {index + 1} of {len(log)} in this solve); "
                "check the learning rate, the data and the model (a diverged run has no "
                "meaningful curvature)"
            )

    def _forget_batch(self) -> None:
        self._transient = None  # an uncached graph lives for one batch

    def release_graph(self) -> None:
        """Drop the cached first-order graph and gradient (the next call rebuilds them)."""
        self._graphs = {}
        self._transient = None
        self._grad_cache = None
        self._key = None

    def _first_order_graph(self, index: int, batch: Batch) -> FirstOrderGraph:
        """θ leaves and the gradient of batch ``index`` with its graph, cached when asked."""
        if not self._bypass_cache:
            if index in self._graphs:
                return self._graphs[index]
            if self._transient is not None and self._transient[0] == index:
                return self._transient[1]
        theta = tuple(t.requires_grad_(True) for t in self._theta())
        loss = self._loss(theta, batch)
        self._check_finite("the loss", loss.detach())
        gs = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        self._note_unreached(gs)
        live = [(i, g) for i, g in enumerate(gs) if g is not None and g.requires_grad]
        flat = params_to_vector(
            [torch.zeros_like(t) if g is None else g.detach() for g, t in zip(gs, theta)]
        )
        graph = FirstOrderGraph(theta, live, float(read(loss)[0]), flat)
        if self._bypass_cache:
            return graph
        if self.cache_graph:
            if self._key is None:  # in a solve: the entry fingerprint (no further read)
                entry = getattr(self, "_entry_key", None)
                self._key = (
                    entry if self._solving and entry is not None else fingerprint(self._state)
                )
            self._graphs[index] = graph
        else:
            self._transient = (index, graph)
        return graph

    def _note_unreached(self, grads: Sequence[torch.Tensor | None]) -> None:
        if self.unreached is None:
            self.unreached = [n for n, g in zip(self.names, grads) if g is None]
            if self.unreached:
                self.notes.append(
                    f"parameters the loss does not reach (zero rows/columns): {self.unreached}"
                )

    # ----------------------------------------------------------------------------- gradient
    @property
    def _uses_graph(self) -> bool:
        """Whether the products use the cached first-order graph (then so does the gradient)."""
        return False

    def gradient(self) -> tuple[float, torch.Tensor]:
        """The objective (float) and its gradient (N,) over ``data`` at the current parameters.

        When the products reuse a cached first-order graph the gradient comes from it (gradient
        + k HVPs cost one create_graph backward plus k double backwards).
        """
        self._refresh()
        if self._grad_cache is not None:
            return self._grad_cache
        t0 = time.perf_counter()
        from_graph = self._uses_graph and self.cache_graph
        with self._pass():
            loss, g = self._gradient_pass(None, from_graph=from_graph)
        if from_graph and self._group is None:
            # (in a process group every call runs its collectives: caches are per rank)
            self._grad_cache = (loss, g)
        self.num_gradients += 1
        self.seconds += time.perf_counter() - t0
        self._check_finite("the gradient", g)
        return loss, g

    def gradient_at(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The objective and its gradient (N,) at other parameter values θ, on this data.

        ``theta`` is a flat (N,) vector in this operator's parameter order (the other
        parameters keep their current values). The model is not changed; nothing is cached.
        Used e.g. for a same-batch secant g(θ_t) − g(θ_{t−1}).
        """
        self._check(theta)
        if theta.ndim != 1:
            raise ValueError(f"theta must be a flat vector of shape ({self.shape[0]},)")
        t0 = time.perf_counter()
        with self._pass():
            loss, g = self._gradient_pass(tuple(t.detach() for t in self._split(theta)))
        self.num_gradients += 1
        self.seconds += time.perf_counter() - t0
        self._check_finite("the gradient", g)
        return loss, g

    def _gradient_pass(
        self, theta: tuple[torch.Tensor, ...] | None, *, from_graph: bool = False
    ) -> tuple[float, torch.Tensor]:
        """(objective, gradient) by one first-order pass over the data at θ (None: current)."""

        def local() -> tuple[torch.Tensor | None, float, float]:
            out, total, loss_sum = None, 0.0, 0.0
            for index, c, batch in self._batches():
                if from_graph:
                    graph = self._first_order_graph(index, batch)
                    loss, g_b = graph.loss, graph.grad.clone()
                else:
                    loss, g_b = self._batch_gradient(theta, batch)
                out = g_b.mul_(c) if out is None else out.add_(g_b, alpha=c)
                loss_sum += c * loss
                total += c
                self._forget_batch()
            return out, total, loss_sum

        g, loss = self._finish(local, (self.shape[0],), self._like)
        return loss, g

    def _batch_gradient(
        self, theta: tuple[torch.Tensor, ...] | None, batch: Batch
    ) -> tuple[float, torch.Tensor]:
        if theta is None:
            leaves = tuple(t.requires_grad_(True) for t in self._theta())
        else:
            leaves = tuple(t.detach().clone().requires_grad_(True) for t in theta)
        loss = self._loss(leaves, batch)
        self._check_finite("the loss", loss.detach())
        gs = torch.autograd.grad(loss, leaves, allow_unused=True)
        self._note_unreached(gs)
        flat = [torch.zeros_like(t) if x is None else x for x, t in zip(gs, leaves)]
        return float(loss.detach()), params_to_vector(flat)
