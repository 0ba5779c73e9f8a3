"""Schedules f(step), the ``torch.optim`` scheduler adapter, and the LR range test.

Uses ``lr`` only for the range test's curvature cross-check; imports nothing from ``training``.
``from hessian_lr.schedules import OneCycle`` works as it did when this was one module.

Modules: ``base`` (``Schedule``, the registry ``SCHEDULES``), one module per family (``cyclic``,
``onecycle``, ``sgdr``, ``decay``, ``warmup``; ``closed_form`` re-exports them all),
``scheduler`` (``ScheduleLR``), ``range_test`` (the ladder and the loop), ``suggest`` (the
suggestion rules), ``crosscheck`` (the curvature cross-check), ``range_result`` (the result
types), ``range_plot`` (the figure), ``evaluation`` (held-out loss and accuracy).
"""

from .base import SCHEDULES, Schedule, SchedulePreview, schedule_from_dict, schedule_names
from .cyclic import Cyclic
from .decay import Constant, ExpDecay, InvDecay, MultiStep, StepDecay
from .onecycle import OneCycle, OneCycleCosine
from .range_test import (
    CurvatureCheck,
    RangeTestResult,
    RangeTestSuggestion,
    RangeTestSuggestions,
    lr_range_test,
    suggest_lrs,
)
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
    "lr_range_test",
    "suggest_lrs",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "CurvatureCheck",
]
