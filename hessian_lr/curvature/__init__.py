"""Curvature as linear operators: the Hessian operator, and solvers that see only ``@``.

The operator base (``_base.CurvatureOperator``) owns parameters, model evaluation, the data loop
and the checks; each operator adds a per-batch product (``products.py`` for the Hessian's back
ends). Imports nothing from ``lr``, ``schedules`` or ``training``.
"""

from ._base import CurvatureOperator
from .density import SpectralDensity, spectral_density
from .distributed import DistributedCurvatureError
from .hessian import (
    BACKENDS,
    DataChangedError,
    HessianOperator,
    NonFiniteError,
    select_params,
)
from .lanczos import LanczosResult, lanczos
from .linop import DenseOperator, LinearOperator, params_to_vector, vector_to_params
from .power import PowerIterationResult, power_iteration
from .preconditioned import PreconditionedOperator
from .trace import TraceResult, hutchinson_trace, hutchpp_trace, trace_estimate, xnystrace, xtrace

__all__ = [
    # operators
    "CurvatureOperator",
    "HessianOperator",
    "BACKENDS",
    "select_params",
    "LinearOperator",
    "DenseOperator",
    "PreconditionedOperator",
    "params_to_vector",
    "vector_to_params",
    # errors
    "NonFiniteError",
    "DataChangedError",
    "DistributedCurvatureError",
    # solvers
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
]
