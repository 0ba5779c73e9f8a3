"""The runner: resume after kill -9 reproduces the uninterrupted records; divergence is a result."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from hessian_lr.records import read_records
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, train

CFG = dict(
    dataset="digits",
    model="mlp",
    batch_size=32,
    steps=60,
    eval_every=20,
    checkpoint_every=20,
    schedule={
        "type": "OneCycle",
        "base_lr": 0.02,
        "max_lr": 0.2,
        "step_size": 25,
        "total_steps": 60,
    },
    estimator_methods=("secant", "quadratic"),
    estimator_every=10,
    probe_every=30,
    probe_size=64,
    trace_probes=2,
    augment=True,  # exercises the checkpointed augmentation generator
    device="cpu",
)


def _strip(records):
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if "seconds" not in k}
        for est in (r.get("estimates") or {}).values():
            est.pop("seconds", None)
        out.append(r)
    return out


def test_resume_after_an_exception_reproduces_records(tmp_path):
    """Fast tier: a run stopped by an exception in step 45 resumes from step 40 identically."""
    cfg = TrainConfig(**CFG)
    reference = read_records(
        train(cfg, root=tmp_path, experiment="e", run="ref", progress=False).run_dir
        / "records.jsonl"
    )

    class Stop(Exception):
        pass

    def stop(step, model, record):
        if step == 45:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, root=tmp_path, experiment="e", run="cut", progress=False, callback=stop)
    run = Run(tmp_path, "e", "cut")
    assert run.meta()["status"] == "interrupted" and len(run.records()) == 45
    res = train(cfg, root=tmp_path, experiment="e", run="cut", progress=False)
    assert res.resumed_from == 40 and res.status == "finished"
    assert _strip(run.records()) == _strip(reference)


@pytest.mark.slow
def test_resume_after_kill_reproduces_records(tmp_path):
    ref = train(TrainConfig(**CFG), root=tmp_path, experiment="e", run="ref", progress=False)
    assert ref.status == "finished" and ref.steps == 60
    reference = read_records(ref.run_dir / "records.jsonl")
    assert [r["step"] for r in reference] == list(range(60))

    # A subprocess that SIGKILLs itself in the middle of evaluation at step 39 (after the
    # checkpoint at step 20, before the one at step 40): records 20..38 must be redone.
    script = textwrap.dedent(
        f"""
        import os, signal
        import torch
        import hessian_lr.training.runner as T
        torch.set_num_threads({torch.get_num_threads()})  # same float reductions as this process
        calls = []
        import hessian_lr.training.observers as O
        real = O.evaluate
        def evaluate(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        O.evaluate = evaluate
        T.train(T.TrainConfig(**{CFG!r}), root={str(tmp_path)!r}, experiment="e", run="killed",
                progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    run = Run(tmp_path, "e", "killed")
    partial = run.records()
    assert run.checkpoint_path.exists() and len(partial) == 39
    assert run.records_path.read_bytes().endswith(b"\n")

    res = train(TrainConfig(**CFG), root=tmp_path, experiment="e", run="killed", progress=False)
    assert res.resumed_from == 20 and res.status == "finished"
    assert _strip(run.records()) == _strip(reference)
    assert not run.checkpoint_path.exists()
    assert run.meta()["status"] == "finished"
    # A finished run is not trained again.
    again = train(TrainConfig(**CFG), root=tmp_path, experiment="e", run="killed", progress=False)
    assert again.resumed_from is None and again.final_test_accuracy == res.final_test_accuracy


def test_divergence_is_a_result(tmp_path):
    cfg = TrainConfig(
        dataset="digits",
        model="mlp",
        batch_size=32,
        steps=200,
        eval_every=50,
        schedule={"type": "Constant", "base_lr": 1e4},
        momentum=0.9,
        weight_decay=0.0,
        device="cpu",
    )
    res = train(cfg, root=tmp_path, experiment="e", run="big", progress=False)
    assert res.status == "diverged" and res.steps < 200
    run = Run(tmp_path, "e", "big")
    assert run.meta()["status"] == "diverged"
    last = run.records()[-1]
    assert last["train_loss"] is None or last["train_loss"] in ("inf", "-inf")
    json.loads(run.config_path.read_text())


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def _param_sum(model):
    return sum(float(p.detach().double().sum()) for p in model.parameters())


@pytest.mark.slow
def test_callback_sees_every_step_once_adds_to_records_and_resumes(tmp_path):
    cfg = TrainConfig(**{**CFG, "steps": 40, "estimator_methods": (), "probe_every": 0})
    plain = read_records(
        train(cfg, root=tmp_path, experiment="e", run="plain", progress=False).run_dir
        / "records.jsonl"
    )
    seen, init = [], {}

    def callback(step, model, record):
        assert model.training
        seen.append(step)
        if step == -1:  # the initial model, before any update; the record is not written
            assert record == {}
            init["sum"] = _param_sum(model)
            return
        assert record["step"] == step and "train_loss" in record
        if (step + 1) % 20 == 0:
            assert "test_accuracy" in record  # the record is complete when the callback runs
        record["param_sum"] = _param_sum(model)

    ref = train(cfg, root=tmp_path, experiment="e", run="ref", progress=False, callback=callback)
    assert seen == list(range(-1, 40))
    reference = read_records(ref.run_dir / "records.jsonl")
    assert all("param_sum" in r for r in reference)
    # The model is seen after the update: step 0's weights are no longer the initial ones.
    assert reference[0]["param_sum"] != init["sum"]
    # The callback adds keys and changes nothing else.
    added = [{k: v for k, v in r.items() if k != "param_sum"} for r in reference]
    assert _strip(added) == _strip(plain)

    # Killed inside the callback of step 30 (checkpoint at 20): resuming calls it for 20..39.
    calls = tmp_path / "calls.txt"
    script = textwrap.dedent(
        f"""
        import os, signal
        import torch
        import hessian_lr.training.runner as T
        torch.set_num_threads({torch.get_num_threads()})
        def callback(step, model, record):
            with open({str(calls)!r}, "a") as f:
                f.write(f"{{step}}\\n")
            if step == 30:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= 0:
                record["param_sum"] = sum(
                    float(p.detach().double().sum()) for p in model.parameters()
                )
        T.train(T.TrainConfig(**{dataclasses.asdict(cfg)!r}), root={str(tmp_path)!r},
                experiment="e", run="killed", progress=False, callback=callback)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert [int(s) for s in calls.read_text().split()] == list(range(-1, 31))
    run = Run(tmp_path, "e", "killed")
    assert run.checkpoint_path.exists() and len(run.records()) == 30

    seen.clear()
    res = train(cfg, root=tmp_path, experiment="e", run="killed", progress=False, callback=callback)
    assert res.resumed_from == 20 and seen == list(range(20, 40))
    assert _strip(run.records()) == _strip(reference)
    seen.clear()  # a finished run is returned as is: no calls
    train(cfg, root=tmp_path, experiment="e", run="killed", progress=False, callback=callback)
    assert seen == []
