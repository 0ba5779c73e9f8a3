"""Curvature as linear operators (Hessian, GGN, Fisher) and solvers that see only ``@``.

The operator base (``_base.CurvatureOperator``) owns parameters, model evaluation, the data loop
and the checks; each operator adds a per-batch product (``products.py`` for the Hessian's back
ends). Imports nothing from ``lr``, ``schedules`` or ``training``.
"""

from ._base import CurvatureOperator
from ._output_space import categorical_sampler, token_cross_entropy_hessian
from .blocks import BlockOperator, LayerSharpness, layer_blocks, layer_sharpness
from .density import SpectralDensity, spectral_density
from .diagonal import (
    DIAGONAL_METHODS,
    DiagonalEstimate,
    diagonal_estimate,
    exact_diagonal,
    ggn_diagonal,
    hessian_diagonal,
)
from .distributed import DistributedCurvatureError
from .fisher import FISHER_KINDS, FisherOperator
from .ggn import GGNOperator
from .hessian import (
    BACKENDS,
    DataChangedError,
    HessianOperator,
    NonFiniteError,
    select_params,
)
from .kinds import CURVATURES, make_operator
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
    # beyond the Hessian (issue 26)
    "GGNOperator",
    "FisherOperator",
    "FISHER_KINDS",
    "CURVATURES",
    "make_operator",
    "token_cross_entropy_hessian",
    "categorical_sampler",
    "BlockOperator",
    "layer_blocks",
    "layer_sharpness",
    "LayerSharpness",
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
    "diagonal_estimate",
    "DiagonalEstimate",
    "DIAGONAL_METHODS",
    "exact_diagonal",
    "hessian_diagonal",
    "ggn_diagonal",
]
