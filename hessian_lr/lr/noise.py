"""The momentum-noise null of the secant LR estimate (Smith & Topin, *Super-Convergence*, Eq. 8).

Eq. 8 estimates the LR from three iterates, ε* = ε Σ|θ_{i+s} − θ_i| / Σ|2θ_{i+s} − θ_i − θ_{i+2s}|.
If the steps carried no curvature at all -- pure i.i.d. minibatch noise passed through the
optimizer's momentum -- the ratio would still be a fixed number, ε·c(μ, s), whatever the loss
surface. :func:`noise_null` returns c(μ, s) in closed form, so that every secant estimate can be
read against it: an estimate at ε·c says nothing about curvature.

Model. Per weight, g_t i.i.d. with mean 0 and variance σ² (σ may differ between weights). PyTorch
SGD with momentum μ and dampening d keeps v_t = μ v_{t−1} + (1 − d) g_t (an AR(1) process) and
steps θ_{t+1} = θ_t − ε u_t with u_t = v_t (heavy ball) or u_t = g_t + μ v_t (Nesterov). Both are
linear filters of the noise, u_t = Σ_k h_k g_{t−k}, with h_0 = b and h_k = B μ^k (k ≥ 1):
heavy ball b = B = 1 − d; Nesterov b = 1 + μ(1 − d), B = μ(1 − d). The stationary autocovariance
is γ(0) = b² + B²μ²/(1 − μ²) and γ(k) = A μ^k for k ≥ 1, A = bB + B²μ²/(1 − μ²).

With S₁, S₂ the sums of u over two consecutive blocks of s steps, θ_{i+s} − θ_i = −ε S₁ and
2θ_{i+s} − θ_i − θ_{i+2s} = −ε (S₁ − S₂). In closed form

    Var S₁        = s γ(0) + 2A μ (s(1 − μ) − (1 − μ^s)) / (1 − μ)²,
    Cov(S₁, S₂)   = A μ ((1 − μ^s) / (1 − μ))²,
    c(μ, s)       = sd(S₁) / sd(S₁ − S₂) = sqrt(Var S₁ / (2 (Var S₁ − Cov(S₁, S₂)))).

The L2 form of Eq. 8 converges to c over many weights for any noise distribution (a ratio of
variances, weighted by σ_j² -- which cancels). The L1 form (the paper's) converges to c when the
block sums are Gaussian (E|X| = sd·√(2/π) for every weight, so the σ_j cancel): exact for Gaussian
noise, and close for sums of many steps (large s or μ near 1) by the central limit theorem.

Checks: heavy ball s = 1 gives c = sqrt(1/(2(1 − μ))) (2.236 at μ = 0.9); plain SGD (μ = 0) gives
1/√2 for every s. Dampening cancels for heavy ball (a common factor), not for Nesterov.
The start of a run (PyTorch sets v_1 = g_1) is a transient that decays as μ^t; the null is the
stationary value.

Conventions. The *paper's* convention multiplies by the single-step ε even when the iterates are s
steps apart (the authors' script), so the null of estimate/ε is c(μ, s). The *per-step* convention
multiplies by sε, so its null is s·c(μ, s) (``scale="per_step"``).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

__all__ = ["noise_null", "noise_null_per_step", "SCALES"]

#: Spacing conventions of the secant estimate: the paper's single-step ε, or the per-step sε.
SCALES = ("paper", "per_step")


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1), got {value}"
            + (" (μ = 1 has no stationary noise level; use μ < 1)" if name == "momentum" else "")
        )
    return value


def _block_moments(mu: float, s: int, b: float, big_b: float) -> tuple[float, float]:
    """Var S₁ and Cov(S₁, S₂) per unit noise variance, for h_0 = b, h_k = B μ^k (k ≥ 1)."""
    geo = mu * mu / (1.0 - mu * mu)
    gamma0 = b * b + big_b * big_b * geo
    a = b * big_b + big_b * big_b * geo  # γ(k) = a μ^k for k ≥ 1
    if mu == 0.0:
        return s * gamma0, 0.0
    one_minus_mu_s = -math.expm1(s * math.log(mu))  # 1 − μ^s without cancellation
    one_minus_mu = 1.0 - mu
    lag_sum = mu * (s * one_minus_mu - one_minus_mu_s) / one_minus_mu**2  # Σ_{k<s} (s−k) μ^k
    var = s * gamma0 + 2.0 * a * lag_sum
    cov = a * mu * (one_minus_mu_s / one_minus_mu) ** 2
    return var, cov


def noise_null(
    momentum: float,
    spacing: int,
    *,
    nesterov: bool = False,
    dampening: float = 0.0,
    scale: Literal["paper", "per_step"] = "paper",
) -> float:
    """c(μ, s): what Eq. 8's estimate/ε returns when the steps are pure minibatch noise.

    The steps are i.i.d. noise through SGD momentum: v_t = μ v_{t−1} + (1 − d) g_t, step ∝ v_t
    (heavy ball) or g_t + μ v_t (Nesterov, PyTorch's form). Over a span of s steps the move is
    −ε S with S a block sum of this AR(1) process, so the L1 ratio tends to sd(S₁)/sd(S₁ − S₂)
    for consecutive blocks S₁, S₂, computed from the closed-form block variance and covariance
    (derivation in the module docstring). Independent of the curvature, the LR and the noise
    scale: an estimate within noise of ε·c(μ, s) measures the noise, not the curvature.

    Args:
        momentum: μ in [0, 1) (0: plain SGD).
        spacing: s ≥ 1, optimizer steps between the three iterates.
        nesterov: PyTorch's Nesterov form (step direction g_t + μ v_t).
        dampening: d in [0, 1), PyTorch's dampening (cancels for heavy ball).
        scale: ``"paper"`` (the estimate multiplies by the single-step ε, the authors'
            convention: null c) or ``"per_step"`` (multiplies by sε: null s·c).

    Returns:
        The null ratio estimate/ε (dimensionless, > 0).

    Raises:
        TypeError: a non-numeric momentum/dampening, a non-integer spacing, a non-bool nesterov.
        ValueError: momentum or dampening outside [0, 1), spacing < 1, an unknown scale.

    Example:
        >>> round(noise_null(0.9, 1), 4)  # sqrt(1 / (2 (1 - 0.9)))
        2.2361
        >>> round(noise_null(0.0, 10), 4)  # plain SGD: 1/sqrt(2) at every spacing
        0.7071
    """
    mu = _check_fraction("momentum", momentum)
    d = _check_fraction("dampening", dampening)
    if isinstance(spacing, bool) or not isinstance(spacing, numbers.Integral):
        raise TypeError(f"spacing must be an int (optimizer steps), got {type(spacing).__name__}")
    spacing = int(spacing)
    if spacing < 1:
        raise ValueError(f"spacing must be >= 1 optimizer step, got {spacing}")
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    a = 1.0 - d
    b, big_b = (1.0 + mu * a, mu * a) if nesterov else (a, a)
    var, cov = _block_moments(mu, spacing, b, big_b)
    c = math.sqrt(var / (2.0 * (var - cov)))
    return c * spacing if scale == "per_step" else c


def noise_null_per_step(
    momentum: float, spacing: int, *, nesterov: bool = False, dampening: float = 0.0
) -> float:
    """The null in the per-step convention (estimate multiplied by sε): s·c(μ, s).

    Same as ``noise_null(..., scale="per_step")``; see :func:`noise_null`.

    Example:
        >>> round(noise_null_per_step(0.0, 10), 4)
        7.0711
    """
    return noise_null(momentum, spacing, nesterov=nesterov, dampening=dampening, scale="per_step")
