"""The loss as a function of the model's outputs: its Hessian, its gradient, its predictive labels.

A Gauss-Newton or Fisher product is J_bᵀ M J_b V with J_b the Jacobian of batch b's outputs
w.r.t. the parameters and M a matrix in output space (methods notes §1; Schraudolph 2002,
"Fast curvature matrix-vector products for second-order gradient descent"; Martens 2020, "New
insights and perspectives on the natural gradient method"). This module holds the output-space
pieces as pure functions of (outputs, targets, W) with W of shape (k, *outputs.shape):

* :func:`output_hessian_product` -- ∇²_z L_b · W for the batch loss L_b(z): closed forms for
  ``nn.CrossEntropyLoss`` (class dimension 1, ``ignore_index``, class weights, label smoothing
  without weights), ``nn.MSELoss`` and ``nn.BCEWithLogitsLoss`` (no ``pos_weight``), autodiff
  (double backward w.r.t. the outputs) for every other loss. :func:`token_cross_entropy_hessian`
  is the closed form for a plain-function token loss over (B, T, C) logits.
* :func:`output_gradient` -- ∇_z L_b(z, y): the per-sample output gradients (row n belongs to
  sample n for a loss that is a sum or mean of per-sample terms).
* :func:`sample_targets` -- labels drawn from the model's predictive distribution (categorical
  for cross-entropy, Gaussian of variance 1/2 for squared error, Bernoulli for BCE with logits),
  for which E_ŷ[∇_z ℓ ∇_z ℓᵀ] = ∇²_z ℓ: the Monte-Carlo Fisher's labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "OutputHessian",
    "output_hessian_product",
    "token_cross_entropy_hessian",
    "closed_form_name",
    "output_gradient",
    "sample_targets",
    "categorical_sampler",
]

#: (outputs, targets, W) -> ∇²_z L · W, with W of shape (k, *outputs.shape).
OutputHessian = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- closed forms
def _softmax_hessian(
    logits: torch.Tensor,
    targets: torch.Tensor,
    W: torch.Tensor,
    *,
    class_dim: int,
    ignore_index: int,
    weight: torch.Tensor | None,
    reduction: str,
) -> torch.Tensor:
    """(diag p − p pᵀ) w per position, scaled by the class weight of its target and 1/Σ weights."""
    cd = class_dim % logits.ndim
    z = logits.movedim(cd, -1)  # (..., C)
    w = W.movedim(cd + 1, -1)  # (k, ..., C)
    p = torch.softmax(z, dim=-1)
    mask = targets != ignore_index
    if weight is None:
        scale = mask.to(z.dtype)
    else:
        safe = torch.where(mask, targets, torch.zeros_like(targets))
        scale = weight.to(z.dtype)[safe] * mask
    if reduction == "mean":
        scale = scale / scale.sum()
    hw = p * w - p * (p * w).sum(-1, keepdim=True)
    return (hw * scale.unsqueeze(-1)).movedim(-1, cd + 1)


def token_cross_entropy_hessian(
    *, ignore_index: int = -100, reduction: str = "mean"
) -> OutputHessian:
    """The closed-form output Hessian of a token cross-entropy over (B, T, C) logits.

    For a plain-function loss such as nanoGPT's
    ``F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)`` (mean over
    the tokens whose target is not ``ignore_index``), pass the result as
    ``GGNOperator(..., output_hessian=token_cross_entropy_hessian())``; without it the operator
    differentiates the loss twice (the same matrix, a little more work).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")

    def product(outputs: torch.Tensor, targets: Any, W: torch.Tensor) -> torch.Tensor:
        return _softmax_hessian(
            outputs,
            targets,
            W,
            class_dim=-1,
            ignore_index=ignore_index,
            weight=None,
            reduction=reduction,
        )

    return product


def closed_form_name(loss_fn: Any, targets: Any) -> str | None:
    """Which closed form applies to ``loss_fn`` on these targets (None: autodiff)."""
    if type(loss_fn) is nn.CrossEntropyLoss:
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point():
            return None  # class probabilities as targets
        if loss_fn.label_smoothing > 0 and loss_fn.weight is not None:
            return None
        return "cross_entropy"
    if type(loss_fn) is nn.MSELoss:
        return "mse"
    if type(loss_fn) is nn.BCEWithLogitsLoss and loss_fn.pos_weight is None:
        return "bce_with_logits"
    return None


def output_hessian_product(
    loss_fn: Any, loss_impl: Callable[..., torch.Tensor], outputs: Any, targets: Any, W: Any
) -> Any:
    """∇²_z L(z, y) applied to each of the k output-space directions in W (shape (k, *z)).

    Closed forms where :func:`closed_form_name` names one (tensor outputs), autodiff otherwise.
    ``loss_impl`` is the loss as the operator evaluates it (``loss_implementation(loss_fn)``).
    """
    name = closed_form_name(loss_fn, targets) if isinstance(outputs, torch.Tensor) else None
    if name == "cross_entropy":
        if outputs.ndim < 2:
            name = None  # unbatched logits: leave it to autodiff
        else:
            return _softmax_hessian(
                outputs,
                targets,
                W,
                class_dim=1,
                ignore_index=loss_fn.ignore_index,
                weight=loss_fn.weight,
                reduction=loss_fn.reduction,
            )
    if name == "mse":
        scale = 2.0 / outputs.numel() if loss_fn.reduction == "mean" else 2.0
        return W * scale
    if name == "bce_with_logits":
        s = torch.sigmoid(outputs)
        d = s * (1 - s)
        if loss_fn.weight is not None:
            d = d * loss_fn.weight.to(d.dtype)
        d = torch.broadcast_to(d, outputs.shape)
        if loss_fn.reduction == "mean":
            d = d / outputs.numel()
        return W * d
    return autodiff_output_hessian(loss_impl, outputs, targets, W)


