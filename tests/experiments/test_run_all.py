"""The shared presets and the parallel launcher (experiments/_presets.py, experiments/run_all.py).

Fast tests build every preset of every experiment and its units without training; the slow one
runs the smoke family through ``run_all.py`` with a deadline that cuts a run, and checks that it
stopped at a checkpoint, was marked incomplete, and resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))

import _common  # noqa: E402
import _presets  # noqa: E402
import run_all  # noqa: E402

MINE = (
    "f2_range_test",
    "f3_onecycle_vs_pc",
    "f4_cycle_length",
    "f6_limited_data",
    "f7_large_lr_regularization",
    "f8_sweeps",
    "f9_lenet_mnist",
    "f10_clr_vs_fixed",
    "f11_sgdr",
    "f12_curvature",
)


@pytest.fixture(scope="module")
def modules():
    return run_all._modules(list(MINE))


def test_every_experiment_derives_from_the_base_preset(modules):
    assert set(modules) == set(MINE)
    for name, module in modules.items():
        assert set(module.PRESETS) == set(_presets.FAMILIES), name
        for family, cfg in module.PRESETS.items():
            assert isinstance(cfg, _presets.Base), (name, family)
            if name not in ("f9_lenet_mnist", "f10_clr_vs_fixed", "f11_sgdr"):
                # the family's model, data and batch are shared by every experiment
                for key in ("dataset", "model", "width", "batch_size"):
                    assert getattr(cfg, key) == _presets.FAMILIES[family][key], (name, key)


def test_families_use_batchnorm_resnets_except_lenet_claims(modules):
    for name, module in modules.items():
        for family in ("gpu", "cpu"):
            cfg = module.PRESETS[family]
            assert cfg.dataset == "fashion-mnist"
            if name in ("f9_lenet_mnist", "f10_clr_vs_fixed"):
                assert cfg.model == "lenet5"
            else:
                assert cfg.model.startswith("resnet"), (name, family, cfg.model)


@pytest.mark.parametrize("family", sorted(_presets.FAMILIES))
def test_every_unit_builds(modules, family):
    """Every preset's units exist, have unique names and a positive cost (no training)."""
    for name, module in modules.items():
        cfg = module.PRESETS[family]
        units = _common.plan(module, cfg)
        names = [u["name"] for u in units]
        assert names and len(names) == len(set(names)), name
        assert all(u["macs"] > 0 for u in units)
        assert {u["seed"] for u in units} == set(cfg.seeds)


def test_f3_has_both_baselines_at_the_papers_ratio(modules):
    f3 = modules["f3_onecycle_vs_pc"]
    for family in ("paper", "gpu", "cpu"):
        cfg = f3.PRESETS[family]
        runs = f3.arms(cfg, 0)
        assert set(runs) == {"onecycle", "pc", "pc_same"}
        assert runs["pc"].steps == 8 * runs["onecycle"].steps  # 80k / 10k
        assert runs["pc_same"].steps == runs["onecycle"].steps
        assert len(cfg.seeds) >= 3 or family == "paper"


def test_f8_holds_iterations_fixed_across_batch_sizes(modules):
    f8 = modules["f8_sweeps"]
    runs = f8.arms(f8.PRESETS["cpu"], 0)
    steps = {r.batch_size: r.steps for r in runs.values()}
    assert len(set(steps.values())) == 1 and len(steps) >= 3


def test_scaled_multiplies_iteration_counts_only(modules):
    f4 = modules["f4_cycle_length"]
    cfg = f4.PRESETS["gpu"]
    half = _presets.scaled(cfg, 0.5)
    assert half.lengths == tuple(round(n / 2) for n in cfg.lengths)
    assert dataclasses.replace(half, lengths=cfg.lengths) == cfg
    assert _presets.scaled(cfg, 1.0) is cfg
    with pytest.raises(ValueError, match="positive"):
        _presets.scaled(cfg, 0.0)


def test_presets_helper_rejects_unknown_fields_and_missing_families():
    @dataclasses.dataclass(frozen=True)
    class C(_presets.Base):
        steps: int = 1

    with pytest.raises(ValueError, match="missing"):
        _presets.presets(C, paper={}, gpu={}, cpu={})
    with pytest.raises(ValueError, match="no field"):
        _presets.presets(C, paper={}, gpu={}, cpu={}, smoke={"stepz": 3})
    built = _presets.presets(C, paper={}, gpu={}, cpu={"steps": 7}, smoke={})
    assert built["cpu"].steps == 7 and built["cpu"].model == _presets.FAMILIES["cpu"]["model"]


