"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

Lin, Saad & Yang 2016, "Approximating spectral densities of large matrices" (SIAM Review);
Ghorbani, Krishnan & Xiao 2019, "An investigation into neural net optimization via Hessian
eigenvalue density" (ICML); Golub & Meurant 1994. For a unit probe v, the m-point Gauss
quadrature of the spectral measure Σ_j (vᵀu_j)² δ(λ − λ_j) has nodes θ_i (the Ritz values of m
Lanczos steps from v) and weights s_{1,i}² (squared first components of T_m's eigenvectors).
Averaging over random probes estimates the spectral density φ(λ) = N⁻¹ Σ_j δ(λ − λ_j); Gaussian
broadening turns it into a smooth curve.

The Lanczos loop (semi-orthogonal by default, probes side by side so that ``op @ V`` batches
their products) is shared with :func:`~hessian_lr.curvature.lanczos.lanczos`; ``reorth="none"``
drops the basis for models too large to keep (m + 1) copies of the parameters.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._krylov import lanczos_run, tridiagonal_eigh
from ._solver_utils import (
    check_operator,
    check_positive,
    fixed_matrix,
    rademacher,
    randn,
    solver,
)

__all__ = ["SpectralDensity", "spectral_density"]


@dataclass(frozen=True)
class SpectralDensity:
    """Result of :func:`spectral_density`: SLQ quadrature rules and the smoothed density.

    Attributes:
        nodes: (num_probes, m) float64 Ritz values per probe (Gauss quadrature nodes).
        weights: (num_probes, m) float64 squared first components of T's eigenvectors; each row
            sums to 1. A probe that reached an invariant subspace in m' < m steps is padded with
            zero weights (nodes repeated).
        grid: (num_grid,) float64 points where the density is evaluated.
        density: (num_grid,) float64 Gaussian-broadened density on ``grid``, normalized so that
            ``np.trapezoid(density, grid) == 1``.
        sigma: the Gaussian broadening (standard deviation, in eigenvalue units).
        dim: N, the operator's dimension.
        num_matvecs: operator products spent.
        seconds: wall-clock time.
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    dim: int
    num_matvecs: int
    seconds: float

    def expectation(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """Estimate of tr f(H) / N: Σ_i w_i f(θ_i) averaged over the probes (f vectorized)."""
        return float(np.mean(np.sum(self.weights * f(self.nodes), axis=1)))

    def trace(self) -> float:
        """Estimate of tr H = N · mean over probes of Σ_i w_i θ_i (Hutchinson with SLQ)."""
        return self.dim * self.expectation(lambda x: x)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Unsmoothed spectral distribution #{λ_j ≤ x} / N estimated by the quadrature rules."""
        x = np.asarray(x, dtype=np.float64)
        nodes, w = self.nodes.reshape(-1), self.weights.reshape(-1) / self.nodes.shape[0]
        order = np.argsort(nodes, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(w[order])])
        return cum[np.searchsorted(nodes[order], x, side="right")]

    def plot(self, ax: Any = None, *, log: bool = True, **line_kwargs: Any) -> Any:
        """Draw the density against the eigenvalue; return the matplotlib Figure.

        Args:
            ax: a matplotlib Axes to draw on; default a new figure.
            log: logarithmic density axis (outliers and the bulk differ by decades), with the
                density floored at 1e-12 of its maximum so zeros do not vanish from the plot.
            **line_kwargs: passed to ``ax.plot`` (color, label, ...).

        Returns:
            The ``matplotlib.figure.Figure`` holding the axes.
        """
        import matplotlib.pyplot as plt  # lazy: the solvers do not need matplotlib

        if ax is None:
            fig, ax = plt.subplots(figsize=(5.0, 3.5))
        else:
            fig = ax.figure
        y = self.density
        if log:
            y = np.maximum(y, 1e-12 * max(float(y.max()), 1e-300))
            ax.set_yscale("log")
        line_kwargs.setdefault("label", f"SLQ, σ = {self.sigma:.3g}")
        ax.plot(self.grid, y, **line_kwargs)
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel("spectral density")
        ax.set_title(f"N = {self.dim:,}, {self.nodes.shape[0]} probe(s) × {self.nodes.shape[1]}")
        return fig


