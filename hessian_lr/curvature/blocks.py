"""Per-layer curvature: an operator restricted to a named parameter block, and λ_max per block.

Layer-wise LR methods (LARS/LAMB-style trust ratios, per-layer sharpness in the
edge-of-stability literature) need the curvature of each layer on its own: the diagonal block
H_BB = P_Bᵀ H P_B of a curvature matrix for the parameters in block B (P_B embeds a block vector
into the full parameter vector with zeros elsewhere).

* :class:`BlockOperator` -- P_Bᵀ A P_B for *any* operator A that names its parameters
  (``names`` and ``params``: Hessian, GGN, Fisher); each product is one full product of A.
* :func:`layer_blocks` -- the default blocks: the parameters of each module that owns some.
* :func:`layer_sharpness` -- λ_max of each block in one call, each on an operator that
  differentiates only that block's parameters (a product costs one pass of the model either
  way; the Lanczos vectors are block-sized). Returns a frozen :class:`LayerSharpness`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._evaluation import select_parameters
from .kinds import check_curvature, make_operator
from .lanczos import lanczos
from .linop import LinearOperator

__all__ = ["BlockOperator", "LayerSharpness", "layer_blocks", "layer_sharpness"]


class BlockOperator(LinearOperator):
    """The diagonal block P_Bᵀ A P_B of an operator A for the parameters named in ``names``.

    Args:
        op: an operator with ``names`` (parameter names in its vector order) and ``params``
            (tensors of those parameters), e.g. a Hessian, GGN or Fisher operator.
        names: the block's parameter names (a subset of ``op.names``, any order; the block
            vector follows ``op``'s order).
    """

    def __init__(self, op: Any, names: Sequence[str]) -> None:
        if not hasattr(op, "names") or not hasattr(op, "params"):
            raise TypeError(
                "BlockOperator needs an operator that names its parameters (.names, .params), "
                f"e.g. HessianOperator/GGNOperator/FisherOperator; got {type(op).__name__}"
            )
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in op.names]
        if not names or unknown:
            raise ValueError(f"block names {unknown or names} are not parameters of the operator")
        chosen = set(names)
        idx, start = [], 0
        for n, p in zip(op.names, op.params):
            if n in chosen:
                idx.append(torch.arange(start, start + p.numel()))
            start += p.numel()
        self.op = op
        self.names = [n for n in op.names if n in chosen]
        self.index = torch.cat(idx).to(op.device)
        super().__init__(int(self.index.numel()), op.dtype, op.device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        full = V.new_zeros((self.op.shape[0], V.shape[1]))
        full[self.index] = V
        return (self.op @ full)[self.index]

    def solving(self) -> Any:
        """The wrapped operator's solver context."""
        return self.op.solving()


def layer_blocks(model: nn.Module, params: Sequence[str] | None = None) -> dict[str, list[str]]:
    """{module name: its trainable parameter names}, each tied tensor once (its first name)."""
    names, _, _ = select_parameters(model, params)
    blocks: dict[str, list[str]] = {}
    for n in names:
        owner = n.rsplit(".", 1)[0] if "." in n else n
        blocks.setdefault(owner, []).append(n)
    return blocks


@dataclass(frozen=True)
class LayerSharpness:
    """λ_max of a curvature matrix's diagonal block for each named block.

    Attributes:
        blocks: block names, in model order.
        lambda_max: the top eigenvalue of each block (same order), units of the loss per
            parameter².
        residuals: the Lanczos residual ‖A y − λ y‖ of each.
        converged: whether each block's Lanczos run met ``tol``.
        num_params: parameters per block.
        num_matvecs: products spent over all blocks.
        curvature: ``"hessian"``, ``"ggn"``, ``"fisher"`` or ``"fisher_mc"``.
        seconds: wall-clock time of the call.
    """

    blocks: tuple[str, ...]
    lambda_max: tuple[float, ...]
    residuals: tuple[float, ...]
    converged: tuple[bool, ...]
    num_params: tuple[int, ...]
    num_matvecs: int
    curvature: str
    seconds: float

    def as_dict(self) -> dict[str, float]:
        """{block: λ_max}."""
        return dict(zip(self.blocks, self.lambda_max))


def layer_sharpness(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any | Iterable[Any],
    *,
    curvature: str = "hessian",
    blocks: Mapping[str, Sequence[str]] | None = None,
    tol: float = 1e-3,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
    **operator_kwargs: Any,
) -> LayerSharpness:
    """λ_max of the curvature restricted to each layer (block), in one call.

    Args:
        model: the network (never modified).
        loss_fn: ``loss_fn(outputs, targets)`` (or ``loss_fn(model, batch)`` with
            ``closure=True``, Hessian only).
        data: one batch or an iterable of batches, as for the operators.
        curvature: which matrix (see :data:`~hessian_lr.curvature.kinds.CURVATURES`).
        blocks: {block name: parameter names}; default :func:`layer_blocks` (one per module).
        tol: Lanczos relative residual per block.
        max_iter: Lanczos Krylov dimension cap per block.
        generator: random source of the Lanczos starts (default: seeded 0; global RNG untouched).
        **operator_kwargs: further operator keywords (``bn_mode``, ``reduction``, ...).

    Returns:
        A :class:`LayerSharpness`.
    """
    t0 = time.perf_counter()
    check_curvature(curvature)
    if "params" in operator_kwargs:
        raise ValueError("pass the blocks as blocks={name: [parameter names]}, not params=")
    blocks = dict(layer_blocks(model) if blocks is None else blocks)
    if not blocks:
        raise ValueError("blocks is empty: give at least one block of parameter names")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    lam, res, conv, sizes, used = [], [], [], [], 0
    for members in blocks.values():
        op = make_operator(curvature, model, loss_fn, data, params=list(members), **operator_kwargs)
        r = lanczos(op, k=1, tol=tol, max_iter=max_iter, generator=gen, return_eigenvectors=False)
        release = getattr(op, "release_graph", None)
        if release is not None:
            release()
        lam.append(float(r.eigenvalues[0]))
        res.append(float(r.residuals[0]))
        conv.append(bool(r.converged))
        sizes.append(op.shape[0])
        used += r.num_matvecs
    return LayerSharpness(
        blocks=tuple(blocks),
        lambda_max=tuple(lam),
        residuals=tuple(res),
        converged=tuple(conv),
        num_params=tuple(sizes),
        num_matvecs=used,
        curvature=curvature,
        seconds=time.perf_counter() - t0,
    )
