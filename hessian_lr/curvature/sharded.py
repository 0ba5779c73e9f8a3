"""The Hessian of an FSDP2 (``fully_shard``) model: finite differences of FSDP's own gradients.

Neither double backward nor forward-over-reverse passes through FSDP's all-gathers and
reduce-scatters (``docs/fsdp.md``), but FSDP's ordinary forward/backward does. So

    H v ≈ (g(θ + δv) − g(θ − δv)) / 2δ,     δ = fd_eps · max(1, ‖θ‖) / ‖v‖,

the central difference of the ``"finite-difference"`` back end (Martens 2010; Smith & Topin
2017 §5), with g from FSDP: each rank shifts its own parameter shard θ_r ± δ v_r in place, runs
FSDP's forward/backward over its data, and reads its gradient shard. Vectors live as shards
(``vector_space``, :class:`~hessian_lr.curvature._shard_space.ShardSpace`): ``op @ v`` takes and
returns this rank's part (local, ) of v; ``op.shape`` is the full (N, N). The solvers reduce
their dot products and norms over the shards, so memory per rank is O(N/p) per vector.

What is the same as ``HessianOperator`` (``hessian.py``): the objective (``reduction``, batch
weights, a mean over the union of every rank's data, empty ranks allowed), ``bn_mode`` and the
other evaluation modes, ``closure``, ``check_finite``, ``check_data``, the failure protocol (a
rank whose loss fails makes every rank raise, before any backward). What differs:

* each product costs two gradient passes per column (one with ``fd_scheme="forward"``, plus
  one g(θ) per call); the accuracy is that of the finite difference, O(δ²) truncation plus
  O(eps/δ) rounding: ~1e-10 relative in float64, ~1e-4 in float32 on smooth networks (ReLU
  kinks: see ``products.finite_difference``);
* every rank runs the same number of forward/backward steps (FSDP's collectives): a rank with
  fewer batches runs weight-0 steps on a batch it has (or, if it has none, on one broadcast from
  another rank);
* parameters are restored bit-identically (a copy of each shard is written back), ``.grad`` is
  put back, torch's global RNGs are restored, FSDP's switches (gradient sync, resharding) are
  forced on during the passes and restored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..rng import preserved_rng
from ._batches import check_same_shape, loss_implementation
from ._dataloop import DataLoopOperator, NonFiniteError
from ._evaluation import CONTEXT_NOTES, evaluation_context, select_parameters
from ._fsdp import FSDPSwitches, fsdp_modules, shard_layout
from ._lockstep import LockstepData
from ._shard_space import ShardSpace
from .distributed import DistributedCurvatureError, Reducer

__all__ = ["ShardedHessianOperator"]

Batch = Any


class ShardedHessianOperator(LockstepData, DataLoopOperator):
    """Hessian of the training objective of an FSDP2 model; vectors are this rank's shards.

    Built by ``HessianOperator(model, loss_fn, data, ...)`` when ``model`` has DTensor
    parameters; the arguments are ``HessianOperator``'s. ``backend`` must be ``"auto"`` or
    ``"finite-difference"`` (the exact back ends cannot differentiate through FSDP), ``dtype``
    the parameters' dtype, ``process_group`` None or the shard group (``data`` is this rank's
    shard of the data, as for the data-parallel operator). ``chunk_size`` and ``cache_graph``
    have no effect (columns are applied one at a time, nothing is cached), nor has
    ``symmetry_check`` (finite differences of gradients need no second derivatives).

    Attributes:
        vector_space: the :class:`ShardSpace` of this rank's part of R^N.
        params: the selected parameters (DTensors); ``names`` their names.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        params: Any = None,
        backend: str = "auto",
        bn_mode: str = "eval",
        closure: bool = False,
        fd_scheme: str = "central",
        fd_eps: float | None = None,
        check_finite: bool = True,
        batch_size_fn: Callable[[Batch], float] | None = None,
        reduction: str | None = None,
        single_batch: bool | None = None,
        check_data: bool | None = None,
        dtype: torch.dtype | None = None,
        process_group: Any = None,
        chunk_size: int | None = None,
        cache_graph: bool | None = None,
        symmetry_check: str = "warn",
    ) -> None:
        del chunk_size, cache_graph, symmetry_check  # no chunks, no caches, no autograd H
        _check_options(model, loss_fn, backend, bn_mode, fd_scheme)
        self.model, self.loss_fn, self.closure = model, loss_fn, closure
        self.bn_mode, self.chunk_size, self.check_finite = bn_mode, None, check_finite
        self.fd_scheme, self.backend, self.requested_backend = (
            fd_scheme,
            "finite-difference",
            backend,
        )
        self.fallback_reason = None
        self.notes: list[str] = list(CONTEXT_NOTES)
        self.names, self.params, self.aliases = select_parameters(model, params)
        self._group = _shard_group(self.params, self.names, process_group)
        self._reducer = Reducer(self._group)
        self._locals, pieces, n = shard_layout(self.names, self.params, self._reducer)
        own = self.params[0].dtype
        if any(p.dtype != own for p in self.params) or dtype not in (None, own):
            raise ValueError(
                f"the sharded Hessian computes in the parameters' dtype ({own}); mixed dtypes "
                f"or dtype={dtype} are not supported"
            )
        super().__init__(n, own, self._locals[0].device)
        self._upcast = False
        self.vector_space = ShardSpace(pieces, n, self._reducer, self.device)
        self._switches = FSDPSwitches(model, self._reducer.world_size)
        if not self._switches.groups:
            raise ValueError(
                "the model has DTensor parameters but no fully_shard unit: the sharded Hessian "
                "needs FSDP2's forward/backward to reduce gradients (wrap the model with "
                "torch.distributed.fsdp.fully_shard); plain tensor parallelism remains"
            )
        self._setup_data(data, single_batch, check_data)
        self._setup_objective(loss_fn, reduction, batch_size_fn)
        self._loss_impl = loss_implementation(loss_fn)
        self._check_data = self._any_rank(self._check_data)
        eps = torch.finfo(own).eps
        default = eps ** (1 / 3) if fd_scheme == "central" else eps**0.5
        self.fd_eps = default if fd_eps is None else float(fd_eps)
        if not self.fd_eps > 0:
            raise ValueError(f"fd_eps must be positive, got {self.fd_eps}")
        self._plan_steps()
        self.num_gradients = 0
        self.notes.append(
            f"FSDP2 over {self._reducer.world_size} ranks: products are central finite "
            "differences of FSDP's gradients, vectors are this rank's shards "
            f"({self.vector_space.local_size} of {n} entries)"
        )

    # ----------------------------------------------------------------------------- interface
    @property
    def process_group(self) -> Any:
        """The shard group (data and parameters are both split over it)."""
        return self._group

    def _check(self, v: torch.Tensor) -> None:
        n = self.vector_space.local_size
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != n:
            raise ValueError(
                f"shape mismatch: this rank holds {n} of the operator's {self.shape[0]} entries "
                f"(a sharded vector), got shape {tuple(v.shape)}; expected ({n},) or ({n}, k)"
            )
        if v.device != self.device or v.dtype != self.dtype:
            raise ValueError(
                f"vectors must be {self.dtype} on {self.device}, got {v.dtype} on {v.device}"
            )

    def local_part(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's part of a full (N,) or (N, k) vector (e.g. built on every rank)."""
        return self.vector_space.local_part(full.to(self.device, self.dtype))

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The full vector from every rank's part (a collective; O(N) memory: small models)."""
        return self.vector_space.gather(local)

    def parameter_vector(self) -> torch.Tensor:
        """This rank's part of θ (a copy)."""
        return torch.cat([t.detach().reshape(-1) for t in self._locals]).to(self.dtype, copy=True)

    def release_graph(self) -> None:
        """Nothing is cached (present for ``HessianOperator``'s interface)."""

    def __repr__(self) -> str:
        return (
            f"ShardedHessianOperator(N={self.shape[0]}, local={self.vector_space.local_size}, "
            f"ranks={self._reducer.world_size}, bn_mode={self.bn_mode!r}, "
            f"reduction={self.reduction!r}, dtype={self.dtype})"
        )

    # ----------------------------------------------------------------------------- products
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with self._pass():
            out = self._apply(V)
            if self._check_data and self._deterministic is not True and V.shape[1] > 0:
                self._compare_passes(V[:, :1], out[:, 0], rtol=None, raise_error=True)
        self._check_finite("a Hessian-vector product", out)
        self.num_hvps += V.shape[1]
        self.seconds += time.perf_counter() - t0
        return out

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V (local, k) by central (or forward) differences of full FSDP gradient passes."""
        space = self.vector_space
        out = V.new_zeros(V.shape)
        with self._guard() as saved:
            theta = torch.cat([t.reshape(-1) for t in saved]).to(V.dtype)
            norms = space.norm(torch.cat([theta.unsqueeze(1), V], dim=1), dim=0).tolist()
            scale = self.fd_eps * max(1.0, norms[0])  # ‖θ‖ and the ‖v_j‖: one reduction
            v_norms = norms[1:]
            g0 = None
            for j, v_norm in enumerate(v_norms):
                if v_norm == 0.0:
                    continue
                delta = scale / v_norm
                g_plus = self._gradient_at(saved, V[:, j], delta)[0]
                if self.fd_scheme == "central":
                    g_minus = self._gradient_at(saved, V[:, j], -delta)[0]
                    out[:, j] = (g_plus - g_minus) / (2 * delta)
                else:
                    if g0 is None:
                        g0 = self._gradient_at(saved, None, 0.0)[0]
                    out[:, j] = (g_plus - g0) / delta
        return out

    def gradient(self) -> tuple[float, torch.Tensor]:
        """The objective and this rank's part of its gradient, over every rank's data."""
        t0 = time.perf_counter()
        with self._pass(), self._guard() as saved:
            g, loss = self._gradient_at(saved, None, 0.0)
        self.num_gradients += 1
        self.seconds += time.perf_counter() - t0
        self._check_finite("the gradient", g)
        return loss, g

    def gradient_at(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The objective and gradient part at other parameter values (this rank's part of θ)."""
        self._check(theta)
        t0 = time.perf_counter()
        with self._pass(), self._guard() as saved:
            self._shift(saved, theta - self.parameter_vector(), 1.0)
            g, loss = self._pass_gradient()
        self.num_gradients += 1
        self.seconds += time.perf_counter() - t0
        self._check_finite("the gradient", g)
        return loss, g

    # ----------------------------------------------------------------------------- passes
    @contextmanager
    def _guard(self) -> Iterator[list[torch.Tensor]]:
        """Shards, ``.grad``, global RNGs and FSDP's switches restored after the block."""
        for m in fsdp_modules(self.model):  # an unsharded unit would ignore the shifted shards
            m.reshard()
        with torch.no_grad():  # FSDP's lazy init may re-point the shards: read them afresh
            self._locals = [p.to_local() for p in self.params]
        saved = [t.detach().clone() for t in self._locals]
        grads = [p.grad for p in self.params]
        try:
            with preserved_rng(), self._switches.syncing():
                yield saved
        finally:
            with torch.no_grad():
                for t, s in zip(self._locals, saved):
                    t.copy_(s)
            for p, g in zip(self.params, grads):
                p.grad = g

    def _shift(self, saved: list[torch.Tensor], v: torch.Tensor | None, delta: float) -> None:
        """Shards ← saved + δ·v (v this rank's part; None: the saved values)."""
        pos = 0
        with torch.no_grad():
            for t, s in zip(self._locals, saved):
                t.copy_(s)
                if v is not None:
                    t.add_(v[pos : pos + t.numel()].reshape(t.shape), alpha=delta)
                pos += t.numel()

    def _gradient_at(
        self, saved: list[torch.Tensor], v: torch.Tensor | None, delta: float
    ) -> tuple[torch.Tensor, float]:
        self._shift(saved, v, delta)
        return self._pass_gradient()

    def _pass_gradient(self) -> tuple[torch.Tensor, float]:
        """(this rank's gradient part, objective) by FSDP forward/backward over all the data."""
        for p in self.params:
            p.grad = None
        total, loss_sum = 0.0, 0.0
        for c, batch in self._lockstep():
            ct, ls = self._step(c, batch)
            total += ct
            loss_sum += ls
        if total == 0:
            raise ValueError("no batch on any rank has anything to count (e.g. all ignored)")
        parts = []
        for p, t in zip(self.params, self._locals):
            g = None if p.grad is None else p.grad.to_local()
            parts.append(torch.zeros_like(t) if g is None else g.detach())
        flat = torch.cat([x.reshape(-1) for x in parts]).to(self.dtype)
        if self._weighted:
            flat.div_(total)
            loss_sum /= total
        return flat, loss_sum

    def _step(self, c: float, batch: Batch) -> tuple[float, float]:
        """One forward on every rank, agreed before the backward: (Σ c, Σ c·loss) over ranks."""
        error, loss, value = None, None, 0.0
        try:
            with self._forward_context():
                loss = self._loss(batch)
            value = float(loss.detach())
            if self.check_finite and not math.isfinite(value):
                raise NonFiniteError(
                    f"the loss is {value} on rank {self._reducer.rank}; check the learning "
                    "rate, the data and the model (a diverged run has no meaningful curvature)"
                )
        except Exception as err:  # noqa: BLE001 - raised on every rank by the reducer
            error = err
        try:
            _, (ct, ls) = self._reducer.sum_([], [c, c * value], error=error)
        except Exception as err:
            for m in fsdp_modules(self.model):  # no backward follows: reshard what the
                m.reshard()  # forward gathered, so that the model is left as it was
            if isinstance(err, DistributedCurvatureError) and "NonFiniteError" in str(err):
                raise NonFiniteError(str(err)) from err
            raise
        (loss * (c * self._switches.divide)).backward()  # FSDP returns Σ_r (c g)_r / divide
        return ct, ls

    def _forward_context(self) -> Any:
        """Modes (``bn_mode``, eval elsewhere) and kernels of one forward pass; restored after."""
        return evaluation_context(self.model, self.bn_mode, self.device, shadow=False)

    def _loss(self, batch: Batch) -> torch.Tensor:
        if self.closure:
            loss = self.loss_fn(self.model, batch)
        else:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(
                    "a batch must be (inputs, targets); for other structures pass closure=True "
                    "and loss_fn(model, batch)"
                )
            inputs, targets = batch
            out = self.model(inputs)
            check_same_shape(self.loss_fn, out, targets)
            loss = self._loss_impl(out, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the loss over the batch)")
        return loss.reshape(())

    # ----------------------------------------------------------------------------- checks
    def _any_rank(self, flag: bool) -> bool:
        return bool(self._reducer.sum_float(float(flag)) > 0)

    def _check_finite(self, what: str, t: torch.Tensor) -> None:
        if not self.check_finite:
            return
        bad = self._reducer.sum_float(float(not bool(torch.isfinite(t).all())))
        if bad > 0:
            raise NonFiniteError(
                f"{what} is NaN or infinite on {int(bad)} rank(s); check the learning rate, the "
                "data and the model (a diverged run has no meaningful curvature)"
            )

    def check_deterministic(
        self, v: torch.Tensor | None = None, *, rtol: float | None = None
    ) -> bool:
        """Apply the operator to one vector twice; True if the passes agree (all ranks)."""
        if v is None:
            v = self.vector_space.randn((), torch.Generator().manual_seed(0), self.dtype)
        self._check(v)
        with self._pass():
            first = self._apply(v.reshape(-1, 1))
            return self._compare_passes(v.reshape(-1, 1), first[:, 0], rtol=rtol, raise_error=False)

    def _compare_passes(
        self, v: torch.Tensor, first: torch.Tensor, *, rtol: float | None, raise_error: bool
    ) -> bool:
        from ._batches import changed_data_message
        from ._dataloop import DataChangedError

        second = self._apply(v)[:, 0]
        tol = rtol if rtol is not None else max(math.sqrt(torch.finfo(self.dtype).eps), 1e-7)
        space = self.vector_space
        denom = float(space.norm(first))
        diff = float(space.norm(second - first)) / (denom if denom > 0 else 1.0)
        self._deterministic = bool(diff <= tol)
        if not self._deterministic and raise_error:
            raise DataChangedError(changed_data_message(diff, tol))
        return self._deterministic


# --------------------------------------------------------------------------------- helpers
def _check_options(model: Any, loss_fn: Any, backend: str, bn_mode: str, fd_scheme: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if backend not in ("auto", "finite-difference"):
        raise ValueError(
            f"backend={backend!r} cannot run on an FSDP2 model: double backward and "
            "forward-over-reverse do not pass through FSDP's collectives (docs/fsdp.md); use "
            "backend='auto' or 'finite-difference' (finite differences of FSDP's gradients)"
        )
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if fd_scheme not in ("central", "forward"):
        raise ValueError(f"fd_scheme must be 'central' or 'forward', got {fd_scheme!r}")
    if not fsdp_modules(model) and not isinstance(model, nn.Module):  # pragma: no cover
        raise TypeError("expected an FSDP2 model")


def _shard_group(params: list[torch.Tensor], names: list[str], process_group: Any) -> Any:
    """The process group of the parameters' one-dimensional device mesh."""
    from ._fsdp import dtensor_class

    cls = dtensor_class()
    plain = [n for n, p in zip(names, params) if not isinstance(p, cls)]
    if plain:
        raise ValueError(
            f"parameters {plain} are not sharded while others are: wrap the root module with "
            "fully_shard so that every selected parameter is a DTensor"
        )
    meshes = {id(p.device_mesh) for p in params}
    mesh = params[0].device_mesh
    if len(meshes) > 1 and len({tuple(p.device_mesh.mesh.tolist()) for p in params}) > 1:
        raise ValueError("the parameters live on different device meshes")
    if mesh.ndim != 1:
        raise ValueError(
            f"a {mesh.ndim}-dimensional device mesh (HSDP or tensor parallel): the sharded "
            "Hessian supports FSDP2 over one mesh dimension only (see docs/fsdp.md)"
        )
    group = mesh.get_group()
    if process_group not in (None, False, "auto") and process_group is not group:
        raise ValueError(
            "process_group must be None (the FSDP shard group) for an FSDP2 model: data and "
            "parameters are split over the same ranks"
        )
    return group
