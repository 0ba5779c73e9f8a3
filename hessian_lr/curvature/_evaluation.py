"""How a curvature operator evaluates the model: parameters, a shadow module tree, kernels, keys.

* :func:`select_parameters` -- the trainable parameters, each tensor once (tied weights such as
  a GPT's token embedding and output head are one parameter with one name).
* :func:`shadow_module` -- the module tree the operator's passes run on: a structural copy of the
  caller's model that *shares* every parameter and buffer tensor (each module shallow-copied),
  with Dropout and other modules in eval mode and BatchNorm in the requested mode (batch
  statistics without updating the running ones). The caller's module objects are never
  touched, so another thread training or evaluating the same model never sees a flipped
  ``training`` flag or ``track_running_stats`` (issue 22 item 3).
* :func:`evaluation_context` -- the kernels of one pass: ``F.scaled_dot_product_attention`` on
  PyTorch's math kernel (its fused CPU/GPU kernels have no double backward and no forward-mode
  AD) and cuDNN off for recurrent modules on CUDA. Both are process-wide switches in PyTorch: each
  is set while any operator pass in the process needs it and restored by the last one to finish
  (a reference count under a lock, so concurrent measurements never leave it flipped); a thread
  running attention meanwhile gets the math kernel -- the same numbers up to rounding, slower.
  ``nn.MultiheadAttention``'s fused fast path needs no switch: it never runs in these passes (it
  requires autograd off or no parameter requiring grad, and the operator's parameters do).
* :func:`fingerprint` -- a key of the model's current values: storage, version counter and a
  fixed pseudo-random projection per tensor, so that in-place edits through ``.data`` that keep
  norms and sums (a sign flip, a permutation of hidden units) are seen (issue 22 item 4).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ._host import read

__all__ = [
    "select_parameters",
    "shadow_module",
    "evaluation_context",
    "fingerprint",
    "state_tensors",
    "compute_dtype",
    "needs_cudnn_off",
    "CONTEXT_NOTES",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: What the operator's passes do, for ``op.notes``.
CONTEXT_NOTES = (
    "dropout and other train-time modules are in eval mode during the operator's passes (on a "
    "shadow copy of the module tree that shares the parameters: the caller's modules keep "
    "their flags)",
    "attention: F.scaled_dot_product_attention runs on the math kernel during the operator's "
    "passes (the fused kernels have no double backward or forward-mode AD); the numbers equal "
    "the fused kernels' up to rounding",
)


def select_parameters(
    model: nn.Module, params: Sequence[torch.Tensor] | Sequence[str] | None
) -> tuple[list[str], list[torch.Tensor], dict[str, str]]:
    """(names, tensors, aliases): the parameters to differentiate, each tensor once.

    ``params``: ``None`` (every parameter with ``requires_grad``), tensors of the model, or
    names (an alias of a tied weight, e.g. ``"head.weight"``, selects its tensor). ``aliases``
    maps every other name of a selected tensor to the name used (tied weights).
    """
    named = dict(model.named_parameters())  # each tensor once, under its first name
    canonical = {id(p): n for n, p in named.items()}
    aliases = {
        n: canonical[id(p)]
        for n, p in model.named_parameters(remove_duplicate=False)
        if n != canonical[id(p)]
    }
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        params = list(params)
        if len(params) == 0:
            raise ValueError("params is empty: give at least one parameter")
        if all(isinstance(p, str) for p in params):
            missing = [p for p in params if p not in named and p not in aliases]
            if missing:
                raise ValueError(f"no parameters named {missing} in the model")
            wanted = [aliases.get(p, p) for p in params]
        else:
            unknown = [i for i, p in enumerate(params) if id(p) not in canonical]
            if unknown:
                raise ValueError(f"params at positions {unknown} are not parameters of the model")
            wanted = [canonical[id(p)] for p in params]
        names = list(dict.fromkeys(wanted))  # a tied weight given twice counts once
        frozen = [n for n in names if not named[n].requires_grad]
        if frozen:
            raise ValueError(f"parameters {frozen} are frozen (requires_grad=False)")
    if not names:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    chosen = set(names)
    aliases = {a: n for a, n in aliases.items() if n in chosen}
    return names, [named[n] for n in names], aliases


def _set_modes(modules: Iterator[nn.Module], bn_mode: str) -> None:
    for m in modules:
        if bn_mode == "train" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            # Batch statistics without touching running_mean/var or num_batches_tracked.
            m.training = True
            m.track_running_stats = False
        else:
            m.training = False


def shadow_module(model: nn.Module, bn_mode: str) -> nn.Module | None:
    """A copy of ``model``'s module tree sharing its tensors, in the operator's modes (or None).

    Module objects are copied (``copy.copy``: a new ``__dict__``, new ``_modules``,
    ``_parameters`` and ``_buffers`` dicts holding the caller's tensor objects), so the modes set
    here, and attributes a forward sets (a data-dependent initialisation flag), stay on the copy.
    Plain attributes that reference modules (lists, tuples, dicts of them) point into the copy;
    other attribute values are shared. ~0.08 ms a module on a CPU, a fifth of a deepcopy's. None
    when a module refuses to be copied: the operator then switches the caller's modules around
    each pass, one pass at a time in the process (see ``evaluation_context``).
    """
    try:
        shadow = _copy_tree(model, {})
    except Exception:  # noqa: BLE001 - any exotic module may refuse to be copied
        return None
    _set_modes(shadow.modules(), bn_mode)
    return shadow


def _copy_tree(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    new = copy.copy(module)
    memo[id(module)] = new
    state = new.__dict__
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    state["_modules"] = {
        k: None if m is None else _copy_tree(m, memo) for k, m in module._modules.items()
    }
    for key, value in module.__dict__.items():
        if key not in ("_parameters", "_buffers", "_modules"):
            state[key] = _remap(value, memo)
    return new


def _remap(value: Any, memo: dict[int, nn.Module]) -> Any:
    """A module (or a list/tuple/dict of them) -> its copy in the shadow tree; else as is."""
    if isinstance(value, nn.Module):
        return _copy_tree(value, memo)
    if isinstance(value, (list, tuple)) and any(isinstance(v, nn.Module) for v in value):
        return type(value)(_remap(v, memo) for v in value)
    if isinstance(value, dict) and any(isinstance(v, nn.Module) for v in value.values()):
        return {k: _remap(v, memo) for k, v in value.items()}
    return value


def _math_attention() -> Any:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the legacy switch (CUDA only matters there)
        return torch.backends.cuda.sdp_kernel(
            enable_flash=False, enable_math=True, enable_mem_efficient=False
        )
    return sdpa_kernel(SDPBackend.MATH)


class _SharedSwitch:
    """A process-wide flag set while any pass needs it and restored by the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._stack: ExitStack | None = None

    @contextmanager
    def __call__(self, make: Any) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._stack = ExitStack()
                self._stack.enter_context(make())
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._stack is not None:
                    self._stack.close()
                    self._stack = None


_CUDNN_OFF = _SharedSwitch()
_MATH_SDPA = _SharedSwitch()
_UNSHADOWED = threading.RLock()  # passes that must switch the caller's modules: one at a time


def needs_cudnn_off(model: nn.Module, device: torch.device) -> bool:
    """Recurrent modules on CUDA: cuDNN's RNN kernels have no double backward."""
    return device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextmanager
def evaluation_context(
    model: nn.Module, bn_mode: str, device: torch.device, *, shadow: bool = True
) -> Iterator[None]:
    """Kernels of one forward pass (and modes, for a model without a shadow tree).

    ``shadow=True``: ``model`` is a :func:`shadow_module`, already in the operator's modes.
    ``shadow=False``: the caller's own modules are switched and restored afterwards, under a
    process-wide lock, so two threads' passes never interleave their switches.
    """
    with ExitStack() as stack:
        if not shadow:
            stack.enter_context(_UNSHADOWED)
            modules = list(model.modules())
            saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in modules]
            stack.callback(_restore_modes, saved)
            _set_modes(model.modules(), bn_mode)
        stack.enter_context(_MATH_SDPA(_math_attention))
        if needs_cudnn_off(model, device):
            stack.enter_context(_CUDNN_OFF(lambda: torch.backends.cudnn.flags(enabled=False)))
        yield


