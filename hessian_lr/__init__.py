"""hessian_lr: learning rates from curvature while a network trains.

Curvature as linear operators (exact and finite-difference HVPs, Lanczos, power iteration, trace,
spectral density), learning-rate estimates from it (``estimate_lr``, ``LREstimator``), the
schedules around it (CLR, 1cycle, SGDR) and the LR range test. No logic lives here.
"""

__version__ = "0.1.0"

# Curvature: operators and HVPs
from .hvp import BACKENDS, HessianOperator, NonFiniteError
from .linop import DenseOperator, LinearOperator, params_to_vector, vector_to_params

# Spectrum and trace
from .lanczos import LanczosResult, SpectralDensity, lanczos, spectral_density
from .power import PowerIterationResult, power_iteration
from .trace import TraceResult, hutchinson_trace, hutchpp_trace

# Learning-rate estimation
from .estimate import CurvatureError, LREstimate, SecantResult, estimate_lr, secant_lr
from .estimator import LREstimator
from .curvature_lr import CurvatureLR

# Schedules and the range test
from .lr_scheduler import ScheduleLR
from .range_test import (
    CurvatureCheck,
    RangeTestResult,
    RangeTestSuggestion,
    RangeTestSuggestions,
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
from .data import Dataset, DatasetNotFoundError, load_dataset
from .models import build_model

__all__ = [
    "__version__",
    # curvature
    "BACKENDS",
    "HessianOperator",
    "NonFiniteError",
    "LinearOperator",
    "DenseOperator",
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
    "TraceResult",
    # estimation
    "estimate_lr",
    "LREstimate",
    "secant_lr",
    "SecantResult",
    "CurvatureError",
    "LREstimator",
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
    "schedule_from_dict",
    "ScheduleLR",
    "lr_range_test",
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
]
