"""Batches as pytrees: the single-batch rule, device/dtype moves, batch weights, loader RNG.

The Hessian operator's data loop lives in ``hessian.py``; the rules it applies to one batch live
here, each a small pure function:

* :func:`is_single_batch` -- whether ``data`` is one batch or an iterable of batches;
* :func:`move_to_device`, :func:`cast_floating` -- tensors of a nested batch moved or upcast;
* :func:`objective_reduction`, :func:`element_count_fn` -- what the loss averages over, so that
  several batches are weighted into the mean over *all* counted elements (tokens that are not
  ``ignore_index``, class weights, elements of an element-wise loss);
* :func:`preserved_loader_rng` -- a pass over a DataLoader leaves torch's global RNG and the
  loader's generators as it found them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import preserved_rng

__all__ = [
    "move_to_device",
    "cast_floating",
    "is_single_batch",
    "first_tensor",
    "default_batch_size",
    "objective_reduction",
    "element_count_fn",
    "preserved_loader_rng",
    "loss_implementation",
    "check_same_shape",
    "changed_data_message",
]

Batch = Any


def move_to_device(batch: Batch, device: torch.device) -> Batch:
    """Tensors of a batch (nested tuples, lists, dicts) moved to ``device``; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def cast_floating(batch: Batch, dtype: torch.dtype) -> Batch:
    """Floating-point tensors of a nested batch converted to ``dtype``; integers as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(dtype) if batch.is_floating_point() else batch
    if isinstance(batch, Mapping):
        return {k: cast_floating(v, dtype) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cast_floating(v, dtype) for v in batch)
    return batch


def is_single_batch(data: Any, *, closure: bool) -> bool:
    """Whether ``data`` is one batch (True) or an iterable of batches (False).

    The rule, applied when ``HessianOperator(single_batch=None)``:

    1. a tensor or a mapping (``{"x": X, "y": y}``) is one batch;
    2. a tuple or list with a tensor among its elements (``(X, y)``, ``({"x": X}, y)``) is one
       batch;
    3. without ``closure`` a batch must be ``(inputs, targets)``, so a tuple or list whose
       elements include a mapping (``({"x": X}, {"y": Y})``) is one batch;
    4. any other tuple or list (of tuples, lists, or of mappings with ``closure``), a DataLoader,
       a generator or any other iterable is a sequence of batches.

    Pass ``single_batch=True`` or ``False`` to the operator when this rule guesses wrong (e.g. one
    batch ``((X1, X2), (y1, y2))`` with a closure).
    """
    if isinstance(data, (torch.Tensor, Mapping)):
        return True
    if isinstance(data, (tuple, list)):
        if any(isinstance(d, torch.Tensor) for d in data):
            return True
        if not closure and any(isinstance(d, Mapping) for d in data):
            return True
        return False
    return False


def first_tensor(batch: Batch) -> torch.Tensor | None:
    """The first tensor with a leading dimension in a nested batch (depth-first), or None."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.ndim > 0 else None
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, (tuple, list)) or isinstance(batch, Mapping):
        for item in values:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def default_batch_size(batch: Batch) -> int:
    """Number of samples: the leading dimension of the batch's first tensor."""
    t = first_tensor(batch)
    if t is None:
        raise ValueError(
            "cannot infer the batch size: no tensor with a batch dimension in the batch; "
            "pass batch_size_fn"
        )
    return int(t.shape[0])


# Element-wise losses: the mean is over every element of the target.
_ELEMENTWISE = (
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.PoissonNLLLoss,
    nn.GaussianNLLLoss,
    nn.SoftMarginLoss,
    nn.HingeEmbeddingLoss,
)
#: Losses whose inputs broadcast against the target with a warning only: shapes must match.
SHAPE_CHECKED = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


def objective_reduction(loss_fn: Any, requested: str | None, *, closure: bool) -> str | None:
    """``"mean"`` or ``"sum"``: how batch losses combine into the objective (None: undecided).

    For a ``torch.nn`` loss module the answer is its ``reduction`` (a conflicting ``requested``
    is an error); otherwise ``requested``, which the caller must give for a closure over several
    batches (see ``HessianOperator``).
    """
    if requested not in (None, "mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {requested!r}")
    module_reduction = None
    if not closure and isinstance(loss_fn, nn.modules.loss._Loss):
        r = loss_fn.reduction
        if r == "none":
            raise ValueError(
                f"{type(loss_fn).__name__}(reduction='none') returns a loss per element; the "
                "operator needs a scalar objective: use reduction='mean' or 'sum'"
            )
        module_reduction = "sum" if r == "sum" else "mean"  # 'mean' and KLDiv's 'batchmean'
    if module_reduction is not None and requested is not None and requested != module_reduction:
        raise ValueError(
            f"reduction={requested!r} contradicts {type(loss_fn).__name__}(reduction="
            f"{loss_fn.reduction!r}); drop the argument or change the loss"
        )
    return module_reduction or requested


