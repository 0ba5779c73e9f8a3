"""The runner under torchrun (gloo, 2 CPU processes): the same records as one process on the
whole batch, written once by rank 0, resumable (issue 14, runner part)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
import torch

from hessian_lr.training.distributed import DistContext
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, train

FLAGS = ["--model", "mlp", "--model-kwargs", '{"hidden": [16]}', "--batch-size", "32",
         "--steps", "20", "--eval-every", "10", "--checkpoint-every", "10", "--schedule", "0.05",
         "--estimator-methods", "quadratic", "--estimator-every", "5", "--device", "cpu",
         "--threads", "1", "--no-progress"]  # fmt: skip
CFG = TrainConfig(model="mlp", model_kwargs={"hidden": [16]}, batch_size=32, steps=20,
                  eval_every=10, checkpoint_every=10, schedule="0.05",
                  estimator_methods=("quadratic",), estimator_every=5, device="cpu")  # fmt: skip


def _torchrun(args, cwd, timeout=300):
    exe = shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun is not on PATH")
    cmd = [exe, "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _close(dist_records, ref_records):
    assert [r["step"] for r in dist_records] == [r["step"] for r in ref_records]
    for a, b in zip(dist_records, ref_records):
        assert a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        if "test_accuracy" in b:
            assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-9)
        if "estimates" in b:
            qa, qb = a["estimates"]["quadratic"]["lr"], b["estimates"]["quadratic"]["lr"]
            assert qa == pytest.approx(qb, rel=1e-5)


def test_single_process_context_is_a_no_op():
    ctx = DistContext.detect()
    assert not ctx.active and ctx.is_main and ctx.world_size == 1
    x = torch.arange(6.0)
    assert ctx.shard(x)[0] is x and ctx.agree(lambda: 3) == 3
    with pytest.raises(KeyError):
        ctx.agree(lambda: {}["missing"])
    assert DistContext(rank=1, world_size=2).shard(torch.arange(5))[0].tolist() == [3, 4]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_resume(tmp_path):
    torch.set_num_threads(1)
    ref = train(CFG, root=tmp_path, experiment="train", run="ref", progress=False)
    reference = Run(tmp_path, "train", "ref").records()

    proc = _torchrun(["-m", "hessian_lr.cli", "--", "train", *FLAGS, "--out", str(tmp_path),
                      "--run", "ddp"], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished: 20 steps") == 1  # rank 0 speaks, once
    run = Run(tmp_path, "train", "ddp")
    lines = run.records_path.read_text().splitlines()
    assert len(lines) == 20  # one writer: every step once
    _close([json.loads(line) for line in lines], reference)
    assert run.meta()["status"] == "finished"

    # Every rank stops at step 15 (checkpoint at 10); the rerun resumes there on both ranks.
    script = tmp_path / "stop.py"
    script.write_text(textwrap.dedent(f"""
        import torch, torch.distributed as dist
        from hessian_lr.training.runner import TrainConfig, train
        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        def stop(step, model, record):
            if step == 15:
                raise SystemExit(3)
        train(TrainConfig(**{CFG.__dict__!r}), root={str(tmp_path)!r}, experiment="train",
              run="cut", progress=False, callback=stop)
    """))  # fmt: skip
    proc = _torchrun([str(script)], cwd=tmp_path)
    assert proc.returncode != 0
    cut = Run(tmp_path, "train", "cut")
    assert cut.checkpoint_path.exists() and len(cut.records()) == 15
    # "interrupted" when rank 0 got to say so; "running" when torchrun stopped it first (as a
    # kill would): the rerun then records the interruption.
    assert cut.meta()["status"] in ("interrupted", "running")
    proc = _torchrun(["-m", "hessian_lr.cli", "--", "train", *FLAGS, "--out", str(tmp_path),
                      "--run", "cut"], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed at step 10" in proc.stdout
    _close(cut.records(), reference)
    assert cut.records()[-1]["test_accuracy"] == pytest.approx(ref.final_test_accuracy)
