"""Smoke runs of the experiment scripts F5, F9, F10, F11, F12 (``--preset smoke``).

Each script runs as a user would run it, in a subprocess; the five start together (one BLAS
thread each, so two cores are not oversubscribed) and the tests then check the exit status, the
run folders and the numbers each summary must hold for its figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hessian_lr.records import read_json, read_records
from hessian_lr.training.run import Run

# Experiment smoke runs (subprocesses, ~1 min): slow tier (the fast tier excludes them).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
SCRIPTS = ("f9_lenet_mnist", "f10_clr_vs_fixed", "f11_sgdr", "f12_curvature")
RUNS = {
    "f9_lenet_mnist": ["inv_seed0", "onecycle_seed0", "step_seed0"],
    "f10_clr_vs_fixed": ["exp_range_seed0", "exp_seed0", "fixed_seed0", "triangular2_seed0"],
    "f11_sgdr": ["sgdr_T0_10_seed0", "sgdr_T0_1_seed0", "step_lr0.05_seed0", "step_lr0.1_seed0"],
    "f12_curvature": ["onecycle_seed0", "pc_seed0"],
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the five scripts (concurrently) once; return {script: (returncode, output)}."""
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--preset", "smoke"]
            + ["--out", str(out), "--no-progress"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in SCRIPTS
    }
    results = {}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        results[name] = (proc.returncode, output)
    return out, results


def _summary(smoke, name):
    out, results = smoke
    code, output = results[name]
    assert code == 0, output[-3000:]
    return out, read_json(out / name / "summary.json")


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_and_writes_run_folders(smoke, name):
    out, summary = _summary(smoke, name)
    assert summary["experiment"] == name and summary["preset"] == "smoke"
    assert summary["seconds"] > 0
    folders = sorted(p.name for p in (out / name).iterdir() if p.is_dir())
    assert folders == RUNS[name]
    for run in folders:
        run_obj = Run(out, name, run)
        assert run_obj.status == "finished"
        assert not run_obj.checkpoint_path.exists()
        recs = run_obj.records()
        assert [r["step"] for r in recs] == list(range(len(recs)))
        assert recs[-1].get("test_accuracy") is not None
    assert read_json(out / name / "experiment_config.json")["preset"] == "smoke"


def test_f9_epochs_and_schedules(smoke):
    out, s = _summary(smoke, "f9_lenet_mnist")
    assert s["steps_per_epoch"] == 1438 // 64
    assert s["epochs"] == {"onecycle": 2.0, "inv": 6.0, "step": 6.0}
    inv = read_records(out / "f9_lenet_mnist" / "inv_seed0" / "records.jsonl")
    for r in inv[::17]:
        assert r["lr"] == pytest.approx(0.01 * (1 + 1e-4 * r["step"]) ** -0.75, rel=1e-12)
    one = read_records(out / "f9_lenet_mnist" / "onecycle_seed0" / "records.jsonl")
    assert max(r["lr"] for r in one) == pytest.approx(0.1)
    assert min(r["momentum"] for r in one) == pytest.approx(0.8)
    final = s["final_test_accuracy"]["onecycle"][0]
    assert s["curves"]["onecycle"][-1] == [2.0, final]
    margins = s["checks"]["onecycle_matches"]["margin_points"]
    assert margins["inv"] == pytest.approx([100 * (final - s["final_test_accuracy"]["inv"][0])])
    reach = s["epochs_to_reach_onecycle_final"]["inv"][0]
    assert reach is None or dict(map(tuple, s["curves"]["inv"]))[reach] >= final


