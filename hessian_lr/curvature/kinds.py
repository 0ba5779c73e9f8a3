"""Which curvature matrix: one name for each operator, so callers can pick the matrix by a string.

``"hessian"`` (:class:`HessianOperator`), ``"ggn"`` (:class:`GGNOperator`), ``"fisher"``
(:class:`FisherOperator`, empirical) and ``"fisher_mc"`` (:class:`FisherOperator`,
Monte-Carlo). ``estimate_lr(curvature=...)``, :func:`~hessian_lr.curvature.layer_sharpness`
and the observers build their operator through :func:`make_operator`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .fisher import FisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator

__all__ = ["CURVATURES", "make_operator", "check_curvature"]

CURVATURES = ("hessian", "ggn", "fisher", "fisher_mc")


def check_curvature(curvature: str) -> None:
    """Refuse an unknown curvature name with the list of known ones."""
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, got {curvature!r}")


def make_operator(
    curvature: str,
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any | Iterable[Any],
    **kwargs: Any,
) -> HessianOperator:
    """The operator of the named curvature on ``data``; ``kwargs`` go to its constructor.

    The GGN and the Fisher refuse ``closure=True`` and ``backend="finite-difference"`` (they
    need the model's outputs); ``"fisher_mc"`` takes ``mc_samples``, ``seed``, ``generator``.
    """
    check_curvature(curvature)
    if curvature == "hessian":
        return HessianOperator(model, loss_fn, data, **kwargs)
    if curvature == "ggn":
        return GGNOperator(model, loss_fn, data, **kwargs)
    kind = "mc" if curvature == "fisher_mc" else "empirical"
    return FisherOperator(model, loss_fn, data, kind=kind, **kwargs)
