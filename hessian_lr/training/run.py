"""Run folders: ``config.json``, ``meta.json``, ``records.jsonl``, a checkpoint, and one writer.

Layout of one run: ``<root>/<experiment>/<run>/``

* ``config.json`` -- the run's configuration (a dataclass, as JSON); a resumed run is checked
  against it (see :func:`hessian_lr.training.runner.train`).
* ``meta.json`` -- versions, device, seed, git commit, start/end time and ``status``
  (``running`` | ``finished`` | ``diverged`` | ``interrupted``), rewritten atomically on change.
* ``records.jsonl`` -- one JSON object per logged step, the source of truth of the run
  (:class:`hessian_lr.records.RecordWriter`: one ``write`` per line, never torn).
* ``checkpoint.pt`` -- replaced atomically (a uniquely named temporary file, then ``os.replace``).
* ``.lock`` -- held by the one process writing the folder (:class:`RunLock`).

Plots and summaries read these files only; they never need the live objects (cf. cockpit).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..records import read_json, read_records, stray_temp_files, write_json_atomic

try:  # POSIX advisory locks; released by the kernel when the process dies (even on kill -9)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Run", "RunLock", "RunLockedError", "run_metadata", "find_runs", "now"]


def now() -> str:
    """The local time as ``YYYY-mm-ddTHH:MM:SS+zzzz``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
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

    from .._version import __version__

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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLockedError(RuntimeError):
    """Another process is writing this run folder (the message names it: pid, host, start)."""


class RunLock:
    """An exclusive, OS-level lock on a run folder: one writer at a time.

    ``fcntl.flock`` on the run folder itself: the kernel releases it when the holder exits,
    however it exits (``kill -9`` included), so a crashed run never stays locked and no lock is
    ever stale. The holder writes its pid, host and start time into ``<dir>/.lock``, and a
    second writer gets a :class:`RunLockedError` naming them and saying what the lock protects.
    Deleting ``.lock`` by hand changes nothing (the lock is not on that file). The lock is
    advisory (it binds hessian_lr's writers) and needs a filesystem with working ``flock``
    (local disks do; some network filesystems do not). Without ``fcntl`` (Windows) it does
    nothing.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / ".lock"
        self._fd = -1

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd >= 0

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its (last) holder: pid, host, started; {} if unknown."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, *, wait: float = 1.0) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` after ``wait`` seconds of retries.

        The short wait only rides out :meth:`is_held` probes of readers; a writer is refused.
        """
        if self.held:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        # the lock is on the folder itself, so deleting .lock (which only names the holder)
        # cannot let a second writer in
        fd = os.open(self.dir, os.O_RDONLY)
        if fcntl is not None:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                os.close(fd)
                raise RunLockedError(self._refusal()) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now()}
        tmp = self.path.with_name(f".lock.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.path)
        self._fd = fd
        return self

    def _refusal(self) -> str:
        """Why a writer is refused: who holds the lock, what it protects, what to do."""
        h = self.holder()
        pid, host = h.get("pid", "?"), h.get("host", "?")
        who = f"pid {pid} on host {host}, started {h.get('started', '?')}"
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            who = (
                f"the writer pid {pid} has exited, but a process it forked (e.g. a DataLoader "
                "worker) still holds the lock; it is released when that process exits "
                f"(`fuser -v {self.dir}` names it)"
            )
        return (
            f"run folder {self.dir} is being written by another process ({who}). The lock "
            "keeps a second writer from interleaving records.jsonl, checkpoints and status in "
            "this folder; the operating system releases it when the writer exits, however it "
            "exits, so there is never a stale lock to delete (deleting .lock does not unlock "
            "the folder). Wait for it to finish, stop it, or choose another run name"
        )

    def is_held(self) -> bool:
        """Whether some process (this one included) holds the lock now.

        Probed with a non-blocking shared lock, released at once (writers retry briefly, so the
        probe never makes one fail).
        """
        if self.held:
            return True
        if fcntl is None or not self.dir.is_dir():
            return False
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give the lock back (idempotent). The file stays: deleting it would race."""
        if self._fd >= 0:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def check_folder_names(experiment: str, name: str) -> None:
    """Refuse run and experiment names that would write outside ``<root>/<experiment>/``.

    A run name is one folder name (no separator, not ``.``/``..``); an experiment may be a
    relative path of plain folder names (``sweeps/lr``), never absolute and never ``..``.
    """
    for what, value in (("experiment", experiment), ("run", name)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the {what} name must be a non-empty string, got {value!r}")
    parts = Path(name).parts
    if len(parts) != 1 or parts[0] in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"run name {name!r} is not a plain folder name: a run is written inside its "
            "experiment folder, and a name with a path separator or '..' would write elsewhere"
        )
    ex = Path(experiment)
    if ex.is_absolute() or any(p in ("..", ".") for p in ex.parts):
        raise ValueError(
            f"experiment {experiment!r} must be a relative path of folder names inside the "
            "results root (no '..', not absolute)"
        )


class Run:
    """One run folder: config, meta, records and checkpoint paths, with small helpers."""

    def __init__(self, root: str | Path, experiment: str, name: str) -> None:
        check_folder_names(experiment, name)
        self.dir = Path(root) / experiment / name
        self.experiment = experiment
        self.name = name

    config_path = property(lambda self: self.dir / "config.json")
    meta_path = property(lambda self: self.dir / "meta.json")
    records_path = property(lambda self: self.dir / "records.jsonl")
    checkpoint_path = property(lambda self: self.dir / "checkpoint.pt")

    def exists(self) -> bool:
        """Whether the folder has a ``meta.json``."""
        return self.meta_path.exists()

    def config(self) -> dict[str, Any]:
        """``config.json`` as a dict."""
        return read_json(self.config_path)

    def meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict ({} before the run started)."""
        return read_json(self.meta_path) if self.meta_path.exists() else {}

    def records(self) -> list[dict[str, Any]]:
        """Every complete record of ``records.jsonl``."""
        return read_records(self.records_path)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``meta.json`` (atomically) and return the new meta."""
        meta = self.meta()
        meta.update(fields)
        write_json_atomic(self.meta_path, meta)
        return meta

    def lock(self) -> RunLock:
        """The folder's writer lock (not yet acquired): ``with run.lock(): ...``."""
        return RunLock(self.dir)

    def stray_temp_files(self) -> list[Path]:
        """Temporary files that killed writers left (only safe to delete under the lock)."""
        out: list[Path] = []
        for path in (self.config_path, self.meta_path, self.records_path, self.checkpoint_path):
            out += stray_temp_files(path)
        out += sorted(self.dir.glob("checkpoint.tmp*"))  # the pre-0.3 checkpoint temp name
        return out

    @property
    def status(self) -> str | None:
        """``meta.json``'s status, except ``interrupted`` for a ``running`` run nobody writes.

        A killed writer cannot update ``meta.json``; its lock dies with it, so a run that says
        ``running`` while its lock is free was interrupted (the next ``train`` call also writes
        that into ``meta.json``).
        """
        status = self.meta().get("status")
        if status == "running" and not self.lock().is_held():
            return "interrupted"
        return status

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
