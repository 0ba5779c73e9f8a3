"""Curvature as linear operators (Hessian, GGN, Fisher) and solvers that see only ``@``.

Imports nothing from ``lr``, ``schedules`` or ``training``.
"""

from ._output_space import categorical_sampler, token_cross_entropy_hessian
from .blocks import BlockOperator, LayerSharpness, layer_blocks, layer_sharpness
from .diagonal import (
    DIAGONAL_METHODS,
    DiagonalEstimate,
    diagonal_estimate,
    exact_diagonal,
    ggn_diagonal,
    hessian_diagonal,
)
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
from .lanczos import LanczosResult, SpectralDensity, lanczos, spectral_density
from .linop import DenseOperator, LinearOperator, params_to_vector, vector_to_params
from .power import PowerIterationResult, power_iteration
from .trace import TraceResult, hutchinson_trace, hutchpp_trace

__all__ = [
    "BACKENDS",
    "HessianOperator",
    "NonFiniteError",
    "DataChangedError",
    "select_params",
    # beyond the Hessian (issue 26)
    "GGNOperator",
    "FisherOperator",
    "FISHER_KINDS",
    "token_cross_entropy_hessian",
    "categorical_sampler",
    "CURVATURES",
    "make_operator",
    "BlockOperator",
    "layer_blocks",
    "layer_sharpness",
    "LayerSharpness",
    "diagonal_estimate",
    "DiagonalEstimate",
    "DIAGONAL_METHODS",
    "exact_diagonal",
    "hessian_diagonal",
    "ggn_diagonal",
    # the seam and the solvers
    "LinearOperator",
    "DenseOperator",
    "params_to_vector",
    "vector_to_params",
    "lanczos",
    "LanczosResult",
    "spectral_density",
    "SpectralDensity",
    "power_iteration",
    "PowerIterationResult",
    "hutchinson_trace",
    "hutchpp_trace",
    "TraceResult",
]
