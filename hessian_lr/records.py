"""Run folders: ``config.json``, ``meta.json`` and ``records.jsonl``, written so nothing is lost.

Layout of one run: ``<root>/<experiment>/<run>/``

* ``config.json`` -- the run's configuration (a dataclass, as JSON), written once.
* ``meta.json`` -- versions, device, seed, git commit, start/end time and ``status``
  (``running`` | ``finished`` | ``diverged`` | ``failed``), rewritten atomically on change.
* ``records.jsonl`` -- one JSON object per logged step. Each line is written with a single
  ``write`` on an append-mode descriptor and flushed, so a ``kill -9`` never leaves a half line
  (and readers drop an incomplete trailing line all the same).
* ``checkpoint.pt`` -- replaced atomically (write to a temporary file, then ``os.replace``).

Plots and summaries read these files only; they never need the live objects (cf. cockpit).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RecordWriter",
    "append_record",
    "read_records",
    "write_json_atomic",
    "read_json",
    "run_metadata",
    "Run",
    "find_runs",
    "to_jsonable",
]


def to_jsonable(obj: Any, *, inf_as_string: bool = True) -> Any:
    """Convert dataclasses, tensors, numpy scalars/arrays, paths and tuples to JSON types.

    NaN becomes ``null``; ±inf becomes ``"inf"``/``"-inf"`` (or ``null`` when
    ``inf_as_string=False``), so the output is strict JSON.
    """

    def conv(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {f.name: conv(getattr(o, f.name)) for f in dataclasses.fields(o)}
        if isinstance(o, Mapping):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, float):
            if math.isfinite(o):
                return o
            return str(o) if inf_as_string and not math.isnan(o) else None
        if hasattr(o, "tolist"):  # torch / numpy scalars and arrays
            return conv(o.tolist())
        return o

    return conv(obj)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _record_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False) + "\n").encode()


def append_record(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record to a JSONL file with a single ``write`` (no open descriptor kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, _record_line(record))
    finally:
        os.close(fd)


class RecordWriter:
    """Append-only JSONL writer: one ``os.write`` per record, so lines are never torn.

    Args:
        path: the ``records.jsonl`` file (created with its folders if missing).
        fsync: also ``fsync`` after each record (survives a machine crash, not only a kill).
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._drop_partial_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _drop_partial_tail(self) -> None:
        """Cut an incomplete last line (left by a crash mid-write on exotic filesystems)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write(self, record: Mapping[str, Any]) -> None:
        os.write(self._fd, _record_line(record))
        if self._fsync:
            os.fsync(self._fd)

    def truncate_after(self, step: int, *, key: str = "step") -> int:
        """Drop records whose ``key`` exceeds ``step`` (resuming from a checkpoint at ``step``).

        Returns the number of records kept.
        """
        kept = [r for r in read_records(self.path) if r.get(key, -math.inf) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(r, sort_keys=True, allow_nan=False) + "\n")
        os.close(self._fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return len(kept)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (an incomplete trailing line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Versions, platform and git commit, plus ``extra`` (device, seed, ...)."""
    import numpy
    import torch

    from ._version import __version__

    meta = {
        "hessian_lr": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    meta.update(extra)
    return meta


class Run:
    """One run folder: config, meta, records and checkpoint paths, with small helpers."""

    def __init__(self, root: str | Path, experiment: str, name: str) -> None:
        self.dir = Path(root) / experiment / name
        self.experiment = experiment
        self.name = name

    config_path = property(lambda self: self.dir / "config.json")
    meta_path = property(lambda self: self.dir / "meta.json")
    records_path = property(lambda self: self.dir / "records.jsonl")
    checkpoint_path = property(lambda self: self.dir / "checkpoint.pt")

    def exists(self) -> bool:
        return self.meta_path.exists()

    def config(self) -> dict[str, Any]:
        return read_json(self.config_path)

    def meta(self) -> dict[str, Any]:
        return read_json(self.meta_path) if self.meta_path.exists() else {}

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.records_path)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = self.meta()
        meta.update(fields)
        write_json_atomic(self.meta_path, meta)
        return meta

    @property
    def status(self) -> str | None:
        return self.meta().get("status")

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r})"


def find_runs(root: str | Path, experiment: str) -> list[Run]:
    """Every run folder (with a meta.json) under ``<root>/<experiment>``, sorted by name."""
    base = Path(root) / experiment
    if not base.is_dir():
        return []
    return [
        Run(root, experiment, d.name) for d in sorted(base.iterdir()) if (d / "meta.json").exists()
    ]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
