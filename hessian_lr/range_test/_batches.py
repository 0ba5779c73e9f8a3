"""Batches for the range test: one batch or many, cycled; (inputs, targets) splitting; dtypes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

__all__: list[str] = []

Batch = Any


def split_batch(batch: Batch) -> tuple[Any, Any]:
    """(inputs, targets) of a ``(inputs, targets[, ...])`` batch; ValueError otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "a batch must be (inputs, targets[, ...]); for other structures pass closure=True "
            "and loss_fn(model, batch)"
        )
    return batch[0], batch[1]


def cast_floating(batch: Batch, dtype: torch.dtype | None) -> Batch:
    """Floating-point tensors of a batch (nested tuples, lists, dicts) cast to ``dtype``."""
    if dtype is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(dtype) if batch.is_floating_point() and batch.dtype != dtype else batch
    if isinstance(batch, Mapping):
        return {k: cast_floating(x, dtype) for k, x in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cast_floating(x, dtype) for x in batch)
    return batch


def low_precision_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """float16/bfloat16 when every floating parameter of ``model`` has that dtype, else None."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) == 1:
        (dt,) = dtypes
        if dt in (torch.float16, torch.bfloat16):
            return dt
    return None


def is_single_batch(data: Any) -> bool:
    """Whether ``data`` is one batch (a tuple/list starting with a tensor, or a dict)."""
    return (
        isinstance(data, (tuple, list)) and len(data) > 0 and isinstance(data[0], torch.Tensor)
    ) or isinstance(data, Mapping)


def batch_size(batch: Batch) -> int:
    """Leading dimension of the first non-scalar tensor of a batch (1 if none)."""
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, torch.Tensor):
        return int(values.shape[0]) if values.ndim else 1
    for item in values:
        if isinstance(item, torch.Tensor) and item.ndim > 0:
            return int(item.shape[0])
    return 1


class Cycle:
    """Batches of ``data`` forever, with look-ahead.

    Re-iterates a DataLoader/list when it runs out; a one-shot iterator is replayed from the
    batches it gave. ``peek(k)`` looks ahead without consuming.
    """

    def __init__(self, data: Any) -> None:
        if is_single_batch(data):
            data = [data]
        elif not isinstance(data, Iterable):
            raise TypeError(
                f"train_data must be a DataLoader, an iterable of batches or one batch, got "
                f"{type(data).__name__}"
            )
        self._data = data
        self._one_shot = isinstance(data, Iterator)
        self._seen: list[Batch] = []
        self._it: Iterator[Batch] = iter(data)
        self._ahead: list[Batch] = []
        self.drawn = 0

    def _pull(self) -> Batch:
        try:
            batch = next(self._it)
        except StopIteration:
            if self._one_shot:  # replay what the one-shot iterator gave
                self._data, self._one_shot = self._seen, False
            self._it = iter(self._data)
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("train_data is empty: it gave no batch") from None
            return batch
        if self._one_shot:
            self._seen.append(batch)
        return batch

    def peek(self, k: int) -> list[Batch]:
        """The next ``k`` batches, without consuming them."""
        while len(self._ahead) < k:
            self._ahead.append(self._pull())
        return self._ahead[:k]

    def __next__(self) -> Batch:
        self.drawn += 1
        if self._ahead:
            return self._ahead.pop(0)
        return self._pull()


def val_batches(val_data: Any) -> Any:
    """Held-out data as something iterable many times (None stays None)."""
    if val_data is None:
        return None
    if is_single_batch(val_data):
        return [val_data]
    if isinstance(val_data, Iterator):  # one-shot: keep the batches for every evaluation
        return list(val_data)
    return val_data
