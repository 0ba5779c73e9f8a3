"""How every LR measurement builds its curvature operator: one frozen options object.

:func:`~hessian_lr.lr.estimate_lr`, :func:`~hessian_lr.lr.estimate_lrs`,
:class:`~hessian_lr.lr.LREstimator`, :class:`~hessian_lr.lr.EdgeOfStability`,
:func:`~hessian_lr.lr.update_lr`, :func:`~hessian_lr.lr.preconditioned_sharpness`, the training
runner's curvature probe and the integrations each take ``curvature=CurvatureOptions(...)``
instead of passing the operator's keywords (back end, BatchNorm mode, parameters, closure form,
process group, chunking, ...) through by hand. The fields are those of
:class:`~hessian_lr.curvature.HessianOperator`, with one difference: ``bn_mode`` defaults to
``DEFAULT_BN_MODE`` (``"train"``, the loss SGD descends) where the operator defaults to
``"eval"``.

Passing one of the old keywords (``backend=``, ``bn_mode=``, ``operator_options=``, ...) to an
entry point is a ``TypeError`` that names the field to set instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from ..curvature.hessian import BACKENDS, HessianOperator
from ..curvature.kinds import CURVATURES, make_operator
from .defaults import DEFAULT_BN_MODE

__all__ = ["CurvatureOptions", "OPERATOR_KEYWORDS", "as_options", "rejects_operator_keywords"]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CurvatureOptions:
    """How the curvature operator of an LR measurement is built.

    Attributes:
        matrix: which curvature: ``"hessian"`` (default), ``"ggn"`` (generalized Gauss-Newton,
            :class:`~hessian_lr.curvature.GGNOperator`), ``"fisher"`` (empirical Fisher) or
            ``"fisher_mc"`` (Monte-Carlo Fisher, ``mc_samples`` labels per sample); the entry
            points also take the name alone, ``curvature="ggn"``. The GGN and the Fisher need
            ``loss_fn(outputs, targets)`` and an exact back end (issue 26).
        mc_samples: labels drawn per sample for ``matrix="fisher_mc"``.
        backend: the HVP back end, one of ``hessian_lr.BACKENDS`` (``"auto"``,
            ``"forward-over-reverse"``, ``"double-backward"``, ``"finite-difference"``).
        bn_mode: ``"train"`` (batch statistics; the default, ``DEFAULT_BN_MODE``) or ``"eval"``
            (running statistics). Recorded with every estimate.
        params: the parameters (tensors or names) to differentiate; None = every trainable one.
            Stored as a tuple.
        closure: ``loss_fn(model, batch)`` form instead of ``loss_fn(outputs, targets)``.
        process_group: the ``torch.distributed`` group the batch is sharded over: None
            auto-detects an initialized default group, ``False`` keeps the measurement on this
            rank's batch. The products are all-reduced, so every rank gets the same numbers.
        chunk_size: columns per batched HVP (``HessianOperator.matmat``), None = all at once.
        reduction: ``"mean"`` or ``"sum"`` over the batch; None = the loss function's own.
        single_batch: treat ``batch`` as one batch (True) or as an iterable of batches (False);
            None = detect.
        batch_size_fn: weight of each batch in the mean over several batches.
        dtype: compute dtype of the products (e.g. ``torch.float64``); None = the parameters'.
        check_data: re-check that the batches did not change between products; None = default.
        fd_scheme: ``"central"`` or ``"forward"`` differences (``finite-difference`` back end).
        fd_eps: finite-difference step; None = the back end's rule.
        check_finite: raise ``NonFiniteError`` on a NaN/inf loss, gradient or product.
        cache_graph: keep the gradient's graph between products; None = the back end's choice.

    Example:
        >>> opts = CurvatureOptions(backend="double-backward", bn_mode="eval")
        >>> opts.bn_mode, CurvatureOptions().bn_mode
        ('eval', 'train')
    """

    matrix: Literal["hessian", "ggn", "fisher", "fisher_mc"] = "hessian"
    mc_samples: int = 1
    backend: str = "auto"
    bn_mode: Literal["eval", "train"] = DEFAULT_BN_MODE
    params: Sequence[torch.Tensor] | Sequence[str] | None = None
    closure: bool = False
    process_group: Any = None
    chunk_size: int | None = 16
    reduction: Literal["mean", "sum"] | None = None
    single_batch: bool | None = None
    batch_size_fn: Callable[[Any], float] | None = None
    dtype: torch.dtype | None = None
    check_data: bool | None = None
    fd_scheme: Literal["central", "forward"] = "central"
    fd_eps: float | None = None
    check_finite: bool = True
    cache_graph: bool | None = None

    def __post_init__(self) -> None:
        if self.matrix not in CURVATURES:
            raise ValueError(f"matrix must be one of {CURVATURES}, got {self.matrix!r}")
        if self.matrix != "hessian" and (self.closure or self.backend == "finite-difference"):
            raise ValueError(
                f"matrix={self.matrix!r} needs loss_fn(outputs, targets) and an exact back end "
                "(no closure, no finite differences)"
            )
        mc = self.mc_samples
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {self.bn_mode!r}")
        if not isinstance(self.closure, bool):
            raise TypeError(f"closure must be True or False, got {self.closure!r}")
        if self.params is not None:
            if isinstance(self.params, (str, torch.Tensor)):
                raise TypeError(
                    "params must be a sequence of tensors or of names, got a single "
                    f"{type(self.params).__name__}: wrap it in a list"
                )
            object.__setattr__(self, "params", tuple(self.params))
        size = self.chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {size!r}")
        if self.reduction not in (None, "mean", "sum"):
            raise ValueError(f"reduction must be 'mean', 'sum' or None, got {self.reduction!r}")
        if self.fd_scheme not in ("central", "forward"):
            raise ValueError(f"fd_scheme must be 'central' or 'forward', got {self.fd_scheme!r}")

    def operator(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: Any,
        *,
        params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    ) -> HessianOperator:
        """The operator these options describe (a ``HessianOperator`` unless ``matrix`` says).

        Args:
            model: the network.
            loss_fn: the loss (see ``closure``).
            data: one batch or an iterable of batches.
            params: overrides ``self.params`` (the entry points pass the parameters they
                resolved, e.g. those the optimizer holds).
        """
        kw = self.operator_kwargs()
        if params is not None:
            kw["params"] = params
        if self.matrix == "hessian":
            return HessianOperator(model, loss_fn, data, **kw)
        return make_operator(self.matrix, model, loss_fn, data, **kw)

    def operator_kwargs(self) -> dict[str, Any]:
        """The constructor keywords of the operator of ``matrix``.

        Fields left at their defaults are omitted, except backend, BN mode, parameters and the
        closure form.
        """
        kw = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in _MATRIX_FIELDS
            and (f.name in _ALWAYS or getattr(self, f.name) is not f.default)
        }
        if self.matrix != "hessian":  # no closure, no finite differences (checked above)
            for name in ("closure", "fd_scheme", "fd_eps"):
                kw.pop(name, None)
        if self.matrix == "fisher_mc":
            kw["mc_samples"] = self.mc_samples
        return kw


_ALWAYS = frozenset({"backend", "bn_mode", "params", "closure"})
#: Fields that say which matrix, not how to build it (not operator keywords of the Hessian).
_MATRIX_FIELDS = frozenset({"matrix", "mc_samples"})

#: Keywords the LR entry points no longer take, and where each went.
OPERATOR_KEYWORDS: dict[str, str] = {
    **{
        f.name: f"CurvatureOptions({f.name}=...)"
        for f in fields(CurvatureOptions)
        if f.name not in _MATRIX_FIELDS
    },
    "operator_options": "CurvatureOptions(<its keys as fields>)",
}


def as_options(curvature: CurvatureOptions | str | None) -> CurvatureOptions:
    """``curvature``, the defaults for None, or ``CurvatureOptions(matrix=name)`` for a name.

    Names: ``"hessian"``, ``"ggn"``, ``"fisher"``, ``"fisher_mc"``; anything else is a
    ``TypeError``.
    """
    if curvature is None:
        return CurvatureOptions()
    if isinstance(curvature, str):
        return CurvatureOptions(matrix=curvature)
    if not isinstance(curvature, CurvatureOptions):
        raise TypeError(
            f"curvature must be a CurvatureOptions or a matrix name {CURVATURES}, got "
            f"{type(curvature).__name__} (build one with hessian_lr.lr.CurvatureOptions("
            "backend=..., bn_mode=..., ...))"
        )
    return curvature


def rejects_operator_keywords(func: _F) -> _F:
    """Make ``func`` raise a ``TypeError`` naming the ``CurvatureOptions`` field for an old keyword.

    Keywords that ``func`` itself accepts (e.g. ``params`` of :func:`update_direction`) pass.
    """
    import inspect

    own = set(inspect.signature(func).parameters)
    name = func.__qualname__.replace(".__init__", "")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = [k for k in kwargs if k in OPERATOR_KEYWORDS and k not in own]
        if old:
            where = ", ".join(f"{k}= -> curvature={OPERATOR_KEYWORDS[k]}" for k in old)
            raise TypeError(
                f"{name}() no longer takes {', '.join(k + '=' for k in old)}: how the curvature "
                f"operator is built is one options object ({where}; "
                "CurvatureOptions is in hessian_lr.lr)"
            )
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
