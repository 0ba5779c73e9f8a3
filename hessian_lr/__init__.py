"""hessian_lr: learning rates from curvature while a network trains."""

__version__ = "0.1.0"
