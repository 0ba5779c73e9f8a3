"""Smoke runs of the experiment scripts F2, F3, F4, F6, F7, F8 (issue 5).

Each script runs as a user would (``python experiments/<name>.py --preset smoke --out <tmp>
--no-progress``, all six subprocesses at once), must exit 0 and leave the run folders and a
``summary.json`` whose numbers agree with the records they summarise. A rerun (in-process, via
the script's own ``cli``) must skip every finished run: no record file is rewritten and the
summary numbers come back identical.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hessian_lr.range_test import RangeTestResult, lr_ramp
from hessian_lr.records import read_json, read_records
from hessian_lr.training.run import find_runs

# Experiment smoke runs (subprocesses, ~1 min): slow tier (the fast tier excludes them).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
SCRIPTS = (
    "f2_range_test",
    "f3_onecycle_vs_pc",
    "f4_cycle_length",
    "f6_limited_data",
    "f7_large_lr_regularization",
    "f8_sweeps",
)
COMMON_KEYS = {"experiment", "preset", "seconds"}
SUMMARY_KEYS = {
    "f2_range_test": {"runs", "recommended", "claim"},
    "f3_onecycle_vs_pc": {"final_test_accuracy", "steps"},
    "f4_cycle_length": {
        "lengths",
        "final_test_accuracy",
        "best_test_accuracy",
        "mean_final_accuracy",
        "gap_to_longest_points",
        "claim",
    },
    "f6_limited_data": {
        "fractions",
        "steps",
        "final_test_accuracy",
        "mean_final_accuracy",
        "gain_points",
        "gain_points_per_seed",
        "onecycle_steps_to_pc_final",
        "claim",
    },
    "f7_large_lr_regularization": {"runs", "claim"},
    "f8_sweeps": {"base", "batch_protocol", "final_test_accuracy", "mean", "steps", "claim"},
}
RUNS = {
    "f2_range_test": {"len20_seed0", "len40_seed0"},
    "f3_onecycle_vs_pc": {"onecycle_seed0", "pc_seed0", "pc_same_seed0"},
    "f4_cycle_length": {"onecycle_10_seed0", "onecycle_20_seed0"},
    "f6_limited_data": {
        "onecycle_p100_seed0",
        "pc_p100_seed0",
        "onecycle_p50_seed0",
        "pc_p50_seed0",
    },
    "f7_large_lr_regularization": {"seed0"},
    "f8_sweeps": {"base_seed0", "wd1e-03_seed0", "wd1e-05_seed0", "mom0.90_seed0", "bs32_seed0"},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run every script's smoke preset once, concurrently; {script: (returncode, output)}."""
    out = tmp_path_factory.mktemp("experiments_a")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(EXPERIMENTS / f"{name}.py"),
                "--preset",
                "smoke",
                "--out",
                str(out),
                "--no-progress",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in SCRIPTS
    }
    results = {}
    for name, p in procs.items():
        try:
            text, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
        results[name] = (p.returncode, text)
    return out, results


def _summary(out: Path, name: str) -> dict:
    return read_json(out / name / "summary.json")


def _final_acc(out: Path, name: str, run: str) -> float:
    recs = read_records(out / name / run / "records.jsonl")
    return [r["test_accuracy"] for r in recs if "test_accuracy" in r][-1]


def _snapshot(out: Path, name: str) -> dict[str, int]:
    """mtime (ns) of every file under the experiment's run folders."""
    return {
        str(p): p.stat().st_mtime_ns
        for p in (out / name).rglob("*")
        if p.is_file() and p.parent != out / name and not p.name.startswith(".")  # not .lock
    }


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_run_and_rerun_skips(smoke, name, monkeypatch, capsys):
    out, results = smoke
    rc, text = results[name]
    assert rc == 0, f"{name} failed:\n{text[-4000:]}"
    summary = _summary(out, name)
    assert summary["experiment"] == name and summary["preset"] == "smoke"
    missing = (SUMMARY_KEYS[name] | COMMON_KEYS) - set(summary)
    assert not missing, f"summary.json of {name} lacks {missing}"
    runs = {r.name: r for r in find_runs(out, name)}
    assert set(runs) == RUNS[name]
    assert all(r.status == "finished" for r in runs.values()), {
        n: r.status for n, r in runs.items()
    }

    # Rerun in-process with the script's own CLI: every run is found finished and skipped.
    before = _snapshot(out, name)
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    module = importlib.import_module(name)
    t0 = time.perf_counter()
    again = module.cli(
        module.__doc__,
        module.PRESETS,
        module.main,
        argv=["--preset", "smoke", "--out", str(out), "--no-progress"],
    )
    assert time.perf_counter() - t0 < 30
    assert _snapshot(out, name) == before, "a finished run was rewritten on rerun"
    assert again["experiment"] == name
    rewritten = _summary(out, name)
    assert rewritten.pop("seconds") >= 0 and summary.pop("seconds") >= 0
    assert rewritten == summary
    capsys.readouterr()


def test_f2_range_test_contents(smoke):
    out, results = smoke
    assert results["f2_range_test"][0] == 0
    summary = _summary(out, "f2_range_test")
    cfg = read_json(out / "f2_range_test" / "experiment_config.json")["config"]
    for run, info in summary["runs"].items():
        res = RangeTestResult.from_dict(read_json(out / "f2_range_test" / run / "range_test.json"))
        n = info["num_steps"]
        ladder = lr_ramp(cfg["start_lr"], cfg["end_lr"], n)
        assert list(res.lrs) == ladder[: len(res.lrs)].tolist()  # the linear ladder, exactly
        assert len(res.lrs) == n or res.stopped_early
        assert res.val_accuracies and all(0.0 <= a <= 1.0 for a in res.val_accuracies)
        assert info["peak_val_accuracy"] == max(res.val_accuracies)
        assert info["max_lr"] == res.max_lr
        assert info["base_lr_quarter"] == pytest.approx(res.max_lr / 4)
        assert info["lambda_max"] is not None and info["lambda_max"] > 0  # curvature check on
        assert info["two_over_lambda"] == pytest.approx(2 / info["lambda_max"])
    longest = f"len{max(cfg['lengths'])}_seed0"
    assert summary["recommended"]["from_run"] == longest
    assert summary["recommended"]["max_lr"] == summary["runs"][longest]["max_lr"]


