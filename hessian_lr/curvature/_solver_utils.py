"""Private helpers shared by the spectral solvers (power iteration, Lanczos, SLQ, trace).

Operator validation, the non-finite check on products, the working precision of a solver,
random probe vectors drawn with a ``torch.Generator`` on any device, products with a block of
vectors in column batches, the fixed-matrix check, and an opt-in/auto progress bar.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import numbers
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from ._host import read

T = TypeVar("T")

__all__: list[str] = []

LOW_PRECISION = (torch.float16, torch.bfloat16)
PROGRESS_AFTER_S = 3.0  # auto progress bars appear once a run has taken this long


def check_operator(op: object) -> int:
    """Check that ``op`` looks like a square linear operator; return its dimension N.

    Raises:
        TypeError: ``op`` lacks ``shape``/``dtype``/``device``/``@`` or is not floating point.
        ValueError: the operator is not square or has dimension 0.
    """
    for attr in ("shape", "dtype", "device", "__matmul__"):
        if not hasattr(op, attr):
            raise TypeError(
                "expected a linear operator with .shape, .dtype, .device and `op @ v` (e.g. "
                f"hessian_lr.curvature.DenseOperator), got {type(op).__name__} without .{attr}"
            )
    if not isinstance(op.dtype, torch.dtype):
        raise TypeError(
            "expected a linear operator on torch tensors (e.g. hessian_lr.curvature."
            f"DenseOperator), got {type(op).__name__} with dtype {op.dtype!r}"
        )
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"the operator must be square (N, N), got shape {shape}")
    if shape[0] <= 0:
        raise ValueError(
            f"the operator has dimension {shape[0]}: there is no spectrum or trace to compute; "
            "check that the model has trainable parameters"
        )
    if not op.dtype.is_floating_point:
        raise TypeError(f"the operator dtype must be a floating type, got {op.dtype}")
    return int(shape[0])


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` is a finite number > 0 (NaN, inf and bools refused).

    A tolerance of inf would accept any first Ritz value as "converged".
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):  # also rejects NaN
        raise ValueError(f"{name} must be positive and finite, got {value}")


def plain_scalar(value: Any) -> Any:
    """A NumPy integer/float scalar as the Python int/float it stands for; anything else as is."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def flush_operator(op: object) -> None:
    """Raise the operator's own NaN/inf error, if a check it deferred in this solve failed.

    A :class:`~hessian_lr.curvature.HessianOperator` keeps its per-product finiteness checks
    on the device during a solve (issue 29); a solver that meets a non-finite value asks it
    first, so the error names the loss or product that failed.
    """
    flush = getattr(op, "_flush_finite", None)
    if callable(flush):
        flush()


def check_finite(t: torch.Tensor, what: str, op: object = None) -> None:
    """Raise if ``t`` holds NaN or inf (a diverged model or a broken operator).

    One read of two flags (:func:`._host.read`); with ``op``, the operator's deferred checks
    are read first on a failure (:func:`flush_operator`).
    """
    finite, nan = read(torch.isfinite(t).all(), torch.isnan(t).any())
    if not finite:
        if op is not None:
            flush_operator(op)
        kind = "NaN" if nan else "inf"
        raise ValueError(
            f"{what}: the operator returned {kind} (NaN or inf in `op @ v`); check the model's "
            "loss and parameters for NaN/inf, or the operator's inputs"
        )


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision a solver keeps its vectors in: float32 for 16-bit operators, else ``dtype``.

    Scalars (Rayleigh quotients, norms, the Lanczos tridiagonal) are float64 in every case.
    """
    return torch.float32 if dtype in LOW_PRECISION else dtype


def fixed_matrix(op: object, caller: str) -> bool:
    """Whether the operator behaved as one fixed matrix; warns when it did not.

    A solver may report convergence only on a fixed matrix. Operators that can tell (a
    ``HessianOperator`` over a data loader) expose ``is_deterministic`` (True, False, or None
    when not checked yet) and ``check_deterministic()`` (two passes over the data on one
    vector); the latter is called only when the former is None. Other operators count as fixed
    (Lanczos also watches its Gram-Schmidt coefficients).
    """
    flag = getattr(op, "is_deterministic", True)
    if flag is None:
        check = getattr(op, "check_deterministic", None)
        flag = check() if callable(check) else True
    if flag is False:
        warnings.warn(
            f"{caller}: two products of the same vector differ (the data changes between passes:"
            " a shuffling loader, random augmentation, drop_last with shuffling): the result is "
            "not that of one fixed matrix and is not reported as converged",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


DEFAULT_SEED = 0  # the seed of the private generator a solver uses when given none


def private_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a fresh CPU generator seeded with :data:`DEFAULT_SEED`.

    A solver called without ``generator=`` must not draw from (and so move) torch's global
    random state: training that calls a measurement would otherwise see different random
    numbers afterwards. The default is a fixed seed, not fresh entropy: a call without a
    generator returns the same result every time, on every device (drawn on the CPU, then
    moved), independent of ``torch.manual_seed``. Pass a generator for independent draws.
    """
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    return torch.Generator().manual_seed(DEFAULT_SEED)


