"""hessian_lr: learning rates from curvature while a network trains.

The names most users need, curated; everything else is imported from its room:
``hessian_lr.curvature`` (operators and solvers), ``hessian_lr.lr`` (estimates),
``hessian_lr.schedules`` (schedules), ``hessian_lr.range_test`` (the LR range test),
``hessian_lr.training`` (runs, data, models). Moves and removals are listed in
``CHANGELOG.md``. No logic lives here.
"""

from ._version import __version__
from .curvature import (
    DataChangedError,
    DenseOperator,
    FisherOperator,
    GGNOperator,
    HessianOperator,
    LinearOperator,
    NonFiniteError,
    PreconditionedOperator,
    diagonal_estimate,
    lanczos,
    layer_sharpness,
    power_iteration,
    spectral_density,
    trace_estimate,
)
from .lr import (
    CurvatureError,
    CurvatureLR,
    CurvatureOptions,
    LREstimate,
    LREstimator,
    estimate_lr,
    estimate_lrs,
    preconditioned_sharpness,
    secant_lr,
    stability_threshold,
    update_lr,
)
from .range_test import LRFinderResult, RangeTestConfig, find_lr, lr_range_test, suggest_lrs
from .schedules import (
    SGDR,
    Cyclic,
    OneCycle,
    Schedule,
    ScheduleLR,
    WarmupCosine,
)
from .training import Run, TrainConfig, train
from .training.data import load_dataset
from .training.models import build_model

__all__ = [
    "__version__",
    # curvature: operators
    "HessianOperator",
    "GGNOperator",
    "FisherOperator",
    "LinearOperator",
    "DenseOperator",
    "PreconditionedOperator",
    "NonFiniteError",
    "DataChangedError",
    # curvature: spectrum and trace
    "lanczos",
    "spectral_density",
    "power_iteration",
    "trace_estimate",
    "diagonal_estimate",
    "layer_sharpness",
    # learning-rate estimates
    "estimate_lr",
    "estimate_lrs",
    "LREstimate",
    "LREstimator",
    "CurvatureLR",
    "CurvatureOptions",
    "CurvatureError",
    "secant_lr",
    "update_lr",
    "preconditioned_sharpness",
    "stability_threshold",
    # schedules and the range test
    "Schedule",
    "OneCycle",
    "Cyclic",
    "SGDR",
    "WarmupCosine",
    "ScheduleLR",
    # the LR range test
    "lr_range_test",
    "RangeTestConfig",
    "suggest_lrs",
    "find_lr",
    "LRFinderResult",
    # training runs
    "train",
    "TrainConfig",
    "Run",
    "load_dataset",
    "build_model",
]
