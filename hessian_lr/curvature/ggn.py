"""The generalized Gauss-Newton matrix G = Jᵀ ∇²_z L J of the training objective, as ``op @ v``.

For a loss L(z(θ)) of the model's outputs z, the Hessian splits into
H = Jᵀ ∇²_z L J + Σ_i ∂L/∂z_i ∇²_θ z_i; the GGN keeps the first term (Schraudolph 2002, "Fast
curvature matrix-vector products for second-order gradient descent"; Martens 2020, "New
insights and perspectives on the natural gradient method", §8). It is positive semi-definite for
a convex loss in z (cross-entropy, squared error, BCE with logits), equals H for a model linear
in θ under squared error, and dominates the top of H's spectrum for cross-entropy networks
(Papyan 2020; Cohen et al. 2021 measure edge-of-stability sharpness on it too).

Conventions (the same objective as :class:`~hessian_lr.curvature.HessianOperator`): for a mean
reduction over N counted elements (samples; tokens ≠ ``ignore_index``; elements of an
element-wise loss such as ``nn.MSELoss``), G = (1/N) Σₙ Jₙᵀ ∇²ℓₙ Jₙ with ℓₙ the summed loss of
element n; for ``reduction="sum"`` G = Σₙ Jₙᵀ ∇²ℓₙ Jₙ (no 1/N). Several batches combine as the
Hessian's (weighted by counted elements).

Cost per product column: one forward-mode pass (JVP) and one backward pass (VJP) of the model,
plus a closed-form output-space product (cross-entropy, MSE, BCE with logits) or, for other
losses, a double backward through the loss alone (cheap: the loss is a function of the outputs).
``"auto"`` picks as the Hessian does: autograd on one batch (its forward graph and the graph of
Jᵀu built once and reused by every product: two backward passes a product), ``torch.func`` over
several batches (nothing cached), falling back to autograd where ``torch.func`` cannot trace.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._base import CurvatureOperator
from ._dataloop import DataChangedError, NonFiniteError
from ._evaluation import fingerprint, needs_cudnn_off
from ._jacobian import SANDWICHES, JacobianGraph, jacobian_graph
from ._output_space import OutputHessian, output_hessian_product

__all__ = ["GGNOperator", "OutputSpaceOperator", "ggn_middle", "GGN_BACKENDS"]

Batch = Any


#: The GGN's and the Fisher's back ends (named as the Hessian's; no finite differences).
GGN_BACKENDS = ("auto", "forward-over-reverse", "double-backward")


class OutputSpaceOperator(CurvatureOperator):
    """Σ_b c_b J_bᵀ M_b J_b (/ Σ_b c_b): the shared part of the GGN and the Fisher.

    A subclass of the curvature operator base (parameters, tying, model evaluation, data loop
    and weights, BN modes, attention kernels, dtypes, process groups, the fixed-data and
    symmetry checks, ``gradient()``); it adds the Jacobian sandwich and its cached graphs, and a
    subclass writes the output-space matrix ``_middle``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        backend: str = "auto",
        **options: Any,
    ) -> None:
        if options.get("closure"):
            raise ValueError(
                f"{type(self).__name__} needs the model's outputs and the loss as a function of "
                "them: closure=True (loss_fn(model, batch)) is not supported; pass "
                "loss_fn(outputs, targets) or use HessianOperator"
            )
        if backend not in GGN_BACKENDS:
            raise ValueError(
                f"{type(self).__name__} backend must be one of {GGN_BACKENDS} (there is no "
                f"finite-difference GGN or Fisher), got {backend!r}"
            )
        super().__init__(model, loss_fn, data, **options)
        self.requested_backend = backend
        if backend == "auto":
            local = self._single or needs_cudnn_off(self.model, self.device)
            local = local or self._group is not None
            backend = "double-backward" if local else "forward-over-reverse"
        self.backend: str = backend
        self.fallback_reason: str | None = None
        self._jac_graphs: dict[int, JacobianGraph] = {}

    # ------------------------------------------------------------------ the cached graphs
    def _jacobian_graph(self, index: int, batch: Batch) -> JacobianGraph:
        """The batch's output graph and Jᵀu graph; kept for reuse when ``cache_graph``."""
        if not self._bypass_cache and index in self._jac_graphs:
            return self._jac_graphs[index]
        graph = jacobian_graph(self, batch)
        if self.cache_graph and not self._bypass_cache:
            if self._key is None:
                self._key = fingerprint(self._state)
            self._jac_graphs[index] = graph
        return graph

    def _refresh(self) -> None:
        if self._jac_graphs and not self._solving and fingerprint(self._state) != self._key:
            self.release_graph()
        super()._refresh()

    def release_graph(self) -> None:
        """Drop cached graphs (the first-order and the Jacobian ones) and the cached gradient."""
        super().release_graph()
        self._jac_graphs = {}

    # ------------------------------------------------------------------ products
    def _middle(self, index: int, batch: Batch, outputs: Any, targets: Any, JV: Any) -> Any:
        raise NotImplementedError

    def _matmat_batch(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        def middle(outputs: Any, targets: Any, JV: Any) -> Any:
            return self._middle(index, batch, outputs, targets, JV)

        return SANDWICHES[self.backend](self, index, batch, V, middle)

    def _fall_back(self, backend: str, reason: str) -> None:
        self.backend, self.fallback_reason = backend, reason
        self.notes.append(f"{self.requested_backend} fell back to {backend} (see fallback_reason)")
        self.release_graph()

    def _on_asymmetric(self, message: str) -> None:
        # autograd's JV differentiates a backward pass (double backward): where that formula is
        # wrong, torch.func's forward-mode JVP is the remedy
        if self.symmetry_check == "raise" or self.backend != "double-backward":
            raise RuntimeError(message)
        warnings.warn(f"{message}; using backend='forward-over-reverse' instead", stacklevel=4)
        self._fall_back("forward-over-reverse", message)

    def _apply_with_fallback(self, V: torch.Tensor) -> torch.Tensor:
        try:
            return super()._apply_with_fallback(V)
        except (NonFiniteError, DataChangedError):
            raise
        except (RuntimeError, NotImplementedError) as err:
            if self.backend != "forward-over-reverse" or self.requested_backend != "auto":
                raise
            self._fall_back("double-backward", f"torch.func could not trace the model: {err}")
            return super()._apply_with_fallback(V)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.shape[0]}, backend={self.backend!r}, "
            f"bn_mode={self.bn_mode!r}, reduction={self.reduction!r}, dtype={self.dtype}, "
            f"device={self.device})"
        )