def _gen_device(op_device: torch.device, generator: torch.Generator | None) -> torch.device:
    return op_device if generator is None else generator.device


def agree(op: object, t: torch.Tensor) -> torch.Tensor:
    """``t`` made the same on every rank when ``op`` spans a process group, else unchanged.

    ``op.agree_`` (a :class:`~hessian_lr.curvature.HessianOperator` over a ``torch.distributed``
    group) broadcasts ``t`` in place from rank 0. Random start vectors and probes pass through
    here, so every rank runs the same recurrence and leaves every loop at the same step (a rank
    whose generator was seeded differently would otherwise make the all-reduced product
    Σ_r H_r v_r meaningless, and a rank leaving a loop early would deadlock the others).
    """
    fn = getattr(op, "agree_", None)
    return t if fn is None else fn(t)


def randn(
    shape: tuple[int, ...],
    op: object,
    generator: torch.Generator | None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal entries on the op's device (drawn on the generator's device).

    ``dtype`` defaults to the op's working precision (:func:`work_dtype`). Over a process group
    every rank gets rank 0's draw (:func:`agree`). ``shape`` ends with N; for an operator with
    a sharded ``vector_space`` the result ends with this rank's part of N instead.
    """
    dtype = work_dtype(op.dtype) if dtype is None else dtype
    space = getattr(op, "vector_space", None)
    if space is not None:  # a sharded operator: this rank's part, defined by global index
        return space.randn(shape[:-1], generator, dtype)
    dev = _gen_device(op.device, generator)
    return agree(op, torch.randn(shape, generator=generator, device=dev, dtype=dtype).to(op.device))


def rademacher(
    shape: tuple[int, ...],
    op: object,
    generator: torch.Generator | None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Independent ±1 entries on the op's device (drawn on the generator's device).

    Over a process group every rank gets rank 0's draw (:func:`agree`).
    """
    dtype = work_dtype(op.dtype) if dtype is None else dtype
    space = getattr(op, "vector_space", None)
    if space is not None:  # a sharded operator: this rank's part, defined by global index
        return space.rademacher(shape[:-1], generator, dtype)
    dev = _gen_device(op.device, generator)
    z = torch.randint(0, 2, shape, generator=generator, device=dev, dtype=dtype)
    return agree(op, (2 * z - 1).to(op.device))


def apply(op: object, V: torch.Tensor) -> torch.Tensor:
    """``op @ V`` in the op's dtype, returned in V's dtype (a 16-bit op gets cast vectors)."""
    if V.dtype == op.dtype:
        return op @ V
    return (op @ V.to(op.dtype)).to(V.dtype)


