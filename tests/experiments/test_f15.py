"""F15 (edge of stability): smoke preset end to end, resume after an interruption, the figure."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hessian_lr.records import read_json, read_records

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"
NAME = "f15_edge_of_stability"


def _module():
    if str(EXP) not in sys.path:
        sys.path.insert(0, str(EXP))
    return importlib.import_module(NAME)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("f15")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(EXP / f"{NAME}.py"), "--preset", "smoke", "--out", str(out),
         "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_smoke_runs_and_summary_agrees_with_records(smoke):
    mod = _module()
    cfg = mod.PRESETS["smoke"]
    summary = read_json(smoke / NAME / "summary.json")
    assert set(summary["runs"]) == set(mod.units(cfg))
    for name, run in summary["runs"].items():
        recs = read_records(smoke / NAME / name / "records.jsonl")
        assert [r["step"] for r in recs] == list(range(run["steps"]))
        meas = [r for r in recs if "eos_sharpness" in r]
        assert [r["step"] for r in meas] == [2, 5]  # every 3 steps, and the last
        assert run["sharpness"] == [[r["step"], r["eos_sharpness"], r["eos_ratio"]] for r in meas]
        c = {"sgd": 3.8, "adam": 38.0}[run["optimizer"]]
        assert run["threshold"] == pytest.approx(c / run["lr"], rel=1e-12)
        for r in meas:
            assert r["eos_ratio"] == pytest.approx(r["eos_lr"] * r["eos_sharpness"] / c, rel=1e-9)
            assert r["eos_bn_mode"] == "train"
            assert ("eos_raw_sharpness" in r) == (run["optimizer"] == "adam")
            assert "eos_update_lr" in r
        assert "test_loss" in recs[-1]
        assert read_json(smoke / NAME / name / "meta.json")["status"] == "finished"
    assert summary["checks"]["vision_sgd"]["runs"] == 1


@pytest.mark.slow
def test_rerun_skips_finished_runs(smoke):
    mod = _module()
    before = {p: p.stat().st_mtime_ns for p in (smoke / NAME).glob("*/records.jsonl")}
    s1 = read_json(smoke / NAME / "summary.json")
    mod.cli(mod.__doc__, mod.PRESETS, mod.main, ["--preset", "smoke", "--out", str(smoke)])
    assert {p: p.stat().st_mtime_ns for p in (smoke / NAME).glob("*/records.jsonl")} == before
    s2 = read_json(smoke / NAME / "summary.json")
    assert json.dumps(s1["runs"], sort_keys=True) == json.dumps(s2["runs"], sort_keys=True)


@pytest.mark.slow
def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    mod = _module()
    cfg = dataclasses.replace(
        mod.PRESETS["smoke"], tasks=("gpt",), optimizers=("adam",), gpt_steps=8, checkpoint_every=3
    )
    (name,) = mod.units(cfg)
    mod.run_unit(cfg, name, out=str(tmp_path / "a"), device="cpu")
    full = read_records(tmp_path / "a" / NAME / name / "records.jsonl")

    calls = {"n": 0}
    original = mod.EdgeOfStability.observe

    def crash(self, ctx):
        calls["n"] += 1
        if ctx.step == 5:  # after the checkpoint at step 3, mid-way to the next
            raise KeyboardInterrupt
        return original(self, ctx)

    monkeypatch.setattr(mod.EdgeOfStability, "observe", crash)
    with pytest.raises(KeyboardInterrupt):
        mod.run_unit(cfg, name, out=str(tmp_path / "b"), device="cpu")
    monkeypatch.setattr(mod.EdgeOfStability, "observe", original)
    folder = tmp_path / "b" / NAME / name
    assert (folder / "checkpoint.pt").exists()
    assert len(read_records(folder / "records.jsonl")) == 5  # steps 0-4 written
    mod.run_unit(cfg, name, out=str(tmp_path / "b"), device="cpu")
    resumed = read_records(folder / "records.jsonl")
    assert len(resumed) == len(full) == 8
    for a, b in zip(full, resumed):
        assert a.keys() == b.keys()
        for key in a:
            if key == "eos_seconds":
                continue
            assert a[key] == b[key] or (
                isinstance(a[key], float) and math.isclose(a[key], b[key], rel_tol=1e-12)
            ), key
    assert not (folder / "checkpoint.pt").exists()


@pytest.mark.slow
def test_figure_and_claims_from_smoke_results(smoke, tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from paper_figures import fig_f15_edge_of_stability as fig

    rows = fig.claims(smoke)
    assert len(rows) == 5 and all(r.figure == "F15" for r in rows)
    summary = read_json(smoke / NAME / "summary.json")
    for row, (task, opt) in zip(rows, [("vision", "sgd"), ("gpt", "sgd"), ("vision", "adam"),
                                       ("gpt", "adam")]):  # fmt: skip
        runs = [r for r in summary["runs"].values() if (r["task"], r["optimizer"]) == (task, opt)]
        ok = all(
            r["reached_edge"] and r["hover_fraction"] >= 0.5
            for r in runs
            if r["status"] == "finished"
        )
        # One smoke seed: undecided by the decision rule (issue 25); the row says what it saw.
        assert row.holds is None and "one seed" in row.ours
        done = [r for r in runs if r["status"] == "finished"]
        assert f"{sum(r['reached_edge'] for r in done)}/{len(done)} finished runs" in row.ours
        assert ("✅" if ok else "❌") in row.note
    assert rows[-1].holds is None
    paths = fig.draw(smoke, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(
        p.stat().st_size > 0 for p in paths
    )


def test_gpt_is_causal_and_twice_differentiable():
    import torch

    mod = _module()
    torch.manual_seed(0)
    model = mod.TinyGPT(vocab=7, context=6, width=8, layers=1, heads=2).double()
    x = torch.randint(0, 7, (2, 6))
    y = model(x)
    x2 = x.clone()
    x2[:, 4:] = (x2[:, 4:] + 1) % 7  # change the future: the first 4 positions must not move
    assert torch.equal(model(x2)[:, :4], y[:, :4])
    from hessian_lr.curvature.hessian import HessianOperator

    op = HessianOperator(model, mod.token_loss, (x, torch.randint(0, 7, (2, 6))))
    v = torch.randn(op.shape[0], dtype=torch.float64)
    hv = op @ v
    assert torch.isfinite(hv).all() and float(hv.norm()) > 0


def test_units_and_plan():
    mod = _module()
    cfg = mod.PRESETS["cpu"]
    names = list(mod.units(cfg))
    assert len(names) == sum(
        len(getattr(cfg, f"{t}_{o}_lrs")) for t in cfg.tasks for o in cfg.optimizers
    )
    assert [u["name"] for u in mod.plan(cfg)] == names
    with pytest.raises(KeyError):
        mod.run_unit(cfg, "nope", out="unused", device="cpu")
