"""Closed-form learning-rate (and momentum) schedules: pure functions of the integer step.

Every schedule is a small frozen dataclass with ``lr(step)``, ``momentum(step)`` (``None`` where
the schedule defines no momentum), ``preview(num_steps)`` for plotting and ``total_steps`` (``None``
for schedules without an end) and ``lr_bounds()`` (the stated range of every LR it returns). A
*step* is one optimizer update (one batch); step 0 is the value used by the first update. Nothing
here touches an optimizer: ``hessian_lr.schedules.ScheduleLR`` applies these to ``torch.optim``
parameter groups.

Modules: ``base`` (the ``Schedule`` class and the registry ``SCHEDULES``), one module per family
(``cyclic``, ``onecycle``, ``sgdr``, ``decay``, ``warmup``) and ``scheduler`` (``ScheduleLR``, the
``torch.optim.lr_scheduler.LRScheduler`` adapter). Imports nothing from ``lr``, ``range_test`` or
``training``; the LR range test lives in :mod:`hessian_lr.range_test`.

Schedules and their sources:

- ``Cyclic``: triangular, triangular2 and exp_range cyclical learning rates. Smith, "Cyclical
  Learning Rates for Training Neural Networks", WACV 2017 (arXiv:1506.01186), Sec. 3.1:
  cycle = floor(1 + t/(2s)), x = |t/s - 2 cycle + 1|, lr = base + (max - base) max(0, 1 - x) phi.
  With ``step_size_down`` it also covers the asymmetric form of PyTorch's ``CyclicLR`` (whose
  momentum cycling in counter-phase it reproduces).
- ``OneCycle``: the 1cycle policy of Smith & Topin, "Super-Convergence: Very Fast Training of Neural
  Networks Using Large Learning Rates" (arXiv:1708.07120), Sec. 3: linear base -> max -> base over
  2 * step_size, then an annihilation tail to a few orders of magnitude below base; cyclical
  momentum in counter-phase (0.95 -> 0.85 -> 0.95, held at the maximum in the tail) as in Smith,
  "A disciplined approach to neural network hyper-parameters" (arXiv:1803.09820), Sec. 4.
- ``OneCycleCosine``: the fastai two-phase (or three-phase) cosine one-cycle, exactly as
  ``torch.optim.lr_scheduler.OneCycleLR`` defines it (``pct_start``, ``div_factor``,
  ``final_div_factor``, ``three_phase``, ``anneal_strategy``).
- ``SGDR``: cosine annealing with warm restarts, Loshchilov & Hutter, "SGDR: Stochastic Gradient
  Descent with Warm Restarts", ICLR 2017 (arXiv:1608.03983), Eq. (5). T_cur advances per batch in
  fractional epochs; restart boundaries are computed in exact rational arithmetic (non-integer
  ``T_mult`` allowed), unlike PyTorch's float ``log`` which misplaces some of them.
- ``MultiStep``: piecewise constant, the baseline of the Super-Convergence paper (0.35, x0.1 at
  62.5 % and 87.5 % of the run: ``MultiStep.from_fractions``).
- ``StepDecay``, ``ExpDecay``, ``InvDecay``, ``Constant``: the Caffe ``step``, ``exp``, ``inv`` and
  ``fixed`` policies (Jia et al., "Caffe", 2014) used by the LeNet / CIFAR studies of the CLR paper.
- ``LinearWarmup``, ``WarmupCosine``, ``WarmupStableDecay``: linear warmup, warmup + cosine and
  warmup-stable-decay (WSD; Hu et al. 2024, Hägele et al. 2024), equal to PyTorch's
  ``LinearLR`` / ``SequentialLR`` compositions where one exists.
"""

from .base import SCHEDULES, Schedule, SchedulePreview, schedule_from_dict, schedule_names
from .cyclic import Cyclic
from .decay import Constant, ExpDecay, InvDecay, MultiStep, StepDecay
from .onecycle import OneCycle, OneCycleCosine
from .scheduler import ScheduleLR  # noqa: I001  (after the schedules it wraps)
from .sgdr import SGDR
from .warmup import LinearWarmup, WarmupCosine, WarmupStableDecay

__all__ = [
    "Schedule",
    "SchedulePreview",
    "SCHEDULES",
    "schedule_names",
    "Cyclic",
    "OneCycle",
    "OneCycleCosine",
    "SGDR",
    "MultiStep",
    "StepDecay",
    "ExpDecay",
    "InvDecay",
    "Constant",
    "LinearWarmup",
    "WarmupCosine",
    "WarmupStableDecay",
    "schedule_from_dict",
    "ScheduleLR",
]
