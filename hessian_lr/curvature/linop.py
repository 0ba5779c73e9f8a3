"""Linear operators: the seam between curvature sources and the solvers.

Every solver in this package (power iteration, Lanczos, trace, spectral density) takes an object
with ``shape``, ``dtype``, ``device`` and ``op @ v`` -- never a model. That makes each solver
testable on a plain symmetric matrix with a known spectrum (``DenseOperator``), and each curvature
operator testable against a dense reference.

Also here: conversions between a flat vector (N,) and a list of parameter-shaped tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import scipy.sparse.linalg
import torch

from .._device import canonical_device

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "params_to_vector",
    "vector_to_params",
]


class LinearOperator:
    """A symmetric N x N operator applied by ``op @ v`` for v of shape (N,) or (N, k).

    Subclasses implement ``_matmat(V)`` for V of shape (N, k) (and may override ``_matvec``).
    ``num_matvecs`` counts applied columns: ``op @ V`` with k columns adds k.
    """

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if n <= 0:
            raise ValueError(
                f"operator dimension must be positive, got {n} (no parameters to differentiate?)"
            )
        self._n = int(n)
        self._dtype = dtype
        self._device = canonical_device(device)  # "cuda" is the vectors' "cuda:0"
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(N, N)."""
        return (self._n, self._n)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of vectors the operator takes and returns."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device of vectors the operator takes and returns."""
        return self._device

    def solving(self) -> contextlib.AbstractContextManager[None]:
        """A context for one solver call (Lanczos, power iteration, SLQ, a trace estimate).

        Operators that check per product whether the model changed (``HessianOperator``) check
        once on entry and once on exit instead; others need nothing (the default).
        """
        return contextlib.nullcontext()

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._matmat(v.unsqueeze(1)).squeeze(1)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, v: torch.Tensor) -> None:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != self._n:
            raise ValueError(
                f"shape mismatch: operator is {self.shape}, vector has shape {tuple(v.shape)}; "
                f"expected ({self._n},) or ({self._n}, k)"
            )
        if v.device != self._device:
            raise ValueError(
                f"device mismatch: operator lives on {self._device}, vector on {v.device}"
            )
        if v.dtype != self._dtype:
            raise ValueError(f"dtype mismatch: operator is {self._dtype}, vector is {v.dtype}")

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Apply to one vector: (N,) -> (N,)."""
        self._check(v)
        if v.ndim != 1:
            raise ValueError(f"matvec takes a vector of shape ({self._n},), got {tuple(v.shape)}")
        self.num_matvecs += 1
        return self._matvec(v)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Apply to k vectors at once: (N, k) -> (N, k)."""
        self._check(V)
        if V.ndim != 2:
            raise ValueError(f"matmat takes a matrix of shape ({self._n}, k), got {tuple(V.shape)}")
        if V.shape[1] == 0:  # nothing to apply: an empty (N, 0) result, no product counted
            return V.new_zeros((self._n, 0))
        self.num_matvecs += V.shape[1]
        return self._matmat(V)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        return self.matvec(v) if v.ndim == 1 else self.matmat(v)

    def to_dense(self) -> torch.Tensor:
        """Materialize as an (N, N) tensor by applying to the identity (N matvecs; small N only)."""
        eye = torch.eye(self._n, dtype=self._dtype, device=self._device)
        return self.matmat(eye)

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` (numpy in, numpy out) for ARPACK & co.

        Vectors are converted to this operator's dtype and device on the way in, and to a
        numpy array (float64 when the operator is float64, else float32) on the way out.
        """
        np_dtype = np.float64 if self._dtype == torch.float64 else np.float32

        def mv(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            t = torch.as_tensor(np.ascontiguousarray(x), dtype=self._dtype, device=self._device)
            if t.ndim == 2 and t.shape[1] == 1:
                return (self @ t[:, 0]).detach().cpu().numpy().astype(np_dtype)[:, None]
            return (self @ t).detach().cpu().numpy().astype(np_dtype)

        return scipy.sparse.linalg.LinearOperator(
            shape=self.shape, matvec=mv, matmat=mv, rmatvec=mv, dtype=np_dtype
        )


class DenseOperator(LinearOperator):
    """A symmetric matrix as a ``LinearOperator``: the known-spectrum test bed for every solver.

    Args:
        A: (N, N) symmetric tensor (or array). Symmetry is checked to a relative 1e-6 (float32)
            or 1e-12 (float64) of the largest entry.
    """

    def __init__(self, A: torch.Tensor | np.ndarray) -> None:
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got shape {tuple(A.shape)}")
        if A.shape[0] == 0:
            raise ValueError(
                "DenseOperator needs a non-empty matrix, got shape (0, 0): an operator on R^0 has "
                "no spectrum or trace"
            )
        if not torch.is_floating_point(A):
            A = A.to(torch.get_default_dtype())
        if not torch.isfinite(A).all():
            raise ValueError("DenseOperator: matrix has NaN or inf entries")
        tol = (1e-12 if A.dtype == torch.float64 else 1e-6) * max(A.abs().max().item(), 1e-300)
        if (A - A.T).abs().max().item() > tol:
            raise ValueError("DenseOperator: matrix is not symmetric")
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.A @ v

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.A @ V

    def to_dense(self) -> torch.Tensor:
        """A copy of the matrix."""
        return self.A.clone()


def params_to_vector(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate parameter-shaped tensors into one flat vector (N,), in the given order."""
    if len(tensors) == 0:
        raise ValueError("params_to_vector: no tensors given")
    return torch.cat([t.reshape(-1) for t in tensors])


def vector_to_params(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector (N,) or batch (..., N) into views shaped like ``like``.

    A leading batch dimension is kept: (k, N) -> tensors of shape (k, *p.shape).
    """
    sizes = [p.numel() for p in like]
    n = sum(sizes)
    if vec.shape[-1] != n:
        raise ValueError(
            f"vector_to_params: vector has {vec.shape[-1]} entries, parameters have {n}"
        )
    lead = vec.shape[:-1]
    return [
        chunk.reshape(*lead, *p.shape)
        for chunk, p in zip(torch.split(vec, sizes, dim=-1), like, strict=True)
    ]