def test_f10_iterations_to_reach_fixed_accuracy(smoke):
    out, s = _summary(smoke, "f10_clr_vs_fixed")
    target = s["fixed_final"]
    assert target == s["curves"]["fixed"][-1][1]
    for arm, curve in s["curves"].items():
        assert [i for i, _ in curve] == list(range(8, 49, 8))
        hit = s["iterations_to_fixed_final"][arm]
        before = [a for i, a in curve if hit is None or i < hit]
        assert all(a < target for a in before)
        if hit is not None:
            assert dict(map(tuple, curve))[hit] >= target
    tri = read_records(out / "f10_clr_vs_fixed" / "triangular2_seed0" / "records.jsonl")
    # triangular2: peaks 0.06 then base + 0.05/2 in the second cycle; momentum held at 0.9.
    assert tri[6]["lr"] == pytest.approx(0.06) and tri[18]["lr"] == pytest.approx(0.035)
    assert {r["momentum"] for r in tri} == {0.9}
    fixed = read_records(out / "f10_clr_vs_fixed" / "fixed_seed0" / "records.jsonl")
    # Caffe's "fixed" recipe: x0.1 at 60/70 and 65/70 of the run (steps 41 and 45 of 48).
    assert s["lr"]["fixed_drop_steps"] == [41, 45]
    lrs = [fixed[i]["lr"] for i in (40, 41, 44, 45, 47)]
    assert lrs == pytest.approx([0.01, 1e-3, 1e-3, 1e-4, 1e-4])


def test_f11_restarts_and_targets(smoke):
    out, s = _summary(smoke, "f11_sgdr")
    assert s["restarts"] == {
        "sgdr_T0_1": [1, 3, 7, 15, 31, 63, 127],
        "sgdr_T0_10": [10, 30, 70, 150],
    }
    recs = read_records(out / "f11_sgdr" / "sgdr_T0_10_seed0" / "records.jsonl")
    for e in (0, 10, 30, 70, 150):
        assert recs[e]["lr"] == pytest.approx(0.05)  # a restart: back to eta_max
    step = read_records(out / "f11_sgdr" / "step_lr0.1_seed0" / "records.jsonl")
    assert [step[i]["lr"] for i in (59, 60, 120, 160)] == pytest.approx([0.1, 0.02, 0.004, 8e-4])
    errors = [s["final_test_error"][n][0] for n in ("step_lr0.1", "step_lr0.05")]
    assert s["target"] == min(errors)
    for key, reach in s["epochs_to_target"].items():
        for run, epoch in reach.items():
            if epoch is not None:
                assert dict(map(tuple, s["curves"][run]))[epoch] <= float(key) + 1e-4


def test_f12_densities_from_the_train_callback(smoke):
    out, s = _summary(smoke, "f12_curvature")
    for run, steps in (("onecycle", 24), ("pc", 48)):
        info = s["runs"][run]
        assert [d["updates"] for d in info["densities"]] == [0, steps]
        recs = Run(out, "f12_curvature", f"{run}_seed0").records()
        # The callback names each snapshot in the record of the step that produced it.
        assert [(r["step"], r["density_file"]) for r in recs if "density_file" in r] == [
            (steps - 1, f"density_u{steps:06d}.json")
        ]
        for d in info["densities"]:
            dens = read_json(out / "f12_curvature" / f"{run}_seed0" / d["file"])
            grid, density = np.array(dens["grid"]), np.array(dens["density"])
            assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
            assert np.sum(dens["weights"], axis=1) == pytest.approx(1.0, abs=1e-9)
            assert dens["lambda_max_slq"] == pytest.approx(max(map(max, dens["nodes"])))
            assert dens["fraction"] == d["updates"] / steps
            # The LR the optimizer holds then: the first update's, or the last update's.
            assert dens["lr"] == recs[min(d["updates"], steps - 1)]["lr"]
        # The last probe and the final density see the same weights and batch: SLQ's top node
        # converges to λ_max (Lanczos on the same operator).
        final_slq = info["densities"][-1]["lambda_max_slq"]
        assert final_slq == pytest.approx(info["lambda_max_final"], rel=1e-2)
    # Same initialization in both runs (same seed): the step-0 densities coincide.
    a, b = (s["runs"][r]["densities"][0] for r in ("onecycle", "pc"))
    assert a["lambda_max_slq"] == pytest.approx(b["lambda_max_slq"], rel=1e-12)


def test_help_says_what_the_study_shows():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "f11_sgdr.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0
    assert "SGDR" in proc.stdout and "--epoch-steps" in proc.stdout
