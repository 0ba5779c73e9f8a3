"""The rows issue 25 changed, each on synthetic run folders or summaries with a known answer."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from paper_figures._data import Claim  # noqa: E402


def _run(root: Path, experiment: str, name: str, final: float, evals: int) -> None:
    """A finished run whose test accuracy rises linearly to ``final`` at step 10·evals − 1."""
    folder = root / experiment / name
    folder.mkdir(parents=True)
    accs = np.linspace(final - 0.1, final, evals)
    lines = [
        json.dumps({"step": 10 * i + 9, "test_accuracy": float(a)}) for i, a in enumerate(accs)
    ]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "meta.json").write_text(json.dumps({"status": "finished"}))


def _f3_f4(root: Path, at_half: list[float]) -> None:
    """PC 800 iterations at 0.90; 1cycle of 100 (F3), 200 and 400 iterations (F4), 3 seeds."""
    for k, pc in enumerate([0.900, 0.902, 0.898]):
        _run(root, "f3_onecycle_vs_pc", f"pc_seed{k}", pc, 80)
        _run(root, "f3_onecycle_vs_pc", f"onecycle_seed{k}", 0.85 + 0.001 * k, 10)
        _run(root, "f4_cycle_length", f"onecycle_200_seed{k}", 0.88 - 0.001 * k, 20)
        _run(root, "f4_cycle_length", f"onecycle_400_seed{k}", at_half[k], 40)
    (root / "f4_cycle_length" / "summary.json").write_text("{}")


def test_f3_tie_ratio_holds_when_1cycle_is_above_pc_at_half(tmp_path):
    from paper_figures.fig_f3_onecycle_vs_pc import _tie_claim, tie_curve

    _f3_f4(tmp_path, [0.910, 0.912, 0.909])  # +1.0, +1.0, +1.1 points at 1/2
    c = tie_curve(tmp_path)
    assert [round(r, 3) for r, _, _ in c["rows"]] == [0.125, 0.25, 0.5]
    # The mean margin crosses 0 between 1/4 (−2.07) and 1/2 (+1.03), linear in log ratio.
    m1, m2 = c["rows"][1][2].mean, c["rows"][2][2].mean
    expected = math.exp(math.log(0.25) + (-m1 / (m2 - m1)) * math.log(2))
    assert c["tie"] == pytest.approx(expected)
    assert c["tie_low"] <= c["tie"] <= c["tie_high"] <= 0.5
    assert _tie_claim(tmp_path).holds is True


def test_f3_tie_ratio_fails_when_1cycle_is_below_pc_at_half(tmp_path):
    from paper_figures.fig_f3_onecycle_vs_pc import _tie_claim, claims

    _f3_f4(tmp_path, [0.890, 0.891, 0.889])  # −1.0, −1.1, −0.9 points at 1/2
    row = _tie_claim(tmp_path)
    assert row.holds is False and "> 0.5" in row.ours
    assert len(claims(tmp_path)) == 2  # no pc_same runs: no equal-budget row


def test_f2_plateau_is_read_on_the_smoothed_curve():
    from paper_figures.fig_f2_range_test import smoothed_plateau

    lrs = np.linspace(0.1, 3.0, 30)
    accs = np.where(lrs < 0.75, 0.3, 0.88)
    accs[[10, 14, 20]] = 0.5  # single ragged drops inside the plateau
    accs[lrs > 2.4] = 0.4
    p = smoothed_plateau(lrs, accs)
    assert p["lo"] == pytest.approx(lrs[lrs >= 0.75][0])
    assert p["hi"] == pytest.approx(lrs[lrs <= 2.4][-1])
    assert p["ratio"] == pytest.approx(p["hi"] / p["lo"])
    assert p["ratio"] >= 3  # the raw curve's 5 %-of-peak plateau would stop at the first drop


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _f13_cells(root: Path, log_sd: float) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=6)
    z = (z - z.mean()) / z.std(ddof=1) * log_sd  # exactly that s.d. of log ratio
    cells = [
        {"momentum": 0.9, "spacing": s, "median_ratio": float(math.exp(v)), "lr": 0.1}
        for s in (1, 10)
        for v in z
    ]
    _write(root / "f13_noise_null" / "summary.json", {"cells": cells})


@pytest.mark.parametrize("ratio, sd, expected", [(0.9, 0.4, False), (25.0, 0.4, None)])
def test_f5_far_above_on_lenet_is_judged_at_20x_against_f13(tmp_path, ratio, sd, expected):
    from paper_figures.fig_f5_lr_estimates import claims

    _f13_cells(tmp_path, sd)
    lr = {"fixed": 0.01, "clr": [0.01, 0.2]}
    far = {"median_ema_over_lr": {"fixed": ratio, "clr": ratio}, "null": 1.03, "threshold": 20}
    _write(
        tmp_path / "f5_lr_estimates" / "summary.json",
        {
            "lr": lr,
            "second_lr": lr,
            "steps": 600,
            "checks": {},
            "arms": {},
            "checks_second": {"far_above_lr": far},
        },
    )
    (row,) = claims(tmp_path)
    assert "LeNet-5" in row.claim and "criterion ≥ 20×" in row.ours
    # log(ratio / 20) against the sibling's s.d.: 0.9× is z = 7.8 below; 25× is z = 0.56 above.
    z = math.log(ratio / 20) / sd
    assert f"p {'< 0.001' if abs(z) > 3.3 else '='}" in row.ours
    assert row.holds is expected


def test_f13_slope_and_fraction_on_synthetic_cells():
    from paper_figures.fig_f13_noise_null import _fraction_inside, _slope

    keys, series = [], []
    for mom, bs in ((0.0, 32), (0.9, 128)):
        for lr in (0.01, 0.1, 1.0):
            # Eq. 8 ratio at the null (slope 1); same-batch ratio ∝ LR^-0.7 (slope 0.3).
            from hessian_lr.lr.noise import noise_null

            keys.append(dict(kind="secant", spacing=1, lr=lr, momentum=mom, batch_size=bs))
            series.append(np.full(9, noise_null(mom, 1)))
            keys.append(dict(kind="same_batch", spacing=None, lr=lr, momentum=mom, batch_size=bs))
            series.append(np.full(9, 3.0 * lr**-0.7 * (2.0 if mom else 1.0)))
    assert _slope(keys, series, "secant", (0.1, 1.0)) == pytest.approx(1.0)
    assert _slope(keys, series, "same_batch", (0.1, 1.0)) == pytest.approx(0.3)
    assert _fraction_inside(keys, series, (0.8, 1.25)) == 1.0
    series[0] = series[0] * 2  # one of the six secant cells off the band
    assert _fraction_inside(keys, series, (0.8, 1.25)) == pytest.approx(5 / 6)


def test_f14_partial_correlation_with_log_step_removes_a_shared_trend():
    from paper_figures import _corr

    rng = np.random.default_rng(1)
    tables = []
    for _ in range(4):
        step = np.arange(25, 650, 25, dtype=float)
        lr = np.exp(rng.uniform(-2, 0, size=len(step)))
        trend = -0.8 * np.log(step)  # both estimates drift with training, nothing else shared
        a = np.exp(np.log(lr) + trend + 0.1 * rng.normal(size=len(step)))
        b = np.exp(trend + 0.1 * rng.normal(size=len(step)))
        tables.append({"step": list(step), "lr": list(lr), "a": list(a), "b": list(b)})
    mats = [_corr.run_matrix(t, "a", "b") for t in tables]
    assert _corr.pooled_partial(mats) > 0.9  # the trend alone correlates them
    assert abs(_corr.pooled_partial(mats, with_step=True)) < 0.3
    # The residual correlation equals numpy's on the pooled residuals of the same fit.
    res = []
    for m in mats:
        x = np.stack([np.ones(len(m)), m[:, 2]], axis=1)
        res.append(m[:, :2] - x @ np.linalg.lstsq(x, m[:, :2], rcond=None)[0])
    r = np.concatenate(res)
    assert _corr.pooled_partial(mats) == pytest.approx(np.corrcoef(r[:, 0], r[:, 1])[0, 1])
    ci = _corr.partial_ci(tables, "a", "b", with_step=True, n_boot=200)
    assert ci.low <= ci.estimate <= ci.high


def _f15_summary(root: Path, hovers: dict[int, list[float]]) -> None:
    runs = {}
    for seed, fracs in hovers.items():
        for i, h in enumerate(fracs):
            runs[f"gpt_sgd_lr{i}_seed{seed}"] = dict(
                task="gpt",
                optimizer="sgd",
                lr=0.1 * (i + 1),
                seed=seed,
                status="finished",
                reached_edge=True,
                hover_fraction=h,
                max_ratio=1.1,
                edge_step=50,
                update_multiplier_median=1.0,
            )
    _write(root / "f15_edge_of_stability" / "summary.json", {"runs": runs})
    folder = root / "f15_edge_of_stability" / "gpt_sgd_lr0_seed0"
    _write(folder / "meta.json", {"status": "finished"})
    (folder / "records.jsonl").write_text(json.dumps({"step": 0}) + "\n")


@pytest.mark.parametrize(
    "hovers, expected",
    [
        ({0: [0.9, 0.8]}, None),  # one seed: no sibling spread, undecided
        ({0: [0.9, 0.8], 1: [0.85, 0.9], 2: [0.8, 0.95]}, True),  # worst +0.3, +0.35, +0.3
        ({0: [0.9, 0.1], 1: [0.2, 0.9], 2: [0.15, 0.95]}, False),  # worst −0.4, −0.3, −0.35
    ],
)
def test_f15_hover_is_judged_per_seed(tmp_path, hovers, expected):
    from paper_figures.fig_f15_edge_of_stability import claims

    _f15_summary(tmp_path, hovers)
    row = claims(tmp_path)[0]
    assert "char-GPT" in row.claim
    assert row.holds is expected


def test_counts_split_papers_and_project_and_not_run():
    from paper_figures.claims import counts

    rows = [
        Claim("F3", "a", "paper numbers", "", True),
        Claim("F3", "b (new)", "(not in the paper)", "", False),
        Claim("F4", "c", "paper numbers", "", None),
        Claim("F5", "d", "paper numbers", "", None, not_run=True),
        None,
    ]
    assert counts(rows, "paper") == "1 hold, 0 do not hold, 1 undecided, 1 not run (of 3)"
    assert counts(rows, "project") == "0 hold, 1 do not hold, 0 undecided, 0 not run (of 1)"


def test_changed_verdicts_are_listed_with_their_test(tmp_path, monkeypatch):
    from paper_figures import claims as mod
    from paper_figures.criteria import decide

    before = tmp_path / "before.json"
    rows = [{"figure": "F6", "claim": "gain grows", "cpu": "holds", "gpu": "undecided"}]
    before.write_text(json.dumps({"source": "a test", "rows": rows}))
    monkeypatch.setattr(mod, "BEFORE_PATH", before)
    d = decide([0.05, 0.35, 0.34])  # p ≈ 0.13: undecided now
    cpu = Claim("F6", "gain grows", "", f"1cycle − PC {d.text()} [cpu]", d.holds)
    lines = mod._changes_lines([(cpu, None)])
    assert any("F6, cpu" in x and "holds → **undecided**" in x and "p = 0.13" in x for x in lines)
    assert not any("F6, gpu" in x for x in lines)  # undecided → not run is not a change
