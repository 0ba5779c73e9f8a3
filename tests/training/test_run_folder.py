"""Run folders: one writer (a real second process is refused), config-checked resume,
interrupted status, stray temporary files (issue 11, items 1, 2 and 12)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from hessian_lr.records import read_records, stray_temp_files, temp_path, write_json_atomic
from hessian_lr.training.run import Run, RunLock, RunLockedError
from hessian_lr.training.runner import ConfigMismatchError, TrainConfig, train
from hessian_lr.training.train_config import config_diff

CFG = TrainConfig(
    dataset="digits",
    model="mlp",
    model_kwargs={"hidden": [16]},
    batch_size=32,
    steps=30,
    eval_every=10,
    checkpoint_every=10,
    schedule={"type": "Constant", "base_lr": 0.05},
    device="cpu",
)


def _strip(records):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]


def _hold_script(root, run, ready, go, cfg=CFG):
    """A child that trains ``run`` and, inside the callback of step 15, waits for ``go``."""
    return textwrap.dedent(
        f"""
        import os, time, torch
        from hessian_lr.training.runner import TrainConfig, train
        torch.set_num_threads(1)
        def callback(step, model, record):
            if step == 15:
                open({str(ready)!r}, "w").close()
                for _ in range(600):
                    if os.path.exists({str(go)!r}):
                        break
                    time.sleep(0.05)
        train(TrainConfig(**{dataclasses.asdict(cfg)!r}), root={str(root)!r}, experiment="e",
              run={run!r}, progress=False, callback=callback)
        """
    )


def _wait_for(path, proc, timeout=60.0):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.time() - t0 < timeout, "the child never reached step 15"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_writer_is_refused_and_kill_releases_the_lock(tmp_path):
    ref = train(CFG, root=tmp_path, experiment="e", run="ref", progress=False)
    reference = read_records(ref.run_dir / "records.jsonl")
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", _hold_script(tmp_path, "shared", ready, go)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, child)
        run = Run(tmp_path, "e", "shared")
        before = run.records_path.read_bytes()
        with pytest.raises(RunLockedError) as exc:
            train(CFG, root=tmp_path, experiment="e", run="shared", progress=False)
        msg = str(exc.value)
        assert f"pid {child.pid}" in msg and "another process" in msg and "started" in msg
        # The refused writer touched nothing: the holder's records and meta are as they were.
        assert run.records_path.read_bytes() == before
        assert run.meta()["status"] == "running"
        os.kill(child.pid, signal.SIGKILL)  # the kernel releases the lock with the process
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert run.meta()["status"] == "running"  # the killed writer could not say otherwise
    assert run.status == "interrupted"  # but its lock died with it
    res = train(CFG, root=tmp_path, experiment="e", run="shared", progress=False)
    assert res.status == "finished" and res.resumed_from == 10
    meta = run.meta()
    assert meta["status"] == "finished"
    assert len(meta["interruptions"]) == 1  # the restart saw `running` without a writer
    assert _strip(run.records()) == _strip(reference)


def test_lock_file_names_the_holder_and_is_reusable(tmp_path):
    lock = RunLock(tmp_path / "r")
    with lock:
        holder = lock.holder()
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        # flock locks belong to the open file: a second open in this process is refused too.
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
            RunLock(tmp_path / "r").acquire()
        with pytest.raises(RunLockedError):
            train(CFG, root=tmp_path.parent, experiment=tmp_path.name, run="r", progress=False)
    RunLock(tmp_path / "r").acquire().release()  # released: free again


def test_run_status_says_interrupted_when_nobody_holds_the_lock(tmp_path):
    run = Run(tmp_path, "e", "r")
    run.update_meta(status="running")
    with run.lock() as lock:
        assert lock.is_held() and RunLock(run.dir).is_held()
        assert run.status == "running"  # a live writer
    assert not RunLock(run.dir).is_held()
    assert run.status == "interrupted" and run.meta()["status"] == "running"
    run.update_meta(status="finished")
    assert run.status == "finished"


class _Stop(Exception):
    pass


def _crash_at(step):
    def callback(s, model, record):
        if s == step:
            raise _Stop

    return callback


def test_a_run_left_running_says_interrupted_on_the_next_start(tmp_path):
    with pytest.raises(_Stop):
        train(CFG, root=tmp_path, experiment="e", run="r", progress=False, callback=_crash_at(15))
    run = Run(tmp_path, "e", "r")
    assert run.meta()["status"] == "interrupted"  # an exception is seen by the process itself
    run.update_meta(status="running")  # what a kill -9 leaves behind
    seen = []
    res = train(CFG, root=tmp_path, experiment="e", run="r", progress=False,
                sinks=[lambda rec: seen.append(rec["step"])])  # fmt: skip
    assert res.status == "finished" and res.resumed_from == 10
    (lost,) = run.meta()["interruptions"]
    assert lost["detected"]
    assert seen == list(range(10, 30))


def test_temp_names_are_unique_and_strays_are_cleaned(tmp_path):
    names = {temp_path(tmp_path / "records.jsonl") for _ in range(50)}
    assert len(names) == 50
    assert all(f".tmp{os.getpid()}-" in p.name for p in names)
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert stray_temp_files(tmp_path / "x.json") == []

    # A run killed after its first checkpoint, with the leftovers of writes cut short.
    cfg = dataclasses.replace(CFG, steps=30)
    train(
        dataclasses.replace(cfg, steps=20), root=tmp_path, experiment="e", run="r", progress=False
    )
    run = Run(tmp_path, "e", "r")
    torch.save({"junk": 1}, run.dir / "x.pt")
    leftovers = [
        run.dir / ".records.jsonl.tmp123-abcd",
        run.dir / ".meta.json.tmp77",
        run.dir / ".checkpoint.pt.tmp5-ff00",
        run.dir / "checkpoint.tmp",
    ]
    for p in leftovers:
        p.write_text("partial")
    assert set(run.stray_temp_files()) == set(leftovers)
    # A finished run found in place is returned as is, but the strays are gone all the same.
    train(
        dataclasses.replace(cfg, steps=20), root=tmp_path, experiment="e", run="r", progress=False
    )
    assert not any(p.exists() for p in leftovers)


def test_changed_config_is_refused_with_the_differing_fields(tmp_path):
    with pytest.raises(_Stop):
        train(CFG, root=tmp_path, experiment="e", run="r", progress=False, callback=_crash_at(15))
    run = Run(tmp_path, "e", "r")
    assert run.checkpoint_path.exists() and run.meta()["status"] == "interrupted"
    config_before = run.config_path.read_bytes()

    changed = dataclasses.replace(
        CFG, steps=40, weight_decay=1e-3, schedule={"type": "Constant", "base_lr": 0.02}
    )
    with pytest.raises(ConfigMismatchError) as exc:
        train(changed, root=tmp_path, experiment="e", run="r", progress=False)
    msg = str(exc.value)
    for name in ("steps: 30 -> 40", "weight_decay", "schedule", "--allow-config-change"):
        assert name in msg
    assert "device" not in msg  # where it runs is not part of what it computes
    assert run.config_path.read_bytes() == config_before  # nothing was written
    assert run.meta()["status"] == "interrupted"  # the refused start still says what happened
    assert config_diff(run.config(), dataclasses.replace(CFG, device="cuda:7")) == {}
    assert set(config_diff(run.config(), changed)) == {"steps", "weight_decay", "schedule"}

    # Under the explicit flag: continues from the checkpoint, records the change.
    res = train(
        changed, root=tmp_path, experiment="e", run="r", progress=False, allow_config_change=True
    )
    assert res.status == "finished" and res.resumed_from == 10 and res.steps == 40
    meta = run.meta()
    (change,) = meta["config_changes"]
    assert change["at_step"] == 10
    assert change["fields"]["steps"] == [30, 40]
    assert change["fields"]["weight_decay"] == [CFG.weight_decay, 1e-3]
    assert run.config()["steps"] == 40
    recs = run.records()
    assert [r["step"] for r in recs] == list(range(40))
    assert recs[5]["lr"] == 0.05 and recs[15]["lr"] == 0.02  # old schedule before, new after

    # A finished run is never continued under another config, even with the flag.
    with pytest.raises(ConfigMismatchError, match="finished"):
        train(CFG, root=tmp_path, experiment="e", run="r", progress=False, allow_config_change=True)


def test_changed_optimizer_fails_with_a_clear_error_not_a_keyerror(tmp_path):
    cfg = dataclasses.replace(CFG, steps=20)
    with pytest.raises(_Stop):
        train(cfg, root=tmp_path, experiment="e", run="r", progress=False, callback=_crash_at(12))
    adam = dataclasses.replace(cfg, optimizer="adam", model_kwargs={"hidden": [8]})
    with pytest.raises(ConfigMismatchError, match="checkpoint does not fit"):
        train(adam, root=tmp_path, experiment="e", run="r", progress=False,
              allow_config_change=True)  # fmt: skip
