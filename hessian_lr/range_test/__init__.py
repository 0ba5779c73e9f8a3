"""The LR range test: one short run with a rising learning rate, its suggestions and its figure.

Smith 2017 (CLR, arXiv:1506.01186, §3.3) and Smith & Topin 2017 (Super-Convergence,
arXiv:1708.07120, §3). A training procedure of its own (distributed, mixed precision, snapshot and
restore, held-out evaluation), so it has its own room beside the closed-form ``schedules``.

Modules: ``loop`` (the ladder and the loop, :func:`lr_range_test`), ``finder`` (the
stability-aware finder :func:`find_lr`: ramps until η·λ/c = 1, issue 24), ``config``
(:class:`RangeTestConfig`), ``suggest`` (the suggestion rules), ``crosscheck`` (the curvature
cross-check before the run), ``result`` (the result types), ``plot`` (the figure),
``evaluation`` (held-out loss and accuracy); ``_state``, ``_batches``, ``_group`` and ``_update``
are the loop's private pieces. Uses ``curvature`` and ``lr``; imports nothing from ``training``.
"""

from .config import RangeTestConfig
from .evaluation import Evaluation, evaluate
from .finder import LRFinderResult, find_lr
from .loop import lr_ramp, lr_range_test
from .plot import plot_range_test
from .result import CurvatureCheck, RangeTestResult, RangeTestSuggestion, RangeTestSuggestions
from .suggest import suggest_lrs
from .then_schedule import find_then_onecycle

__all__ = [
    "lr_range_test",
    "find_lr",
    "find_then_onecycle",
    "LRFinderResult",
    "lr_ramp",
    "RangeTestConfig",
    "suggest_lrs",
    "RangeTestResult",
    "RangeTestSuggestion",
    "RangeTestSuggestions",
    "CurvatureCheck",
    "plot_range_test",
    "evaluate",
    "Evaluation",
]
