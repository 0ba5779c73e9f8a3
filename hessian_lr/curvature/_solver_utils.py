"""Private helpers shared by the spectral solvers (power iteration, Lanczos, trace estimators).

Operator validation, the non-finite check on products, random probe vectors drawn with a
``torch.Generator`` on any device, and products with a block of vectors in column batches.
"""

from __future__ import annotations

import torch

__all__: list[str] = []


def check_operator(op: object) -> int:
    """Check that ``op`` looks like a square linear operator; return its dimension N."""
    for attr in ("shape", "dtype", "device", "__matmul__"):
        if not hasattr(op, attr):
            raise TypeError(
                f"expected a linear operator with .shape, .dtype, .device and `op @ v` "
                f"(e.g. hessian_lr.linop.DenseOperator), got {type(op).__name__} without .{attr}"
            )
    if not isinstance(op.dtype, torch.dtype):
        raise TypeError(
            f"expected a linear operator on torch tensors (e.g. hessian_lr.linop.DenseOperator), "
            f"got {type(op).__name__} with dtype {op.dtype!r}"
        )
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"the operator must be square (N, N), got shape {shape}")
    if shape[0] <= 0:
        raise ValueError(f"the operator has dimension {shape[0]}; it must be positive")
    if not op.dtype.is_floating_point:
        raise TypeError(f"the operator dtype must be a floating type, got {op.dtype}")
    return int(shape[0])


def check_positive(name: str, value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be positive, got {value}")


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise if ``t`` holds NaN or inf (a diverged model or a broken operator)."""
    if not bool(torch.isfinite(t).all()):
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(
            f"{what}: the operator returned {kind} (NaN or inf in `op @ v`); check the model's "
            "loss and parameters for NaN/inf, or the operator's inputs"
        )


def _gen_device(op_device: torch.device, generator: torch.Generator | None) -> torch.device:
    return op_device if generator is None else generator.device


def randn(shape: tuple[int, ...], op: object, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal entries in the op's dtype, on the op's device (drawn on the generator's)."""
    dev = _gen_device(op.device, generator)
    return torch.randn(shape, generator=generator, device=dev, dtype=op.dtype).to(op.device)


def rademacher(
    shape: tuple[int, ...], op: object, generator: torch.Generator | None
) -> torch.Tensor:
    """Independent ±1 entries in the op's dtype, on the op's device (drawn on the generator's)."""
    dev = _gen_device(op.device, generator)
    z = torch.randint(0, 2, shape, generator=generator, device=dev, dtype=op.dtype)
    return (2 * z - 1).to(op.device)


def apply_in_blocks(op: object, V: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``op @ V`` for V (N, k) in column blocks of at most ``batch_size`` (k matvecs in all)."""
    k = V.shape[1]
    if k == 1:
        return (op @ V[:, 0]).unsqueeze(1)
    if batch_size >= k:
        return op @ V.contiguous()
    blocks = []
    for start in range(0, k, batch_size):
        block = V[:, start : start + batch_size].contiguous()
        blocks.append((op @ block[:, 0]).unsqueeze(1) if block.shape[1] == 1 else op @ block)
    return torch.cat(blocks, dim=1)