def _check_args(
    num_probes: int,
    num_steps: int,
    batch_size: int,
    probe: str,
    sigma: float | None,
    grid: np.ndarray | None,
    num_grid: int,
) -> None:
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    if sigma is not None:
        check_positive("sigma", sigma)
    if grid is None and (not isinstance(num_grid, int) or num_grid < 2):
        raise ValueError(f"num_grid must be an integer ≥ 2, got {num_grid}")


def _smooth(
    nodes: np.ndarray,
    weights: np.ndarray,
    sigma: float | None,
    grid: np.ndarray | None,
    num_grid: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian broadening of the quadrature rules on a grid; (grid, density, sigma)."""
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = hi - lo
        sigma = 0.01 * spread if spread > 0 else 0.01 * max(abs(hi), abs(lo), 1.0)
    if grid is None:
        grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, num_grid)
    else:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.shape[0] < 2 or not np.all(np.diff(grid) > 0):
            raise ValueError("grid must be a 1-D increasing array with at least 2 points")
    if np.max(np.diff(grid)) > sigma:
        warnings.warn(
            f"spectral_density: grid spacing {np.max(np.diff(grid)):.3g} exceeds sigma={sigma:.3g};"
            " the density is under-resolved (use more grid points or a larger sigma)",
            RuntimeWarning,
            stacklevel=3,
        )
    density = np.zeros_like(grid)
    w_flat, n_flat = weights.reshape(-1), nodes.reshape(-1)
    keep = w_flat > 0
    w_flat, n_flat = w_flat[keep], n_flat[keep]
    for chunk in range(0, n_flat.shape[0], 256):  # bounded memory: (G, 256) at a time
        d = (grid[:, None] - n_flat[None, chunk : chunk + 256]) / sigma
        density += np.exp(-0.5 * d * d) @ w_flat[chunk : chunk + 256]
    density /= nodes.shape[0] * sigma * math.sqrt(2 * math.pi)
    total = float(np.trapezoid(density, grid))
    if not total > 0:
        raise ValueError(
            "spectral_density: the density vanishes on the given grid; it misses the spectrum "
            f"[{lo:.3g}, {hi:.3g}]"
        )
    return grid, density / total, float(sigma)


@solver
def spectral_density(
    op: object,
    *,
    num_probes: int = 1,
    num_steps: int = 100,
    sigma: float | None = None,
    grid: np.ndarray | None = None,
    num_grid: int = 1000,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    batch_size: int = 1,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    reorth: Literal["semi", "full", "none"] = "semi",
    check_every: int | Literal["auto"] | None = None,
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

    For each of ``num_probes`` random unit probes v, ``num_steps`` Lanczos steps (full
    re-orthogonalization) give T_m = S diag(θ) Sᵀ; the quadrature nodes are the θ_i and the
    weights are S_{1,i}². The density estimate is
    φ(x) = mean over probes of Σ_i w_i 𝒩(x; θ_i, σ²), evaluated on a grid and normalized so
    ``np.trapezoid(density, grid) == 1`` (on a grid that covers only part of the spectrum this
    renormalizes the part covered). The nodes and weights are returned too, so any other
    smoothing, the CDF (:meth:`SpectralDensity.cdf`) or tr f(H) (``expectation``) can be
    computed without new products.

    Args:
        op: symmetric linear operator (N, N) with ``op @ v``.
        num_probes: independent random probes (≥ 1). Ghorbani et al. find 1 probe
            enough in high dimension; more probes reduce the variance of the weights.
        num_steps: Lanczos steps per probe (≥ 1; capped at N), i.e. quadrature nodes.
        sigma: Gaussian broadening; default 1 % of the node range
            (max θ − min θ) over all probes (1 % of max |θ|, or 1, if the range is 0).
        grid: points (G,) where the density is evaluated; default ``num_grid`` equally spaced
            points on [min θ − 3σ, max θ + 3σ].
        num_grid: grid size when ``grid`` is not given (≥ 2).
        probe: ``"rademacher"`` (±1 entries, default) or ``"gaussian"``; normalized to unit norm.
        batch_size: probes run side by side so that their products are one ``op @ V`` call
            (vmapped HVPs on a GPU). Memory grows as batch_size × (num_steps + 1) × N.
        generator: random source for the probes.
        progress: a tqdm bar over the products: True, False, or None (auto: shown once the
            run has taken 3 s).
        reorth: how the Lanczos vectors are kept orthogonal. ``"semi"`` (default): the loss
            of orthogonality is measured every step (one pass over the basis) and removed when
            it exceeds √eps; ``"full"``: Gram-Schmidt against the whole basis every step;
            ``"none"``: the plain three-term recurrence, 3N memory instead of (m + 1)N and no
            pass over the basis (the products are all the cost). Without re-orthogonalization
            the quadrature is still a valid one (its moments vᵀHᵏv match, Greenbaum 1989;
            Chen, Trogdon & Ubaru 2021), but converged outliers come back as repeated "ghost"
            nodes that take nodes from the bulk, so the bulk is resolved more coarsely: the
            choice for models whose (m + 1)N basis does not fit in memory.
        check_every: how often the Lanczos scalars are read on the host (issue 29): 1 after
            every step; k or ``"auto"``: they stay on the device in between (no host
            synchronization per step), breakdowns are found at the next read (the steps after
            one are discarded, their products counted in ``num_matvecs``); with ``"full"``
            the second Gram-Schmidt pass is then always made. Default None: 1 on the CPU,
            ``"auto"`` on an accelerator.

    Returns:
        A :class:`SpectralDensity`.

    Example:
        >>> import numpy as np, torch
        >>> from hessian_lr.curvature.linop import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.linspace(0, 1, 50, dtype=torch.float64)))
        >>> sd = spectral_density(op, num_steps=20, generator=torch.Generator().manual_seed(0))
        >>> round(float(np.trapezoid(sd.density, sd.grid)), 6)
        1.0
    """
    t0 = time.perf_counter()
    N = check_operator(op)
    _check_args(num_probes, num_steps, batch_size, probe, sigma, grid, num_grid)
    if reorth not in ("semi", "full", "none"):
        raise ValueError(f"reorth must be 'semi', 'full' or 'none', got {reorth!r}")
    num_steps = min(num_steps, N)
    draw = rademacher if probe == "rademacher" else randn
    nodes = np.zeros((num_probes, num_steps))
    weights = np.zeros((num_probes, num_steps))
    num_matvecs = 0
    for start in range(0, num_probes, batch_size):
        p = min(batch_size, num_probes - start)
        V0 = draw((p, N), op, generator)
        kr = lanczos_run(
            op,
            V0,
            num_steps,
            caller="spectral_density",
            progress=progress,
            preallocate=reorth != "none",
            semi=reorth == "semi",
            reorthogonalize=reorth != "none",
            check_every=check_every,
        )
        num_matvecs += kr.num_matvecs
        for i in range(p):
            m = int(kr.steps[i])
            theta, S = tridiagonal_eigh(kr.alpha[i, :m], kr.beta[i, : m - 1])
            nodes[start + i, :m] = theta
            nodes[start + i, m:] = theta[-1]
            weights[start + i, :m] = S[0] ** 2
    fixed_matrix(op, "spectral_density")  # warns when the data changed between products
    grid, density, sigma = _smooth(nodes, weights, sigma, grid, num_grid)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=density,
        sigma=sigma,
        dim=N,
        num_matvecs=num_matvecs,
        seconds=time.perf_counter() - t0,
    )
