"""The empirical and the Monte-Carlo Fisher of the training objective, as ``op @ v``.

* **Empirical Fisher** (``kind="empirical"``): F = (1/N) Σₙ ∇ℓₙ ∇ℓₙᵀ, the outer products of the
  per-sample gradients at the data's own labels (the "Fisher" of Adam-style diagonal methods;
  Kunstner, Balles & Hennig 2019, "Limitations of the empirical Fisher approximation", explain
  when it is not a curvature).
* **Monte-Carlo Fisher** (``kind="mc"``): the same with labels ŷ drawn from the model's
  predictive distribution, F = (1/N) Σₙ (1/S) Σₛ ∇ℓₙ(ŷₛ) ∇ℓₙ(ŷₛ)ᵀ; E_ŷ[F] is the true Fisher,
  which equals the GGN for cross-entropy, squared error (Gaussian of variance ½) and BCE with
  logits (Martens 2020, §9.2). Labels come from a generator the operator owns, seeded per batch
  (``seed`` + batch index), so every pass sees the same labels and F is one fixed matrix; the
  global RNG is never touched. :meth:`FisherOperator.resample` draws new labels. (Over a
process group the batch index is the rank's own: a sharded run draws other labels than one
process would -- another draw of the same random matrix, identical on every rank.)

Conventions: a sample is one entry along the batch's leading dimension (a sequence for token
models: ℓₙ sums over its tokens); N is the count the objective's mean divides by (samples,
tokens ≠ ``ignore_index``, elements of an element-wise loss), the same normalization as the
Hessian and the GGN, so the three are on one scale. ``reduction="sum"``: no 1/N.

How: since ℓₙ depends on θ only through sample n's outputs zₙ, ∇ℓₙ = Jₙᵀ rₙ with
rₙ = ∇_{zₙ} ℓₙ, and F V = Jᵀ [blockdiag(rₙ rₙᵀ)] J V: one JVP, a rank-one product per sample,
one VJP -- the per-sample gradients of ``torch.func`` (vmap of grad) without materializing the
(samples x N) matrix, and still defined under train-mode BatchNorm, where per-sample
``vmap(grad)`` would see a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._output_space import Sampler, output_gradient, sample_targets
from .ggn import OutputSpaceOperator

__all__ = ["FisherOperator", "FISHER_KINDS"]

FISHER_KINDS = ("empirical", "mc")
Batch = Any


class FisherOperator(OutputSpaceOperator):
    """Empirical or Monte-Carlo Fisher of the training objective over ``data``, N x N.

    Args:
        model, loss_fn, data: as :class:`~hessian_lr.curvature.HessianOperator`, with
            ``loss_fn(outputs, targets)``.
        kind: ``"empirical"`` (the data's labels) or ``"mc"`` (labels from the model).
        mc_samples: labels drawn per sample for ``kind="mc"`` (the estimate's variance falls as
            1/mc_samples; cost per product does not grow with it beyond the loss gradients).
        seed: the seed of the operator's own label generator (``kind="mc"``).
        generator: alternatively a ``torch.Generator`` from which the seed is drawn once.
        sampler: ``(outputs, targets, generator) -> labels`` for losses without a built-in
            predictive distribution, e.g. :func:`~hessian_lr.curvature.categorical_sampler` for
            token logits (B, T, C).
        **kwargs: every other ``HessianOperator`` / ``GGNOperator`` keyword.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # ℓₙ = (w xₙ − yₙ)², ∇ℓₙ = 2 xₙ (w xₙ − yₙ)
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [0.0]])
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> FisherOperator(model, nn.MSELoss(), (x, y)).to_dense()  # (4·1 + 0)/2
        tensor([[2.]])
    """

    _kind_name = "Fisher"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Batch | Iterable[Batch],
        *,
        kind: Literal["empirical", "mc"] = "empirical",
        mc_samples: int = 1,
        seed: int = 0,
        generator: torch.Generator | None = None,
        sampler: Sampler | None = None,
        **kwargs: Any,
    ) -> None:
        if kind not in FISHER_KINDS:
            raise ValueError(f"kind must be one of {FISHER_KINDS}, got {kind!r}")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
        if sampler is not None and not callable(sampler):
            raise TypeError("sampler must be callable (outputs, targets, generator) -> labels")
        super().__init__(model, loss_fn, data, **kwargs)
        self.kind, self.mc_samples, self.sampler = kind, mc_samples, sampler
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        self.seed = int(seed)
        if kind == "mc":
            self.notes.append(
                f"MC Fisher: {mc_samples} label(s) per sample from the model's predictive "
                f"distribution, generator seeded {self.seed} + batch index (fixed across passes)"
            )
        else:
            self.notes.append("empirical Fisher: outer products of per-sample gradients")

    def resample(self, seed: int) -> None:
        """Draw new MC labels from now on (a new fixed matrix); drops cached state."""
        self.seed = int(seed)
        self.release_graph()

    def _labels(self, index: int, outputs: Any, targets: Any) -> list[Any]:
        """The label sets the outer products use: the data's, or mc_samples drawn ones."""
        if self.kind == "empirical":
            return [targets]
        if not isinstance(outputs, torch.Tensor):
            raise ValueError("kind='mc' needs a tensor of outputs (the logits or predictions)")
        gen = torch.Generator(device=outputs.device).manual_seed(self.seed + 7919 * index)
        draw = self.sampler or (lambda z, t, g: sample_targets(self.loss_fn, z, t, g))
        return [draw(outputs, targets, gen) for _ in range(self.mc_samples)]

    def _middle(self, index: int, batch: Batch, outputs: Any, targets: Any, JV: Any) -> Any:
        # M_b = c_b Σₙ rₙ rₙᵀ with r = ∇_z L_b: for a mean (L_b = (1/c_b) Σₙ ℓₙ) that is
        # (1/c_b) Σₙ ∇ℓₙ∇ℓₙᵀ in output space; for a sum, c_b = 1.
        scale = float(self._count(batch)) if self.reduction == "mean" else 1.0
        if self.kind == "mc":
            return _mc_middle(self, index, outputs, targets, JV, scale)
        jv_leaves, spec = tree_flatten(JV)
        r_leaves, _ = tree_flatten(output_gradient(self._loss_impl, outputs, targets))
        pairs = [(i, r) for i, r in enumerate(r_leaves) if r.ndim > 0]
        # a[j, n] = Σ_leaves Σ_(non-batch dims) r[n] · JV[j, n]
        a = sum(
            (jv_leaves[i] * r).reshape(jv_leaves[i].shape[0], r.shape[0], -1).sum(-1)
            for i, r in pairs
        )
        out = [torch.zeros_like(t) for t in jv_leaves]
        for i, r in pairs:
            out[i] = a.reshape(*a.shape, *([1] * (r.ndim - 1))) * r * scale
        return tree_unflatten(out, spec)


def _mc_middle(
    op: FisherOperator, index: int, outputs: Any, targets: Any, JV: torch.Tensor, scale: float
) -> torch.Tensor:
    """(scale/S) Σₛ Σₙ rₙ⁽ˢ⁾ rₙ⁽ˢ⁾ᵀ JVₙ for S label sets, r⁽ˢ⁾ = ∇_z L_b(z, ŷ⁽ˢ⁾) (vmapped)."""
    labels = op._labels(index, outputs, targets)
    Y = torch.stack(labels)
    loss_grad = grad(lambda z, y: op._loss_impl(z, y))
    try:
        R = vmap(loss_grad, in_dims=(None, 0))(outputs, Y)  # (S, *z)
    except (RuntimeError, NotImplementedError):  # a loss without batching rules: a loop
        R = torch.stack([output_gradient(op._loss_impl, outputs, y) for y in labels])
    S, B, k = R.shape[0], outputs.shape[0], JV.shape[0]
    Rf, Jf = R.reshape(S, B, -1), JV.reshape(k, B, -1)
    a = torch.einsum("sbd,kbd->skb", Rf, Jf)
    return (torch.einsum("skb,sbd->kbd", a, Rf) * (scale / S)).reshape(JV.shape)
