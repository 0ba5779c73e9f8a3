"""Exact and approximate Hessian-vector products of a network's mean loss, as a linear operator.

``HessianOperator`` is the Hessian H = d²L/dθ² of the mean loss L(θ) over a batch or a data
loader, w.r.t. the trainable parameters (or a subset), applied as ``op @ v`` without ever forming
H. Back ends (methods notes §1):

* ``"forward-over-reverse"``: ``torch.func.jvp`` of ``torch.func.grad`` over ``functional_call``
  (Pearlmutter 1994). Least memory; ``op @ V`` with k columns is ``torch.func.vmap`` over it in
  chunks of ``chunk_size`` (the GPU path).
* ``"double-backward"``: ``torch.autograd.grad(g·v)`` on a gradient built with
  ``create_graph=True``. Works on any model. On one batch the first-order graph is built once and
  reused for every product (``cache_graph``), which is the fastest exact HVP on CPU; ``op @ V``
  uses ``is_grads_batched`` (vmap over the backward pass).
* ``"finite-difference"``: the Hessian-free approximation (Martens 2010) used by the
  Super-Convergence paper, forward ``(g(θ+δv) − g(θ))/δ`` or central
  ``(g(θ+δv) − g(θ−δv))/(2δ)`` with δ = ``fd_eps``·max(1, ‖θ‖)/‖v‖. On ReLU networks the gradient
  has kinks and this can be far off for any δ: measure it against an exact back end.

``"auto"`` picks double backward with a cached graph for a single batch (one graph, many
products) and forward-over-reverse otherwise, falling back to double backward when ``torch.func``
cannot trace the model; ``op.backend`` says what ran and ``op.fallback_reason`` why.

BatchNorm (``bn_mode``): ``"eval"`` uses running statistics (the Hessian of a fixed function of θ);
``"train"`` uses batch statistics. Other modules (Dropout) are always in eval mode so the operator
is deterministic. The caller's model is never changed: ``.training`` flags, running statistics and
``num_batches_tracked`` are bit-identical afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.utils.stateless import _reparametrize_module

from .linop import LinearOperator, params_to_vector, vector_to_params

__all__ = ["HessianOperator", "NonFiniteError", "BACKENDS"]

BACKENDS = ("auto", "forward-over-reverse", "double-backward", "finite-difference")
Batch = Any


class NonFiniteError(ValueError):
    """The loss, the gradient or a Hessian-vector product is NaN or infinite."""


def _is_single_batch(data: Any) -> bool:
    if isinstance(data, Mapping):
        return True
    if isinstance(data, (tuple, list)) and len(data) > 0 and isinstance(data[0], torch.Tensor):
        return True
    return False


def _default_batch_size(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, Mapping) else batch
    for item in values:
        if isinstance(item, torch.Tensor) and item.ndim > 0:
            return item.shape[0]
    raise ValueError(
        "cannot infer the batch size: no tensor with a batch dimension in the batch; "
        "pass batch_size_fn"
    )


def move_to_device(batch: Batch, device: torch.device) -> Batch:
    """Tensors of a batch (nested tuples, lists, dicts) moved to ``device``; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