def test_forward_macs_matches_a_hand_count():
    # ResNet-8 (n = 1), width 16, 28x28x1: stem + 3 stages of one block (two 3x3 convs) + fc.
    stem = 28 * 28 * 1 * 16 * 9
    s1 = 28 * 28 * 9 * (16 * 16 + 16 * 16)
    s2 = 14 * 14 * 9 * (16 * 32 + 32 * 32)
    s3 = 7 * 7 * 9 * (32 * 64 + 64 * 64)
    assert _presets.forward_macs("resnet8", width=16) == stem + s1 + s2 + s3 + 64 * 10


def test_gpu_family_fits_the_budget(modules):
    """The gpu presets of these experiments fit 10 min at the rate measured on an H200 (3.5e12
    MAC/s for 6 processes side by side; 436 s for F2-F12), with a margin for F9/F10's
    Python-bound LeNet steps."""
    jobs = run_all.make_jobs("gpu", "cuda", scale=1.0, only=list(MINE), macs_per_s=3.5e12)
    assert {j.experiment for j in jobs} == set(MINE)
    total = sum(j.macs for j in jobs)  # a unit copied from another experiment's run costs 0
    assert total / 3.5e12 < 480


def test_order_policies():
    jobs = [
        run_all.Job("e", f"u{i}", "p", "cpu", rank, macs, 0.0)
        for i, (rank, macs) in enumerate([(0, 5.0), (1, 1.0), (0, 9.0), (0, 2.0)])
    ]
    assert [j.macs for j in run_all.order(jobs, "lpt")] == [9.0, 5.0, 2.0, 1.0]
    assert [j.macs for j in run_all.order(jobs, "short-first")] == [2.0, 5.0, 9.0, 1.0]


def test_data_root_with_idx_files_is_linked(tmp_path):
    files = tmp_path / "fmnist_files"
    files.mkdir()
    (files / "train-images-idx3-ubyte.gz").write_bytes(b"")
    env = run_all.data_env(str(files), tmp_path / "out")
    link = Path(env) / "fashion-mnist"
    assert link.is_symlink() and link.resolve() == files.resolve()
    parent = tmp_path / "parent"
    (parent / "fashion-mnist").mkdir(parents=True)
    assert run_all.data_env(str(parent), tmp_path / "out") == str(parent.resolve())


