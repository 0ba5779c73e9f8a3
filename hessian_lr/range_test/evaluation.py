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
        accuracy: top-1 accuracy (fraction of labelled targets), or None when undefined
            (closure mode, outputs that are not class scores for integer targets). Logits
            (B, C) with targets (B,), sequence logits (B, T, C) with targets (B, T) (per token,
            ``ignore_index`` targets left out) and ``cross_entropy``'s (B, C, d1, ...) layout.
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
    loss_sum, count, correct, labelled, acc_ok = 0.0, 0, 0, 0, not closure
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
                    hits = _hits(outputs, targets, getattr(loss_fn, "ignore_index", -100))
                    if acc_ok and hits is not None:
                        correct += hits[0]
                        labelled += hits[1]
                    else:
                        acc_ok = False
                loss_sum += n * float(loss)
                count += n
    finally:
        for m, training in modes:
            m.training = training
    if count == 0:
        raise ValueError("the held-out data is empty: it gave no batch")
    accuracy = correct / labelled if acc_ok and labelled > 0 else None
    return Evaluation(loss_sum / count, accuracy, count)


def _hits(outputs: Any, targets: torch.Tensor, ignore_index: int) -> tuple[int, int] | None:
    """(correct, labelled) top-1 predictions, or None when the outputs are not class scores.

    Class scores on the last dimension, (B, C) with targets (B,) or (B, T, C) with targets
    (B, T) (sequence models: per token), or on dimension 1 as ``cross_entropy`` takes them,
    (B, C, d1, ...) with targets (B, d1, ...). Targets equal to ``ignore_index`` (the loss'
    own, -100 by default: padding) are not counted.
    """
    if not isinstance(outputs, torch.Tensor) or targets.is_floating_point() or outputs.ndim < 2:
        return None
    if outputs.shape[:-1] == targets.shape:
        pred = outputs.argmax(dim=-1)
    elif outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]:
        pred = outputs.argmax(dim=1)
    else:
        return None
    mask = targets != ignore_index
    return int(((pred == targets) & mask).sum()), int(mask.sum())
