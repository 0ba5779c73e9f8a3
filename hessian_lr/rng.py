"""Capture and restore every global random state (Python, NumPy's legacy RNG, torch, CUDA).

Used where a run must continue exactly as if uninterrupted (checkpoints in ``train``) or leave no
trace (the LR range test restores the states it found).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "preserved_rng"]


def get_rng_state() -> dict[str, Any]:
    """The global random states; CUDA's only when CUDA is already initialized (never starts it)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global RNG users seed)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block and put every global random state back as it was (also on an exception).

    A measurement inside a training loop (an HVP over a shuffling loader, a cold Lanczos start)
    must not change which random numbers training draws next.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
