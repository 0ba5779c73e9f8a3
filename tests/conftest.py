"""Test-wide settings: one torch thread (small ops run faster and steadier on a shared CPU)."""

import torch

torch.set_num_threads(1)
