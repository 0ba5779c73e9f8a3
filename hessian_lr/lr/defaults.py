"""Defaults shared by every LR measurement (estimator, range-test cross-check, probes).

``DEFAULT_BN_MODE = "train"``: BatchNorm uses batch statistics, so the Hessian is that of the loss
SGD actually descends (the one whose trajectory Eq. 8 sees). ``HessianOperator`` itself defaults
to ``"eval"`` (running statistics: a fixed function of θ, per the method notes); every LR
measurement passes this default explicitly, accepts ``bn_mode=`` and records the mode it used.
On BN networks the two Hessians can differ by orders of magnitude, so the mode is part of every
number.
"""

from __future__ import annotations

from typing import Literal

DEFAULT_BN_MODE: Literal["train", "eval"] = "train"

__all__ = ["DEFAULT_BN_MODE"]