def _restore_modes(saved: list[tuple[nn.Module, bool, bool | None]]) -> None:
    for m, training, track in saved:
        m.training = training
        if track is not None:
            m.track_running_stats = track


def state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and floating-point buffers: what the Hessian at the current point depends on."""
    out = list(model.parameters())  # the objects: `.data = ...` swaps are seen through them
    out += [b for b in model.buffers() if b.is_floating_point()]
    return out


_KNUTH = 2654435761  # multiplicative hash: index -> a pseudo-random weight in [-1/2, 1/2)
_BLOCK = 1 << 20  # weights repeat every block; each block gets its own pseudo-random factor
_WEIGHTS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _hash_weights(
    n: int, device: torch.device, dtype: torch.dtype, *, shift: float
) -> torch.Tensor:
    idx = torch.arange(n, device=device, dtype=torch.int64)
    return ((idx * _KNUTH) % 2**32).to(dtype).div_(2.0**32).add_(shift)


def _projection(t: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i t_i with fixed pseudo-random weights (a multiplicative hash of the index).

    Any edit that is not orthogonal to w changes it -- a sign flip or a permutation of entries
    does -- unlike a norm or a sum. Computed on the tensor's device in float64 for float64
    tensors and float32 otherwise, block by block (w_i = a_{i mod B} b_{i div B}, B = 2²⁰, the
    a cached per device), so no temporary is larger than the tensor itself.
    """
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    key = (t.device, acc)
    if key not in _WEIGHTS:
        _WEIGHTS[key] = _hash_weights(_BLOCK, t.device, acc, shift=-0.5)
    a = _WEIGHTS[key]
    flat = t.detach().reshape(-1)
    full = flat.numel() // _BLOCK * _BLOCK
    total = flat[full:].to(acc) @ a[: flat.numel() - full]
    if full:
        b = _hash_weights(full // _BLOCK, t.device, acc, shift=0.5)  # in [1/2, 3/2)
        total = total + (flat[:full].view(-1, _BLOCK).to(acc) @ a) @ b
    return total.to(torch.float64)


def fingerprint(tensors: Sequence[torch.Tensor]) -> tuple:
    """A key that changes when any tensor's storage, version counter or values change.

    Values are summarized by a fixed pseudo-random projection per tensor (:func:`_projection`),
    so an update through ``.data`` (which bypasses the version counter) is seen, including one
    that keeps norms and sums; cost ≈ reading the parameters a few times and one host sync,
    far below one Hessian-vector product.
    """
    meta = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)
    if not tensors:
        return meta, ()
    with torch.no_grad():
        values = [_projection(t) for t in tensors]
        keys = read(*values).tolist()  # one sync
    return meta, tuple(keys)


def compute_dtype(
    param_dtypes: Sequence[torch.dtype], requested: torch.dtype | None
) -> torch.dtype:
    """The dtype products are computed in.

    ``requested``, else the parameters' widest dtype; float32 when every parameter is
    float16/bfloat16 (products in half precision would lose most digits of a second derivative).
    """
    if requested is not None:
        if requested not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {requested}")
        return requested
    if not all(d.is_floating_point for d in param_dtypes):
        raise ValueError(f"parameters must be floating point, got {param_dtypes}")
    wide = [d for d in param_dtypes if d not in _LOW_PRECISION]
    if not wide:
        return torch.float32
    return torch.float64 if torch.float64 in wide else wide[0]
