"""The Hessian of a network's training objective as a linear operator (``op @ v``).

H = ∇²F(θ) for the objective F over one batch or a data loader (mean over counted elements, or
sum) w.r.t. the trainable parameters or a subset, applied without forming H (methods notes §1).
A small subclass of the operator base (``_base.CurvatureOperator``: parameters, dtype, model
evaluation, loss, data loop, caches, checks, process groups); its per-batch product is the
function of ``products.PRODUCTS`` named by ``backend``:

* ``"forward-over-reverse"``: ``jvp(grad)`` over ``functional_call``; least memory.
* ``"double-backward"``: ``autograd.grad(g·v)``; on one batch the first-order graph is built once
  and reused (``cache_graph``): the fastest exact product on CPU.
* ``"finite-difference"``: the Hessian-free approximation of the Super-Convergence paper.
* ``"auto"``: double backward on one batch, forward-over-reverse on several, falling back to
  double backward where ``torch.func`` cannot trace the model.

The first product is probed for symmetry (``_base.py``): where autograd's second derivatives are
wrong (``weight_norm``: 24-44 % off) the operator switches to finite differences with a warning
(``symmetry_check="raise"``: an error instead). ``op.backend`` says what runs,
``op.fallback_reason`` why it differs from the request.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ._base import CurvatureOperator
from ._dataloop import DataChangedError, NonFiniteError
from ._evaluation import needs_cudnn_off, select_parameters
from ._fsdp import is_sharded
from .products import BACKENDS, EXACT, PRODUCTS

__all__ = ["HessianOperator", "select_params", "BACKENDS"]

Backend = Literal["auto", "forward-over-reverse", "double-backward", "finite-difference"]


class HessianOperator(CurvatureOperator):
    """Hessian of the training objective over ``data`` w.r.t. trainable parameters, N x N.

    Args:
        model, loss_fn, data: see :class:`~hessian_lr.curvature._base.CurvatureOperator`.
        backend: one of ``BACKENDS`` (see the module docstring).
        fd_scheme: ``"central"`` (O(δ²)) or ``"forward"`` (O(δ)) finite differences.
        fd_eps: relative step for finite differences; default ε^(1/3) (central) or ε^(1/2)
            (forward) of the compute dtype's machine epsilon.
        **options: the base's keywords: ``params``, ``bn_mode``, ``chunk_size``, ``closure``,
            ``cache_graph``, ``check_finite``, ``batch_size_fn``, ``reduction``, ``single_batch``,
            ``check_data``, ``dtype``, ``process_group``, ``symmetry_check``.

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
        data: Any,
        *,
        backend: Backend = "auto",
        fd_scheme: Literal["central", "forward"] = "central",
        fd_eps: float | None = None,
        **options: Any,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if fd_scheme not in ("central", "forward"):
            raise ValueError(f"fd_scheme must be 'central' or 'forward', got {fd_scheme!r}")
        super().__init__(model, loss_fn, data, **options)
        eps = torch.finfo(self.dtype).eps
        self.fd_scheme = fd_scheme
        self.fd_eps = (
            fd_eps if fd_eps is not None else eps ** (0.5 if fd_scheme == "forward" else 1 / 3)
        )
        if not self.fd_eps > 0:
            raise ValueError(f"fd_eps must be positive, got {self.fd_eps}")
        self.requested_backend = backend
        if backend == "auto":
            # Recurrent layers on CUDA run fused cells without forward-mode AD. In a process
            # group every rank must run the same back end: no silent fallback.
            local = self._single or needs_cudnn_off(self.model, self.device)
            local = local or self._group is not None
            backend = "double-backward" if local else "forward-over-reverse"
        self.backend: str = backend
        self.fallback_reason: str | None = None

    @property
    def _uses_graph(self) -> bool:
        return self.backend == "double-backward"

    @property
    def _probe_symmetry(self) -> bool:
        return self.backend in EXACT

    def _matmat_batch(self, index: int, batch: Any, V: torch.Tensor) -> torch.Tensor:
        return PRODUCTS[self.backend](self._objective(index, batch), V)

    def _fall_back(self, backend: str, reason: str) -> None:
        self.backend, self.fallback_reason = backend, reason
        self.notes.append(f"{self.requested_backend} fell back to {backend} (see fallback_reason)")
        self.release_graph()

    def _on_asymmetric(self, message: str) -> None:
        if self.symmetry_check == "raise":
            raise RuntimeError(
                f"{message}. backend='finite-difference' needs first derivatives only"
            )
        warnings.warn(f"{message}; using backend='finite-difference' instead", stacklevel=4)
        self._fall_back("finite-difference", message)

    def _apply_with_fallback(self, V: torch.Tensor) -> torch.Tensor:
        try:
            return super()._apply_with_fallback(V)
        except (NonFiniteError, DataChangedError):
            raise
        except (RuntimeError, NotImplementedError) as err:
            if self.backend not in ("forward-over-reverse", "finite-difference"):
                raise
            hint = (
                f"\n(backend={self.backend!r} runs the model under torch.func; where torch.func "
                "cannot trace it -- e.g. a forward that writes tensors in place such as a "
                "data-dependent initialisation -- backend='double-backward' works on any model)"
            )
            if self.requested_backend != "auto" or self.backend == "finite-difference":
                raise type(err)(f"{err}{hint}") from err
            self._fall_back("double-backward", f"torch.func could not trace the model: {err}")
            return super()._apply_with_fallback(V)

    def __repr__(self) -> str:
        return (
            f"HessianOperator(N={self.shape[0]}, backend={self.backend!r}, "
            f"bn_mode={self.bn_mode!r}, reduction={self.reduction!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )


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
