"""Schedules f(step), the ``torch.optim`` scheduler adapter, and the LR range test.

Uses ``lr`` only for the range test's curvature cross-check; imports nothing from ``training``.
``from hessian_lr.schedules import OneCycle`` works as it did when this was one module.
"""

from .closed_form import (
    SGDR,
    Constant,
    Cyclic,
    ExpDecay,
    InvDecay,
    MultiStep,
    OneCycle,
    OneCycleCosine,
    Schedule,
    SchedulePreview,
    StepDecay,
    schedule_from_dict,
)
from .range_test import (
    CurvatureCheck,
    RangeTestResult,
    RangeTestSuggestion,
    RangeTestSuggestions,
    lr_range_test,
    suggest_lrs,
)
from .scheduler import ScheduleLR

__all__ = [
    "Schedule",
    "SchedulePreview",
    "Cyclic",
    "OneCycle",
    "OneCycleCosine",
    "SGDR",
    "MultiStep",
    "StepDecay",
    "ExpDecay",
    "InvDecay",
    "Constant",
    "schedule_from_dict",
    "ScheduleLR",
    "lr_range_test",
    "suggest_lrs",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "CurvatureCheck",
]
