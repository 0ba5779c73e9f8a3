"""SLQ with and without re-orthogonalization on a known Hessian-like spectrum (accuracy, not time).

A 3,000 x 3,000 symmetric matrix with a bulk of 2,990 eigenvalues uniform in [-0.5, 1] and 10
outliers geometric in [5, 200], in float32 and float64. For each ``reorth`` of
``spectral_density``: the Wasserstein-1 distance between the quadrature measure (10 probes x 100
steps, pooled) and the true spectral measure, the largest node against the true λ_max, and how
many nodes sit above the bulk (10 outliers; more are "ghost" copies of converged ones).

    python benchmarks/bench_slq_reorth.py          # ~1 min on one core
"""

from __future__ import annotations

import numpy as np
import torch

from hessian_lr.curvature import DenseOperator, spectral_density


def wasserstein1(nodes: np.ndarray, weights: np.ndarray, eigenvalues: np.ndarray) -> float:
    """∫ |F_quadrature − F_true| dx for the pooled, normalized quadrature measure."""
    x = np.sort(np.concatenate([eigenvalues, nodes]))
    f_true = np.searchsorted(np.sort(eigenvalues), x, side="right") / eigenvalues.size
    order = np.argsort(nodes)
    cum = np.cumsum(weights[order]) / weights.sum()
    f_quad = np.concatenate([[0.0], cum])[np.searchsorted(nodes[order], x, side="right")]
    return float(np.sum(np.abs(f_true - f_quad)[:-1] * np.diff(x)))


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 3000
    lam = np.concatenate([rng.uniform(-0.5, 1.0, n - 10), np.geomspace(5, 200, 10)])
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * lam) @ q.T
    print(f"{'dtype':8s} {'reorth':6s} {'W1':>8s} {'max node - λ_max':>18s} {'nodes > 4':>10s}")
    for dtype in (torch.float32, torch.float64):
        op = DenseOperator(torch.as_tensor(a, dtype=dtype))
        for reorth in ("semi", "full", "none"):
            sd = spectral_density(
                op,
                num_probes=10,
                num_steps=100,
                reorth=reorth,
                generator=torch.Generator().manual_seed(1),
                progress=False,
            )
            w1 = wasserstein1(sd.nodes.ravel(), sd.weights.ravel(), lam)
            ghosts = int((sd.nodes > 4).sum() / sd.nodes.shape[0])
            print(
                f"{str(dtype)[6:]:8s} {reorth:6s} {w1:8.4f} {sd.nodes.max() - lam.max():18.2e} "
                f"{ghosts:10d}"
            )


if __name__ == "__main__":
    main()