def _targets(batch: Batch) -> Any:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[1]
    return None


def element_count_fn(loss_fn: Any, *, closure: bool) -> Callable[[Batch], float]:
    """Batch -> the number of elements a mean-reduced ``loss_fn`` averages over on that batch.

    Weights batches so that several batches give the mean over all counted elements: targets
    ≠ ``ignore_index`` (weighted by ``weight[target]`` when class weights are set) for
    ``CrossEntropyLoss``/``NLLLoss``; every element for element-wise losses; the batch size for
    KLDiv's ``batchmean`` and for everything else (closures and plain functions: pass
    ``batch_size_fn`` for token-level means).
    """
    if closure:
        return default_batch_size
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        ignore, weight = loss_fn.ignore_index, loss_fn.weight

        def count_classes(batch: Batch) -> float:
            t = _targets(batch)
            if not isinstance(t, torch.Tensor):
                return float(default_batch_size(batch))
            if t.is_floating_point():  # class probabilities: mean over all but the class dim
                return float(t.numel() // t.shape[1]) if t.ndim >= 2 else 1.0
            mask = t != ignore
            if weight is None:
                return float(mask.sum())
            return float(weight.to(t.device)[t[mask]].sum())

        return count_classes
    if isinstance(loss_fn, nn.KLDivLoss) and loss_fn.reduction == "batchmean":
        return default_batch_size
    if isinstance(loss_fn, _ELEMENTWISE) or isinstance(loss_fn, nn.KLDivLoss):

        def count_elements(batch: Batch) -> float:
            t = _targets(batch)
            return float(t.numel()) if isinstance(t, torch.Tensor) else default_batch_size(batch)

        return count_elements
    return default_batch_size


def _generators(data: Any) -> list[torch.Generator]:
    """torch.Generators a loader draws its order from (loader, sampler, batch sampler)."""
    found: dict[int, torch.Generator] = {}
    candidates = [data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)]
    candidates.append(getattr(candidates[-1], "sampler", None))
    for obj in candidates:
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator):
            found[id(g)] = g
    return list(found.values())


@contextmanager
def preserved_loader_rng(data: Any) -> Iterator[None]:
    """Leave the global RNGs and the loader's generators as found after passes over ``data``."""
    gens = _generators(data)
    states = [g.get_state() for g in gens]
    try:
        with preserved_rng():
            yield
    finally:
        for g, s in zip(gens, states):
            g.set_state(s)


def loss_implementation(loss_fn: Any) -> Any:
    """``loss_fn``, or the same loss in a form every back end can differentiate.

    Mean-reduced ``nn.MSELoss`` becomes sum/numel: the same number, but torch.func's forward AD
    fails on mean-reduced ``mse_loss`` ("ZeroTensors are immutable", torch 2.3-2.13).
    """
    if type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean":
        return _mse_mean
    return loss_fn


def _mse_mean(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, targets, reduction="sum") / outputs.numel()


def check_same_shape(loss_fn: Any, out: Any, targets: Any) -> None:
    """Refuse outputs and targets of different shapes for losses that would broadcast them."""
    if not isinstance(loss_fn, SHAPE_CHECKED) or not isinstance(out, torch.Tensor):
        return
    if isinstance(targets, torch.Tensor) and out.shape != targets.shape:
        raise ValueError(
            f"{type(loss_fn).__name__}: outputs have shape {tuple(out.shape)} but targets "
            f"{tuple(targets.shape)}; they would broadcast to "
            f"{tuple(torch.broadcast_shapes(out.shape, targets.shape))} and give a different "
            "loss than intended. Reshape the targets (e.g. y.view(-1, 1)) or the outputs."
        )


def changed_data_message(diff: float, tol: float) -> str:
    """What to say when two passes over the data give different products."""
    return (
        f"two passes over the data gave Hessian-vector products {diff:.2e} apart (relative; "
        f"tolerance {tol:.1e}): the data changes between passes, so the operator is not a "
        "fixed matrix and no solver can converge on it. Typical causes: a DataLoader with "
        "shuffle=True and drop_last=True, train-mode BatchNorm over reshuffled batches, random "
        "augmentation. Fix: pass a fixed list of batches (batches = list(loader)), or "
        "shuffle=False / drop_last=False / bn_mode='eval'; check_data=False skips this check."
    )
