"""Issue 22, bad inputs: each ends in a clear error naming the problem (or is accepted)."""

from __future__ import annotations

import json
import os

import pytest

from hessian_lr import cli
from hessian_lr.records import read_records
from hessian_lr.training.run import Run, RunLock, RunLockedError


# ----------------------------------------------------------------------- damaged records.jsonl
def test_damaged_records_file_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo\n')
    with pytest.raises(ValueError) as exc:
        read_records(path)
    msg = str(exc.value)
    assert str(path) in msg and "line 3" in msg and "damaged" in msg
    path.write_text('{"step": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: a record must be a JSON object"):
        read_records(path)
    path.write_text('{"step": 0}\n{"step": 1}')  # an incomplete last line is still ignored
    assert read_records(path) == [{"step": 0}]


# --------------------------------------------------------------------------- CLI: --threads, --run
def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-2"])
def test_threads_zero_or_negative_is_refused(value, capsys, tmp_path):
    err = _cli_error(["train", "--threads", value, "--out", str(tmp_path)], capsys)
    assert "--threads" in err and "at least 1" in err


@pytest.mark.parametrize("run", ["../x", "a/b", "..", "/tmp/abs"])
def test_run_name_escaping_the_experiment_folder_is_refused(run, capsys, tmp_path):
    out = tmp_path / "results"
    err = _cli_error(["train", "--out", str(out), "--experiment", "e", "--run", run], capsys)
    assert "not a plain folder name" in err
    assert not (tmp_path / "x").exists() and not (out / "x").exists()
    with pytest.raises(ValueError, match="not a plain folder name"):
        Run(out, "e", run)


def test_experiment_escaping_the_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no '..'"):
        Run(tmp_path, "../elsewhere", "r")
    Run(tmp_path, "sweeps/lr", "r")  # nested plain folders are fine


# -------------------------------------------------------------------------------------- .lock
def test_deleting_the_lock_file_does_not_let_a_second_writer_in(tmp_path):
    run_dir = tmp_path / "e" / "r"
    with RunLock(run_dir):
        (run_dir / ".lock").unlink()  # what a user might do to "unlock" the folder
        with pytest.raises(RunLockedError) as exc:
            RunLock(run_dir).acquire()
        msg = str(exc.value)
        assert "records.jsonl" in msg and "deleting .lock does not unlock" in msg
        assert RunLock(run_dir).is_held()
    RunLock(run_dir).acquire().release()  # released with its holder


def test_a_lock_file_left_by_a_dead_writer_is_not_a_lock(tmp_path):
    run_dir = tmp_path / "e" / "r"
    run_dir.mkdir(parents=True)
    import socket

    dead = 2**22 + 12345  # beyond pid_max on Linux by default: no such process
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
    info = {"pid": dead, "host": socket.gethostname(), "started": "yesterday"}
    (run_dir / ".lock").write_text(json.dumps(info))
    assert not RunLock(run_dir).is_held()
    with RunLock(run_dir) as lock:  # no manual deletion needed
        assert lock.holder()["pid"] == os.getpid()


# ------------------------------------------------------------------------- datasets on disk
def _cifar_file(path, data, labels, key=b"labels"):
    import pickle

    path.write_bytes(pickle.dumps({b"data": data, key: labels}, protocol=2))


def test_float_cifar_arrays_are_refused(tmp_path):
    import numpy as np

    from hessian_lr.training.data.formats import read_cifar_batch

    rng = np.random.default_rng(0)
    _cifar_file(tmp_path / "b", rng.random((2, 3072)), [1, 2])  # floats in [0, 1)
    with pytest.raises(ValueError, match="float64 values; a CIFAR batch stores uint8"):
        read_cifar_batch(tmp_path / "b")
    _cifar_file(tmp_path / "b", rng.integers(0, 256, (2, 3072)).astype(np.uint8), [1.0, 2.0])
    with pytest.raises(ValueError, match="not integer labels"):
        read_cifar_batch(tmp_path / "b")


@pytest.mark.parametrize(("key", "labels"), [(b"labels", [3, 10]), (b"labels", [-1, 0]),
                                             (b"fine_labels", [5, 100])])  # fmt: skip
def test_out_of_range_cifar_labels_are_refused(tmp_path, key, labels):
    import numpy as np

    from hessian_lr.training.data.formats import read_cifar_batch

    data = np.zeros((2, 3072), dtype=np.uint8)
    _cifar_file(tmp_path / "b", data, labels, key=key)
    with pytest.raises(ValueError, match=r"label lies in \[0, "):
        read_cifar_batch(tmp_path / "b")


def test_out_of_range_mnist_labels_are_refused(tmp_path):
    import gzip
    import struct

    import numpy as np

    from hessian_lr.training.data import load_dataset

    def idx(array):  # the IDX format: magic (0, 0, dtype 0x08, ndim), sizes, data
        head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        return head + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = (np.arange(20) % 10).astype(np.uint8)
    labels[7] = 12
    for split, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(images)))
        lab = labels[:n]
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(lab)))
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 10\).*12"):
        load_dataset("mnist", root=tmp_path, normalize=False)


# --------------------------------------------------------------------------------- empty batch
@pytest.mark.parametrize("method", ["quadratic", "sharpness"])
def test_empty_batch_is_named_not_reported_as_nan_loss(method):
    import torch
    from torch import nn

    from hessian_lr.lr import LREstimator, estimate_lr

    model = nn.Linear(3, 2)
    empty = (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="the batch is empty") as exc:
        estimate_lr(model, nn.CrossEntropyLoss(), empty, method=method)
    assert "learning rate" not in str(exc.value)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=(method,), every=1, loss_fn=nn.CrossEntropyLoss(),
                      optimizer=opt)  # fmt: skip
    with pytest.raises(ValueError, match="the batch is empty"):
        est.step(empty)


@pytest.mark.parametrize(
    "backend", ["double-backward", "forward-over-reverse", "finite-difference"]
)
def test_empty_batch_is_named_by_the_operator_itself(backend):
    import torch
    from torch import nn

    from hessian_lr import HessianOperator

    model = nn.Linear(3, 2)
    empty = (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="the batch is empty") as exc:
        HessianOperator(model, nn.CrossEntropyLoss(), empty, backend=backend)
    assert "learning rate" not in str(exc.value)
    # a non-empty batch of the same model still builds and multiplies
    op = HessianOperator(
        model, nn.CrossEntropyLoss(), (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    )
    assert torch.isfinite(op @ torch.ones(op.shape[0])).all()


# ------------------------------------------------------------------------- config on resume
def test_schedule_without_its_default_fields_is_not_a_config_change():
    from hessian_lr.records import to_jsonable
    from hessian_lr.training.train_config import TrainConfig, config_diff

    cfg = TrainConfig(schedule={"type": "OneCycle", "max_lr": 0.1}, steps=50)
    saved = to_jsonable(cfg)
    saved["schedule"] = {"type": "OneCycle", "max_lr": 0.1, "total_steps": 50}  # defaults left out
    assert config_diff(saved, cfg) == {}
    saved["schedule"] = {"type": "OneCycle", "max_lr": 0.1}  # lengths from steps, too
    assert config_diff(saved, cfg) == {}
    saved["schedule"] = {"type": "OneCycle", "max_lr": 0.2, "total_steps": 50}  # a real change
    assert set(config_diff(saved, cfg)) == {"schedule"}