def ggn_middle(
    loss_fn: Any,
    loss_impl: Callable[..., torch.Tensor],
    output_hessian: OutputHessian | None,
    outputs: Any,
    targets: Any,
    JV: Any,
) -> Any:
    """∇²_z L_b · JV: the user's ``output_hessian``, else a closed form, else autodiff."""
    if output_hessian is not None:
        return output_hessian(outputs, targets, JV)
    return output_hessian_product(loss_fn, loss_impl, outputs, targets, JV)


class GGNOperator(OutputSpaceOperator):
    """Generalized Gauss-Newton matrix of the training objective over ``data``, N x N.

    Args:
        model, loss_fn, data: as for the operator base
            (:class:`~hessian_lr.curvature.CurvatureOperator`), with ``loss_fn(outputs,
            targets)`` (closures are refused: the GGN needs the outputs).
        output_hessian: ``(outputs, targets, W) -> ∇²_z L · W`` for W of shape
            (k, *outputs.shape), e.g. :func:`~hessian_lr.curvature.token_cross_entropy_hessian`
            for a plain-function token loss over (B, T, C) logits. Default: the closed form for
            ``nn.CrossEntropyLoss``, ``nn.MSELoss`` and ``nn.BCEWithLogitsLoss``, autodiff
            through the loss otherwise.
        backend: ``"auto"`` (autograd with a cached graph on one batch, ``torch.func`` on
            several), ``"forward-over-reverse"`` (``torch.func`` JVP + VJP) or
            ``"double-backward"`` (autograd on one forward graph, cached on one batch:
            ``cache_graph``).
        **kwargs: the base's keywords (``params``, ``bn_mode``, ``reduction``,
            ``batch_size_fn``, ``single_batch``, ``check_data``, ``dtype``, ``chunk_size``,
            ``cache_graph``, ``process_group``, ``symmetry_check``, ...).

    ``op.gradient()`` is the objective's gradient, as for the Hessian (the quadratic LR rule
    needs gᵀg / gᵀGg).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # linear model + MSE: G = H = 2 mean x²
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.zeros(2, 1)
        >>> GGNOperator(model, nn.MSELoss(), (x, y)).to_dense()
        tensor([[5.]])
    """

    _kind_name = "GGN"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        output_hessian: OutputHessian | None = None,
        **kwargs: Any,
    ) -> None:
        if output_hessian is not None and not callable(output_hessian):
            raise TypeError("output_hessian must be callable (outputs, targets, W) -> HW")
        super().__init__(model, loss_fn, data, **kwargs)
        self.output_hessian = output_hessian
        how = (
            "the given output_hessian"
            if output_hessian is not None
            else "closed form where the loss has one, autodiff through the loss otherwise"
        )
        self.notes.append(f"GGN Jᵀ∇²L J: output-space Hessian by {how}")

    def _middle(self, index: int, batch: Batch, outputs: Any, targets: Any, JV: Any) -> Any:
        return ggn_middle(self.loss_fn, self._loss_impl, self.output_hessian, outputs, targets, JV)
