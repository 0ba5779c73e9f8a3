"""hessian_lr: learning rates from curvature while a network trains."""
