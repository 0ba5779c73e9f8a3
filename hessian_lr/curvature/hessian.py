"""The Hessian of a network's training objective as a linear operator (``op @ v``).

``HessianOperator`` is H = ∇²F(θ) for the objective F the user defines -- the mean loss over
all samples (or counted tokens) of one batch or of a data loader, or the sum -- w.r.t. the
trainable parameters (or a subset), applied as ``op @ v`` without forming H (methods notes §1).
This class owns everything shared by the back ends: the data loop and the weighting of batches,
BatchNorm modes and attention kernels (``_evaluation.py``), tied and unused parameters, dtypes,
caches and their invalidation, chunking of V. A back end is one small per-batch product in
``products.py``, chosen by name from ``PRODUCTS``:

* ``"forward-over-reverse"``: ``jvp(grad)`` over ``functional_call``; least memory.
* ``"double-backward"``: ``autograd.grad(g·v)``; works on any model; on one batch the
  first-order graph is built once and reused (``cache_graph``): the fastest exact HVP on CPU.
* ``"finite-difference"``: the Hessian-free approximation of the Super-Convergence paper.
* ``"auto"``: double backward with a cached graph on one batch, forward-over-reverse on several,
  falling back to double backward where ``torch.func`` cannot trace the model (``op.backend``
  says what ran, ``op.fallback_reason`` why).

What the operator does with the model (``op.notes`` lists what applied):

* **Modes**: Dropout and other modules in eval mode; BatchNorm in ``bn_mode`` (``"eval"``:
  running statistics; ``"train"``: batch statistics, running statistics untouched). The
  caller's model (parameters, buffers, flags, ``.grad``) is never changed.
* **Attention**: the operator's own passes use the math SDPA kernel and turn
  ``nn.MultiheadAttention``'s fast path off (the fused kernels are not twice differentiable).
* **Tied parameters** count once (N counts each tensor once) and are tied in every pass,
  closures included. **Unused parameters** have zero rows and columns.
* **Mixed precision**: float16/bfloat16 parameters are upcast (a copy) and products computed in
  float32, or in ``dtype``; ``op.dtype`` is that compute dtype.
* **Data**: see ``single_batch`` and ``reduction`` below. Passes over a loader leave torch's
  global RNG and the loader's generators as found; on an iterable other than a list, the first
  product is repeated once and compared (``check_data``): data that changes between passes
  (shuffling with ``drop_last``, train-mode BatchNorm over reshuffled batches, random
  augmentation) is not a fixed matrix and raises :class:`DataChangedError`.
* **Caches** (the first-order graph and the gradient of a single batch) are dropped when any
  parameter or floating buffer changes: storage, version counter, or values (a norm per tensor,
  which also sees ``p.data = ...`` and ``torch.nn.utils.vector_to_parameters``). Data tensors
  changed in place are not seen: build a new operator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.stateless import _reparametrize_module

from ._batches import check_same_shape, loss_implementation, move_to_device
from ._dataloop import DataChangedError, DataLoopOperator, NonFiniteError
from ._distributed import agree_any, check_replicated, resolve_group, unwrap_model
from ._evaluation import (
    BACKENDS,
    CONTEXT_NOTES,
    check_arguments,
    compute_dtype,
    fingerprint,
    needs_cudnn_off,
    select_parameters,
    state_tensors,
)
from ._fsdp import is_sharded
from .distributed import Reducer
from .linop import params_to_vector
from .products import PRODUCTS

__all__ = [
    "HessianOperator",
    "select_params",
    "NonFiniteError",
    "DataChangedError",
    "BACKENDS",
    "move_to_device",
    "fd_truncation_error",
]

Batch = Any


class _Graph(NamedTuple):
    theta: tuple[torch.Tensor, ...]  # leaves
    live: list[tuple[int, torch.Tensor]]  # (position, gradient with graph) that depend on θ
    loss: float
    grad: torch.Tensor  # (N,) detached, zeros for unused parameters


class HessianOperator(DataLoopOperator):
    """Hessian of the training objective over ``data`` w.r.t. trainable parameters, N x N.

    Args:
        model: the network. Never modified (parameters, buffers, modes, ``.grad``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (e.g. ``nn.CrossEntropyLoss()``), called
            on ``model(inputs)``; with ``closure=True``, ``loss_fn(model, batch) -> scalar`` for
            models with internal losses, several inputs or any batch structure.
        data: one batch ``(inputs, targets)`` (inputs may be a tensor, dict or nested
            structure), or an iterable of batches (list, DataLoader). One-shot iterators are
            materialized; tensors are moved to the parameters' device.
        params: ``None`` (all with ``requires_grad``), the model's parameter tensors, or names.
        backend: one of ``BACKENDS``.
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).
        chunk_size: columns per vmapped chunk in ``op @ V`` (bounds memory; ``None``: all).
        closure: ``loss_fn`` takes ``(model, batch)``.
        cache_graph: keep the first-order graph for reuse (double backward). Default: on for a
            single batch, off for several (one graph per batch would be kept).
        fd_scheme: ``"central"`` (O(δ²)) or ``"forward"`` (O(δ)) finite differences.
        fd_eps: relative step for finite differences; default ε^(1/3) (central) or ε^(1/2)
            (forward) of the compute dtype's machine epsilon.
        check_finite: raise ``NonFiniteError`` on NaN/inf loss or products (one sync per call).
        batch_size_fn: batch -> its weight in a mean over several batches (overrides the
            counted elements, see ``reduction``).
        reduction: the objective over several batches: ``"mean"`` = Σ_b c_b L_b / Σ_b c_b with
            c_b the elements batch b's mean averages over (``nn.CrossEntropyLoss``/``NLLLoss``:
            targets ≠ ``ignore_index``, class-weighted; element-wise losses: target elements;
            otherwise the batch size), or ``"sum"`` = Σ_b L_b. Read from ``loss_fn.reduction``
            for ``torch.nn`` loss modules; ``"mean"`` by default for plain functions; a closure
            over several batches must say.
        single_batch: whether ``data`` is one batch; ``None`` applies the rule of
            :func:`hessian_lr.curvature._batches.is_single_batch` (a tuple/list holding a tensor,
            or a mapping without ``closure``, is one batch; other tuples/lists and iterables are
            batches).
        check_data: compare two passes of the first product and raise ``DataChangedError`` when
            they differ. Default: on for iterables other than lists and tuples.
        dtype: compute dtype (float32 or float64). Default: the parameters' dtype, float32 for
            float16/bfloat16 parameters.
        process_group: a ``torch.distributed`` group over which ``data`` is sharded (each rank
            passes its own shard, possibly empty; products and gradients are all-reduced and
            weighted, so every rank holds the Hessian over the union of the shards); ``None``
            (default, as DDP's) uses the default group when one is initialized with more than
            one rank, ``False`` never reduces. Every rank must make the same calls
            (collectives); a ``DistributedDataParallel`` model is unwrapped. See
            ``_distributed.py``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # f(w) = mean (w x − y)², H = 2 mean x²
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.zeros(2, 1)
        >>> HessianOperator(model, nn.MSELoss(), (x, y)).to_dense()
        tensor([[5.]])
    """

    def __new__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A ``ShardedHessianOperator`` for a model with DTensor parameters (FSDP2).

        Such a model takes the sharded route by itself: finite differences of FSDP's own
        gradients on sharded vectors (``sharded.py``); any other model builds this class.
        """
        if cls is HessianOperator and is_sharded(kwargs.get("model", model)):
            from .sharded import ShardedHessianOperator

            if "model" not in kwargs:
                args = (model, *args)
            return ShardedHessianOperator(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        params: Sequence[torch.Tensor] | Sequence[str] | None = None,
        backend: Literal[
            "auto", "forward-over-reverse", "double-backward", "finite-difference"
        ] = "auto",
        bn_mode: Literal["eval", "train"] = "eval",
        chunk_size: int | None = 16,
        closure: bool = False,
        cache_graph: bool | None = None,
        fd_scheme: Literal["central", "forward"] = "central",
        fd_eps: float | None = None,
        check_finite: bool = True,
        batch_size_fn: Callable[[Batch], float] | None = None,
        reduction: Literal["mean", "sum"] | None = None,
        single_batch: bool | None = None,
        check_data: bool | None = None,
        dtype: torch.dtype | None = None,
        process_group: Any = None,
    ) -> None:
        check_arguments(model, loss_fn, backend, bn_mode, fd_scheme, chunk_size)
        model = unwrap_model(model)  # DDP: the underlying module, no hooks fire
        self._group = resolve_group(process_group)
        self._reducer = None if self._group is None else Reducer(self._group)
        self.model, self.loss_fn, self.closure = model, loss_fn, closure
        self.bn_mode, self.chunk_size, self.check_finite = bn_mode, chunk_size, check_finite
        self.fd_scheme = fd_scheme
        self.notes: list[str] = list(CONTEXT_NOTES)

        self.names, self.params, self.aliases = select_parameters(model, params)
        devices = {p.device for p in self.params}
        if len(devices) > 1:
            raise ValueError(f"parameters live on several devices {devices}")
        self.param_dtypes = sorted({p.dtype for p in self.params}, key=str)
        compute = compute_dtype(self.param_dtypes, dtype)
        super().__init__(sum(p.numel() for p in self.params), compute, self.params[0].device)
        self._upcast = any(p.dtype != compute for p in self.params)
        self._like = torch.empty(0, dtype=compute, device=self.device)
        self._describe_model()

        self._setup_data(data, single_batch, check_data)
        self._setup_objective(loss_fn, reduction, batch_size_fn)
        self._loss_impl = loss_implementation(loss_fn)
        if self._group is not None:
            self._join_group()

        eps = torch.finfo(compute).eps
        self.fd_eps = (
            fd_eps
            if fd_eps is not None
            else (eps ** (1 / 3) if fd_scheme == "central" else eps**0.5)
        )
        if not self.fd_eps > 0:
            raise ValueError(f"fd_eps must be positive, got {self.fd_eps}")

        self.requested_backend = backend
        if backend == "auto":
            # Recurrent layers on CUDA run fused cells without forward-mode AD.
            # In a process group every rank must run the same back end: no silent fallback.
            rnn_cuda = needs_cudnn_off(model, self.device)
            local = self._single or rnn_cuda or self._group is not None
            backend = "double-backward" if local else "forward-over-reverse"
        self.backend: str = backend
        self.fallback_reason: str | None = None
        self.cache_graph = self._single if cache_graph is None else bool(cache_graph)
        self._graphs: dict[int, _Graph] = {}
        self._transient: tuple[int, _Graph] | None = None
        self._grad_cache: tuple[float, torch.Tensor] | None = None
        self._key: tuple | None = None
        self._solving = False  # inside ``solving()``: the model is checked once per solve
        self.unreached: list[str] | None = None  # parameters the loss does not depend on
        self.num_gradients = 0

    # ----------------------------------------------------------------------------- set-up
    def _describe_model(self) -> None:
        if self.aliases:
            tied = ", ".join(f"{a} = {n}" for a, n in self.aliases.items())
            self.notes.append(f"tied parameters count once: {tied}")
        if self._upcast:
            names = "/".join(str(d).split(".")[-1] for d in self.param_dtypes)
            self.notes.append(
                f"{names} parameters: products computed in {str(self.dtype).split('.')[-1]} on "
                "an upcast copy (the model is not changed)"
            )
        if needs_cudnn_off(self.model, self.device):
            self.notes.append(
                "cuDNN is off for recurrent modules (its RNNs are not twice differentiable); "
                "their fused CUDA cells have no forward-mode AD: use backend='double-backward'"
            )
        self._state = state_tensors(self.model)  # what the Hessian at θ depends on
        chosen = set(self.names)
        self._fixed = [(n, p) for n, p in self.model.named_parameters() if n not in chosen]

    def _join_group(self) -> None:
        """Checks and agreements every rank makes once (collectives: all ranks build together)."""
        check_replicated(self.params, self._group, self.device)
        self._check_data = agree_any(self._check_data, self._group, self.device)
        size = torch.distributed.get_world_size(self._group)
        self.notes.append(
            f"data parallel over {size} ranks: products and gradients are all-reduced, "
            "weighted by each rank's counted elements"
        )

    @property
    def process_group(self) -> Any | None:
        """The ``torch.distributed`` group products are reduced over (None: one process)."""
        return self._group

    def agree_(self, t: torch.Tensor) -> torch.Tensor:
        """Broadcast ``t`` in place from rank 0 in a process group (no-op otherwise).

        Solvers call it on random start vectors and probes so that every rank runs the same
        recurrence and stops at the same step.
        """
        return t if self._reducer is None else self._reducer.agree_(t)

    # ----------------------------------------------------------------------------- parameters
    @staticmethod
    def _select_params(
        model: nn.Module, params: Sequence[torch.Tensor] | Sequence[str] | None
    ) -> tuple[list[str], list[torch.Tensor]]:
        """(names, tensors) of the parameters an operator on ``model`` differentiates."""
        return select_params(model, params)

    def vector_to_dict(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat (N,) vector -> {parameter name: tensor of the parameter's shape}."""
        return dict(zip(self.names, self._split(vec), strict=True))

    def dict_to_vector(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{parameter name: tensor} -> flat (N,) vector in this operator's parameter order."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"missing entries for parameters {missing}")
        return params_to_vector([tensors[n] for n in self.names]).to(self.dtype)

    def parameter_vector(self) -> torch.Tensor:
        """The current values θ of the selected parameters as a flat (N,) vector (a copy)."""
        return params_to_vector([p.detach() for p in self.params]).to(self.dtype, copy=True)

    # ----------------------------------------------------------------------------- the loss
    def _theta(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach().to(self.dtype) for p in self.params)

    def _split(self, vec: torch.Tensor) -> list[torch.Tensor]:
        # (..., N) -> views (..., *p.shape); scalar parameters included
        lead = tuple(vec.shape[:-1])
        sizes = [p.numel() for p in self.params]
        if vec.shape[-1] != sum(sizes):
            raise ValueError(f"vector has {vec.shape[-1]} entries, parameters have {sum(sizes)}")
        chunks = torch.split(vec, sizes, dim=-1)
        return [c.reshape(lead + tuple(p.shape)) for c, p in zip(chunks, self.params)]

    def _values(self, theta: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        values = {n: p.detach().to(self.dtype) for n, p in self._fixed}
        if self._upcast:
            for name, b in self.model.named_buffers():
                if b.is_floating_point():
                    values[name] = b.to(self.dtype)
        values.update(zip(self.names, theta, strict=True))
        return values

    def _loss(self, theta: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        with self._forward_context():
            return self._loss_in_context(theta, batch)

    def _loss_in_context(self, theta: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        values = self._values(theta)
        if self.closure:
            with _reparametrize_module(self.model, values, tie_weights=True):
                loss = self.loss_fn(self.model, batch)
        else:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(
                    "a batch must be (inputs, targets); for other structures pass closure=True "
                    "and loss_fn(model, batch), or single_batch=True/False if one batch was read "
                    "as several (or the reverse)"
                )
            inputs, targets = batch
            out = functional_call(self.model, values, (inputs,), tie_weights=True)
            check_same_shape(self.loss_fn, out, targets)
            loss = self._loss_impl(out, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the loss over the batch)")
        return loss.reshape(())

    # ----------------------------------------------------------------------------- caches
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

        The fingerprint (one fused norm over the parameters and a host sync) would otherwise be
        taken before each product, which costs ~0.7 ms a product on a GPU where the product
        itself takes ~1 ms. A model that changes during the solve (another thread training it)
        would make the result mix two Hessians: that raises ``RuntimeError`` at the exit.
        Nested solver calls (``trace_estimate`` calling ``xtrace``) check at the outer one.
        """
        if self._solving:
            yield
            return
        self._refresh()
        entry = fingerprint(self._state)
        self._solving = True
        try:
            yield
        finally:
            self._solving = False
        if fingerprint(self._state) != entry:
            self.release_graph()
            raise RuntimeError(
                "the model's parameters or buffers changed while a solver was using this "
                "HessianOperator: its products mixed two Hessians; rerun the solver on a model "
                "that does not change during the call"
            )

    def _remember_state(self) -> None:
        if self._key is None:
            self._key = fingerprint(self._state)

    def _forget_batch(self) -> None:
        self._transient = None  # an uncached graph lives for one batch

    def release_graph(self) -> None:
        """Drop the cached first-order graph and gradient (the next call rebuilds them)."""
        self._graphs = {}
        self._transient = None
        self._grad_cache = None
        self._key = None

    def _first_order_graph(self, index: int, batch: Batch) -> _Graph:
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
        graph = _Graph(theta, live, float(loss.detach()), flat)
        if self._bypass_cache:
            return graph
        if self.cache_graph:
            self._remember_state()
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
    def gradient(self) -> tuple[float, torch.Tensor]:
        """The objective (float) and its gradient (N,) over ``data`` at the current parameters.

        With double backward and a cached graph the gradient comes from the graph the products
        reuse (gradient + k HVPs cost one create_graph backward plus k double backwards).
        """
        self._refresh()
        if self._grad_cache is not None:
            return self._grad_cache
        t0 = time.perf_counter()
        from_graph = self.backend == "double-backward" and self.cache_graph
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
                loss, g_b = (
                    self._graph_gradient(index, batch)
                    if from_graph
                    else self._batch_gradient(theta, batch)
                )
                out = g_b.mul_(c) if out is None else out.add_(g_b, alpha=c)
                loss_sum += c * loss
                total += c
                self._forget_batch()
            return out, total, loss_sum

        g, loss = self._finish(local, (self.shape[0],), self._like)
        return loss, g

    def _graph_gradient(self, index: int, batch: Batch) -> tuple[float, torch.Tensor]:
        graph = self._first_order_graph(index, batch)
        return graph.loss, graph.grad.clone()

    def _batch_gradient(
        self, theta: tuple[torch.Tensor, ...] | None, batch: Batch
    ) -> tuple[float, torch.Tensor]:
        leaves = tuple(t.detach().requires_grad_(True) for t in (theta or self._theta()))
        loss = self._loss(leaves, batch)
        self._check_finite("the loss", loss.detach())
        gs = torch.autograd.grad(loss, leaves, allow_unused=True)
        self._note_unreached(gs)
        flat = [torch.zeros_like(t) if x is None else x for x, t in zip(gs, leaves)]
        return float(loss.detach()), params_to_vector(flat)

    # ----------------------------------------------------------------------------- products
    def _matmat_batch(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        return PRODUCTS[self.backend](self, index, batch, V)

    def _apply_with_fallback(self, V: torch.Tensor) -> torch.Tensor:
        try:
            return self._apply(V)
        except (NonFiniteError, DataChangedError):
            raise
        except (RuntimeError, NotImplementedError) as err:
            if self.backend != "forward-over-reverse":
                raise
            if self.requested_backend != "auto":
                raise type(err)(
                    f"{err}\n(backend='forward-over-reverse' runs the model under torch.func; "
                    "where torch.func cannot trace it, backend='double-backward' works on any "
                    "model)"
                ) from err
            self.backend = "double-backward"
            self.fallback_reason = f"torch.func could not trace the model: {err}"
            self.notes.append("auto back end fell back to double-backward (see fallback_reason)")
            return self._apply(V)

    def __repr__(self) -> str:
        return (
            f"HessianOperator(N={self.shape[0]}, backend={self.backend!r}, "
            f"bn_mode={self.bn_mode!r}, reduction={self.reduction!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )


# --------------------------------------------------------------------------------- helpers
def select_params(
    model: nn.Module, params: Sequence[torch.Tensor] | Sequence[str] | None = None
) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors): the parameters a ``HessianOperator`` on ``model`` differentiates.

    ``params``: ``None`` (every parameter with ``requires_grad``), tensors of the model, or
    names. Each tensor appears once (a tied weight under its first name), frozen ones are
    refused with a ValueError.
    """
    names, tensors, _ = select_parameters(model, params)
    return names, tensors


def fd_truncation_error(
    op_exact: HessianOperator, op_fd: HessianOperator, v: torch.Tensor
) -> float:
    """Relative error ‖H_fd v − H v‖ / ‖H v‖ of a finite-difference operator vs an exact one."""
    exact = op_exact @ v
    approx = op_fd @ v
    denom = float(exact.norm())
    return float((approx - exact).norm()) / (denom if denom > 0 else math.inf)