@pytest.mark.slow
def test_smoke_run_all_deadline_stops_at_a_checkpoint_and_resumes(tmp_path):
    """F3's smoke preset x 40 iterations with a deadline that cuts the long PC run."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(EXPERIMENTS / "run_all.py"),
        "--preset",
        "smoke",
        "--device",
        "cpu",
        "--jobs",
        "3",
        "--only",
        "f3",
        "--scale",
        "40",
        "--out",
        str(out),
        "--deadline",
        "120",
        "--grace",
        "60",
    ]
    subprocess.run(cmd, env=env, check=False, timeout=600, cwd=ROOT)
    report = json.loads((out / "run_all.json").read_text())
    units = {u["unit"]: u for u in report["units"]}
    pc = units["smoke/f3_onecycle_vs_pc/pc_seed0"]
    summary = json.loads((out / "smoke" / "f3_onecycle_vs_pc" / "summary.json").read_text())
    run = out / "smoke" / "f3_onecycle_vs_pc" / "pc_seed0"
    meta = json.loads((run / "meta.json").read_text())
    if pc["status"] == "finished":  # a fast machine finished before the deadline
        assert summary["complete"] is True
        return
    assert "USR1" in pc["signals"] and meta["status"] == "interrupted"
    assert summary["complete"] is False and summary["units"]["pc_seed0"]["status"] == "interrupted"
    steps = meta["steps_done"]
    assert steps % 10 == 0  # the smoke family checkpoints every 10 steps: it stopped on one
    records = (run / "records.jsonl").read_text().splitlines()
    assert len(records) == steps
    assert (run / "checkpoint.pt").exists() or steps == 0  # a slow start stops before step 1


def test_import_thins_long_finished_runs_and_prunes_stale_presets(tmp_path):
    from hessian_lr.records import to_jsonable

    src = tmp_path / "out" / "cpu" / "f3_onecycle_vs_pc"
    run = src / "pc_seed0"
    run.mkdir(parents=True)
    cfg = run_all._modules(["f3_onecycle_vs_pc"])["f3_onecycle_vs_pc"].PRESETS["cpu"]
    (src / "experiment_config.json").write_text(
        json.dumps({"preset": "cpu", "scale": 0.5, "config": to_jsonable(cfg)})
    )
    (run / "meta.json").write_text(json.dumps({"status": "finished"}))
    lines = []
    for step in range(3000):
        rec = {"step": step, "epoch": step / 468, "lr": 0.1, "train_loss": 1.0}
        if step % 150 == 149:
            rec["test_accuracy"] = 0.8
        lines.append(json.dumps(rec))
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    repo = tmp_path / "repo"
    stale = repo / "results_cpu" / "f6_limited_data"
    stale.mkdir(parents=True)
    (stale / "experiment_config.json").write_text(
        json.dumps({"preset": "cpu", "config": {"model": "lenet5", "dataset": "fashion-mnist"}})
    )
    run_all.import_results(str(tmp_path / "out"), repo=repo, thin=5)
    removed = run_all.prune_stale(repo=repo)
    assert removed == ["results_cpu/f6_limited_data"] and not stale.exists()
    kept = [
        json.loads(x)
        for x in (repo / "results_cpu" / "f3_onecycle_vs_pc" / "pc_seed0" / "records.jsonl")
        .read_text()
        .splitlines()
    ]
    evals = [r["step"] for r in kept if "test_accuracy" in r]
    assert evals == list(range(149, 3000, 150))  # every evaluation kept
    assert kept[-1]["step"] == 2999 and len(kept) == 600 + 20  # every 5th step + the evaluations


def _tiny_cfg(**kw):
    from hessian_lr.training.runner import TrainConfig

    base = dict(
        dataset="digits",
        model="mlp",
        batch_size=32,
        steps=6,
        eval_every=3,
        schedule={"type": "Constant", "base_lr": 0.05},
        seed=0,
        checkpoint_every=3,
    )
    return TrainConfig(**{**base, **kw})


def test_a_run_repeated_by_another_experiment_is_copied_not_retrained(tmp_path):
    """F4's 700-step cycle is F3's 1cycle run: the second experiment copies the finished run."""
    first = _common.run_train(
        _tiny_cfg(), out=tmp_path, experiment="e1", run="a_seed0", device="cpu", progress=False
    )
    assert first.status == "finished"
    # An experiment never copies its own arms (two arms with one config are a bug in the script).
    assert _common.find_twin(_tiny_cfg(), tmp_path, "e1", "other_seed0") is None

    def must_not_train(*args, **kwargs):
        raise AssertionError("an identical finished run exists: it must be copied")

    twin = _common.run_train(
        _tiny_cfg(),
        out=tmp_path,
        experiment="e2",
        run="b_seed0",
        device="cpu",
        progress=False,
        train_fn=must_not_train,
    )
    src, dst = tmp_path / "e1" / "a_seed0", tmp_path / "e2" / "b_seed0"
    assert twin.status == "finished" and twin.final_test_accuracy == first.final_test_accuracy
    assert (dst / "records.jsonl").read_bytes() == (src / "records.jsonl").read_bytes()
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["copied_from"] == "e1/a_seed0" and meta["experiment"] == "e2"
    # A different seed (or any other field) is not a twin: it trains.
    assert _common.find_twin(_tiny_cfg(seed=1), tmp_path, "e3", "c_seed1") is None
    assert _common.find_twin(_tiny_cfg(steps=7), tmp_path, "e3", "c_seed0") is None
    # A started folder is resumed or skipped as usual, never overwritten by a copy.
    assert _common.find_twin(_tiny_cfg(), tmp_path, "e2", "b_seed0") is None


def test_run_all_schedules_a_repeated_unit_after_its_original(modules):
    jobs = run_all.make_jobs("cpu", "cpu", scale=1.0, only=["f3", "f4", "f6"], macs_per_s=1e10)
    by_key = {j.key: j for j in jobs}
    twin = by_key["cpu/f4_cycle_length/onecycle_700_seed1"]
    assert twin.after is by_key["cpu/f3_onecycle_vs_pc/onecycle_seed1"] and twin.macs == 0
    assert by_key["cpu/f6_limited_data/pc_p100_seed0"].after.key.endswith(
        "f3_onecycle_vs_pc/pc_seed0"
    )
    assert by_key["cpu/f6_limited_data/pc_p20_seed0"].after is None
    queue = run_all.order(jobs, "short-first")
    assert queue[0].after is not None  # free units sort first but must wait
    launched = run_all._launchable(queue)
    assert launched.after is None and launched.macs > 0
    twin.after.end = 1.0
    assert run_all._launchable([twin]) is twin