class HessianOperator(LinearOperator):
    """Hessian of the mean loss over ``data`` w.r.t. trainable parameters, as an N x N operator.

    Args:
        model: the network. Never modified (parameters, buffers, modes).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` mean over the batch, e.g.
            ``nn.CrossEntropyLoss()``; with ``closure=True``, ``loss_fn(model, batch) -> scalar``
            for models with internal losses or dict batches.
        data: one batch ``(inputs, targets)`` (or a dict with ``closure=True``), or an iterable of
            batches. Batches are weighted by size, so the loss is the true mean over all samples.
            One-shot iterators are materialized; tensors are moved to the parameters' device.
        params: the parameters to differentiate w.r.t.: ``None`` (all with ``requires_grad``),
            a sequence of the model's parameter tensors, or of their names. Others stay fixed.
        backend: one of ``BACKENDS``.
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).
        chunk_size: columns per vmapped chunk in ``op @ V`` (bounds memory).
        closure: ``loss_fn`` takes ``(model, batch)``.
        cache_graph: keep the first-order graph for reuse (double backward). Default: on for a
            single batch, off for a loader (one graph per batch would be kept).
        fd_scheme: ``"central"`` (O(δ²)) or ``"forward"`` (O(δ)) finite differences.
        fd_eps: relative step for finite differences; default ε^(1/3) (central) or ε^(1/2)
            (forward) of the dtype's machine epsilon.
        check_finite: raise ``NonFiniteError`` on NaN/inf loss or products (one sync per call).
        batch_size_fn: batch -> number of samples, for batches of unusual structure.
    """

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
        batch_size_fn: Callable[[Batch], int] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if bn_mode not in ("eval", "train"):
            raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
        if fd_scheme not in ("central", "forward"):
            raise ValueError(f"fd_scheme must be 'central' or 'forward', got {fd_scheme!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")

        self.model = model
        self.loss_fn = loss_fn
        self.closure = closure
        self.bn_mode = bn_mode
        self.chunk_size = chunk_size
        self.check_finite = check_finite
        self.fd_scheme = fd_scheme
        self._batch_size_fn = batch_size_fn or _default_batch_size

        self.names, self.params = self._select_params(model, params)
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1:
            raise ValueError(f"parameters have mixed dtypes {dtypes}; convert the model first")
        if len(devices) > 1:
            raise ValueError(f"parameters live on several devices {devices}")
        n = sum(p.numel() for p in self.params)
        super().__init__(n, self.params[0].dtype, self.params[0].device)
        chosen = set(self.names)
        self._fixed = {
            name: p.detach() for name, p in model.named_parameters() if name not in chosen
        }

        # Data: one batch, a re-iterable (DataLoader, list), or a one-shot iterator.
        self._single = _is_single_batch(data)
        if self._single:
            self._data: Any = [data]
        elif isinstance(data, Iterator) or iter(data) is data:
            self._data = list(data)
        else:
            self._data = data
        if self._single is False and isinstance(self._data, list) and len(self._data) == 0:
            raise ValueError("data is empty: no batches to evaluate the loss on")
        self._single = self._single or (isinstance(self._data, list) and len(self._data) == 1)

        eps = torch.finfo(self.dtype).eps
        self.fd_eps = (
            fd_eps
            if fd_eps is not None
            else (eps ** (1 / 3) if fd_scheme == "central" else eps**0.5)
        )
        if self.fd_eps <= 0:
            raise ValueError(f"fd_eps must be positive, got {self.fd_eps}")

        self.requested_backend = backend
        if backend == "auto":
            backend = "double-backward" if self._single else "forward-over-reverse"
        self.backend: str = backend
        self.fallback_reason: str | None = None
        self.cache_graph = self._single if cache_graph is None else bool(cache_graph)
        self._graphs: list[tuple[int, torch.Tensor, tuple[torch.Tensor, ...], tuple]] | None = None
        self._grad_cache: tuple[float, torch.Tensor] | None = None
        self._versions: tuple[int, ...] | None = None
        self.num_hvps = 0
        self.num_gradients = 0
        self.seconds = 0.0

    # ----------------------------------------------------------------------------- parameters
    @staticmethod
    def _select_params(
        model: nn.Module, params: Sequence[torch.Tensor] | Sequence[str] | None
    ) -> tuple[list[str], list[torch.Tensor]]:
        named = dict(model.named_parameters())
        if params is None:
            names = [n for n, p in named.items() if p.requires_grad]
        else:
            params = list(params)
            if len(params) == 0:
                raise ValueError("params is empty: give at least one parameter")
            if all(isinstance(p, str) for p in params):
                missing = [p for p in params if p not in named]
                if missing:
                    raise ValueError(f"no parameters named {missing} in the model")
                names = list(params)
            else:
                by_id = {id(p): n for n, p in named.items()}
                unknown = [i for i, p in enumerate(params) if id(p) not in by_id]
                if unknown:
                    raise ValueError(
                        f"params at positions {unknown} are not parameters of the model"
                    )
                names = [by_id[id(p)] for p in params]
            frozen = [n for n in names if not named[n].requires_grad]
            if frozen:
                raise ValueError(f"parameters {frozen} are frozen (requires_grad=False)")
        if not names:
            raise ValueError("the model has no trainable parameters (all requires_grad=False)")
        return names, [named[n] for n in names]

    def vector_to_dict(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat (N,) vector -> {parameter name: tensor of the parameter's shape}."""
        return dict(zip(self.names, vector_to_params(vec, self.params), strict=True))

    def dict_to_vector(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{parameter name: tensor} -> flat (N,) vector in this operator's parameter order."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"missing entries for parameters {missing}")
        return params_to_vector([tensors[n] for n in self.names])

    def parameter_vector(self) -> torch.Tensor:
        """The current values θ of the selected parameters as a flat (N,) vector (a copy)."""
        return params_to_vector([p.detach() for p in self.params]).clone()

    # ----------------------------------------------------------------------------- the loss
    @contextmanager
    def _modes(self) -> Iterator[None]:
        """Put modules in the operator's evaluation mode; restore every flag afterwards."""
        saved = [
            (m, m.training, getattr(m, "track_running_stats", None)) for m in self.model.modules()
        ]
        try:
            for m in self.model.modules():
                if self.bn_mode == "train" and _is_batchnorm(m):
                    # Batch statistics without touching running_mean/var or num_batches_tracked.
                    m.training = True
                    m.track_running_stats = False
                else:
                    m.training = False
            yield
        finally:
            for m, training, track in saved:
                m.training = training
                if track is not None:
                    m.track_running_stats = track

    def _batches(self) -> Iterator[tuple[int, Batch]]:
        count = 0
        for batch in self._data:
            batch = move_to_device(batch, self.device)
            n = int(self._batch_size_fn(batch))
            if n <= 0:
                raise ValueError("a batch has no samples")
            count += 1
            yield n, batch
        if count == 0:
            raise ValueError("data is empty: no batches to evaluate the loss on")

    def _loss(self, theta: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        values = {**self._fixed, **dict(zip(self.names, theta, strict=True))}
        if self.closure:
            with _reparametrize_module(self.model, values):
                loss = self.loss_fn(self.model, batch)
        else:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(
                    "a batch must be (inputs, targets); for other structures pass closure=True "
                    "and loss_fn(model, batch)"
                )
            inputs, targets = batch
            loss = self.loss_fn(functional_call(self.model, values, (inputs,)), targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the mean loss over the batch)")
        return loss.reshape(())

    def _check_finite(self, what: str, t: torch.Tensor) -> None:
        # One reduction; a finite sum proves every entry finite. Only when the sum is not
        # finite (NaN/inf, or an overflow of huge finite entries) is the full check run.
        if not self.check_finite or bool(torch.isfinite(t.sum())):
            return
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"{what} is NaN or infinite; check the learning rate, the data and the model "
                "(a diverged run has no meaningful curvature)"
            )

    def _theta(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach() for p in self.params)

    # ----------------------------------------------------------------------------- gradient
    def gradient(self) -> tuple[float, torch.Tensor]:
        """Mean loss (float) and its gradient (N,) over ``data`` at the current parameters."""
        if self._grad_cache is not None and self._versions == self._param_versions():
            return self._grad_cache
        t0 = time.perf_counter()
        if self.backend == "double-backward" and self.cache_graph and self._single:
            # Build the graph the products will reuse: gradient + k HVPs then cost one
            # create_graph backward plus k double backwards (no separate first-order pass).
            with self._modes():
                for index, (_, batch) in enumerate(self._batches()):
                    self._first_order_graph(index, batch)
            self.num_gradients += 1
            self.seconds += time.perf_counter() - t0
            if self._grad_cache is not None:
                self._check_finite("the gradient", self._grad_cache[1])
                return self._grad_cache
        total, loss_sum, g_sum = (
            0,
            0.0,
            torch.zeros(self.shape[0], dtype=self.dtype, device=self.device),
        )
        with self._modes():
            for n, batch in self._batches():
                theta = tuple(p.detach().requires_grad_(True) for p in self.params)
                loss = self._loss(theta, batch)
                self._check_finite("the loss", loss.detach())
                gs = torch.autograd.grad(loss, theta, allow_unused=True)
                g = params_to_vector(
                    [torch.zeros_like(t) if x is None else x for x, t in zip(gs, theta)]
                )
                loss_sum += n * float(loss.detach())
                g_sum += n * g
                total += n
        self.num_gradients += 1
        self.seconds += time.perf_counter() - t0
        g_mean = g_sum / total
        self._check_finite("the gradient", g_mean)
        return loss_sum / total, g_mean

    # ----------------------------------------------------------------------------- products
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with self._modes():
            if self.backend == "forward-over-reverse":
                try:
                    out = self._accumulate(V, self._hvp_forward_over_reverse)
                except (RuntimeError, NotImplementedError) as err:
                    if self.requested_backend != "auto":
                        raise
                    self.backend = "double-backward"
                    self.fallback_reason = f"torch.func could not trace the model: {err}"
                    out = self._accumulate(V, self._hvp_double_backward)
            elif self.backend == "double-backward":
                out = self._accumulate(V, self._hvp_double_backward)
            else:
                out = self._accumulate(V, self._hvp_finite_difference)
        self._check_finite("a Hessian-vector product", out)
        self.num_hvps += V.shape[1]
        self.seconds += time.perf_counter() - t0
        return out

    def _accumulate(
        self, V: torch.Tensor, hvp_batch: Callable[[int, Batch, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Σ_b n_b H_b V / Σ_b n_b, with V split in chunks of ``chunk_size`` columns."""
        k = V.shape[1]
        step = k if self.chunk_size is None else self.chunk_size

        def one_batch(index: int, batch: Batch) -> torch.Tensor:
            if k <= step:
                return hvp_batch(index, batch, V)
            return torch.cat(
                [hvp_batch(index, batch, V[:, s : s + step]) for s in range(0, k, step)], dim=1
            )

        if self._single:  # no weighting: skip the extra passes over (N, k)
            ((_, batch),) = list(self._batches())
            return one_batch(0, batch)
        total, out = 0, None
        for index, (n, batch) in enumerate(self._batches()):
            h = one_batch(index, batch)
            out = h.mul_(n) if out is None else out.add_(h, alpha=n)
            total += n
        return out.div_(total)

    def _hvp_forward_over_reverse(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        theta = self._theta()
        grad_fn = grad(lambda th: self._loss(th, batch))

        def hvp(v: torch.Tensor) -> torch.Tensor:
            tangents = tuple(vector_to_params(v, self.params))
            return params_to_vector(jvp(grad_fn, (theta,), (tangents,))[1])

        if V.shape[1] == 1:
            return hvp(V[:, 0]).unsqueeze(1)
        return vmap(hvp, in_dims=1, out_dims=1)(V)

    def _first_order_graph(self, index: int, batch: Batch) -> tuple:
        """(θ leaves, gradient tuple with graph), cached per batch when ``cache_graph``."""
        if self._graphs is not None and self._versions != self._param_versions():
            self.release_graph()  # parameters were updated in place since the graph was built
        if self.cache_graph and self._graphs is not None and index < len(self._graphs):
            return self._graphs[index]
        theta = tuple(p.detach().requires_grad_(True) for p in self.params)
        loss = self._loss(theta, batch)
        self._check_finite("the loss", loss.detach())
        gs = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        gs = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(gs, theta))
        entry = (theta, gs, loss.detach())
        if self.cache_graph:
            if self._graphs is None:
                self._graphs = []
                self._versions = self._param_versions()
            self._graphs.append(entry)
            if self._single:
                g = params_to_vector([g.detach() for g in gs])
                self._grad_cache = (float(loss.detach()), g)
        return entry

    def _hvp_double_backward(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        theta, gs, _ = self._first_order_graph(index, batch)
        if V.shape[1] == 1 or V.device.type == "cpu":
            # On CPU, is_grads_batched (vmap over the backward) measured 1.2x slower than a
            # loop over the columns on the cached graph (benchmarks/bench_curvature.py).
            return self._columns_double_backward(theta, gs, V)
        vs = vector_to_params(V.T, self.params)  # tensors of shape (k, *p.shape)
        try:
            hv = torch.autograd.grad(
                gs,
                theta,
                grad_outputs=vs,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
        except RuntimeError:  # an op without a batching rule: one column at a time
            return self._columns_double_backward(theta, gs, V)
        hv = [
            torch.zeros((V.shape[1], *t.shape), dtype=t.dtype, device=t.device) if h is None else h
            for h, t in zip(hv, theta)
        ]
        return torch.cat([h.reshape(V.shape[1], -1) for h in hv], dim=1).T

    def _columns_double_backward(
        self, theta: tuple[torch.Tensor, ...], gs: tuple[torch.Tensor, ...], V: torch.Tensor
    ) -> torch.Tensor:
        """One double backward per column; an uncached graph is freed after the last one."""
        k = V.shape[1]
        cols = []
        for j in range(k):
            vj = vector_to_params(V[:, j], self.params)
            keep = self.cache_graph or j < k - 1
            hj = torch.autograd.grad(
                gs, theta, grad_outputs=vj, retain_graph=keep, allow_unused=True
            )
            cols.append(params_to_vector(_zeros_for_none(hj, theta)))
        return torch.stack(cols, dim=1)

    def _hvp_finite_difference(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        theta = self._theta()
        theta_norm = float(params_to_vector(theta).norm())
        grad_fn = grad(lambda th: self._loss(th, batch))

        def g_at(direction: torch.Tensor, delta: float) -> torch.Tensor:
            shifted = tuple(
                t + delta * d for t, d in zip(theta, vector_to_params(direction, self.params))
            )
            return params_to_vector(grad_fn(shifted))

        cols = []
        g0 = None
        for j in range(V.shape[1]):
            v = V[:, j]
            v_norm = float(v.norm())
            if v_norm == 0.0:
                cols.append(torch.zeros_like(v))
                continue
            delta = self.fd_eps * max(1.0, theta_norm) / v_norm
            if self.fd_scheme == "central":
                cols.append((g_at(v, delta) - g_at(v, -delta)) / (2 * delta))
            else:
                if g0 is None:
                    g0 = params_to_vector(grad_fn(theta))
                cols.append((g_at(v, delta) - g0) / delta)
        return torch.stack(cols, dim=1)

    def _param_versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.model.parameters())

    def release_graph(self) -> None:
        """Drop the cached first-order graph (frees its memory; the next product rebuilds it)."""
        self._graphs = None
        self._grad_cache = None
        self._versions = None

    def __repr__(self) -> str:
        return (
            f"HessianOperator(N={self.shape[0]}, backend={self.backend!r}, "
            f"bn_mode={self.bn_mode!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def _zeros_for_none(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def fd_truncation_error(
    op_exact: HessianOperator, op_fd: HessianOperator, v: torch.Tensor
) -> float:
    """Relative error ‖H_fd v − H v‖ / ‖H v‖ of a finite-difference operator vs an exact one."""
    exact = op_exact @ v
    approx = op_fd @ v
    denom = float(exact.norm())
    return float((approx - exact).norm()) / (denom if denom > 0 else math.inf)