def autodiff_output_hessian(
    loss_impl: Callable[..., torch.Tensor], outputs: Any, targets: Any, W: Any
) -> Any:
    """∇²_z L · W by double backward w.r.t. the outputs (any loss, any output pytree)."""
    leaves, spec = tree_flatten(outputs)
    w_leaves, _ = tree_flatten(W)
    z = [t.detach().requires_grad_(True) if t.is_floating_point() else t for t in leaves]
    live = [i for i, t in enumerate(z) if t.requires_grad]
    with torch.enable_grad():
        loss = loss_impl(tree_unflatten(z, spec), targets)
        g = torch.autograd.grad(loss, [z[i] for i in live], create_graph=True, allow_unused=True)
    pairs = [(i, gi) for i, gi in zip(live, g) if gi is not None and gi.requires_grad]
    k = w_leaves[0].shape[0]
    out = [torch.zeros_like(w) for w in w_leaves]
    if not pairs:
        return tree_unflatten(out, spec)
    for j in range(k):
        hv = torch.autograd.grad(
            [gi for _, gi in pairs],
            [z[i] for i in live],
            grad_outputs=[w_leaves[i][j] for i, _ in pairs],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        for i, h in zip(live, hv):
            out[i][j] = h
    return tree_unflatten(out, spec)


# --------------------------------------------------------------------------- gradients
def output_gradient(loss_impl: Callable[..., torch.Tensor], outputs: Any, targets: Any) -> Any:
    """∇_z L(z, y) at the (detached) outputs, same pytree structure as ``outputs``."""
    leaves, spec = tree_flatten(outputs)
    z = [t.detach().requires_grad_(True) if t.is_floating_point() else t for t in leaves]
    live = [t for t in z if t.requires_grad]
    with torch.enable_grad():
        loss = loss_impl(tree_unflatten(z, spec), targets)
        g = torch.autograd.grad(loss, live, allow_unused=True, materialize_grads=True)
    it = iter(g)
    return tree_unflatten([next(it) if t.requires_grad else torch.zeros(()) for t in z], spec)


# --------------------------------------------------------------------------- sampling
#: (outputs, targets, generator) -> sampled targets of the same structure as ``targets``.
Sampler = Callable[[torch.Tensor, Any, torch.Generator], Any]


def categorical_sampler(*, class_dim: int = -1, ignore_index: int = -100) -> Sampler:
    """Labels ŷ ~ softmax(z) along ``class_dim``; targets equal to ``ignore_index`` stay so.

    For a plain-function token loss over (B, T, C) logits (``class_dim=-1``); pass it as
    ``FisherOperator(..., kind="mc", sampler=categorical_sampler())``.
    """

    def sample(outputs: torch.Tensor, targets: Any, generator: torch.Generator) -> torch.Tensor:
        z = outputs.detach().movedim(class_dim % outputs.ndim, -1)
        p = torch.softmax(z.to(torch.float64), dim=-1).reshape(-1, z.shape[-1])
        draw = torch.multinomial(p, 1, generator=generator).reshape(z.shape[:-1])
        return torch.where(targets == ignore_index, targets, draw.to(targets.dtype))

    return sample


def sample_targets(
    loss_fn: Any, outputs: torch.Tensor, targets: Any, generator: torch.Generator
) -> Any:
    """Targets drawn from the predictive distribution that ``loss_fn`` is the likelihood of.

    ``nn.CrossEntropyLoss`` (integer targets, no class weights, no label smoothing): categorical
    over dimension 1; ``nn.MSELoss``: z + N(0, ½) (the Gaussian whose negative log-likelihood is
    the squared error up to constants); ``nn.BCEWithLogitsLoss`` (no weight, no pos_weight):
    Bernoulli(σ(z)). For these E_ŷ[∇_z ℓ ∇_z ℓᵀ] = ∇²_z ℓ, so the Monte-Carlo Fisher equals the
    GGN in expectation. Other losses raise ``ValueError``.
    """
    z = outputs.detach()
    if type(loss_fn) is nn.CrossEntropyLoss:
        if (
            isinstance(targets, torch.Tensor)
            and not targets.is_floating_point()
            and loss_fn.weight is None
            and loss_fn.label_smoothing == 0
            and z.ndim >= 2
        ):
            return categorical_sampler(class_dim=1, ignore_index=loss_fn.ignore_index)(
                z, targets, generator
            )
    elif type(loss_fn) is nn.MSELoss:
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z + noise * 0.5**0.5
    elif type(loss_fn) is nn.BCEWithLogitsLoss:
        if loss_fn.weight is None and loss_fn.pos_weight is None:
            return torch.bernoulli(torch.sigmoid(z), generator=generator)
    raise ValueError(
        f"kind='mc' needs the model's predictive distribution, known for nn.CrossEntropyLoss "
        f"(integer targets, no class weights or label smoothing), nn.MSELoss and "
        f"nn.BCEWithLogitsLoss (no weights); got {type(loss_fn).__name__}: pass sampler= "
        "(e.g. categorical_sampler() for token logits (B, T, C)) or use kind='empirical' / "
        "GGNOperator"
    )
