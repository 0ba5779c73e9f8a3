"""Reading experiment results for the figures: runs, curves, seeds, and the claims they support.

Everything here reads the run folders written by ``hessian_lr.training.runner`` through
``hessian_lr.records`` (``find_runs``, ``Run.records()``, ``read_json``); nothing trains. A missing
experiment raises :class:`MissingResults`, whose message is the command that produces it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hessian_lr.records import read_json
from hessian_lr.training.run import Run, find_runs

__all__ = [
    "MissingResults",
    "Claim",
    "experiment_runs",
    "summary",
    "preset",
    "arms",
    "series",
    "final",
    "mean_sd",
    "fmt_pct",
    "fmt_mean",
    "fmt_num",
    "common_grid",
    "arm_curves",
    "finals",
    "first_reach",
    "fraction",
]

_SEED = re.compile(r"^(?P<arm>.+?)_seed(?P<seed>\d+)$")


class MissingResults(LookupError):
    """An experiment's results are not in the results folder; the message says how to make them."""

    def __init__(self, experiment: str, results: str | Path, detail: str = "") -> None:
        self.experiment = experiment
        self.results = Path(results)
        # results_gpu/ holds the gpu presets (run on a GPU machine), everything else the cpu ones.
        preset = "gpu --device cuda" if self.results.name == "results_gpu" else "cpu"
        self.command = f"python experiments/{experiment}.py --preset {preset} --out {results}"
        msg = f"no results for {experiment} in {results}"
        if detail:
            msg += f" ({detail})"
        super().__init__(f"{msg}; produce them with: {self.command}")


@dataclass(frozen=True)
class Claim:
    """One claim of ``figures.md`` checked on our numbers.

    Attributes:
        figure: "F3", ...
        claim: the claim, as the figure must show it.
        paper: the paper's numbers (text).
        ours: our numbers (text; mean ± s.d. over seeds where several).
        holds: True / False; None when our results cannot decide it.
        note: why it might not hold (required when ``holds`` is False), or a caveat.
        not_run: the study has no results (counted apart from "undecided").
        kind: "paper" (a claim of the papers) or "project" (the project's own finding); by
            default read from ``paper``/``claim`` (":func:`claim_kind`").
        test: the deciding test in words (statistic, p or CI) where ``ours`` holds several.
    """

    figure: str
    claim: str
    paper: str
    ours: str
    holds: bool | None
    note: str = ""
    not_run: bool = False
    kind: str = ""
    test: str = ""

    @property
    def verdict(self) -> str:
        if self.not_run:
            return "not run"
        return {True: "holds", False: "does not hold", None: "undecided"}[self.holds]

    @property
    def origin(self) -> str:
        """``kind`` if given, else :func:`claim_kind` of the row's texts."""
        return self.kind or claim_kind(self.claim, self.paper)


_PROJECT_MARKS = (
    "(new)",
    "not in the paper",
    "not measured in the paper",
    "(not a number",
    "issue ",  # a row whose source is one of the project's issues
)


def claim_kind(claim: str, paper: str) -> str:
    """ "project" when the row marks itself as the project's own finding ("(new)" in the claim,
    "(not in the paper" ... in the paper column), else "paper"."""
    text = f"{claim} {paper}".lower()
    return "project" if any(m in text for m in _PROJECT_MARKS) else "paper"


def experiment_runs(results: str | Path, experiment: str) -> list[Run]:
    """Finished or diverged runs of ``experiment`` (sorted by name); raise if there are none."""
    runs = [r for r in find_runs(results, experiment) if r.status in ("finished", "diverged")]
    if not runs:
        raise MissingResults(experiment, results)
    return runs


def summary(results: str | Path, experiment: str) -> dict[str, Any]:
    """``<results>/<experiment>/summary.json``; raise :class:`MissingResults` if absent."""
    path = Path(results) / experiment / "summary.json"
    if not path.exists():
        raise MissingResults(experiment, results, "summary.json missing")
    return read_json(path)


def preset(results: str | Path, experiment: str) -> str:
    """The preset that produced the results (``cpu``, ``smoke``, ``paper``; ``?`` if unknown)."""
    path = Path(results) / experiment / "summary.json"
    if path.exists():
        return str(read_json(path).get("preset", "?"))
    path = Path(results) / experiment / "experiment_config.json"
    return str(read_json(path).get("preset", "?")) if path.exists() else "?"


