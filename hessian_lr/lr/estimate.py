"""Learning-rate estimates from local curvature: secant, secant-HVP, quadratic, sharpness.

What learning rate does the curvature at the current parameters support? Four answers (methods
notes §3), each a positive float or a flagged ``nan`` -- never a silent garbage number:

* ``secant`` (:func:`secant_lr`): Smith & Topin, *Super-Convergence* (arXiv 1708.07120), §5,
  Eq. 8. From three iterates of plain SGD, H·δ ≈ ∇f(θ_{i+1}) − ∇f(θ_i) along the step actually
  taken, which gives per weight ε*_j = ε (θ_{i+1,j} − θ_{i,j}) / (2θ_{i+1,j} − θ_{i,j} − θ_{i+2,j})
  and globally (L1, the paper's choice) ε* = ε Σ|θ_{i+1} − θ_i| / Σ|2θ_{i+1} − θ_i − θ_{i+2}|.
  No gradient or HVP: only the weight trajectory.
* ``secant_hvp``: the same ratio with an exact HVP on one batch instead of two noisy gradients,
  ε* = Σ|g| / Σ|Hg| (L1) or ‖g‖ / ‖Hg‖ (L2). One gradient and one HVP.
* ``quadratic``: the minimiser of the local quadratic model along −g (exact line search of a
  quadratic; the Cauchy step), ε* = gᵀg / gᵀHg. One gradient and one HVP.
* ``sharpness``: from λ_max (Lanczos, warm-startable): 1/λ_max (Newton step along the sharpest
  direction), 2/λ_max (gradient-descent stability bound) and (2 + 2β)/λ_max (heavy-ball momentum
  β; Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of
  stability", ICLR).

Flags (``LREstimate.flags``, ``SecantResult.flags``):

* ``"negative_curvature"``: gᵀHg ≤ 0 (quadratic, secant_hvp) or λ_max ≤ 0 (sharpness): no positive
  curvature, so no step size is implied; ``lr`` is ``nan`` (``strict=True`` raises
  :class:`CurvatureError`). For ``secant`` the paper's formula takes absolute values and stays
  positive: the flag (Δ₁·(Δ₁−Δ₂) ≤ 0, the step saw non-positive curvature) is a warning and ``lr``
  keeps the paper's value.
* ``"zero_gradient"``: gᵀg = 0 (a stationary point): ``lr`` is ``nan`` (0/0).
* ``"zero_step"`` / ``"zero_curvature"`` (secant): the iterates did not move / the two steps are
  identical (no curvature seen, the estimate would be infinite): ``lr`` is ``nan``.
* ``"nonfinite_loss"``: the loss, the gradient or an HVP is NaN or inf (with
  ``on_nonfinite="flag"``; the default ``"raise"`` raises :class:`hessian_lr.hvp.NonFiniteError`).
* ``"not_converged"``: Lanczos did not reach ``lanczos_tol``; the numbers are kept.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.lanczos import lanczos
from ..curvature.linop import params_to_vector

__all__ = [
    "CurvatureError",
    "FLAGS",
    "HVP_METHODS",
    "LREstimate",
    "METHODS",
    "SecantResult",
    "estimate_lr",
    "secant_lr",
]

NEGATIVE_CURVATURE = "negative_curvature"
ZERO_GRADIENT = "zero_gradient"
NONFINITE_LOSS = "nonfinite_loss"
NOT_CONVERGED = "not_converged"
ZERO_STEP = "zero_step"
ZERO_CURVATURE = "zero_curvature"
FLAGS = (
    NEGATIVE_CURVATURE,
    ZERO_GRADIENT,
    NONFINITE_LOSS,
    NOT_CONVERGED,
    ZERO_STEP,
    ZERO_CURVATURE,
)

#: Methods that need the model and a batch (``estimate_lr``); ``secant`` needs iterates only.
HVP_METHODS = ("secant_hvp", "quadratic", "sharpness")
METHODS = ("secant", *HVP_METHODS)
_NORMS = ("l1", "l2")
_NAN = float("nan")


class CurvatureError(ValueError):
    """No step size is implied: non-positive curvature, a zero gradient or a zero step."""


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class LREstimate:
    """A learning-rate estimate from :func:`estimate_lr` and the curvature numbers behind it.

    Attributes:
        lr: the estimate (a positive float), or ``nan`` when a flag says no step size is implied.
            ``quadratic``: gᵀg/gᵀHg; ``secant_hvp``: Σ|g|/Σ|Hg| (L1) or ‖g‖/‖Hg‖ (L2);
            ``sharpness``: 1/λ_max (= ``lr_newton``). Units: the LR of plain SGD on the loss.
        method: ``"quadratic"``, ``"secant_hvp"`` or ``"sharpness"``.
        loss: mean loss on the batch at the current parameters.
        grad_norm: ‖g‖₂.
        grad_l1: Σ|g|.
        gHg: gᵀHg (``nan`` for sharpness).
        hg_norm: ‖Hg‖₂ (``nan`` for sharpness).
        hg_l1: Σ|Hg| (``nan`` for sharpness).
        lambda_max: largest Hessian eigenvalue (sharpness; ``nan`` otherwise).
        residual: Lanczos Ritz residual ‖Hv − λv‖ of ``lambda_max`` (absolute).
        lr_newton: 1/λ_max.
        lr_stable: 2/λ_max, the stability limit of gradient descent on the local quadratic.
        lr_stable_momentum: (2 + 2β)/λ_max, the limit for heavy-ball momentum β (= ``momentum``).
        momentum: the β used for ``lr_stable_momentum``.
        norm: ``"l1"`` / ``"l2"`` for secant_hvp, else ``None``.
        num_hvps: Hessian-vector products spent.
        seconds: wall-clock time of the call (gradient, products, solver).
        flags: tuple of flag strings (see the module docstring); empty when all is well.
        backend: the HVP back end that ran.
        eigenvector: (N,) top eigenvector (sharpness), for warm starts; not in ``repr``.
    """

    lr: float
    method: str
    loss: float = _NAN
    grad_norm: float = _NAN
    grad_l1: float = _NAN
    gHg: float = _NAN
    hg_norm: float = _NAN
    hg_l1: float = _NAN
    lambda_max: float = _NAN
    residual: float = _NAN
    lr_newton: float = _NAN
    lr_stable: float = _NAN
    lr_stable_momentum: float = _NAN
    momentum: float = 0.0
    norm: str | None = None
    num_hvps: int = 0
    seconds: float = 0.0
    flags: tuple[str, ...] = ()
    backend: str = ""
    eigenvector: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number."""
        return math.isfinite(self.lr) and self.lr > 0

    def __repr__(self) -> str:
        # Only the numbers this method produced: NaN fields (other methods') are left out.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr or (f.name == "norm" and value is None):
                continue
            if f.name == "momentum" and self.method != "sharpness":
                continue
            if f.name != "lr" and isinstance(value, float) and math.isnan(value):
                continue
            parts.append(f"{f.name}={value!r}")
        return f"LREstimate({', '.join(parts)})"

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python fields (no eigenvector), e.g. for JSON records."""
        d = {k: v for k, v in asdict(self).items() if k != "eigenvector"}
        d["flags"] = list(self.flags)
        return d


@dataclass(frozen=True)
class SecantResult:
    """The Super-Convergence secant estimate (Eq. 8) from three iterates; see :func:`secant_lr`.

    Attributes:
        lr: the estimate in the chosen ``norm`` (``nan`` on a zero step or zero curvature).
        lr_l1: ε·Σ|Δ₁| / Σ|Δ₁ − Δ₂| (the paper's global estimate), generalized as in
            :func:`secant_lr`.
        lr_l2: the L2 variant.
        per_weight: (N,) float64 per-weight ε*_j, ``nan`` where the denominator is 0, or None.
        curvature: Δ₁ᵀw / ‖Δ₁‖² with w ≈ HΔ₁ the gradient change: the Rayleigh quotient of H along
            the step (units 1/LR); ≤ 0 raises the ``negative_curvature`` flag.
        step_l1: Σ|Δ₁| (parameter units).
        step_norm: ‖Δ₁‖₂.
        lr_used: ε of the first span; ``lr_next``: ε of the second (equal to ``lr_used`` for the
            paper's rule).
        steps: optimizer steps between consecutive iterates (k).
        norm: ``"l1"`` or ``"l2"``.
        flags: see the module docstring.
        seconds: wall-clock time.
        method: ``"secant"``.
    """

    lr: float
    lr_l1: float
    lr_l2: float
    curvature: float
    step_l1: float
    step_norm: float
    lr_used: float
    lr_next: float
    steps: int
    norm: str
    flags: tuple[str, ...] = ()
    seconds: float = 0.0
    per_weight: torch.Tensor | None = field(default=None, repr=False, compare=False)
    method: str = "secant"
    num_hvps: int = 0

    @property
    def ok(self) -> bool:
        """True when ``lr`` is a finite positive number."""
        return math.isfinite(self.lr) and self.lr > 0

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python fields (no per-weight vector), e.g. for JSON records."""
        d = {k: v for k, v in asdict(self).items() if k != "per_weight"}
        d["flags"] = list(self.flags)
        return d


# ------------------------------------------------------------------------------------ secant
def _flatten(theta: torch.Tensor | Sequence[torch.Tensor], name: str) -> torch.Tensor:
    if isinstance(theta, torch.Tensor):
        return theta.detach().reshape(-1)
    if isinstance(theta, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in theta):
        return params_to_vector([t.detach() for t in theta])
    raise TypeError(f"{name} must be a tensor or a list of parameter tensors, got {type(theta)}")


def _shapes(theta: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    if isinstance(theta, torch.Tensor):
        return [tuple(theta.shape)]
    return [tuple(t.shape) for t in theta]


def _check_lr(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite learning rate, got {value}")
    return value


def secant_lr(
    theta_prev: torch.Tensor | Sequence[torch.Tensor],
    theta_curr: torch.Tensor | Sequence[torch.Tensor],
    theta_next: torch.Tensor | Sequence[torch.Tensor],
    lr: float,
    *,
    lr_next: float | None = None,
    steps: int = 1,
    norm: Literal["l1", "l2"] = "l1",
    per_weight: bool = False,
    strict: bool = False,
) -> SecantResult:
    """The Super-Convergence secant LR estimate (Smith & Topin 2017, §5, Eq. 8) from 3 iterates.

    With Δ₁ = θ_curr − θ_prev and Δ₂ = θ_next − θ_curr taken by plain SGD with LR ε
    (Δ = −ε g), the gradient change along the step is (Δ₁ − Δ₂)/ε ≈ H Δ₁, and Eq. 8 reads

        per weight  ε*_j = ε Δ₁_j / (Δ₁_j − Δ₂_j)
                         = ε (θ_{i+1,j} − θ_{i,j}) / (2θ_{i+1,j} − θ_{i,j} − θ_{i+2,j}),
        global L1   ε*   = ε Σ|Δ₁| / Σ|Δ₁ − Δ₂|            (the paper's choice),
        global L2   ε*   = ε ‖Δ₁‖ / ‖Δ₁ − Δ₂‖,

    i.e. Σ|g|/Σ|Hg| estimated from the trajectory. In one dimension, f = aθ²/2, it is exactly 1/a.

    Iterates ``steps`` = k optimizer steps apart: k plain-SGD steps move θ by ≈ −kε g, so the
    iterates look like single steps of LR kε, and the estimate of the *per-step* LR is
    kε Σ|Δ₁| / Σ|Δ₁ − Δ₂| (ε the per-step LR). On f = aθ²/2 this gives
    kε / (1 − (1 − εa)^k) = (1/a) · kεa / (1 − (1 − εa)^k): exact for k = 1, and a relative excess
    ≈ (k − 1)εa/2 for small kεa. When the LR differs between the spans (``lr_next``), the
    gradient change is estimated as Δ₁/E₁ − Δ₂/E₂ with E = kε per span, giving
    ε* = Σ|Δ₁| / Σ|Δ₁/E₁ − Δ₂/E₂| (equal to the above when E₁ = E₂); the paper uses one ε.

    Momentum: under heavy-ball momentum β the steps are ≈ −ε/(1−β)·g in the slow regime, so the
    estimate (which multiplies by the applied ε) is ≈ (1−β)·Σ|g|/Σ|Hg|: the LR that, *with that
    momentum*, gives the secant-optimal effective step. The paper derives Eq. 8 for plain SGD and
    applies it with momentum 0.9.

    Args:
        theta_prev, theta_curr, theta_next: iterates θ_i, θ_{i+k}, θ_{i+2k}: flat tensors (any
            shape, flattened) or lists of parameter tensors with matching shapes.
        lr: ε, the per-step LR applied from ``theta_prev`` to ``theta_curr`` (> 0).
        lr_next: the per-step LR applied from ``theta_curr`` to ``theta_next``; default ``lr``
            (the paper's rule).
        steps: k, optimizer steps between consecutive iterates (≥ 1).
        norm: ``"l1"`` (the paper) or ``"l2"``; selects ``lr``.
        per_weight: also return the per-weight vector ε*_j (float64, ``nan`` where 0/0 or x/0).
        strict: raise :class:`CurvatureError` instead of flagging a zero step or zero curvature.

    Returns:
        A :class:`SecantResult`. Computed in float64.

    Raises:
        ValueError: shape mismatch, a non-positive LR, ``steps`` < 1, an unknown norm.
        NonFiniteError: an iterate holds NaN or inf.
        CurvatureError: with ``strict=True``, a zero step or identical steps.

    Example:
        >>> import torch
        >>> a, eps = 4.0, 0.1  # f = a θ²/2, plain SGD: θ ← θ − ε a θ
        >>> t0 = torch.tensor([1.0], dtype=torch.float64)
        >>> t1 = t0 - eps * a * t0
        >>> t2 = t1 - eps * a * t1
        >>> round(secant_lr(t0, t1, t2, eps).lr, 12)  # 1/a
        0.25
    """
    t0 = time.perf_counter()
    if norm not in _NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    eps1 = _check_lr("lr", lr)
    eps2 = eps1 if lr_next is None else _check_lr("lr_next", lr_next)
    named = (("theta_prev", theta_prev), ("theta_curr", theta_curr), ("theta_next", theta_next))
    x0, x1, x2 = (_flatten(t, n).to(torch.float64) for n, t in named)
    kinds = {isinstance(t, torch.Tensor) for _, t in named}
    shapes = [_shapes(t) for _, t in named]
    # Same kind (all flat tensors or all lists): shapes must agree; mixed: sizes must agree.
    if (len(kinds) == 1 and not shapes[0] == shapes[1] == shapes[2]) or not (
        x0.numel() == x1.numel() == x2.numel()
    ):
        raise ValueError(
            f"iterate shapes differ: theta_prev {shapes[0]}, theta_curr {shapes[1]}, "
            f"theta_next {shapes[2]}"
        )
    if x0.device != x1.device or x1.device != x2.device:
        x1, x2 = x1.to(x0.device), x2.to(x0.device)
    for t, name in ((x0, "theta_prev"), (x1, "theta_curr"), (x2, "theta_next")):
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"secant_lr: {name} holds NaN or inf (a diverged run)")

    E1, E2 = steps * eps1, steps * eps2
    d1 = x1 - x0
    d2 = x2 - x1
    w = d1 / E1 - d2 / E2  # ≈ g_{i+k} − g_i ≈ H Δ₁ (gradient units)
    s1, s1_l2 = float(d1.abs().sum()), float(torch.linalg.vector_norm(d1))
    w1, w_l2 = float(w.abs().sum()), float(torch.linalg.vector_norm(w))
    flags: list[str] = []
    if s1 == 0.0:
        flags.append(ZERO_STEP)
        lr_l1 = lr_l2 = curvature = _NAN
    elif w1 == 0.0:
        flags.append(ZERO_CURVATURE)
        lr_l1 = lr_l2 = _NAN
        curvature = 0.0
    else:
        lr_l1 = s1 / w1
        lr_l2 = s1_l2 / w_l2
        curvature = float(d1 @ w) / s1_l2**2
        if not curvature > 0:
            flags.append(NEGATIVE_CURVATURE)
    if strict and (ZERO_STEP in flags or ZERO_CURVATURE in flags):
        what = "did not move (zero step)" if ZERO_STEP in flags else "took identical steps"
        raise CurvatureError(
            f"secant_lr: the iterates {what}; no curvature is seen, so no LR is implied"
        )
    vec = None
    if per_weight:
        with torch.no_grad():
            vec = torch.where(w != 0, d1 / torch.where(w != 0, w, 1.0), _NAN)
    return SecantResult(
        lr=lr_l1 if norm == "l1" else lr_l2,
        lr_l1=lr_l1,
        lr_l2=lr_l2,
        curvature=curvature,
        step_l1=s1,
        step_norm=s1_l2,
        lr_used=eps1,
        lr_next=eps2,
        steps=steps,
        norm=norm,
        flags=tuple(flags),
        seconds=time.perf_counter() - t0,
        per_weight=vec,
    )


# ------------------------------------------------------------------------------- HVP methods
def _resolve_method(method: str) -> str:
    if method not in HVP_METHODS:
        hint = ""
        if method == "secant":
            hint = " (secant needs iterates: use secant_lr or LREstimator)"
        raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}{hint}")
    return method


def _estimate_many(
    op: HessianOperator,
    methods: Sequence[str],
    *,
    norm: str = "l1",
    momentum: float = 0.0,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    strict: bool = False,
    on_nonfinite: str = "raise",
    generator: torch.Generator | None = None,
) -> dict[str, LREstimate]:
    """Several HVP methods on one operator: one gradient, at most one HVP Hg, one Lanczos run.

    ``num_hvps`` and ``seconds`` of each estimate count what that method needs on its own (the
    shared gradient and Hg are counted in each of quadratic and secant_hvp).
    """
    out: dict[str, LREstimate] = {}
    backend = op.backend
    try:
        with torch.enable_grad():
            if "sharpness" in methods:
                t0 = time.perf_counter()
                h0 = op.num_hvps
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    res = lanczos(
                        op,
                        k=1,
                        which="LA",
                        tol=lanczos_tol,
                        max_iter=lanczos_max_iter,
                        v0=v0,
                        generator=generator,
                    )
                loss, g = op.gradient()  # free after the products on one batch (cached graph)
                lam = float(res.eigenvalues[0])
                flags = [] if res.converged else [NOT_CONVERGED]
                for w in caught:
                    if not (issubclass(w.category, RuntimeWarning) and "lanczos" in str(w.message)):
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                if lam > 0:
                    newton, stable = 1.0 / lam, 2.0 / lam
                    stable_m = (2.0 + 2.0 * momentum) / lam
                else:
                    flags.append(NEGATIVE_CURVATURE)
                    newton = stable = stable_m = _NAN
                if strict and NEGATIVE_CURVATURE in flags:
                    raise CurvatureError(
                        f"sharpness: λ_max = {lam:.3e} ≤ 0, the Hessian has no positive "
                        "curvature, so no step size is implied"
                    )
                out["sharpness"] = LREstimate(
                    lr=newton,
                    method="sharpness",
                    loss=loss,
                    grad_norm=float(torch.linalg.vector_norm(g.double())),
                    grad_l1=float(g.double().abs().sum()),
                    lambda_max=lam,
                    residual=float(res.residuals[0]),
                    lr_newton=newton,
                    lr_stable=stable,
                    lr_stable_momentum=stable_m,
                    momentum=momentum,
                    num_hvps=op.num_hvps - h0,
                    seconds=time.perf_counter() - t0,
                    flags=tuple(flags),
                    backend=op.backend,
                    eigenvector=res.eigenvectors[:, 0].detach(),
                )
            one_hvp = [m for m in methods if m in ("quadratic", "secant_hvp")]
            if one_hvp:
                t0 = time.perf_counter()
                h0 = op.num_hvps
                loss, g = op.gradient()
                g64 = g.double()
                gg = float(g64 @ g64)
                g_l1 = float(g64.abs().sum())
                common = dict(loss=loss, grad_norm=math.sqrt(gg), grad_l1=g_l1, backend=backend)
                if not gg > 0:
                    if strict:
                        raise CurvatureError(
                            "the gradient is zero (a stationary point): gᵀg/gᵀHg is 0/0"
                        )
                    secs = time.perf_counter() - t0
                    for m in one_hvp:
                        out[m] = LREstimate(
                            lr=_NAN,
                            method=m,
                            norm=norm if m == "secant_hvp" else None,
                            seconds=secs,
                            flags=(ZERO_GRADIENT,),
                            **common,
                        )
                else:
                    hg = (op @ g).double()
                    gHg = float(g64 @ hg)
                    hg_l2 = float(torch.linalg.vector_norm(hg))
                    hg_l1 = float(hg.abs().sum())
                    secs = time.perf_counter() - t0
                    positive = gHg > 0
                    if strict and not positive:
                        raise CurvatureError(
                            f"gᵀHg = {gHg:.3e} ≤ 0: no positive curvature along the gradient, "
                            "so the quadratic model has no minimiser along −g"
                        )
                    flags = () if positive else (NEGATIVE_CURVATURE,)
                    for m in one_hvp:
                        if not positive:
                            lr = _NAN
                        elif m == "quadratic":
                            lr = gg / gHg
                        else:
                            lr = g_l1 / hg_l1 if norm == "l1" else math.sqrt(gg) / hg_l2
                        out[m] = LREstimate(
                            lr=lr,
                            method=m,
                            gHg=gHg,
                            hg_norm=hg_l2,
                            hg_l1=hg_l1,
                            norm=norm if m == "secant_hvp" else None,
                            num_hvps=op.num_hvps - h0,
                            seconds=secs,
                            flags=flags,
                            **common,
                        )
    except NonFiniteError:
        if on_nonfinite == "raise":
            raise
        return {
            m: LREstimate(lr=_NAN, method=m, flags=(NONFINITE_LOSS,), backend=backend)
            for m in methods
        }
    finally:
        op.release_graph()
    return {m: out[m] for m in methods}


def _check_common(norm: str, momentum: float, lanczos_tol: float, on_nonfinite: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not lanczos_tol > 0:
        raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")


def estimate_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any | Iterable[Any],
    *,
    method: Literal["quadratic", "secant_hvp", "sharpness"] = "quadratic",
    norm: Literal["l1", "l2"] = "l1",
    momentum: float = 0.0,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = None,
    v0: torch.Tensor | None = None,
    backend: str = "auto",
    bn_mode: Literal["eval", "train"] = "eval",
    params: Sequence[torch.Tensor] | Sequence[str] | None = None,
    closure: bool = False,
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    generator: torch.Generator | None = None,
) -> LREstimate:
    """The learning rate that the curvature of the loss at the current parameters supports.

    One :class:`~hessian_lr.hvp.HessianOperator` per call (Hessian of the mean loss over
    ``batch``): ``quadratic`` and ``secant_hvp`` cost one gradient and one HVP, ``sharpness`` a
    Lanczos run (5-10 HVPs on LeNet-5 at the default tolerance; a warm start from the previous
    eigenvector ``v0`` saves one or two on a new batch). The model, its buffers, ``.grad`` and
    train/eval modes are left untouched. Call it anywhere in a training loop, beside any
    schedule; see the module docstring for the flags.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or with ``closure=True``
            ``loss_fn(model, batch)``.
        batch: ``(inputs, targets)``, or an iterable of batches (the Hessian of the mean loss).
        method: ``"quadratic"`` (gᵀg/gᵀHg), ``"secant_hvp"`` (Σ|g|/Σ|Hg|) or ``"sharpness"``
            (1/λ_max; also 2/λ_max and (2+2β)/λ_max in the result).
        norm: ``"l1"`` or ``"l2"`` for ``secant_hvp``.
        momentum: heavy-ball β for ``lr_stable_momentum`` = (2 + 2β)/λ_max, in [0, 1).
        lanczos_tol: relative Ritz residual ‖Hv − λv‖/λ for λ_max. The eigenvalue error is at
            most the residual and typically its square over the spectral gap: the default 1e-2
            gives λ_max to about 1e-4 relative on LeNet-5 (enough for a learning rate) in about
            7-9 HVPs.
        lanczos_max_iter: Krylov dimension cap (default: the solver's).
        v0: (N,) start vector for Lanczos, e.g. the previous ``LREstimate.eigenvector``.
        backend, bn_mode, params, closure: passed to ``HessianOperator``.
        strict: raise :class:`CurvatureError` instead of returning ``nan`` with a
            ``negative_curvature`` / ``zero_gradient`` flag.
        on_nonfinite: ``"raise"`` (default) a :class:`~hessian_lr.hvp.NonFiniteError` on a NaN/inf
            loss, gradient or HVP, or ``"flag"``: return ``lr = nan`` with ``nonfinite_loss``.
        generator: random source for the Lanczos start vector (cold start).

    Returns:
        An :class:`LREstimate`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # f(w) = mean (w x - y)², H = 2 mean x² = 2
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x, y = torch.ones(4, 1), torch.ones(4, 1)
        >>> round(estimate_lr(model, nn.MSELoss(), (x, y), method="quadratic").lr, 6)
        0.5
    """
    t0 = time.perf_counter()
    method = _resolve_method(method)
    _check_common(norm, momentum, lanczos_tol, on_nonfinite)
    op = HessianOperator(
        model, loss_fn, batch, params=params, backend=backend, bn_mode=bn_mode, closure=closure
    )
    est = _estimate_many(
        op,
        [method],
        norm=norm,
        momentum=momentum,
        lanczos_tol=lanczos_tol,
        lanczos_max_iter=lanczos_max_iter,
        v0=v0,
        strict=strict,
        on_nonfinite=on_nonfinite,
        generator=generator,
    )[method]
    return replace(est, seconds=time.perf_counter() - t0)
