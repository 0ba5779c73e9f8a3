"""The demo's configuration, result record, and the colours and labels its figures share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "DemoResult", "DEFAULT", "QUICK"]

# One colour per arm and per estimate method (the palette of the paper figures).
ARM_COLORS = {"finder": "#009E73", "range_test": "#0072B2", "pc": "#D55E00"}
METHOD_COLORS = {
    "secant": "#000000",
    "secant_hvp": "#009E73",
    "quadratic": "#0072B2",
    "sharpness": "#E69F00",
}
METHOD_LABELS = {
    "secant": "secant (SC Eq. 8, Hessian-free)",
    "secant_hvp": "Σ|g| / Σ|Hg|",
    "quadratic": "gᵀg / gᵀHg",
    "sharpness": "1/λ_max",
}
RUN_LABELS = {
    "finder": "1cycle at find_lr's max_lr",
    "range_test": "1cycle at the range test's max_lr",
    "pc": "piecewise constant",
}
LR_IN_USE_COLOR = "#555555"
MODEL_LABELS = {"lenet5": "LeNet-5", "mlp": "MLP", "logreg": "logistic regression"}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. Steps are optimizer updates (batches of ``batch_size``).

    Attributes:
        dataset, model: data and network (``training.data`` / ``training.models`` names).
        batch_size, momentum, weight_decay: SGD settings of the range test and both runs.
        range_start_lr, range_end_lr, range_steps: the range test's linear ramp.
        range_val_every: test accuracy every this many range-test updates.
        finder_start_lr, finder_end_lr, finder_steps: ``find_lr``'s exponential ladder (it stops
            at the edge, usually well before ``finder_steps``).
        finder_measure_every: updates between its sharpness measurements.
        onecycle_steps: length of each 1cycle run; ``pc_factor`` × that for the baseline (1: the
            same budget for all three runs).
        base_divisor: 1cycle ``base_lr = max_lr / base_divisor`` (4: SC §3; CLR §3.3 says 3-4).
        eval_every: test loss/accuracy every this many steps.
        estimator_methods, estimator_every: the ``LREstimator`` of both runs.
        seed: seeds the range test's model and both runs.
    """

    dataset: str = "digits"
    model: str = "lenet5"
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    range_start_lr: float = 0.0
    range_end_lr: float = 0.5
    range_steps: int = 200
    range_val_every: int = 5
    finder_start_lr: float = 1e-5  # find_lr's defaults: F16's ramp (×1.065 per update, λ every
    finder_end_lr: float = 10.0  # 10 updates), the speed its calibration constant was fitted at
    finder_steps: int = 220
    finder_measure_every: int = 10
    onecycle_steps: int = 300
    pc_factor: int = 1
    base_divisor: float = 4.0
    eval_every: int = 25
    estimator_methods: tuple[str, ...] = ("secant", "quadratic", "sharpness")
    estimator_every: int = 10
    seed: int = 0


#: The full demo (about a minute on a 2-core CPU).
DEFAULT = DemoConfig()
#: Seconds, for tests: the same pipeline, a few dozen steps per stage.
QUICK = DemoConfig(
    range_steps=30,
    range_val_every=5,
    finder_start_lr=1e-3,  # F16's ramp speed from a higher start: 1e-3 · 1.065^i
    finder_end_lr=1e-3 * (1e6 ** (1 / 219)) ** 109,
    finder_steps=110,
    finder_measure_every=10,
    onecycle_steps=24,
    pc_factor=1,
    eval_every=8,
    estimator_every=4,
)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files and the headline numbers.

    Attributes:
        out: the output folder.
        report: ``report.md``; ``summary``: ``summary.json`` (also returned as ``numbers``).
        figures: {"range_test", "lr_finder", "accuracy", "lr_estimates"} -> PNG path.
        runs: {"finder", "range_test", "pc"} -> run folder.
        numbers: the content of ``summary.json``.
        seconds: wall time of the whole demo.
    """

    out: Path
    report: Path
    summary: Path
    figures: dict[str, Path]
    runs: dict[str, Path]
    numbers: dict[str, Any]
    seconds: float


def _model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)
