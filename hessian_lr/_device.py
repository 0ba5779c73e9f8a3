"""One spelling per device: ``torch.device("cuda")`` names the current CUDA device.

``torch.device("cuda") != torch.device("cuda:0")``, while tensors always carry the index, so a
device given without one must be made explicit before it is compared with a tensor's.
"""

from __future__ import annotations

import torch

__all__ = ["canonical_device"]


def canonical_device(device: torch.device | str) -> torch.device:
    """``device`` with its index made explicit (``cuda`` -> ``cuda:<current>``).

    Devices without an index notion (``cpu``, ``meta``) and back ends that are not available are
    returned as they are.
    """
    device = torch.device(device)
    if device.index is None and device.type != "cpu":
        module = getattr(torch, device.type, None)
        current = getattr(module, "current_device", None)
        if callable(current) and getattr(module, "is_available", lambda: False)():
            return torch.device(device.type, current())
    return device
