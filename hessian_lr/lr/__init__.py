"""Learning rates from curvature: pure rules, ``estimate_lr``, ``LREstimator``, ``CurvatureLR``.

Uses ``curvature``; imports nothing from ``schedules`` or ``training``.
"""

from .curvature_lr import CurvatureLR
from .defaults import DEFAULT_BN_MODE
from .estimate import CurvatureError, LREstimate, SecantResult, estimate_lr, secant_lr
from .estimator import LREstimator

__all__ = [
    "DEFAULT_BN_MODE",
    "estimate_lr",
    "LREstimate",
    "secant_lr",
    "SecantResult",
    "CurvatureError",
    "LREstimator",
    "CurvatureLR",
]
