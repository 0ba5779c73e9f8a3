"""Held-out evaluation: mean loss (weighted by batch size) and top-1 accuracy, in eval mode.

One helper for every place that evaluates a model on held-out batches (the range test here; the
training runner may reuse it, since ``training`` may import ``range_test``). It runs without
gradients, puts every module's ``training`` flag back as it found it (module by module, not just
the root's), optionally under ``torch.autocast``, and never draws random numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..curvature._batches import move_to_device
from ._batches import batch_size, cast_floating, is_single_batch, split_batch

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics.

    Attributes:
        loss: mean loss over all samples (each batch's mean loss weighted by its size).
        accuracy: top-1 accuracy (fraction), or None when undefined (closure mode, outputs that
            are not (B, C) logits with integer targets (B,)).
        num_samples: samples evaluated.
    """

    loss: float
    accuracy: float | None
    num_samples: int


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    """``torch.autocast(device.type, dtype=amp_dtype)``, or a null context for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def evaluate(
    model: nn.Module,
    data: Any,
    loss_fn: Callable[..., torch.Tensor],
    *,
    closure: bool = False,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    input_dtype: torch.dtype | None = None,
) -> Evaluation:
    """Mean held-out loss and top-1 accuracy of ``model`` in eval mode, without gradients.

    Args:
        model: the network; its modules' train/eval flags are restored afterwards.
        data: one batch ``(inputs, targets)`` (or a dict with ``closure=True``), or an iterable
            of batches (a DataLoader, a list).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch's mean loss, or with
            ``closure=True`` ``loss_fn(model, batch)``.
        closure: see ``loss_fn``; accuracy is then None.
        device: where batches are moved; default the device of the model's first parameter.
        amp_dtype: run the forward passes under ``torch.autocast`` with this dtype.
        input_dtype: cast floating-point batch tensors to this dtype (low-precision models).

    Returns:
        An :class:`Evaluation`.

    Example:
        >>> model = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])
        >>> evaluate(model, (x, y), nn.CrossEntropyLoss()).accuracy
        0.6666666666666666
    """
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    batches: Iterable[Any] = [data] if is_single_batch(data) else data
    modes = [(m, m.training) for m in model.modules()]
    loss_sum, count, correct, acc_ok = 0.0, 0, 0, not closure
    try:
        model.eval()
        with torch.no_grad(), autocast_context(device, amp_dtype):
            for batch in batches:
                batch = cast_floating(move_to_device(batch, device), input_dtype)
                if closure:
                    n = batch_size(batch)
                    loss = loss_fn(model, batch)
                else:
                    inputs, targets = split_batch(batch)
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                    n = int(targets.shape[0]) if targets.ndim else 1
                    if acc_ok and _classification(outputs, targets):
                        correct += int((outputs.argmax(dim=-1) == targets).sum())
                    else:
                        acc_ok = False
                loss_sum += n * float(loss)
                count += n
    finally:
        for m, training in modes:
            m.training = training
    if count == 0:
        raise ValueError("the held-out data is empty: it gave no batch")
    return Evaluation(loss_sum / count, correct / count if acc_ok else None, count)


def _classification(outputs: Any, targets: torch.Tensor) -> bool:
    return (
        isinstance(outputs, torch.Tensor)
        and outputs.ndim == 2
        and targets.ndim == 1
        and not targets.is_floating_point()
        and outputs.shape[0] == targets.shape[0]
    )