def test_f3_summary_matches_records(smoke):
    out, results = smoke
    assert results["f3_onecycle_vs_pc"][0] == 0
    summary = _summary(out, "f3_onecycle_vs_pc")
    for arm in ("onecycle", "pc", "pc_same"):
        assert summary["final_test_accuracy"][arm] == [
            _final_acc(out, "f3_onecycle_vs_pc", f"{arm}_seed0")
        ]
        recs = read_records(out / "f3_onecycle_vs_pc" / f"{arm}_seed0" / "records.jsonl")
        assert len(recs) == summary["steps"][arm]


def test_f4_cycle_lengths(smoke):
    out, results = smoke
    assert results["f4_cycle_length"][0] == 0
    summary = _summary(out, "f4_cycle_length")
    assert summary["lengths"] == [10, 20]
    for n in (10, 20):
        recs = read_records(out / "f4_cycle_length" / f"onecycle_{n}_seed0" / "records.jsonl")
        assert len(recs) == n
        lrs = [r["lr"] for r in recs]
        peak = max(range(n), key=lrs.__getitem__)
        assert peak == int(0.45 * n)  # the cycle peaks at step_size = 45 % of the run
        assert lrs[-1] < lrs[0]  # annihilation below base_lr
        assert summary["final_test_accuracy"][str(n)] == [
            _final_acc(out, "f4_cycle_length", f"onecycle_{n}_seed0")
        ]
    m = summary["mean_final_accuracy"]
    assert summary["claim"]["gain_points"] == pytest.approx(100 * (m["20"] - m["10"]))
    assert summary["gap_to_longest_points"]["20"] == 0.0


def test_f6_limited_data(smoke):
    out, results = smoke
    assert results["f6_limited_data"][0] == 0
    summary = _summary(out, "f6_limited_data")
    full = read_json(out / "f6_limited_data" / "onecycle_p100_seed0" / "config.json")
    half = read_json(out / "f6_limited_data" / "pc_p50_seed0" / "config.json")
    assert full["subset"] is None and half["subset"] == 0.5
    assert summary["steps"] == {"onecycle": 10, "pc": 20}
    for k in ("p100", "p50"):
        accs = summary["final_test_accuracy"][k]
        for arm in ("onecycle", "pc"):
            assert accs[arm] == [_final_acc(out, "f6_limited_data", f"{arm}_{k}_seed0")]
        gain = 100 * (statistics.fmean(accs["onecycle"]) - statistics.fmean(accs["pc"]))
        assert summary["gain_points"][k] == pytest.approx(gain)
    g = summary["gain_points"]
    assert summary["claim"]["gain_grows"] == (g["p50"] > g["p100"])


def test_f7_train_and_test_loss(smoke):
    out, results = smoke
    assert results["f7_large_lr_regularization"][0] == 0
    summary = _summary(out, "f7_large_lr_regularization")
    info = summary["runs"]["seed0"]
    assert info["trajectories_identical"] is True  # both passes trained the same weights
    curves = read_json(out / "f7_large_lr_regularization" / "seed0" / "curves.json")
    lrs = curves["lr"]
    assert len(lrs) >= 2 and all(a < b for a, b in zip(lrs, lrs[1:]))
    assert len(curves["train_loss"]) == len(curves["test_loss"]) == len(lrs)
    i = min(range(len(lrs)), key=lambda k: curves["train_loss"][k])
    assert info["lr_at_min_train_loss"] == lrs[i]
    assert math.isclose(info["min_train_loss"], curves["train_loss"][i])


def test_f8_sweeps(smoke):
    out, results = smoke
    assert results["f8_sweeps"][0] == 0
    summary = _summary(out, "f8_sweeps")
    base = out / "f8_sweeps"
    # batch 32 runs as many iterations as the base batch 64 (the paper holds iterations fixed)
    assert summary["batch_protocol"] == "steps"
    assert len(read_records(base / "bs32_seed0" / "records.jsonl")) == 12
    assert len(read_records(base / "base_seed0" / "records.jsonl")) == 12
    moms = {r["momentum"] for r in read_records(base / "mom0.90_seed0" / "records.jsonl")}
    assert moms == {0.9}
    cyc = [r["momentum"] for r in read_records(base / "base_seed0" / "records.jsonl")]
    assert max(cyc) == pytest.approx(0.95) and min(cyc) == pytest.approx(0.85)
    acc = summary["final_test_accuracy"]
    assert acc["momentum"]["cyclical"] == acc["weight_decay"]["0.0001"]
    assert acc["weight_decay"]["0.001"] == [_final_acc(out, "f8_sweeps", "wd1e-03_seed0")]
    wd = summary["mean"]["weight_decay"]
    assert summary["claim"]["weight_decay"]["drop_points"] == pytest.approx(
        100 * (max(wd.values()) - wd["0.001"])
    )


def test_results_are_json(smoke):
    """Every summary is strict JSON (no NaN/Infinity tokens)."""
    out, _ = smoke
    bad: list[str] = []
    for name in SCRIPTS:
        text = (out / name / "summary.json").read_text()
        json.loads(text, parse_constant=bad.append)
        assert not bad, f"{name}: {bad} in summary.json"
