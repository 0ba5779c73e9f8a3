"""hessian_lr: learning rates from curvature while a network trains.

Curvature as linear operators (exact and finite-difference HVPs, Lanczos, power iteration, trace,
spectral density), learning-rate estimates from it (``estimate_lr``, ``LREstimator``), the
schedules around it (CLR, 1cycle, SGDR) and the LR range test. No logic lives here.
"""

from ._version import __version__

# Curvature: operators and HVPs
from .curvature.hessian import (
    BACKENDS,
    DataChangedError,
    HessianOperator,
    NonFiniteError,
    select_params,
)
from .curvature.distributed import DistributedCurvatureError
from .curvature.preconditioned import PreconditionedOperator
from .curvature.linop import DenseOperator, LinearOperator, params_to_vector, vector_to_params

# Spectrum and trace
from .curvature.lanczos import LanczosResult, SpectralDensity, lanczos, spectral_density
from .curvature.power import PowerIterationResult, power_iteration
from .curvature.trace import (
    TraceResult,
    hutchinson_trace,
    hutchpp_trace,
    trace_estimate,
    xnystrace,
    xtrace,
)

# Learning-rate estimation
from .lr.estimate import CurvatureError, LREstimate, SecantResult, estimate_lr, secant_lr
from .lr.estimator import LREstimator
from .lr.eos import EdgeOfStability, plot_edge_of_stability
from .lr.estimate import estimate_lrs
from .lr.noise import noise_null
from .lr.plotting import plot_estimates
from .lr.stability import preconditioned_sharpness, stability_threshold
from .lr.update import update_direction, update_lr
from .lr.secant import NullBand, null_band
from .lr.curvature_lr import CurvatureLR

# Schedules and the range test
from .schedules.scheduler import ScheduleLR
from .schedules import (
    SCHEDULES,
    LinearWarmup,
    WarmupCosine,
    WarmupStableDecay,
    schedule_names,
)
from .range_test import (
    CurvatureCheck,
    LRFinderResult,
    RangeTestConfig,
    RangeTestResult,
    RangeTestSuggestion,
    RangeTestSuggestions,
    find_lr,
    lr_range_test,
    suggest_lrs,
)
from .schedules import (
    SGDR,
    Constant,
    Cyclic,
    ExpDecay,
    InvDecay,
    MultiStep,
    OneCycle,
    OneCycleCosine,
    Schedule,
    StepDecay,
    schedule_from_dict,
)

# Data, models, training runs
from .training.data import Dataset, DatasetNotFoundError, load_dataset
from .training.models import build_model
from .records import make_sink
from .training.data import CorruptDatasetError
from .training.run import Run, RunLockedError
from .training.runner import ConfigMismatchError, TrainConfig, TrainResult, train

__all__ = [
    "__version__",
    # curvature
    "BACKENDS",
    "HessianOperator",
    "NonFiniteError",
    "DataChangedError",
    "DistributedCurvatureError",
    "select_params",
    "LinearOperator",
    "DenseOperator",
    "PreconditionedOperator",
    "params_to_vector",
    "vector_to_params",
    # spectrum and trace
    "lanczos",
    "LanczosResult",
    "spectral_density",
    "SpectralDensity",
    "power_iteration",
    "PowerIterationResult",
    "hutchinson_trace",
    "hutchpp_trace",
    "xtrace",
    "xnystrace",
    "trace_estimate",
    "TraceResult",
    # estimation
    "estimate_lr",
    "LREstimate",
    "secant_lr",
    "SecantResult",
    "CurvatureError",
    "LREstimator",
    "noise_null",
    "estimate_lrs",
    "update_lr",
    "update_direction",
    "preconditioned_sharpness",
    "stability_threshold",
    "EdgeOfStability",
    "plot_edge_of_stability",
    "plot_estimates",
    "null_band",
    "NullBand",
    "CurvatureLR",
    # schedules and range test
    "Schedule",
    "Cyclic",
    "OneCycle",
    "OneCycleCosine",
    "SGDR",
    "MultiStep",
    "StepDecay",
    "ExpDecay",
    "InvDecay",
    "Constant",
    "LinearWarmup",
    "WarmupCosine",
    "WarmupStableDecay",
    "SCHEDULES",
    "schedule_names",
    "schedule_from_dict",
    "ScheduleLR",
    "lr_range_test",
    "find_lr",
    "LRFinderResult",
    "RangeTestConfig",
    "suggest_lrs",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "CurvatureCheck",
    # data and models
    "load_dataset",
    "Dataset",
    "DatasetNotFoundError",
    "build_model",
    "train",
    "TrainConfig",
    "TrainResult",
    "Run",
    "RunLockedError",
    "ConfigMismatchError",
    "CorruptDatasetError",
    "make_sink",
]

# Old flat module paths (hessian_lr.hvp, ...) keep working, with a DeprecationWarning.
from . import _compat  # noqa: E402

_compat.install()
