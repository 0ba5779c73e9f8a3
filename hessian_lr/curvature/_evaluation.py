"""How the Hessian operator evaluates a model: parameter selection, modes, kernels, fingerprints.

* :func:`select_parameters` -- the trainable parameters, each tensor once (tied weights such as
  a GPT's token embedding and output head are one parameter with one name).
* :func:`evaluation_context` -- the operator's forward passes: Dropout and other modules in eval
  mode, BatchNorm in the requested mode without touching its running statistics, attention on
  PyTorch's math kernel (``F.scaled_dot_product_attention``'s fused CPU/GPU kernels have no
  double backward and no forward-mode AD), ``nn.MultiheadAttention``'s fused fast path off, and
  cuDNN off for recurrent modules on CUDA (its RNN kernels have no double backward). Every flag
  is restored afterwards, also on an exception.
* :func:`fingerprint` -- a cheap key of the model's current values (storage, version counter and
  a norm per tensor) that tells a cache when parameters or buffers changed, including changes
  that bypass the version counter (``p.data = ...``, ``vector_to_parameters``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

__all__ = [
    "select_parameters",
    "evaluation_context",
    "fingerprint",
    "compute_dtype",
    "check_arguments",
    "BACKENDS",
    "CONTEXT_NOTES",
]

BACKENDS = ("auto", "forward-over-reverse", "double-backward", "finite-difference")
_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: What ``evaluation_context`` does, for ``HessianOperator.notes``.
CONTEXT_NOTES = (
    "dropout and other train-time modules are in eval mode during the operator's passes",
    "attention: F.scaled_dot_product_attention runs on the math kernel and nn.MultiheadAttention's"
    " fast path is off during the operator's passes (the fused kernels have no double backward "
    "or forward-mode AD); the numbers equal the fused kernels' up to rounding",
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


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


@contextmanager
def _math_attention() -> Iterator[None]:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the legacy switch (CUDA only matters there)
        with torch.backends.cuda.sdp_kernel(
            enable_flash=False, enable_math=True, enable_mem_efficient=False
        ):
            yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def needs_cudnn_off(model: nn.Module, device: torch.device) -> bool:
    """Recurrent modules on CUDA: cuDNN's RNN kernels have no double backward."""
    return device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextmanager
def evaluation_context(model: nn.Module, bn_mode: str, device: torch.device) -> Iterator[None]:
    """Modes and kernels of the operator's forward passes; everything restored afterwards."""
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
    with ExitStack() as stack:
        stack.callback(_restore_modes, saved)
        for m in model.modules():
            if bn_mode == "train" and _is_batchnorm(m):
                # Batch statistics without touching running_mean/var or num_batches_tracked.
                m.training = True
                m.track_running_stats = False
            else:
                m.training = False
        stack.enter_context(_math_attention())
        stack.enter_context(_mha_fastpath_off())
        if needs_cudnn_off(model, device):
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
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


def fingerprint(tensors: Sequence[torch.Tensor]) -> tuple:
    """A key that changes when any tensor's storage, version counter or values change.

    Values are summarized by one fused norm per tensor (``torch._foreach_norm``), so an update
    through ``.data`` (which bypasses the version counter) is seen too; cost ≈ reading the
    parameters once, far below one Hessian-vector product.
    """
    meta = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)
    if not tensors:
        return meta, ()
    with torch.no_grad():
        try:
            norms = torch._foreach_norm(list(tensors))
        except (AttributeError, RuntimeError):  # pragma: no cover - older torch
            norms = [torch.linalg.vector_norm(t) for t in tensors]
        if len({n.dtype for n in norms}) > 1:
            norms = [n.to(torch.float64) for n in norms]
        values = torch.stack(list(norms)).tolist()
    return meta, tuple(values)


def check_arguments(
    model: object, loss_fn: object, backend: str, bn_mode: str, fd_scheme: str, chunk_size: object
) -> None:
    """Refuse bad constructor arguments with errors that say what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if fd_scheme not in ("central", "forward"):
        raise ValueError(f"fd_scheme must be 'central' or 'forward', got {fd_scheme!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")


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
