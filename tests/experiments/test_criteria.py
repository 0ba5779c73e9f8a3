"""The claims' criteria pass on the papers' own numbers; the seed rule decides as documented."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from paper_figures import criteria  # noqa: E402
from paper_figures.criteria import PAPER_NUMBERS, decide, failed_run  # noqa: E402

CHECKED = [e for e in PAPER_NUMBERS if e["check"] is not None]


@pytest.mark.parametrize(
    "entry", CHECKED, ids=[f"{e['figure']}:{e['claim'][:30]}" for e in CHECKED]
)
def test_every_criterion_passes_on_the_papers_numbers(entry):
    assert entry["check"]() is True, f"{entry['figure']} criterion fails on {entry['numbers']}"


def test_every_numeric_claim_has_a_source_and_numbers():
    figures = {e["figure"] for e in CHECKED}
    assert {"F3", "F4", "F5", "F6", "F8", "F9", "F10", "F11"} <= figures
    for e in PAPER_NUMBERS:
        assert e["source"] and e["numbers"]


def test_criteria_can_fail():
    """Each criterion says no on numbers that contradict the paper (a test that cannot fail...)."""
    assert not criteria.onecycle_beats_pc(0.848, 0.896, 1 / 8)
    assert not criteria.onecycle_beats_pc(0.95, 0.90, 1.0)  # same iterations: no fraction
    assert not criteria.short_cycles_competitive(0.79, 0.89)  # error 21% vs 11%
    assert not criteria.gain_grows_as_data_shrinks(-0.03, -0.04)
    assert not criteria.largest_wd_is_worst({1e-3: 0.85, 1e-4: 0.84, 1e-5: 0.83})
    assert criteria.largest_wd_is_worst({1e-3: 0.70, 1e-4: 0.84, 1e-5: 0.83})
    assert not criteria.momentum_matters_little(6.2)
    assert not criteria.momentum_matters_little(1.8)  # the paper's own Table 6 spread is 1.7
    assert not criteria.tie_ratio_within(0.6)
    assert not criteria.far_above_lr(19.0)  # the paper's estimates are 20-60x its LR
    assert not criteria.clr_reaches_fixed_sooner([0.83, 0.83])
    assert not criteria.sgdr_sooner(1.5)
    assert not criteria.onecycle_matches_long_baseline(0.8714, 0.8887, 1 / 7)


def test_decide_rule():
    """Issue 25's rule: t-test at 5 % on seeds; one seed only against a sibling's spread."""
    # One seed without a sibling study's spread: undecided, however large.
    assert decide([4.0]).holds is None and decide([4.0]).n == 1
    assert decide([-5.0], sibling=criteria.Sibling(0.5, "F3")).holds is False
    # Two or three seeds: the t-test decides (p < 0.05), not |mean| > s.d.
    assert decide([1.0, 1.5]).holds is None  # t = 5, df = 1: p = 0.13
    assert decide([2.0, -1.0, 0.5]).holds is None
    tight = decide([1.0, 1.2, 0.9])
    assert tight.holds is True and tight.sd == pytest.approx(0.152752523, rel=1e-6)
    assert tight.p < 0.01
    assert decide([]).holds is None
    # Seeds that agree exactly decide by their sign; a zero margin stays undecided.
    assert decide([0.5, 0.5, 0.5]).holds is True
    assert decide([0.0, 0.0, 0.0]).holds is None
    # A margin within the measurement's grid step is undecided.
    assert decide([0.01, 0.012, 0.011], resolution=0.02).holds is None
    assert decide([0.3, -0.2, 0.1]).holds is None


def test_failed_run_is_chance_level():
    assert failed_run(0.10) and failed_run(0.115) and failed_run(None) and failed_run(float("nan"))
    assert not failed_run(0.5)
    assert failed_run(0.5, num_classes=2)


def _write_runs(root: Path, experiment: str, curves: dict[str, list[float]]) -> None:
    """``{run name: test accuracy at evaluation steps 9, 19, ...}`` as finished run folders."""
    for run, accs in curves.items():
        folder = root / experiment / run
        folder.mkdir(parents=True)
        lines = [json.dumps({"step": 10 * i + 9, "test_accuracy": a}) for i, a in enumerate(accs)]
        (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "meta.json").write_text(json.dumps({"status": "finished"}))


@pytest.mark.parametrize(
    "sgdr, sibling, expected",
    [
        ([0.80, 0.90, 0.90, 0.90, 0.90], None, True),  # reaches 0.90 at step 20 vs 50
        ([0.80, 0.85, 0.88, 0.89, 0.90], None, False),  # at the same step: 1×, not 2×
        ([0.80, 0.84, 0.85, 0.85, 0.85], 1.0, False),  # never; 5 points short, z = 5: decided
        ([0.80, 0.84, 0.85, 0.85, 0.85], None, None),  # the same on one seed, no sibling
        ([0.80, 0.88, 0.89, 0.89, 0.89], 1.0, None),  # never, 1 point short, z = 1: undecided
    ],
)
def test_f11_sooner_per_seed(tmp_path, sgdr, sibling, expected):
    from paper_figures._data import arms, experiment_runs
    from paper_figures.fig_f11_sgdr import _sooner_per_seed

    _write_runs(
        tmp_path,
        "f11_sgdr",
        {
            "step_lr0.1_seed0": [0.70, 0.80, 0.85, 0.88, 0.90],
            "step_lr0.05_seed0": [0.70, 0.75, 0.80, 0.85, 0.87],
            "sgdr_T0_1_seed0": sgdr,
        },
    )
    sib = None if sibling is None else criteria.Sibling(sibling, "a sibling")
    holds, text = _sooner_per_seed(arms(experiment_runs(tmp_path, "f11_sgdr")), sibling=sib)
    assert holds is expected, text
    if expected is not True and sgdr[-1] < 0.9:
        assert f"margin {100 * (max(sgdr) - 0.9):+.3g} points" in text


def test_f10_margins_per_seed(tmp_path):
    """0.5 − the fastest CLR arm's fraction of the run to the fixed arm's final accuracy."""
    from paper_figures._data import arms, experiment_runs
    from paper_figures.fig_f10_clr_vs_fixed import _margins

    runs = {}
    for k, hit in ((0, 3), (1, 6)):  # triangular2 reaches 0.9 at step 40 (seed 0), 70 (seed 1)
        runs[f"fixed_seed{k}"] = [0.5 + 0.04 * i for i in range(10)] + [0.9]
        runs[f"triangular2_seed{k}"] = [0.5] * hit + [0.9] * (11 - hit)
        runs[f"exp_range_seed{k}"] = [0.5] * 11  # never
    _write_runs(tmp_path, "f10_clr_vs_fixed", runs)
    margins, step = _margins(
        arms(experiment_runs(tmp_path, "f10_clr_vs_fixed")), {"steps": 110, "eval_every": 10}
    )
    assert margins == pytest.approx([0.5 - 40 / 110, 0.5 - 70 / 110])
    assert step == pytest.approx(10 / 110)
