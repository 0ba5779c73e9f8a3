"""Study F16's verdicts for heavy-ball SGD, as data the demo reads at run time.

Provenance: study F16 (issue 24; ``experiments/f16_lr_that_works.py``, judged by
``paper_figures/fig_f16_lr_that_works.py``; rows of ``paper_figures/CLAIMS.md``), heavy-ball
SGD (β = 0.9) cells of the ``cpu`` preset in ``results_cpu/f16_lr_that_works/``. Per estimator:
k, the calibration constant fitted on every training cell (geometric mean of η_max/E); the
leave-one-model-out factor error F = exp(median |log(η_max/(k·E))|) with its 95 % bootstrap CI;
Spearman ρ(E, η_max) across cells; the held-out (worst left-out model) factor error; and the
pre-registered verdict "predicts" (F ≤ 2, ρ ≥ 0.8, held-out within 2×). η_max is the largest LR
on a √2 grid whose constant-LR run from θ₀ trains (F16's criterion). The library never imports
the study: the numbers are copied here (:data:`F16_SOURCE` says from which results), and the
finder's own (k, F) live in :data:`hessian_lr.range_test.finder.CALIBRATION`.

Regenerate after F16's results change: in a checkout, for every SGD estimator ``e`` of
``fig_f16_lr_that_works.table(cells, "sgd")`` write ``F16Row(_f16_stats.calibration_constant(
cells_sgd, e), fit.factor, fit.ci, fit.rho, fit.heldout_factor, fit.predicts)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["F16Row", "F16_SGD", "F16_LABELS", "F16_PROBE", "F16_SOURCE", "calibrated"]


@dataclass(frozen=True)
class F16Row:
    """One estimator's F16 calibration for heavy-ball SGD.

    Attributes:
        k: η_max ≈ k·E. factor: F, the leave-one-model-out median factor error (≥ 1).
        ci: the 95 % bootstrap CI of F. rho: Spearman ρ(E, η_max) across cells.
        heldout: the worst left-out model's factor error. predicts: F16's verdict.
    """

    k: float
    factor: float
    ci: tuple[float, float]
    rho: float
    heldout: float
    predicts: bool


#: Which results the table below was copied from.
F16_SOURCE = (
    "F16 cpu preset: 12 heavy-ball SGD cells, MLP, LeNet-5, a tiny char-GPT and BN ResNet-8 × "
    "seeds 0-2, results_cpu/f16_lr_that_works as committed with the ResNet-8 cells"
)

#: F16's short probe run for Eq. 8 (``eq8_p1``): SGD at this LR for this many updates.
F16_PROBE = {"lr": 1e-3, "steps": 20}

#: estimator -> its F16 row for heavy-ball SGD (k, F, CI of F, ρ, held-out F, predicts).
F16_SGD: dict[str, F16Row] = {
    "sharpness": F16Row(1.224, 3.175, (2.828, 6.229), 0.678, 8.0, False),
    "quadratic": F16Row(1.288, 4.737, (2.473, 11.94), 0.636, 15.99, False),
    "secant_hvp": F16Row(2.28, 2.588, (1.699, 4.673), 0.650, 6.336, False),
    "eq8_p1": F16Row(50.9, 2.873, (2.176, 5.633), 0.371, 13.3, False),
    "ramp_cross": F16Row(0.8078, 1.759, (1.331, 2.354), 0.736, 2.17, False),
    "eta_div": F16Row(0.2411, 1.809, (1.623, 2.191), 0.977, 2.194, False),
}

#: How the report names each estimator.
F16_LABELS = {
    "sharpness": "(2+2β)/λ_max at θ₀",
    "quadratic": "gᵀg/gᵀHg at θ₀",
    "secant_hvp": "Σ|g|/Σ|Hg| at θ₀",
    "eq8_p1": "Eq. 8 after 20 steps at LR 1e-3",
    "ramp_cross": "find_lr edge (η·λ/c = 1 on the ramp)",
    "eta_div": "range test divergence LR (4× loss)",
}


def calibrated(name: str, value: float | None) -> tuple[float, float, float] | None:
    """F16's reading of an estimate: (k·E, k·E/F, k·E·F), or None without a finite value."""
    row = F16_SGD[name]
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    mid = row.k * value
    f = row.factor if math.isfinite(row.factor) else math.nan
    return mid, mid / f, mid * f
