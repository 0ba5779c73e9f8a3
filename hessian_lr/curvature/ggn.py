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

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_unflatten

from ._evaluation import fingerprint
from ._jacobian import SANDWICHES, JacobianGraph, jacobian_graph, split_batch
from ._output_space import OutputHessian, closed_form_name, output_hessian_product
from .hessian import HessianOperator
from .linop import params_to_vector

__all__ = ["GGNOperator", "OutputSpaceOperator", "ggn_middle"]

Batch = Any


class OutputSpaceOperator(HessianOperator):
    """Σ_b c_b J_bᵀ M_b J_b (/ Σ_b c_b): the shared part of the GGN and the Fisher.

    Everything but the output-space matrix M_b comes from the Hessian operator (parameters,
    tying, data loop and weights, BN modes, attention kernels, dtypes, process groups, the
    fixed-data check, ``gradient()``); a subclass writes ``_middle``.
    """

    _kind_name = "output-space operator"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        backend: str = "auto",
        closure: bool = False,
        **kwargs: Any,
    ) -> None:
        if closure:
            raise ValueError(
                f"{type(self).__name__} needs the model's outputs and the loss as a function of "
                "them: closure=True (loss_fn(model, batch)) is not supported; pass "
                "loss_fn(outputs, targets) or use HessianOperator"
            )
        if backend == "finite-difference":
            raise ValueError(
                f"{type(self).__name__} has no finite-difference back end; use 'auto', "
                "'forward-over-reverse' (torch.func) or 'double-backward' (autograd)"
            )
        super().__init__(model, loss_fn, data, backend=backend, **kwargs)
        self._jac_graphs: dict[int, JacobianGraph] = {}

    # ------------------------------------------------------------------ the cached graphs
    def _jacobian_graph(self, index: int, inputs: Any) -> JacobianGraph:
        """The batch's output graph and Jᵀu graph; kept for reuse on a single batch."""
        if not self._bypass_cache and index in self._jac_graphs:
            return self._jac_graphs[index]
        graph = jacobian_graph(self, inputs)
        if self.cache_graph and not self._bypass_cache:
            self._remember_state()
            self._jac_graphs[index] = graph
        return graph

    def _graph_gradient(self, index: int, batch: Batch) -> tuple[float, torch.Tensor]:
        """The batch loss and its gradient Jᵀ∇_z L from the cached Jacobian graph."""
        inputs, targets = split_batch(batch)
        graph = self._jacobian_graph(index, inputs)
        loss = self._loss_impl(tree_unflatten(graph.leaves, graph.spec), targets)
        self._check_finite("the loss", loss.detach())
        gs = torch.autograd.grad(loss, graph.theta, retain_graph=True, allow_unused=True)
        self._note_unreached(gs)
        flat = [torch.zeros_like(t) if g is None else g for g, t in zip(gs, graph.theta)]
        return float(loss.detach()), params_to_vector(flat)

    def _refresh(self) -> None:
        if self._jac_graphs and not self._solving and fingerprint(self._state) != self._key:
            self.release_graph()
        super()._refresh()

    def release_graph(self) -> None:
        """Drop cached graphs (the Hessian's and the Jacobian's) and the cached gradient."""
        super().release_graph()
        self._jac_graphs = {}

    def _middle(self, index: int, batch: Batch, outputs: Any, targets: Any, JV: Any) -> Any:
        raise NotImplementedError

    def _matmat_batch(self, index: int, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        def middle(outputs: Any, targets: Any, JV: Any) -> Any:
            return self._middle(index, batch, outputs, targets, JV)

        return SANDWICHES[self.backend](self, index, batch, V, middle)

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
        model, loss_fn, data: as :class:`~hessian_lr.curvature.HessianOperator`, with
            ``loss_fn(outputs, targets)`` (closures are refused: the GGN needs the outputs).
        output_hessian: ``(outputs, targets, W) -> ∇²_z L · W`` for W of shape
            (k, *outputs.shape), e.g. :func:`~hessian_lr.curvature.token_cross_entropy_hessian`
            for a plain-function token loss over (B, T, C) logits. Default: the closed form for
            ``nn.CrossEntropyLoss``, ``nn.MSELoss`` and ``nn.BCEWithLogitsLoss``, autodiff
            through the loss otherwise.
        backend: ``"auto"`` (autograd with a cached graph on one batch, ``torch.func`` on
            several), ``"forward-over-reverse"`` (``torch.func`` JVP + VJP) or
            ``"double-backward"`` (autograd on one forward graph, cached on one batch:
            ``cache_graph``).
        **kwargs: every other ``HessianOperator`` keyword (``params``, ``bn_mode``,
            ``reduction``, ``batch_size_fn``, ``single_batch``, ``check_data``, ``dtype``,
            ``chunk_size``, ``process_group``, ...).

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

    def loss_hessian_form(self, targets: Any = None) -> str:
        """``"custom"``, the closed form's name, or ``"autodiff"`` (for the given targets)."""
        if self.output_hessian is not None:
            return "custom"
        if targets is None:
            targets = torch.zeros(1, dtype=torch.long)
        return closed_form_name(self.loss_fn, targets) or "autodiff"

    def _middle(self, index: int, batch: Batch, outputs: Any, targets: Any, JV: Any) -> Any:
        return ggn_middle(self.loss_fn, self._loss_impl, self.output_hessian, outputs, targets, JV)
