"""The curvature operator base: everything a curvature matrix of a network's loss shares.

``CurvatureOperator`` is M = Σ_b c_b M_b (/ Σ_b c_b for a mean) for a per-batch symmetric
matrix M_b of the loss L_b(θ) of a model on batch b -- the layout of curvlinops'
``_empirical_risk.py``. The base owns (methods notes §1):

* **parameters** (:func:`._evaluation.select_parameters`): the trainable ones or a subset, each
  tensor once (tied weights count once and stay tied in every pass, closures included), frozen
  ones refused, unused ones with zero rows and columns (``unreached``); flat (N,) vectors <->
  parameter-shaped tensors (``vector_to_dict``, ``dict_to_vector``, ``parameter_vector``);
* **dtype**: float16/bfloat16 parameters are upcast (a copy) and products computed in float32,
  or in ``dtype``;
* **model evaluation** (``_loss``, ``_predict``): on a shadow copy of the module tree that shares
  the caller's tensors (:func:`._evaluation.shadow_module`: Dropout and the like in eval mode,
  BatchNorm in ``bn_mode``; the caller's modules are never switched, so threads sharing the model
  see nothing), attention on the math kernel, DDP/DataParallel/``torch.compile`` wrappers
  unwrapped. Each pass evaluates on fresh copies of θ and of every buffer, so a forward that
  writes its own parameters or buffers (data-dependent initialisation such as ActNorm, LSUV's
  ``.data.copy_``) writes the copies, never the caller's model; one forward before the first
  pass checks for such writes and refuses the model with a ``ValueError`` (``_check_writes``);
* **loss and reduction**: ``loss_fn(outputs, targets)`` or a ``closure`` ``loss_fn(model,
  batch)``; several batches combine into the mean over all counted elements or the sum;
* **the data loop and batch weights, chunks of V, the fixed-data check** (``_dataloop.py``);
* **caches**: the first-order graph and gradient of each batch, dropped when any parameter or
  floating buffer changes (storage, version counter or values, see
  :func:`._evaluation.fingerprint`); ``solving()`` checks once per solver call;
* **the gradient** (``gradient``, ``gradient_at``) of the same objective;
* **the symmetry probe**: before the first product the operator is applied to three random
  vectors U (a private generator, seed 0: the global RNG is untouched) and UᵀMU is compared with
  its transpose; once per model and way of computing (``_probe_key``), remembered for later
  operators on the same model. A symmetric matrix computed by a wrong autograd formula
  (torch's double backward of ``weight_norm``, a custom ``autograd.Function`` with a wrong
  second derivative) fails it; :meth:`_on_asymmetric` decides what happens (the Hessian falls
  back to finite differences);
* **process groups** (``_distributed.py``): data sharded over ranks, products all-reduced.

What a subclass implements (``hessian.py`` is the worked example; a GGN in ~20 lines is in
``tests/curvature/test_op_base.py``):

1. ``__init__``: its own keywords, then ``super().__init__(model, loss_fn, data, **base)``.
2. ``_matmat_batch(self, index, batch, V) -> (N, k)``: M_b V for one batch, V of shape (N, k) in
   ``self.dtype``. Build it from the helpers: ``self._theta()`` (θ: fresh detached copies in the
   compute dtype), ``self._loss(theta, batch)`` (the scalar L_b at θ, evaluated as above),
   ``self._predict(theta, batch)`` (``(outputs, targets)``, without a closure) and
   ``self._loss_impl(outputs, targets)`` (the loss on outputs), ``self._split(v)`` ((..., N) ->
   parameter-shaped views), ``self._objective(index, batch)`` (the
   :class:`.products.BatchObjective` a per-batch product of ``products.py`` takes), and
   ``params_to_vector`` from ``linop``. Never write to the caller's model.
3. Optionally: ``_probe_symmetry`` (False for approximate products), ``_probe_key`` (what
   else the probe's verdict depends on: it runs once per model and key), ``_on_asymmetric``
   (what to do when the probe fails; default: raise), ``_uses_graph`` (the products use the cached
   first-order graph, so ``gradient()`` reads it too), ``__repr__``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.stateless import _reparametrize_module

from ._batches import check_same_shape, loss_implementation
from ._dataloop import DataLoopOperator
from ._distributed import agree_any, check_replicated, resolve_group, unwrap_model
from ._evaluation import (
    CONTEXT_NOTES,
    compute_dtype,
    evaluation_context,
    needs_cudnn_off,
    select_parameters,
    shadow_module,
    state_tensors,
)
from ._gradient import GradientCache
from .distributed import Reducer
from .linop import params_to_vector
from .products import FirstOrderGraph

__all__ = ["CurvatureOperator", "SYMMETRY_RTOL"]

Batch = Any
#: Relative asymmetry ‖UᵀMU − (UᵀMU)ᵀ‖_F / (√(2(k−1)) ‖MU‖_F) above which the probe fails, by
#: compute dtype: ~10⁴–10¹⁰ times the rounding of one product, far below the 24–44 % of a wrong
#: second derivative (torch's ``weight_norm``).
SYMMETRY_RTOL = {torch.float64: 1e-6, torch.float32: 1e-2}
_PROBES = 3  # three probe vectors: three independent pairs (uᵢᵀMuⱼ vs uⱼᵀMuᵢ)
#: model -> {how its products are computed: measured asymmetry}: the probe runs once per model
#: and way of computing (an estimator that builds an operator every k steps pays it once).
_PROBED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, float]] = weakref.WeakKeyDictionary()


class _Objective:
    """One batch's objective as a per-batch product sees it (``products.BatchObjective``)."""

    def __init__(self, op: CurvatureOperator, index: int, batch: Batch) -> None:
        self._op, self._index, self._batch = op, index, batch
        self.fd_scheme, self.fd_eps = op.fd_scheme, op.fd_eps

    def loss(self, theta: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._op._loss(theta, self._batch)

    def theta(self) -> tuple[torch.Tensor, ...]:
        return self._op._theta()

    def split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return self._op._split(v)

    def graph(self) -> FirstOrderGraph:
        return self._op._first_order_graph(self._index, self._batch)


class CurvatureOperator(GradientCache, DataLoopOperator):
    """Σ_b c_b M_b (/ Σ_b c_b) for a per-batch curvature M_b of a model's loss, N x N.

    Args:
        model: the network. Never modified (parameters, buffers, modes, ``.grad``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (e.g. ``nn.CrossEntropyLoss()``), called
            on ``model(inputs)``; with ``closure=True``, ``loss_fn(model, batch) -> scalar`` for
            models with internal losses, several inputs or any batch structure.
        data: one batch ``(inputs, targets)`` (inputs may be a tensor, dict or nested
            structure), or an iterable of batches (list, DataLoader). One-shot iterators are
            materialized; tensors are moved to the parameters' device.
        params: ``None`` (all with ``requires_grad``), the model's parameter tensors, or names.
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).
        chunk_size: columns per vmapped chunk in ``op @ V`` (bounds memory; ``None``: all).
        closure: ``loss_fn`` takes ``(model, batch)`` (it receives the operator's shadow copy of
            the model: use that argument, not the model from an outer scope).
        cache_graph: keep the first-order graph for reuse (products that use it). Default: on
            for a single batch, off for several (one graph per batch would be kept).
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
            :func:`hessian_lr.curvature._batches.is_single_batch`.
        check_data: compare two passes of the first product and raise ``DataChangedError`` when
            they differ. Default: on for iterables other than lists and tuples.
        dtype: compute dtype (float32 or float64). Default: the parameters' dtype, float32 for
            float16/bfloat16 parameters.
        process_group: a ``torch.distributed`` group over which ``data`` is sharded (each rank
            passes its own shard, possibly empty; products and gradients are all-reduced and
            weighted, so every rank holds the matrix over the union of the shards); ``None``
            (default, as DDP's) uses the default group when one is initialized with more than
            one rank, ``False`` never reduces. Every rank must make the same calls.
        symmetry_check: the one-time probe of the first product (see the module docstring):
            ``"fallback"`` (default: the subclass's remedy, e.g. finite differences, with a
            warning), ``"raise"`` (an error instead) or ``"off"``.
    """

    fd_scheme: str = "central"  # finite-difference settings, for products that use them
    fd_eps: float = 0.0

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        params: Sequence[torch.Tensor] | Sequence[str] | None = None,
        bn_mode: Literal["eval", "train"] = "eval",
        chunk_size: int | None = 16,
        closure: bool = False,
        cache_graph: bool | None = None,
        check_finite: bool = True,
        batch_size_fn: Callable[[Batch], float] | None = None,
        reduction: Literal["mean", "sum"] | None = None,
        single_batch: bool | None = None,
        check_data: bool | None = None,
        dtype: torch.dtype | None = None,
        process_group: Any = None,
        symmetry_check: Literal["fallback", "raise", "off"] = "fallback",
    ) -> None:
        _check_arguments(model, loss_fn, bn_mode, chunk_size, symmetry_check)
        model = unwrap_model(model)  # DDP, DataParallel, torch.compile: the underlying module
        self._group = resolve_group(process_group)
        self._reducer = None if self._group is None else Reducer(self._group)
        self.model, self.loss_fn, self.closure = model, loss_fn, closure
        self.bn_mode, self.chunk_size, self.check_finite = bn_mode, chunk_size, check_finite
        self.symmetry_check = symmetry_check
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
        self._module = shadow_module(model, bn_mode)
        self._describe_model()

        self._setup_data(data, single_batch, check_data)
        self._setup_objective(loss_fn, reduction, batch_size_fn)
        self._loss_impl = loss_implementation(loss_fn)
        if self._group is not None:
            self._join_group()
        self.cache_graph = self._single if cache_graph is None else bool(cache_graph)
        self._graphs: dict[int, FirstOrderGraph] = {}
        self._transient: tuple[int, FirstOrderGraph] | None = None
        self._grad_cache: tuple[float, torch.Tensor] | None = None
        self._key: tuple | None = None
        self._solving = False  # inside ``solving()``: the model is checked once per solve
        self.unreached: list[str] | None = None  # parameters the loss does not depend on
        self.num_gradients = 0
        self.asymmetry: float | None = None  # the probe's relative asymmetry (None: not run)
        self._recorded: dict[str, torch.Tensor] | None = None  # values of the write check
        self._writes_checked = False

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
        if self._module is None:
            self.notes.append(
                "the module tree cannot be copied (deepcopy failed): each pass switches the "
                "caller's modules to the operator's modes and back, one pass at a time"
            )
        self._state = state_tensors(self.model)  # what the matrix at θ depends on
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

    def _theta(self) -> tuple[torch.Tensor, ...]:
        # copies: a forward that writes its parameters (``.data.copy_``) writes these
        return tuple(p.detach().to(self.dtype, copy=True) for p in self.params)

    def _batches(self) -> Iterator[tuple[int, float, Batch]]:
        for index, c, batch in super()._batches():
            if not self._writes_checked:
                self._check_writes(batch)
            yield index, c, batch

    def _check_writes(self, batch: Batch) -> None:
        """Before the first pass: refuse a forward that writes to its own parameters.

        One forward on copies of every parameter and buffer, compared with the originals after.
        Such a forward (a data-dependent initialisation: ActNorm, LSUV's ``.data.copy_``) would
        only write to the operator's copies, never to the caller's model; but its loss is not a
        function of the current parameters, so there is no Hessian to measure.
        """
        self._writes_checked = True
        self._recorded = {}
        try:
            with torch.no_grad():
                self._loss(self._theta(), batch)
            values = self._recorded
        finally:
            self._recorded = None
        named = dict(self.model.named_parameters())
        written = [
            n
            for n, v in values.items()
            if n in named and not _identical(v, named[n].detach().to(v.dtype))
        ]
        if written:
            raise ValueError(
                f"the model's forward writes to its own parameters {written} (a data-dependent "
                "initialisation such as ActNorm or LSUV?): its loss is not a function of the "
                "current parameters. Run one forward pass on the model to finish its "
                "initialisation, then measure (the operator did not change the caller's model)"
            )

    def _split(self, vec: torch.Tensor) -> list[torch.Tensor]:
        # (..., N) -> views (..., *p.shape); scalar parameters included
        lead = tuple(vec.shape[:-1])
        sizes = [p.numel() for p in self.params]
        if vec.shape[-1] != sum(sizes):
            raise ValueError(f"vector has {vec.shape[-1]} entries, parameters have {sum(sizes)}")
        chunks = torch.split(vec, sizes, dim=-1)
        return [c.reshape(lead + tuple(p.shape)) for c, p in zip(chunks, self.params)]

    # ----------------------------------------------------------------------------- evaluation
    def _forward_context(self) -> AbstractContextManager:
        """Modes and kernels of one forward pass (entered around every model evaluation)."""
        shadowed = self._module is not None
        module = self._module if shadowed else self.model
        return evaluation_context(module, self.bn_mode, self.device, shadow=shadowed)

    def _values(self, theta: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every parameter and buffer for one evaluation: θ, and copies of all the rest."""
        values = {}
        for name, b in self.model.named_buffers():
            wide = self._upcast and b.is_floating_point()
            values[name] = b.to(dtype=self.dtype if wide else b.dtype, copy=True)
        values.update((n, p.detach().to(self.dtype, copy=True)) for n, p in self._fixed)
        values.update(zip(self.names, theta, strict=True))
        if self._recorded is not None:
            self._recorded.update(values)
        return values

    def _loss(self, theta: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        """The scalar loss L_b(θ) of one batch, evaluated in the operator's modes."""
        module = self.model if self._module is None else self._module
        with self._forward_context():
            if self.closure:
                with _reparametrize_module(module, self._values(theta), tie_weights=True):
                    loss = self.loss_fn(module, batch)
            else:
                out, targets = self._predict_in_context(module, theta, batch)
                loss = self._loss_impl(out, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the loss over the batch)")
        return loss.reshape(())

    def _predict(self, theta: Sequence[torch.Tensor], batch: Batch) -> tuple[Any, Any]:
        """(model outputs at θ, targets) of one ``(inputs, targets)`` batch (no closure)."""
        if self.closure:
            raise ValueError("this operator needs model outputs: pass loss_fn(outputs, targets)")
        module = self.model if self._module is None else self._module
        with self._forward_context():
            return self._predict_in_context(module, theta, batch)

    def _predict_in_context(self, module: nn.Module, theta: Sequence, batch: Batch) -> tuple:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                "a batch must be (inputs, targets); for other structures pass closure=True "
                "and loss_fn(model, batch), or single_batch=True/False if one batch was read "
                "as several (or the reverse)"
            )
        inputs, targets = batch
        out = functional_call(module, self._values(theta), (inputs,), tie_weights=True)
        check_same_shape(self.loss_fn, out, targets)
        return out, targets

    def _objective(self, index: int, batch: Batch) -> _Objective:
        """Batch ``index`` as the per-batch products of ``products.py`` take it."""
        return _Objective(self, index, batch)

    # ----------------------------------------------------------------------------- symmetry
    @property
    def _probe_symmetry(self) -> bool:
        """Whether the products are exact up to rounding, so that the probe applies."""
        return True

    def _apply_with_fallback(self, V: torch.Tensor) -> torch.Tensor:
        """One pass; the first one is preceded by the symmetry probe (once per model)."""
        if self.asymmetry is not None or self.symmetry_check == "off" or not self._probe_symmetry:
            return self._apply(V)
        key = self._probe_key()
        known = _PROBED.get(self.model, {}).get(key)
        if known is not None:  # this model, computed this way, was probed before
            self.asymmetry = known
            if known > SYMMETRY_RTOL[self.dtype]:
                self._asymmetric()
            return self._apply(V)
        g = torch.Generator(device="cpu").manual_seed(0)
        U = torch.randn(self.shape[0], _PROBES, generator=g, dtype=self.dtype).to(self.device)
        MU = self._apply(self.agree_(U))  # its own pass: op @ V never depends on the probe
        M = U.T @ MU
        scale = math.sqrt(2 * (_PROBES - 1)) * float(MU.norm())
        asym = float((M - M.T).norm()) / scale if scale > 0 else 0.0
        if not math.isfinite(asym):  # NaN/inf products: the finite check reports them
            self.asymmetry = 0.0
            return self._apply(V)
        self.asymmetry = _PROBED.setdefault(self.model, {})[key] = asym
        if asym > SYMMETRY_RTOL[self.dtype]:
            self._asymmetric()
        return self._apply(V)

    def _probe_key(self) -> tuple:
        """What the probe's verdict depends on besides the model (subclasses add their own)."""
        loss = type(self.loss_fn) if isinstance(self.loss_fn, nn.Module) else self.loss_fn
        product = getattr(self, "backend", None)  # subclasses with several back ends have one
        return (type(self), product, self.bn_mode, self.dtype, self.closure, loss, *self.names)

    def _asymmetric(self) -> None:
        tol = SYMMETRY_RTOL[self.dtype]
        self.release_graph()
        self._on_asymmetric(
            f"the operator is not symmetric: for random u, v, uᵀMv and vᵀMu differ by "
            f"{self.asymmetry:.2e} relative (tolerance {tol:.0e} in {self.dtype}); autograd's "
            "second derivatives are wrong for this model (e.g. torch's double backward of "
            "weight_norm parametrizations, or a custom autograd.Function)"
        )

    def _on_asymmetric(self, message: str) -> None:
        """The probe failed: switch to a product that avoids the wrong derivative, or raise.

        The base raises ``RuntimeError(message)``; a subclass with a remedy overrides this and
        returns after switching (the pass is then redone with the new product).
        """
        raise RuntimeError(message)


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN (a diverged model's forward writes nothing)."""
    return torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True)


def _check_arguments(
    model: object, loss_fn: object, bn_mode: str, chunk_size: object, symmetry_check: object
) -> None:
    """Refuse bad constructor arguments with errors that say what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    if symmetry_check not in ("fallback", "raise", "off"):
        raise ValueError(
            f"symmetry_check must be 'fallback', 'raise' or 'off', got {symmetry_check!r}"
        )
