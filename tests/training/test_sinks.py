"""Record sinks: JSONL, CSV, TensorBoard (read back with tensorboard's own event reader), a
callable, make_sink specs, and train(sinks=...) / ``hessian-lr train --log`` (issue 16)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from hessian_lr.records import (
    CallableSink,
    CSVSink,
    JSONLSink,
    RecordSink,
    TensorBoardSink,
    flatten_record,
    make_sink,
    read_records,
)
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, train

RECORDS = [
    {"step": 0, "lr": 0.1, "train_loss": 2.3},
    {"step": 1, "lr": 0.2, "train_loss": 2.1, "estimates": {"quadratic": {"lr": 0.7, "ok": True}}},
    {"step": 2, "lr": 0.3, "train_loss": float("inf"), "test_accuracy": 0.5, "flags": ["x"]},
]


def _event_scalars(log_dir):
    ea_mod = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard package is not installed (pip install tensorboard)",
    )
    acc = ea_mod.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_flatten_and_every_sink_is_a_record_sink(tmp_path):
    assert flatten_record(RECORDS[1]) == {
        "step": 1,
        "lr": 0.2,
        "train_loss": 2.1,
        "estimates/quadratic/lr": 0.7,
        "estimates/quadratic/ok": True,
    }
    for sink in (JSONLSink(tmp_path / "a.jsonl"), CSVSink(tmp_path / "a.csv"), CallableSink(print)):
        assert isinstance(sink, RecordSink)


def test_jsonl_sink_is_the_run_format(tmp_path):
    sink = make_sink(f"jsonl:{tmp_path / 'r.jsonl'}")
    assert isinstance(sink, JSONLSink)
    for r in RECORDS:
        sink.write(r)
    sink.close()
    back = read_records(tmp_path / "r.jsonl")
    assert back[1] == RECORDS[1] and back[2]["train_loss"] == "inf"


def test_csv_sink_widens_its_header_and_stays_valid(tmp_path):
    path = tmp_path / "log" / "r.csv"
    sink = make_sink(f"csv:{path}")
    assert isinstance(sink, CSVSink)
    sink.write(RECORDS[0])
    assert path.read_text().splitlines() == ["step,lr,train_loss", "0,0.1,2.3"]
    for r in RECORDS[1:]:
        sink.write(r)
    sink.close()
    rows = list(csv.DictReader(open(path, newline="")))
    assert list(rows[0]) == [
        "step", "lr", "train_loss", "estimates/quadratic/lr", "estimates/quadratic/ok",
        "test_accuracy", "flags",
    ]  # fmt: skip
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["estimates/quadratic/lr"] == "" and rows[1]["estimates/quadratic/lr"] == "0.7"
    assert rows[2]["train_loss"] == "inf" and json.loads(rows[2]["flags"]) == ["x"]
    # Reopening appends under the existing header.
    again = CSVSink(path)
    again.write({"step": 3, "lr": 0.4})
    rows = list(csv.DictReader(open(path, newline="")))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"] and rows[3]["lr"] == "0.4"


def test_tensorboard_sink_writes_readable_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    sink = make_sink(f"tensorboard:{tmp_path / 'tb'}")
    assert isinstance(sink, TensorBoardSink)
    for r in RECORDS:
        sink.write(r)
    sink.close()
    scalars = _event_scalars(tmp_path / "tb")
    assert set(scalars) == {
        "lr",
        "train_loss",
        "estimates/quadratic/lr",
        "estimates/quadratic/ok",
        "test_accuracy",
    }  # fmt: skip  (no "step" tag; strings and lists skipped)
    assert scalars["lr"] == [
        (0, pytest.approx(0.1)),
        (1, pytest.approx(0.2)),
        (2, pytest.approx(0.3)),
    ]
    assert scalars["estimates/quadratic/lr"] == [(1, pytest.approx(0.7))]
    assert math.isinf(scalars["train_loss"][2][1])


def test_make_sink_rejects_bad_specs():
    seen = []
    sink = make_sink(seen.append)
    sink.write({"step": 0})
    assert seen == [{"step": 0}] and isinstance(sink, CallableSink)
    for spec in ("tensorboard", "parquet:x.pq", "csv:", ":x"):
        with pytest.raises(ValueError, match="KIND:PATH"):
            make_sink(spec)
    with pytest.raises(TypeError, match="record sink"):
        make_sink(3)


CFG = TrainConfig(
    dataset="digits",
    model="mlp",
    model_kwargs={"hidden": [16]},
    batch_size=32,
    steps=12,
    eval_every=6,
    estimator_methods=("quadratic",),
    estimator_every=4,
    schedule={"type": "Constant", "base_lr": 0.05},
    device="cpu",
)


def test_train_sends_every_record_to_every_sink(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    seen = []
    train(
        CFG,
        root=tmp_path,
        experiment="e",
        run="r",
        progress=False,
        sinks=[seen.append, f"csv:{tmp_path / 'r.csv'}", f"tensorboard:{tmp_path / 'tb'}"],
    )
    truth = Run(tmp_path, "e", "r").records()  # records.jsonl stays the source of truth
    assert [r["step"] for r in seen] == [r["step"] for r in truth] == list(range(12))
    assert json.loads(json.dumps(seen, default=str)) == truth
    rows = list(csv.DictReader(open(tmp_path / "r.csv", newline="")))
    assert [float(r["train_loss"]) for r in rows] == [r["train_loss"] for r in truth]
    scalars = _event_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["test_accuracy"]] == [5, 11]
    assert [s for s, _ in scalars["estimates/quadratic/lr"]] == [3, 7, 11]
    assert scalars["train_loss"][4][1] == pytest.approx(truth[4]["train_loss"], rel=1e-6)


def test_cli_log_flag(tmp_path, capsys):
    from hessian_lr import cli

    argv = ["train", "--model", "mlp", "--steps", "6", "--eval-every", "3", "--device", "cpu",
            "--out", str(tmp_path), "--run", "r", "--no-progress", "--schedule", "0.05",
            "--log", f"csv:{tmp_path / 'a.csv'}",
            "--log", f"jsonl:{tmp_path / 'b.jsonl'}"]  # fmt: skip
    assert cli.main(argv) == 0
    assert len(list(csv.DictReader(open(tmp_path / "a.csv")))) == 6
    assert read_records(tmp_path / "b.jsonl") == Run(tmp_path, "train", "r").records()
    with pytest.raises(SystemExit):
        cli.main([*argv[:-4], "--log", "nonsense"])
    assert "--log" in capsys.readouterr().err
