"""Records: strict JSON conversion, atomic JSON files, JSONL append, and record sinks.

The base floor of the library (it imports nothing from the rooms). A record is a flat-ish JSON-able
mapping written once per logged step; ``records.jsonl`` is the source of truth of a run:

* each line is written with a single ``write`` on an append-mode descriptor, so a ``kill -9``
  never leaves a half line (and readers drop an incomplete trailing line all the same);
* JSON files (``config.json``, ``meta.json``) are replaced atomically through a temporary file
  with a unique name (pid + random suffix), so two processes never share a temporary file.

Records can also go to any number of *sinks* (:class:`RecordSink`: ``write(record)`` and
``close()``): :class:`JSONLSink`, :class:`CSVSink`, :class:`TensorBoardSink` and
:class:`CallableSink`, built from a spec string by :func:`make_sink`.

Run folders (``Run``, ``run_metadata``, ``find_runs``, ``now``) are built on this module in
:mod:`hessian_lr.training.run`; nothing here imports them back.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "RecordWriter",
    "append_record",
    "read_records",
    "write_json_atomic",
    "read_json",
    "to_jsonable",
    "temp_path",
    "flatten_record",
    "RecordSink",
    "JSONLSink",
    "CSVSink",
    "TensorBoardSink",
    "CallableSink",
    "make_sink",
]


def to_jsonable(obj: Any, *, inf_as_string: bool = True) -> Any:
    """Convert dataclasses, tensors, numpy scalars/arrays, paths and tuples to JSON types.

    NaN becomes ``null``; ±inf becomes ``"inf"``/``"-inf"`` (or ``null`` when
    ``inf_as_string=False``), so the output is strict JSON.

    Example:
        >>> to_jsonable({"a": (1, float("inf")), "b": float("nan")})
        {'a': [1, 'inf'], 'b': None}
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


def temp_path(path: str | Path) -> Path:
    """A unique temporary name next to ``path``: ``.<name>.tmp<pid>-<random>``.

    Unique per process and per call, so two writers (or two threads) never write the same
    temporary file; :func:`stray_temp_files` finds what a killed process left behind.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")


def stray_temp_files(path: str | Path) -> list[Path]:
    """Temporary files of ``path`` left by killed writers (see :func:`temp_path`)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.tmp*"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a unique temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as f:
            json.dump(to_jsonable(obj), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    """Load one JSON file."""
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
        """Append one record (one ``os.write``)."""
        os.write(self._fd, _record_line(record))
        if self._fsync:
            os.fsync(self._fd)

    def truncate_after(self, step: int, *, key: str = "step") -> int:
        """Drop records whose ``key`` exceeds ``step`` (resuming from a checkpoint at ``step``).

        Returns:
            The number of records kept.
        """
        kept = [r for r in read_records(self.path) if r.get(key, -math.inf) <= step]
        tmp = temp_path(self.path)
        try:
            with open(tmp, "w") as f:
                for r in kept:
                    f.write(json.dumps(r, sort_keys=True, allow_nan=False) + "\n")
            os.close(self._fd)
            self._fd = -1
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return len(kept)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
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
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {number}: not a JSON record ({err.msg} at column {err.colno}):"
                    f" {line[:80]!r}. The file is damaged (edited by hand, or two writers); "
                    "remove or repair that line, or start a new run folder"
                ) from err
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}, line {number}: a record must be a JSON object, got "
                    f"{type(record).__name__}: {line[:80]!r}"
                )
            out.append(record)
    return out


# ------------------------------------------------------------------------------------- sinks
@runtime_checkable
class RecordSink(Protocol):
    """Where records go: anything with ``write(record)`` and ``close()``.

    ``write`` receives each step's record (a mapping; nested dicts allowed, floats may be
    non-finite) in step order; ``close`` is called once at the end of the run, also when the run
    fails. On resume, the steps between the last checkpoint and the crash are written again.
    """

    def write(self, record: Mapping[str, Any]) -> None:
        """Take one record."""
        ...

    def close(self) -> None:
        """Flush and release files."""
        ...


