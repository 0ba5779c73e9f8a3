"""Learning rates from curvature: pure rules, ``estimate_lr``, ``LREstimator``, ``CurvatureLR``.

* :mod:`.rules`: pure functions of (g, Hg, λ, step) -> LR, testable on a ``DenseOperator``.
* :mod:`.secant`: Super-Convergence Eq. 8 from three iterates (``secant_lr``), its spacing
  conventions, and the bootstrap band against the momentum-noise null (``null_band``).
* :mod:`.noise`: the null c(μ, s) itself (``noise_null``).
* :mod:`.options`: ``CurvatureOptions``, how every measurement here builds its operator.
* :mod:`.estimate`: ``estimate_lr`` / ``estimate_lrs`` on a model and a batch (one dispatch table).
* :mod:`.estimator`: ``LREstimator``, the stateful observer; :mod:`.curvature_lr`: ``CurvatureLR``.
* :mod:`.direction` (the optimizer's next step), :mod:`.update`, :mod:`.stability`, :mod:`.eos`:
  optimizer-aware estimates (issue 15).
* :mod:`.layer_observer`: λ_max per layer every k steps, and its plot (issue 26).

Uses ``curvature``; imports nothing from ``schedules`` or ``training``.
"""

from .curvature_lr import CurvatureLR
from .curvature_modes import stability_lr, update_direction_lr
from .defaults import DEFAULT_BN_MODE
from .direction import update_direction
from .eos import EdgeOfStability, plot_edge_of_stability
from .estimate import LREstimate, estimate_lr, estimate_lrs
from .estimator import LREstimator
from .layer_observer import LayerSharpnessObserver, plot_layer_sharpness
from .noise import noise_null
from .options import CurvatureOptions
from .plotting import plot_estimates
from .result import LRResult
from .rules import (
    RuleResult,
    SecantRule,
    SharpnessLRs,
    quadratic_lr,
    secant_hvp_lr,
    secant_rule,
    sharpness_lrs,
)
from .secant import CurvatureError, NullBand, SecantResult, null_band, secant_lr
from .stability import (
    PreconditionedSharpness,
    StabilityThreshold,
    preconditioned_sharpness,
    stability_threshold,
)
from .update import UpdateEstimate, update_lr

__all__ = [
    "DEFAULT_BN_MODE",
    "CurvatureOptions",
    # estimates on a model
    "estimate_lr",
    "estimate_lrs",
    "LREstimate",
    "LRResult",
    "CurvatureError",
    # pure rules
    "quadratic_lr",
    "secant_hvp_lr",
    "sharpness_lrs",
    "secant_rule",
    "RuleResult",
    "SharpnessLRs",
    "SecantRule",
    # the secant and its noise null
    "secant_lr",
    "SecantResult",
    "noise_null",
    "null_band",
    "NullBand",
    # in the loop
    "LREstimator",
    "CurvatureLR",
    "stability_lr",
    "update_direction_lr",
    # optimizer-aware (issue 15)
    "update_lr",
    "update_direction",
    "UpdateEstimate",
    "preconditioned_sharpness",
    "PreconditionedSharpness",
    "stability_threshold",
    "StabilityThreshold",
    "EdgeOfStability",
    "plot_edge_of_stability",
    "plot_estimates",
    # per-layer curvature (issue 26)
    "LayerSharpnessObserver",
    "plot_layer_sharpness",
]