def arms(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Group runs named ``<arm>_seed<k>`` by arm (runs without a seed suffix are their own arm)."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        m = _SEED.match(run.name)
        out.setdefault(m["arm"] if m else run.name, []).append(run)
    return out


def by_seed(groups: dict[str, list[Run]]) -> dict[int, dict[str, Run]]:
    """Regroup ``arms(...)`` output per seed: ``{seed: {arm: run}}``, seeds ascending.

    Runs without a ``_seed<k>`` suffix are left out (they belong to no seed).
    """
    out: dict[int, dict[str, Run]] = {}
    for arm, runs in groups.items():
        for run in runs:
            m = _SEED.match(run.name)
            if m:
                out.setdefault(int(m["seed"]), {})[arm] = run
    return dict(sorted(out.items()))


def series(
    records: Sequence[dict[str, Any]], key: str, *, x: str = "step"
) -> tuple[np.ndarray, np.ndarray]:
    """(x, value) of the records that carry a finite ``key`` (dotted keys reach into dicts)."""
    xs, ys = [], []
    parts = key.split(".")
    for r in records:
        v: Any = r
        for p in parts:
            v = v.get(p) if isinstance(v, dict) else None
            if v is None:
                break
        if isinstance(v, (int, float)) and math.isfinite(v) and r.get(x) is not None:
            xs.append(r[x])
            ys.append(float(v))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def final(records: Sequence[dict[str, Any]], key: str = "test_accuracy") -> float:
    """Last finite value of ``key`` (nan if none)."""
    _, ys = series(records, key)
    return float(ys[-1]) if len(ys) else math.nan


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample s.d. (0 for one value) and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt_pct(values: Iterable[float] | float, digits: int = 1) -> str:
    """Accuracy fractions as ``89.1%`` or ``89.1 ± 0.4% (3 seeds)``."""
    if isinstance(values, (int, float)):
        values = [values]
    m, s, n = mean_sd(values)
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{100 * m:.{digits}f}%"
    return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}% ({n} seeds)"


def fmt_num(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def fmt_mean(values: Iterable[float], digits: int = 3) -> str:
    """``m`` or ``m ± s (n seeds)`` with ``digits`` significant digits."""
    m, s, n = mean_sd(values)
    if n == 0:
        return "n/a"
    if n == 1:
        return fmt_num(m, digits)
    return f"{fmt_num(m, digits)} ± {fmt_num(s, 2)} ({n} seeds)"


def common_grid(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Put seed curves on the first curve's x grid (interpolated); returns (x, ys (seeds, n))."""
    if not curves:
        return np.array([]), np.zeros((0, 0))
    x0 = curves[0][0]
    ys = [
        np.interp(x0, x, y, left=np.nan, right=np.nan) if len(x) else x0 * np.nan for x, y in curves
    ]
    return x0, np.asarray(ys)


def arm_curves(runs: Sequence[Run], key: str, *, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """Curves of ``key`` for the seeds of one arm on a common x grid: (x (n,), ys (seeds, n))."""
    return common_grid([series(r.records(), key, x=x) for r in runs])


def finals(runs: Sequence[Run], key: str = "test_accuracy") -> list[float]:
    """The last value of ``key`` in each run (one per seed)."""
    return [final(r.records(), key) for r in runs]


def last_quarter_gain(run: Run) -> float:
    """Test accuracy gained (points) over the last quarter of a run: ~0 when it has converged."""
    x, y = series(run.records(), "test_accuracy")
    if len(x) < 2:
        return math.nan
    start = np.interp(x[-1] - 0.25 * (x[-1] + 1), x, y)
    return float(100 * (y[-1] - start))


def first_reach(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First x at which ``y >= level`` (nan if never)."""
    hit = np.nonzero(y >= level)[0]
    return float(x[hit[0]]) if len(hit) else math.nan


def fraction(num: float, den: float) -> str:
    """``num/den`` as ``1/8`` when close to a unit fraction, else ``0.13``."""
    if not (den and math.isfinite(num) and math.isfinite(den)):
        return "n/a"
    r = num / den
    if r > 0 and abs(1 / r - round(1 / r)) < 0.02 * (1 / r):
        return f"1/{round(1 / r)}"
    return f"{r:.2f}"
