"""Quadratic test models with a known Hessian, shared by the LR-estimation tests."""

import numpy as np
import torch
from torch import nn

DT = torch.float64


class Quadratic(nn.Module):
    """f(θ) = ½ θᵀAθ − bᵀθ; forward(x) returns f repeated over the batch (loss = its mean)."""

    def __init__(self, A, b, theta):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=DT))
        self.register_buffer("b", torch.as_tensor(b, dtype=DT))
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=DT).clone())

    def f(self):
        t = self.theta
        return 0.5 * t @ self.A @ t - self.b @ t

    def forward(self, x):
        return self.f().expand(x.shape[0])

    def grad_np(self):
        return (self.A @ self.theta.detach() - self.b).numpy()


def mean_out(outputs, targets):
    return outputs.mean()


#: A batch of two dummy samples: the Quadratic ignores its input.
QBATCH = (torch.zeros(2, 1, dtype=DT), torch.zeros(2, dtype=DT))


def spd(n, seed=0, lo=0.5, hi=20.0):
    """A random symmetric positive definite n×n matrix with eigenvalues linspace(lo, hi, n)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.linspace(lo, hi, n)) @ Q.T
