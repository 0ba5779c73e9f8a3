"""``hessian-lr demo``: range test, 1cycle vs piecewise constant and LR estimates, in minutes.

The Super-Convergence recipe (Smith & Topin 2017, §3; Smith 2017, *Cyclical Learning Rates*,
§3.3) end to end on the embedded 8×8 digits data with LeNet-5 and SGD (momentum 0.9, weight
decay 5e-4), on a CPU:

1. an **LR range test** (linear ramp, test accuracy every few steps): ``max_lr`` at the accuracy
   peak, ``base_lr = max_lr/4`` (SC §3), and the curvature cross-check 2/λ_max at the start;
2. two runs of ``hessian_lr.training.train``, both with the ``LREstimator`` on (``secant``, the
   paper's Hessian-free Eq. 8; ``quadratic`` gᵀg/gᵀHg; ``sharpness`` 1/λ_max by warm-started
   Lanczos): **1cycle** from ``base_lr`` to ``max_lr`` and back with an annihilation tail (momentum
   0.95 → 0.85 → 0.95), and a **piecewise-constant** baseline four times as long (the range test's
   steepest-descent LR, ×0.1 at 62.5 % and 87.5 % of the run: the SC paper's baseline shape);
3. three figures (PNG): the range test, the LR schedules and test accuracy, the LR estimates
   against the LR in use;
4. ``report.md`` and ``summary.json`` with every number (bounds, accuracies, iterations, estimator
   summary, wall time).

Everything goes under ``out`` (default ``./demo_out``); the two runs are ordinary run folders
(``<out>/runs/demo/{onecycle,pc}/``, see :mod:`hessian_lr.records`). Nothing here is imported by
the rest of the library.
"""

from .config import DEFAULT, QUICK, DemoConfig, DemoResult
from .report import describe_range_test
from .run import run_demo

__all__ = ["DemoConfig", "DemoResult", "DEFAULT", "QUICK", "run_demo", "describe_range_test"]