def flatten_record(record: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """Flatten nested mappings into one level, joining keys with ``sep``.

    Example:
        >>> flatten_record({"step": 3, "estimates": {"quadratic": {"lr": 0.5}}})
        {'step': 3, 'estimates/quadratic/lr': 0.5}
    """
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", record)
    return out


def _scalar(value: Any) -> float | None:
    """A float for numbers (and ``"inf"``/``"-inf"`` strings), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return float(value.item())
    return None


class JSONLSink:
    """Records as JSON lines (the run's own format: :class:`RecordWriter`)."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._writer = RecordWriter(self.path, fsync=fsync)

    def write(self, record: Mapping[str, Any]) -> None:  # noqa: D102
        self._writer.write(record)

    def close(self) -> None:  # noqa: D102
        self._writer.close()

    def __repr__(self) -> str:
        return f"JSONLSink({str(self.path)!r})"


class CSVSink:
    """Records as CSV rows: nested keys flattened with ``"/"``, one column per key.

    The header is the union of the keys seen so far, in order of first appearance. When a record
    brings a new key (the first evaluation, the first estimate), the file is rewritten once with
    the wider header (atomically), so the file is always a valid CSV; missing values are empty.
    An existing file is appended to (its header is read back).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] = []
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), [])

    def write(self, record: Mapping[str, Any]) -> None:  # noqa: D102
        flat = {k: _csv_value(v) for k, v in flatten_record(record).items()}
        new = [k for k in flat if k not in self.fields]
        if new or not self.path.exists():
            self._rewrite(self.fields + new)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(flat)

    def _rewrite(self, fields: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        tmp = temp_path(self.path)
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self.fields = fields

    def close(self) -> None:  # noqa: D102
        return None

    def __repr__(self) -> str:
        return f"CSVSink({str(self.path)!r})"


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return json.dumps(to_jsonable(value))
    if value is None:
        return ""
    return to_jsonable(value)


class TensorBoardSink:
    """Records as TensorBoard scalars (``torch.utils.tensorboard.SummaryWriter``).

    Every numeric value becomes a scalar tagged with its key (nested dicts flattened with ``"/"``,
    e.g. ``estimates/quadratic/lr``); strings, lists and None are skipped. The global step is the
    record's ``step_key`` entry (``"step"``), else a running count. ``torch.utils.tensorboard``
    (which needs the ``tensorboard`` package) is imported when the sink is created.

    Args:
        log_dir: the event-file folder (what ``tensorboard --logdir`` reads).
        step_key: the record key holding the step.
        skip: keys not logged (the step itself by default).
    """

    def __init__(
        self, log_dir: str | Path, *, step_key: str = "step", skip: tuple[str, ...] = ("step",)
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "TensorBoardSink needs the tensorboard package: pip install tensorboard"
            ) from err
        self.log_dir = Path(log_dir)
        self.step_key = step_key
        self.skip = tuple(skip)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        self._count = 0

    def write(self, record: Mapping[str, Any]) -> None:  # noqa: D102
        step = record.get(self.step_key, self._count)
        step = int(step) if isinstance(step, (int, float)) else self._count
        self._count += 1
        for key, value in flatten_record(record).items():
            if key in self.skip:
                continue
            scalar = _scalar(value)
            if scalar is not None:
                self._writer.add_scalar(key, scalar, global_step=step)

    def close(self) -> None:  # noqa: D102
        self._writer.flush()
        self._writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardSink({str(self.log_dir)!r})"


class CallableSink:
    """Call ``fn(record)`` for each record (e.g. ``wandb.log`` or a list's ``append``)."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"CallableSink needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def write(self, record: Mapping[str, Any]) -> None:  # noqa: D102
        self.fn(record)

    def close(self) -> None:  # noqa: D102
        return None

    def __repr__(self) -> str:
        return f"CallableSink({self.fn!r})"


_SINK_KINDS: dict[str, Callable[[str], RecordSink]] = {
    "jsonl": JSONLSink,
    "csv": CSVSink,
    "tensorboard": TensorBoardSink,
    "tb": TensorBoardSink,
}


def make_sink(spec: str | RecordSink | Callable[[Mapping[str, Any]], Any]) -> RecordSink:
    """Build a sink from ``"jsonl:PATH"``, ``"csv:PATH"``, ``"tensorboard:DIR"`` or a callable.

    Args:
        spec: a ``KIND:PATH`` string (kinds: jsonl, csv, tensorboard or tb), an object that
            already has ``write`` and ``close`` (returned as is), or a callable (wrapped in
            :class:`CallableSink`).

    Raises:
        ValueError: an unknown kind or an empty path. TypeError: anything else.

    Example:
        >>> make_sink(print)  # doctest: +ELLIPSIS
        CallableSink(<built-in function print>)
    """
    if isinstance(spec, RecordSink):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        kind, sep, target = str(spec).partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in _SINK_KINDS or not target.strip():
            raise ValueError(
                f"record sink {str(spec)!r} is not KIND:PATH with KIND one of jsonl, csv, "
                "tensorboard (e.g. 'tensorboard:runs/tb' or 'csv:log.csv')"
            )
        return _SINK_KINDS[kind](target.strip())
    if callable(spec):
        return CallableSink(spec)
    raise TypeError(
        f"a record sink is a 'KIND:PATH' string, an object with write/close or a callable, "
        f"got {type(spec).__name__}"
    )
