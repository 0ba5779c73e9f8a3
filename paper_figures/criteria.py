"""The claims' criteria as pure functions of numbers, the papers' numbers, and the seed rule.

Each criterion is the plain reading of the paper's words, written as a function of point values
(accuracies as fractions, iteration counts, error rates). ``PAPER_NUMBERS`` holds the numbers the
papers report for each claim, with where they are reported; ``tests/experiments/test_criteria.py``
checks that every criterion passes on them -- a criterion the paper's own numbers fail is the
wrong criterion (issue 13). The figure modules apply the same functions to our numbers and wrap
them in :func:`decide`, which turns seed noise into an "undecided" verdict.

Sources: SC = Smith & Topin, "Super-Convergence" (arXiv:1708.07120, v3); CLR = Smith, "Cyclical
Learning Rates for Training Neural Networks" (WACV 2017, arXiv:1506.01186); SGDR = Loshchilov &
Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR 2017, arXiv:1608.03983).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import ALPHA, t_test, z_test

__all__ = [
    "CHANCE_MARGIN",
    "CLR_FRACTION",
    "MATCH_POINTS",
    "MOMENTUM_SPREAD",
    "TIE_RATIO",
    "FAR_ABOVE",
    "tie_ratio_within",
    "SGDR_END_TOLERANCE",
    "SGDR_SPEEDUP",
    "PAPER_NUMBERS",
    "Decision",
    "Sibling",
    "far_above_lr",
    "decide",
    "failed_run",
    "onecycle_beats_pc",
    "longer_cycles_gain",
    "short_cycles_competitive",
    "gain_grows_as_data_shrinks",
    "test_loss_min_after_train_loss_min",
    "largest_wd_is_worst",
    "momentum_matters_little",
    "larger_batch_not_worse",
    "onecycle_matches_long_baseline",
    "clr_reaches_fixed_sooner",
    "sgdr_sooner",
    "sgdr_final_comparable",
]

#: A run whose final test accuracy is within this of chance (1/C) never trained: a failed run.
CHANCE_MARGIN = 0.02


def failed_run(final_accuracy: float | None, num_classes: int = 10) -> bool:
    """True when a run ended at chance level (or has no accuracy): it never trained."""
    if final_accuracy is None or not math.isfinite(final_accuracy):
        return True
    return final_accuracy <= 1.0 / num_classes + CHANCE_MARGIN


@dataclass(frozen=True)
class Sibling:
    """The measured seed spread of a sibling study: the s.d. of its per-seed margins and where
    it was measured (e.g. "cpu F3, 3 seeds"). A single-seed margin is judged against it."""

    sd: float
    source: str


@dataclass(frozen=True)
class Decision:
    """A verdict from per-seed margins: ``holds`` True/False, or None (undecided), and why.

    ``p``, ``low``, ``high``: the test's two-sided p-value and 95 % interval of the margin
    (nan where no test ran); ``method``: "t" (seeds), "z" (one seed against a sibling's
    spread) or "" (undecided without a test).
    """

    holds: bool | None
    mean: float
    sd: float
    n: int
    reason: str
    unit: str = "points"
    p: float = math.nan
    low: float = math.nan
    high: float = math.nan
    method: str = ""
    against: str = ""

    def text(self) -> str:
        sd = f" ± {self.sd:.2g}" if self.n > 1 else ""
        seeds = f"{self.n} seed{'s' * (self.n != 1)}"
        test = ""
        if self.method:
            name = "t-test" if self.method == "t" else f"z-test against {self.against}"
            test = f"; {name}: p {_p(self.p)}, 95 % CI [{self.low:+.2g}, {self.high:+.2g}]"
        return f"margin {self.mean:+.3g}{sd} {self.unit} ({seeds}{test}){self.reason}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def decide(
    margins: Sequence[float],
    *,
    unit: str = "points",
    sibling: Sibling | None = None,
    resolution: float = 0.0,
) -> Decision:
    """The decision rule of every verdict (``CLAIMS.md``): a test at α = 0.05, two-sided.

    ``margins``: one value per seed, "ours − the claim's threshold" (> 0: as the paper says).
    With ≥ 2 seeds, a one-sample t-test of mean margin = 0 decides (the sign of the mean) when
    p < 0.05, else the row is undecided; seeds that agree exactly decide by their sign. One seed
    is decided only against the measured seed spread of a sibling study (``sibling``: a z-test
    with the sibling's s.d. as known); without one it is undecided. ``resolution``: a mean
    margin within the measurement's grid step (an LR grid, a fraction of the run) is undecided.
    """
    v = np.asarray([m for m in margins if m is not None and math.isfinite(m)], dtype=float)
    if len(v) == 0:
        return Decision(None, math.nan, math.nan, 0, "; no finished runs", unit)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    if len(v) == 1 and sibling is None:
        return Decision(None, mean, sd, 1, "; one seed, no sibling seed spread: undecided", unit)
    if len(v) == 1:
        r = z_test(mean, sibling.sd)
        against = f"the seed s.d. {sibling.sd:.2g} of {sibling.source}"
    else:
        r = t_test(v)
        against = ""
    base = dict(mean=mean, sd=sd, n=len(v), unit=unit, p=r.p, low=r.low, high=r.high)
    base.update(method=r.method, against=against)
    if abs(mean) <= resolution * (1 + 1e-9):
        return Decision(None, reason=f"; within the grid step {resolution:.2g}: undecided", **base)
    if r.p >= ALPHA:
        return Decision(None, reason=f"; p ≥ {ALPHA:g}: undecided", **base)
    return Decision(mean > 0, reason="", **base)


# ------------------------------------------------------------------ criteria (point values)
def onecycle_beats_pc(onecycle: float, pc: float, iteration_ratio: float) -> bool:
    """F3: 1cycle's final accuracy ≥ the PC baseline's, with at most half its iterations."""
    return onecycle >= pc and iteration_ratio <= 0.5


#: F3: 1cycle must tie the long baseline within this fraction of its iterations (SC: 1/8).
TIE_RATIO = 0.5


def tie_ratio_within(tie_ratio: float, at_most: float = TIE_RATIO) -> bool:
    """F3 as a curve: the iteration ratio (1cycle / PC) at which 1cycle's final accuracy first
    equals PC's is at most ``at_most`` (SC: 1cycle is above PC already at 1/8)."""
    return tie_ratio <= at_most


#: F5: "far above the LR": the paper's Fig. 5 estimates are ≈ 2–6 at LR 0.1, 20–60× the LR.
FAR_ABOVE = 20.0


def far_above_lr(estimate_over_lr: float, at_least: float = FAR_ABOVE) -> bool:
    """F5: the (EMA) LR estimate is at least ``at_least`` × the LR in use (the paper's 20–60×)."""
    return estimate_over_lr >= at_least


def longer_cycles_gain(shortest: float, longest: float) -> bool:
    """F4: the longest cycle ends above the shortest."""
    return longest > shortest


def short_cycles_competitive(shortest: float, longest: float, ratio: float = 1.5) -> bool:
    """F4: the shortest cycle's error rate is at most ``ratio`` × the longest cycle's."""
    return (1 - shortest) <= ratio * (1 - longest)


def gain_grows_as_data_shrinks(gain_largest: float, gain_smallest: float) -> bool:
    """F6: the 1cycle − PC gain on the smallest subset is positive and exceeds the full set's."""
    return gain_smallest > 0 and gain_smallest > gain_largest


def test_loss_min_after_train_loss_min(lr_min_train: float, lr_min_test: float) -> bool:
    """F7: during the range test the test loss reaches its minimum at a larger LR."""
    return lr_min_test > lr_min_train


def largest_wd_is_worst(by_wd: dict[float, float]) -> bool:
    """F8: the largest weight decay gives the lowest final accuracy."""
    largest = max(by_wd)
    return by_wd[largest] < min(v for k, v in by_wd.items() if k != largest)


#: F8: the spread of final accuracy over momentum settings in SC Table 6 (points). The bound was
#: 2.0 until issue 25 (loosened after the LeNet-era data); the paper's own spread is the bound.
MOMENTUM_SPREAD = 1.7


def momentum_matters_little(spread_points: float, points: float = MOMENTUM_SPREAD) -> bool:
    """F8: the momentum settings (incl. cyclical) lie within ``points`` of each other.

    ``spread_points``: best minus worst final accuracy over the settings, in points; the bound
    is the paper's own Table 6 spread.
    """
    return spread_points <= points


def larger_batch_not_worse(smallest: float, largest: float, points: float = 0.5) -> bool:
    """F8: at equal iterations the largest batch ends no more than ``points`` below the smallest.

    The paper's "slightly better" gives no number per batch size; the criterion asks the weaker
    "not worse" (the reading that a tie would not contradict).
    """
    return 100 * (largest - smallest) >= -points


#: F9: "matches" a baseline: within this many accuracy points of it.
MATCH_POINTS = 0.1


def onecycle_matches_long_baseline(
    onecycle: float, baseline: float, epoch_ratio: float, points: float = MATCH_POINTS
) -> bool:
    """F9: 1cycle within ``points`` of (or above) a baseline given ≥ 5× its epochs."""
    return 100 * (onecycle - baseline) >= -points and epoch_ratio <= 0.2


#: F10: the share of the fixed arm's iterations within which some CLR arm must reach its accuracy.
CLR_FRACTION = 0.5
#: F11: how many times sooner SGDR must reach the default's final error.
SGDR_SPEEDUP = 2.0
#: F11: how far (as an error fraction: 0.5 points) the best SGDR run may end above the default.
SGDR_END_TOLERANCE = 0.005


def clr_reaches_fixed_sooner(iteration_ratios: Sequence[float]) -> bool:
    """F10: some CLR policy reaches the fixed-LR final accuracy in ≤ half the iterations."""
    finite = [r for r in iteration_ratios if r is not None and math.isfinite(r)]
    return bool(finite) and min(finite) <= CLR_FRACTION


def sgdr_sooner(speedup: float, at_least: float = SGDR_SPEEDUP) -> bool:
    """F11: some SGDR run reaches the default schedule's final error ≥ 2× sooner."""
    return speedup >= at_least


def sgdr_final_comparable(best_sgdr_error: float, best_step_error: float) -> bool:
    """F11: the best SGDR run ends no more than 0.5 points above the best step run."""
    return best_sgdr_error <= best_step_error + SGDR_END_TOLERANCE


# ------------------------------------------------------------------ the papers' numbers
#: One entry per claim the papers give numbers for: where, the numbers, and the criterion call.
PAPER_NUMBERS: list[dict[str, Any]] = [
    {
        "figure": "F3",
        "claim": "1cycle reaches ≥ the baseline's final accuracy in a fraction of its iterations",
        "source": "SC §4, Fig. 1a (ResNet-56, CIFAR-10)",
        "numbers": "1cycle 92.4% at 10k iterations; PC 91.2% at 80k",
        "check": lambda: onecycle_beats_pc(0.924, 0.912, 10_000 / 80_000),
    },
    {
        "figure": "F3",
        "claim": "1cycle ties PC within half its iterations (the tie ratio)",
        "source": "SC §4, Fig. 1a (ResNet-56, CIFAR-10)",
        "numbers": "1cycle 92.4% at 10k iterations already above PC's 91.2% at 80k: tie ≤ 1/8",
        "check": lambda: tie_ratio_within(10_000 / 80_000),
    },
    {
        "figure": "F5",
        "claim": "LR estimates are far above the LR in use",
        "source": "SC §5, Fig. 5 (ResNet-56, CIFAR-10)",
        "numbers": "estimates ≈ 2–6 at LR 0.1 (20–60×)",
        "check": lambda: far_above_lr(2.0 / 0.1),
    },
    {
        "figure": "F4",
        "claim": "longer cycles gain",
        "source": "SC Fig. 1b / Table 1 (ResNet-56, CIFAR-10), as quoted in issue 13",
        "numbers": "shortest cycle 89.7%, longest 92.7%",
        "check": lambda: longer_cycles_gain(0.897, 0.927),
    },
    {
        "figure": "F4",
        "claim": "short cycles stay competitive",
        "source": "SC Fig. 1b / Table 1, as quoted in issue 13",
        "numbers": "errors 10.3% vs 7.3% (ratio 1.41)",
        "check": lambda: short_cycles_competitive(0.897, 0.927),
    },
    {
        "figure": "F6",
        "claim": "the 1cycle advantage grows as data shrinks",
        "source": "SC Table 1 / Fig. 6a (ResNet-56, CIFAR-10; 50k, 20k, 10k images)",
        "numbers": "1cycle − PC: +1.2, +5.2, +9.2 points",
        "check": lambda: gain_grows_as_data_shrinks(0.012, 0.092),
    },
    {
        "figure": "F8",
        "claim": "momentum matters little",
        "source": "SC Table 6 (momentum 0.8–0.95 and cyclical), as quoted in issue 13",
        "numbers": "spread of final accuracies 1.7 points",
        "check": lambda: momentum_matters_little(1.7),
    },
    {
        "figure": "F9",
        "claim": "1cycle matches or beats the long inv/step runs in ~1/7 of the epochs",
        "source": "SC v3 Table 2 (LeNet, MNIST)",
        "numbers": "1cycle 99.25% in 12 epochs; inv 99.03% in 85 epochs",
        "check": lambda: onecycle_matches_long_baseline(0.9925, 0.9903, 12 / 85),
    },
    {
        "figure": "F10",
        "claim": "CLR reaches the fixed-LR accuracy in ~1/3 of the iterations",
        "source": "CLR Table 1 (CIFAR-10, Caffe net)",
        "numbers": (
            "fixed 81.4% at 70k; triangular2 reaches it at 25k (0.36), exp_range at 42k (0.6)"
        ),
        "check": lambda: clr_reaches_fixed_sooner([25 / 70, 42 / 70]),
    },
    {
        "figure": "F11",
        "claim": "SGDR reaches a given error 2–4× sooner",
        "source": "SGDR abstract and §4.1 (WRN-28-10, CIFAR-10/100)",
        "numbers": "2–4× fewer epochs to the default schedule's error",
        "check": lambda: sgdr_sooner(2.0),
    },
    {
        "figure": "F11",
        "claim": "SGDR ends comparable or better",
        "source": "SGDR Table 1 (WRN-28-10, CIFAR-10)",
        "numbers": "final error 4.17% default vs 3.74–4.03% SGDR",
        "check": lambda: sgdr_final_comparable(0.0403, 0.0417),
    },
    # Claims the papers show only in a figure (no numbers to check a criterion against).
    {
        "figure": "F2",
        "claim": "accuracy rises then turns ragged/falls",
        "source": "CLR Fig. 3; SC Fig. 2",
        "numbers": "qualitative (curves only): CLR rises from LR ≈ 0.001, ragged above ≈ 0.006",
        "check": None,
    },
    {
        "figure": "F7",
        "claim": "train loss rises while test loss still falls as LR grows",
        "source": "SC Fig. 4 (ResNet-56, CIFAR-10 range test)",
        "numbers": "qualitative (curves only)",
        "check": None,
    },
    {
        "figure": "F8",
        "claim": "too much weight decay kills the effect; larger batch slightly better",
        "source": "SC §4.4–4.5, Figs. 9–10",
        "numbers": "qualitative (curves only): WD 1e-3 kills super-convergence, 1e-4 keeps it",
        "check": None,
    },
]