def apply_in_blocks(op: object, V: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``op @ V`` for V (N, k) in column blocks of at most ``batch_size`` (k matvecs in all)."""
    k = V.shape[1]
    if k == 1:
        return apply(op, V[:, 0]).unsqueeze(1)
    if batch_size >= k:
        return apply(op, V.contiguous())
    blocks = []
    for start in range(0, k, batch_size):
        block = V[:, start : start + batch_size].contiguous()
        blocks.append(
            apply(op, block[:, 0]).unsqueeze(1) if block.shape[1] == 1 else apply(op, block)
        )
    return torch.cat(blocks, dim=1)


def _nonzero_rank() -> bool:
    """Whether this process is a rank other than 0 of an initialized default process group."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


class Progress:
    """A tqdm bar over a run's products: on (True), off (False), or auto (None).

    Auto shows the bar only once the run has taken :data:`PROGRESS_AFTER_S` seconds, so short
    runs (a λ_max estimate every few steps of training) print nothing. tqdm is imported lazily.
    """

    def __init__(self, total: int, desc: str, mode: bool | None) -> None:
        if mode not in (True, False, None):
            raise ValueError(f"progress must be True, False or None (auto), got {mode!r}")
        if _nonzero_rank():  # under torchrun one bar, from rank 0
            mode = False
        self.total, self.desc, self.mode = total, desc, mode
        self.t0 = time.perf_counter()
        self.done = 0
        self.bar: Any = None
        if mode is True:
            self._open()

    def _open(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, initial=self.done, unit="matvec")

    def update(self, n: int) -> None:
        """Record ``n`` more products (opens an auto bar once the run is slow)."""
        self.done += n
        if self.bar is None and self.mode is None:
            if time.perf_counter() - self.t0 > PROGRESS_AFTER_S:
                self._open()
            return
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        """Close the bar, if one was opened."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _digest(args: tuple, kwargs: dict) -> tuple[float, dict[str, Any]]:
    """A number standing for the scalar arguments (tensors and generators are left out)."""
    plain = (bool, int, float, str, type(None))
    named = {f"arg{i}": a for i, a in enumerate(args) if isinstance(a, plain)}
    named.update({k: v for k, v in kwargs.items() if isinstance(v, plain)})
    text = repr(sorted(named.items()))
    return float(int(hashlib.sha256(text.encode()).hexdigest()[:13], 16)), named


def check_same_arguments(op: object, caller: str, args: tuple, kwargs: dict) -> None:
    """Raise on every rank when a solver's scalar arguments differ across the op's ranks.

    Over a process group every rank must run the same recurrence (``k``, ``tol``, ``max_iter``,
    ``stop``, ...); a rank with another ``tol`` would leave the loop at another step and the
    others would wait for it forever. Two small collectives: rank 0's digest is broadcast, and
    any mismatch is all-reduced so that every rank raises.
    """
    group = getattr(op, "process_group", None)
    agree_fn = getattr(op, "agree_", None)
    if group is None or agree_fn is None:
        return
    from ._distributed import agree_any

    value, named = _digest(args, kwargs)
    mine = torch.tensor([value], dtype=torch.float64, device=op.device)
    theirs = agree_fn(mine.clone())
    if agree_any(bool(theirs.item() != value), group, op.device):
        raise ValueError(
            f"{caller}: the solver's arguments differ across the ranks of the process group "
            f"(this rank: {named}); every rank must call it with the same arguments"
        )


def solver(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a solver ``fn(op, ...)`` inside ``op.solving()`` (model checks once per call).

    NumPy scalars among the arguments become Python numbers (``k=np.int64(3)`` is k=3). A
    solver with a ``generator`` keyword gets :func:`private_generator`'s default when called
    without one, so no solver draws from torch's global random state.
    """
    randomized = "generator" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(op: object, *args: Any, **kwargs: Any) -> T:
        args = tuple(plain_scalar(a) for a in args)  # np.int64(5) is an int here
        kwargs = {key: plain_scalar(v) for key, v in kwargs.items()}
        if randomized:  # never the global RNG (private_generator)
            kwargs["generator"] = private_generator(kwargs.get("generator"))
        check_same_arguments(op, fn.__name__, args, kwargs)
        ctx = getattr(op, "solving", None)
        if not callable(ctx):
            return fn(op, *args, **kwargs)
        with ctx():
            return fn(op, *args, **kwargs)

    return wrapper
