"""``hessian-lr demo``: what LR to use, how it was found, what it cost, which estimate to trust.

End to end on the embedded 8×8 digits data with LeNet-5 and SGD (momentum 0.9, weight decay
5e-4), on a CPU in under two minutes:

1. the classic **LR range test** (linear ramp, test accuracy every few steps; ``max_lr`` at the
   accuracy peak, Smith 2017 §3.3) and the stability-aware :func:`hessian_lr.find_lr` (issue 24:
   exponential ramp, η·λ_max/c every few updates, stop at the edge, ``max_lr = k·edge_lr`` with
   study F16's k and band ×F) on the same model and data, each with its cost (updates, seconds,
   HVPs); the estimates F16 takes at θ₀ on the same model;
2. three runs of ``hessian_lr.training.train`` with the same budget and the ``LREstimator`` on:
   **1cycle** (base = max/4, annihilation tail, momentum 0.95 → 0.85 → 0.95) at ``find_lr``'s
   ``max_lr``, 1cycle at the range test's, and a **piecewise-constant** baseline (×0.1 at 62.5 %
   and 87.5 %);
3. four figures (PNG): the range test, the finder's ramp, schedules and test accuracy, the LR
   estimates against the LR in use with the secant's noise null;
4. ``report.md`` and ``summary.json`` with every number: the two suggestions and their costs,
   the three final accuracies, the estimates ranked by F16's verdicts (:mod:`.f16`) with their
   calibrated readings, the secant against its momentum-noise null.

Everything goes under ``out`` (default ``./demo_out``); the runs are ordinary run folders
(``<out>/runs/demo/{finder,range_test,pc}/``, see :mod:`hessian_lr.records`). Nothing here is
imported by the rest of the library.
"""

from .config import DEFAULT, QUICK, DemoConfig, DemoResult
from .report import describe_range_test
from .run import run_demo

__all__ = ["DemoConfig", "DemoResult", "DEFAULT", "QUICK", "run_demo", "describe_range_test"]
