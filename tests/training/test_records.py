"""Run folders: records are never torn, truncation for resume, atomic JSON, metadata."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hessian_lr.records import RecordWriter, read_json, read_records, write_json_atomic
from hessian_lr.training.run import Run, find_runs, run_metadata


def test_records_round_trip_and_nonfinite(tmp_path):
    path = tmp_path / "r" / "records.jsonl"
    with RecordWriter(path) as w:
        for i in range(5):
            w.write({"step": i, "loss": 1.0 / (i + 1), "nan": float("nan"), "inf": float("inf")})
    recs = read_records(path)
    assert [r["step"] for r in recs] == list(range(5))
    assert recs[2]["loss"] == pytest.approx(1 / 3)
    assert recs[0]["nan"] is None and recs[0]["inf"] == "inf"  # valid JSON, never NaN tokens
    for line in path.read_text().splitlines():
        json.loads(line)


def test_partial_trailing_line_dropped(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')
    assert [r["step"] for r in read_records(path)] == [0, 1]
    with RecordWriter(path) as w:  # reopening cuts the torn tail before appending
        w.write({"step": 2})
    assert [r["step"] for r in read_records(path)] == [0, 1, 2]
    assert path.read_text().endswith("\n")


def test_truncate_after_for_resume(tmp_path):
    path = tmp_path / "records.jsonl"
    w = RecordWriter(path)
    for i in range(10):
        w.write({"step": i})
    assert w.truncate_after(4) == 5
    w.write({"step": 5})
    w.close()
    assert [r["step"] for r in read_records(path)] == [0, 1, 2, 3, 4, 5]


def test_kill_minus_nine_leaves_only_whole_lines(tmp_path):
    path = tmp_path / "records.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal
        from hessian_lr.records import RecordWriter
        w = RecordWriter({str(path)!r})
        for i in range(200000):
            w.write({{"step": i, "payload": "x" * 200}})
            if i == 3000:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    data = path.read_bytes()
    assert data.endswith(b"\n")
    recs = read_records(path)
    assert [r["step"] for r in recs] == list(range(3001))


def test_atomic_json_and_run(tmp_path):
    run = Run(tmp_path, "exp", "seed0")
    assert not run.exists() and run.status is None
    write_json_atomic(run.config_path, {"lr": 0.1, "steps": (1, 2)})
    run.update_meta(status="running")
    run.update_meta(status="finished", seconds=1.5)
    assert read_json(run.config_path) == {"lr": 0.1, "steps": [1, 2]}
    assert run.meta() == {"status": "finished", "seconds": 1.5}
    assert [r.name for r in find_runs(tmp_path, "exp")] == ["seed0"]
    assert find_runs(tmp_path, "missing") == []
    assert not [p for p in os.listdir(run.dir) if ".tmp" in p]


def test_metadata_has_versions():
    meta = run_metadata(seed=3, device="cpu")
    assert meta["seed"] == 3 and meta["device"] == "cpu"
    for key in ("torch", "numpy", "python", "hessian_lr", "git_commit"):
        assert key in meta
