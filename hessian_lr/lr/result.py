"""The LR result types' shared base (``LRResult``) and ``LREstimate``, the result of one estimate.

Every LR measurement returns a frozen dataclass derived from :class:`LRResult`: ``LREstimate``
(:mod:`hessian_lr.lr.estimate`), ``SecantResult`` (:mod:`hessian_lr.lr.secant`),
``UpdateEstimate`` (:mod:`hessian_lr.lr.update`) and ``PreconditionedSharpness``
(:mod:`hessian_lr.lr.stability`). They share the LR, its flags, its cost, ``ok`` and
``as_dict``; each adds the numbers behind its own rule.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, asdict, dataclass, field, fields
from typing import Any

import torch

from .defaults import DEFAULT_BN_MODE

__all__ = ["LRResult", "LREstimate"]

_NAN = float("nan")


@dataclass(frozen=True)
class LRResult:
    """What every LR result has: the LR, the flags that void it, and what it cost.

    Attributes:
        lr: the learning rate, or ``nan`` when ``flags`` says none is implied.
        flags: why ``lr`` is ``nan`` (flag names of :mod:`hessian_lr.lr.rules` and the
            optimizer-aware modules); empty when all is well. Keyword-only.
        num_hvps: Hessian-vector products spent. Keyword-only.
        seconds: wall-clock time of the measurement. Keyword-only.
    """

    lr: float
    _: KW_ONLY
    flags: tuple[str, ...] = ()
    num_hvps: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number (then ``flags`` is empty)."""
        return math.isfinite(self.lr) and self.lr > 0

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python fields, e.g. for JSON records.

        Tuples become lists; the vectors (eigenvectors, per-weight values: the fields left out
        of ``repr``) are left out.
        """
        keep = {f.name for f in fields(self) if f.repr}
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k in keep
        }


@dataclass(frozen=True)
class LREstimate(LRResult):
    """A learning-rate estimate from :func:`estimate_lr` and the curvature numbers behind it.

    Attributes:
        lr: the estimate (a positive float), or ``nan`` when ``flags`` is not empty.
            ``quadratic``: gᵀg/gᵀHg; ``secant_hvp``: Σ|g|/Σ|Hg| (L1) or ‖g‖/‖Hg‖ (L2);
            ``sharpness``: 1/λ_max; ``secant_same_batch``: Σ|Δθ|/Σ|Δg|. Units: the LR of
            plain SGD on the loss.
        method: the method's name.
        raw_lr: the formula's value regardless of flags (e.g. 1/λ of an unconverged Ritz value).
        loss: mean loss on the batch at the current parameters.
        grad_norm: ‖g‖₂. grad_l1: Σ|g|.
        gHg: gᵀHg. hg_norm: ‖Hg‖₂. hg_l1: Σ|Hg| (HVP methods).
        curvature: Rayleigh quotient of H along the direction used (gᵀHg/gᵀg, λ_max, or
            Δθᵀ Δg/‖Δθ‖² for the same-batch secant).
        step_norm: ‖Δθ‖₂ (same-batch secant).
        lambda_max: largest Hessian eigenvalue (sharpness). residual: its Ritz residual.
        lr_newton: 1/λ_max. lr_stable: 2/λ_max. lr_stable_momentum: (2 + 2β)/λ_max.
        momentum: the β used for ``lr_stable_momentum``.
        norm: ``"l1"`` / ``"l2"`` for the secant rules, else ``None``.
        num_hvps: Hessian-vector products spent. num_gradients: gradients spent.
        seconds: wall-clock time of the call.
        flags: see the module docstring; empty when all is well.
        backend: the HVP back end that ran.
        bn_mode: the BatchNorm mode of the loss (``"train"`` or ``"eval"``).
        seed: the seed of the call's own generator (``None`` when one was passed).
        curvature_matrix: the matrix the curvature numbers are of: ``"hessian"`` (default),
            ``"ggn"``, ``"fisher"`` (empirical) or ``"fisher_mc"`` (``estimate_lr(curvature=)``;
            ``gHg``, ``lambda_max`` etc. are then of that matrix).
        details: method-specific numbers (e.g. from optimizer-aware methods).
        eigenvector: (N,) top eigenvector (sharpness), for warm starts; not in ``repr``.
    """

    method: str
    raw_lr: float = _NAN
    loss: float = _NAN
    grad_norm: float = _NAN
    grad_l1: float = _NAN
    gHg: float = _NAN
    hg_norm: float = _NAN
    hg_l1: float = _NAN
    curvature: float = _NAN
    step_norm: float = _NAN
    lambda_max: float = _NAN
    residual: float = _NAN
    lr_newton: float = _NAN
    lr_stable: float = _NAN
    lr_stable_momentum: float = _NAN
    momentum: float = 0.0
    norm: str | None = None
    num_gradients: int = 0
    backend: str = ""
    bn_mode: str = DEFAULT_BN_MODE
    seed: int | None = None
    curvature_matrix: str = "hessian"
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    eigenvector: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        # Only the numbers this method produced: NaN fields (other methods') are left out.
        parts = []
        shared = ("flags", "num_hvps", "seconds")  # LRResult's shared fields last
        order = sorted(fields(self), key=lambda f: f.name in shared)
        for f in order:
            value = getattr(self, f.name)
            if not f.repr or (f.name in ("norm", "seed") and value is None):
                continue
            if f.name == "momentum" and self.method != "sharpness":
                continue
            if f.name == "curvature_matrix" and value == "hessian":
                continue
            if f.name == "details" and not value:
                continue
            if f.name != "lr" and isinstance(value, float) and math.isnan(value):
                continue
            parts.append(f"{f.name}={value!r}")
        return f"LREstimate({', '.join(parts)})"
