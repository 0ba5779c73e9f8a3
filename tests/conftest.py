"""Test-wide settings: one torch thread (small ops are faster and steadier so on a shared machine)."""

import torch

torch.set_num_threads(1)
