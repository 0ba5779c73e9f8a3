"""F16: the η_max criterion and search, the ramp crossing, and the pre-registered statistics."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"
if str(EXP) not in sys.path:
    sys.path.insert(0, str(EXP))

from paper_figures import _f16_stats as st  # noqa: E402

f16 = importlib.import_module("f16_lr_that_works")
probes = importlib.import_module("f16_probes")
CFG = f16.PRESETS["cpu"]


def test_verdict_applies_the_stated_criterion():
    n, c = CFG.steps, 10
    falls = [2.3] + [1.0] * (n - 1)
    good_acc = [0.5] * n
    assert probes.verdict(CFG, falls, good_acc, c)[0] == "works"
    assert probes.verdict(CFG, falls, [0.15] * n, c)[0] == "too_large"  # < 2/C
    assert probes.verdict(CFG, [2.3] + [2.0] * (n - 1), good_acc, c)[0] == "too_small"  # -13 %
    assert probes.verdict(CFG, [2.3] + [2.31] * (n - 1), good_acc, c)[0] == "too_large"  # ≥ ln C
    assert probes.verdict(CFG, [2.3, math.nan], good_acc, c)[0] == "too_large"
    assert probes.verdict(CFG, falls[:50], good_acc, c)[0] == "too_large"  # stopped early


@pytest.mark.parametrize("limit, floor", [(0.3, 1e-3), (7.0, 1e-2), (1e-4, 1e-6)])
def test_eta_max_search_finds_the_largest_working_grid_lr(monkeypatch, limit, floor):
    def fake(cfg, cell, t, lr, batch_at):
        v = "too_large" if lr > limit else ("too_small" if lr < floor else "works")
        return {"lr": lr, "verdict": v}

    monkeypatch.setattr(f16, "constant_run", fake)
    guess = 0.05
    res = f16.eta_max(CFG, {}, None, guess, {}, lambda runs: None)
    grid = guess * math.sqrt(2) ** np.arange(-40, 41)
    truth = grid[(grid <= limit) & (grid >= floor)].max()
    assert res["status"] == "bracketed"
    assert res["eta_max"] == pytest.approx(truth, rel=1e-12)
    assert len(res["runs"]) <= 12


def test_eta_max_search_resumes_from_saved_runs(monkeypatch):
    calls = []

    def fake(cfg, cell, t, lr, batch_at):
        calls.append(lr)
        return {"lr": lr, "verdict": "too_large" if lr > 0.3 else "works"}

    monkeypatch.setattr(f16, "constant_run", fake)
    saved: dict = {}
    first = f16.eta_max(CFG, {}, None, 0.05, saved, lambda runs: None)
    n = len(calls)
    again = f16.eta_max(CFG, {}, None, 0.05, dict(saved), lambda runs: None)
    assert len(calls) == n and again["eta_max"] == first["eta_max"]


def test_crossing_interpolates_in_log_log():
    # ratio ∝ lr² between the two points: r = 0.25 at 1, 4 at 4 -> crossing at 2.
    assert probes._crossing([(1.0, 0.25), (4.0, 4.0)]) == pytest.approx(2.0)
    assert probes._crossing([(1.0, 0.5), (2.0, None), (3.0, 0.9)]) is None


def _cells():
    rng = np.random.default_rng(0)
    cells = []
    for m, k in (("a", 1.0), ("b", 2.0), ("c", 4.0)):
        for s in range(3):
            eta = float(np.exp(rng.normal()))
            e = eta / k * float(np.exp(0.1 * rng.normal()))
            cells.append(
                dict(model=m, seed=s, heldout=False, eta_max=eta, values={"est": e, "none": None})
            )
    return cells


def test_leave_one_model_out_errors_match_a_hand_computation():
    cells = _cells()
    errs = st.errors(cells, "est")
    for c, e in zip(cells, errs):
        others = [d for d in cells if d["model"] != c["model"]]
        k = np.exp(np.mean([np.log(d["eta_max"] / d["values"]["est"]) for d in others]))
        assert e == pytest.approx(abs(np.log(c["eta_max"] / (k * c["values"]["est"]))))
    assert all(e == math.inf for e in st.errors(cells, "none"))
    fit = st.fit(cells, "est")
    assert fit.factor == pytest.approx(math.exp(np.median(errs)))
    # k differs 4× between models a and c: left out, each is mispredicted by ≈ 2× or more.
    assert fit.per_model_k["c"] / fit.per_model_k["a"] == pytest.approx(4.0, rel=0.2)
    assert fit.heldout_kind == "worst left-out model" and fit.heldout_factor > 2.0
    assert not fit.predicts


def test_spearman_and_bootstrap_are_what_they_say():
    cells = _cells()
    fit = st.fit(cells, "est")
    x = np.array([c["values"]["est"] for c in cells])
    y = np.array([c["eta_max"] for c in cells])
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))  # no ties
    assert fit.rho == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    lo, hi = fit.ci
    assert lo <= fit.factor <= hi
    idx = st.resamples(len(cells))
    assert np.array_equal(idx, st.resamples(len(cells)))  # fixed seed: paired and reproducible


def test_gpu_preset_holds_out_resnet20_and_a_4_layer_gpt():
    gpu = f16.PRESETS["gpu"]
    held = {c["model"] for c in f16.cells(gpu).values() if c["heldout"]}
    assert held == {"resnet20", "gpt4"}
    assert set(f16.TRAIN_MODELS) == {c["model"] for c in f16.cells(gpu).values()} - held
    assert not any(c["heldout"] for c in f16.cells(f16.PRESETS["cpu"]).values())
    # A held-out model never enters k: its error uses k from every training model.
    cells = [dict(c, values={"est": 1.0}) for c in _cells()]
    cells.append(dict(model="h", seed=0, heldout=True, eta_max=8.0, values={"est": 1.0}))
    k_all = np.exp(np.mean([np.log(c["eta_max"]) for c in cells[:-1]]))
    assert st.errors(cells, "est")[-1] == pytest.approx(abs(np.log(8.0 / k_all)))
    assert st.fit(cells, "est").heldout_kind == "held-out models"
