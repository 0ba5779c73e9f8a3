"""Observers in the runner: a new diagnostic needs no change to train(); state resumes; clashes
are refused; the probe records its BN mode; the old callback keeps its contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hessian_lr.lr import CurvatureOptions
from hessian_lr.lr.defaults import DEFAULT_BN_MODE
from hessian_lr.observe import Observer
from hessian_lr.training.observers import CurvatureProbe, RunContext
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, train
from hessian_lr.training.setup import probe_batch

CFG = TrainConfig(
    dataset="digits",
    model="mlp",
    model_kwargs={"hidden": [16]},
    batch_size=32,
    steps=24,
    eval_every=8,
    checkpoint_every=8,
    schedule={"type": "Constant", "base_lr": 0.05},
    device="cpu",
)


class WeightNorm(Observer):
    """A user diagnostic: ‖θ‖ every 3 updates, and how many times it ran (its state)."""

    name = "weight_norm"
    every = 3

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def observe(self, ctx):
        self.calls += 1
        norm = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in ctx.model.parameters()))
        assert isinstance(ctx, RunContext) and ctx.record["step"] == ctx.step
        assert ctx.lr == pytest.approx(0.05) and ctx.batch[0].shape[0] == 32
        torch.rand(5)  # global RNG draws are undone by the runner
        return {"weight_norm": float(norm), "weight_norm_calls": self.calls}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]

    def close(self):
        self.closed = True


def _strip(records, drop=()):
    return [{k: v for k, v in r.items() if "seconds" not in k and k not in drop} for r in records]


def test_a_new_observer_needs_no_change_to_train_and_resumes(tmp_path):
    plain = train(CFG, root=tmp_path, experiment="e", run="plain", progress=False)
    obs = WeightNorm()
    res = train(CFG, root=tmp_path, experiment="e", run="obs", progress=False, observers=[obs])
    assert obs.closed
    recs = Run(tmp_path, "e", "obs").records()
    assert [r["step"] for r in recs if "weight_norm" in r] == [2, 5, 8, 11, 14, 17, 20, 23]
    assert recs[-1]["weight_norm_calls"] == 8
    # The observer adds keys and changes nothing else (it even drew from the global RNG).
    drop = ("weight_norm", "weight_norm_calls")
    assert _strip(recs, drop) == _strip(Run(tmp_path, "e", "plain").records())
    assert res.final_test_accuracy == plain.final_test_accuracy

    # Its state_dict goes into the checkpoint: a stopped run continues the count.
    class Stop(Exception):
        pass

    def stop(step, model, record):
        if step == 13:
            raise Stop

    with pytest.raises(Stop):
        train(CFG, root=tmp_path, experiment="e", run="cut", progress=False,
              observers=[WeightNorm()], callback=stop)  # fmt: skip
    again = WeightNorm()
    train(CFG, root=tmp_path, experiment="e", run="cut", progress=False, observers=[again])
    assert again.calls == 8
    assert _strip(Run(tmp_path, "e", "cut").records()) == _strip(recs)


def test_two_observers_writing_one_key_are_refused(tmp_path):
    class Loss(Observer):
        name = "loss_again"

        def observe(self, ctx):
            return {"train_loss": 0.0}

    with pytest.raises(ValueError, match="train_loss"):
        train(CFG, root=tmp_path, experiment="e", run="r", progress=False, observers=[Loss()])


def test_callback_keeps_its_contract_step_minus_one_only_for_fresh_runs(tmp_path):
    seen = []

    def callback(step, model, record):
        seen.append(step)
        if step >= 0:
            assert record["step"] == step and "train_loss" in record
            if (step + 1) % 8 == 0:
                assert "test_accuracy" in record  # the record is complete when it runs
            record["extra"] = step * 2

    cfg = dataclasses.replace(CFG, steps=10)
    train(cfg, root=tmp_path, experiment="e", run="r", progress=False, callback=callback,
          observers=[WeightNorm()])  # fmt: skip
    assert seen == list(range(-1, 10))  # other observers are never called with step -1
    recs = Run(tmp_path, "e", "r").records()
    assert [r["extra"] for r in recs] == [2 * s for s in range(10)]


def test_probe_runs_on_its_schedule_and_records_its_bn_mode(tmp_path):
    cfg = dataclasses.replace(CFG, steps=10, probe_every=4, probe_size=48, trace_probes=2)
    train(cfg, root=tmp_path, experiment="e", run="r", progress=False)
    recs = Run(tmp_path, "e", "r").records()
    probed = [r["step"] for r in recs if "lambda_max" in r]
    assert probed == [0, 4, 8, 9]  # steps 0, k, 2k, ... and the last
    for r in recs:
        if "lambda_max" in r:
            assert r["bn_mode"] == DEFAULT_BN_MODE and r["lambda_max"] > 0
            assert r["trace"] is not None and r["trace_std_error"] >= 0


def test_probe_should_run_and_state_round_trip():
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    p = CurvatureProbe((x, y), every=5, curvature=CurvatureOptions(bn_mode="eval"))
    assert [t for t in range(12) if p.should_run(t)] == [0, 5, 10]
    assert p.should_run(11, last=True)
    assert not CurvatureProbe((x, y), every=0).should_run(0)
    p.v0 = torch.arange(3.0)
    q = CurvatureProbe((x, y), every=5)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.v0, p.v0)


def test_probe_batch_is_seeded_and_leaves_the_global_rng_alone():
    from hessian_lr.training.data import load_dataset

    data = load_dataset("digits")
    state = torch.get_rng_state()
    a = probe_batch(CFG, data)
    b = probe_batch(CFG, data)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a[1], b[1]) and a[0].shape == (CFG.probe_size, 1, 8, 8)
    g = torch.Generator().manual_seed(CFG.seed + 12345)  # the documented stream
    idx = torch.randperm(len(data), generator=g)[: CFG.probe_size]
    assert torch.equal(a[1], data.y[idx])
