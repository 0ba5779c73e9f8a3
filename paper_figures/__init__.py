"""The papers' figures F1-F15, redrawn from saved results, with their claims checked.

One module per figure (``fig_f1_schedules`` ... ``fig_f15_edge_of_stability``), each with ``FIGURE``
("F3"), ``NAME`` (the output stem), ``EXPERIMENTS`` (the result folders it reads),
``claims(results) -> list[Claim]`` and ``draw(results, out) -> [png, pdf]``. Figures only read
``results/`` through ``hessian_lr.records`` and JSON; they never train. ``python -m paper_figures``
draws all or some; :mod:`paper_figures.claims` writes ``CLAIMS.md``.

Papers: Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017,
arXiv:1506.01186); Smith & Topin, "Super-Convergence" (arXiv:1708.07120); Loshchilov & Hutter,
"SGDR" (ICLR 2017, arXiv:1608.03983).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ._data import Claim, MissingResults

__all__ = ["FIGURES", "Claim", "MissingResults", "figure_module", "default_results"]

# Figure id -> module name, in the order of figures.md.
FIGURES: dict[str, str] = {
    "F1": "fig_f1_schedules",
    "F2": "fig_f2_range_test",
    "F3": "fig_f3_onecycle_vs_pc",
    "F4": "fig_f4_cycle_length",
    "F5": "fig_f5_lr_estimates",
    "F6": "fig_f6_limited_data",
    "F7": "fig_f7_large_lr",
    "F8": "fig_f8_sweeps",
    "F9": "fig_f9_lenet_mnist",
    "F10": "fig_f10_clr_vs_fixed",
    "F11": "fig_f11_sgdr",
    "F12": "fig_f12_curvature",
    "F13": "fig_f13_noise_null",
    "F14": "fig_f14_what_tracks",
    "F15": "fig_f15_edge_of_stability",
    "F16": "fig_f16_lr_that_works",
    "F17": "fig_f17_no_lr_sweep",
}

REPO = Path(__file__).resolve().parent.parent


def figure_module(fig: str) -> ModuleType:
    """The module drawing figure ``fig`` ("F3" or "f3")."""
    key = fig.upper()
    if key not in FIGURES:
        raise ValueError(f"unknown figure {fig!r}; known: {', '.join(FIGURES)}")
    return importlib.import_module(f"{__name__}.{FIGURES[key]}")


def default_results() -> Path:
    """``results_cpu`` if it exists (the committed cpu-preset results), else ``results``."""
    for base in (Path.cwd(), REPO):
        if (base / "results_cpu").is_dir():
            return base / "results_cpu"
    return Path("results")
