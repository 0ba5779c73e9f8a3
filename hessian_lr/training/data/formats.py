"""File formats: LeCun's IDX (MNIST, Fashion-MNIST), gzipped or not, and CIFAR python pickles.

Readers return numpy arrays; a truncated or corrupt file raises :class:`CorruptDatasetError`
naming the file and what to do (delete it and download again, or replace it).
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from .registry import CorruptDatasetError

__all__ = ["read_idx", "read_cifar_batch"]


def _corrupt(path: Path, what: str) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{path}: {what}. The file is damaged (an interrupted download or copy?): delete it and "
        "fetch it again (load_dataset(name, download=True)), or replace it with a good copy"
    )


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its suffix)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise _corrupt(path, "truncated gzip data (the stream ends early)") from None
        except (OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise _corrupt(path, f"corrupt gzip data ({err})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not.

    Header: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions d, then d big-endian uint32 sizes;
    then the data, big-endian, row-major.

    Args:
        path: the file (``.gz`` or raw; detected from the content, not the name).

    Returns:
        An array of the stored shape, native byte order (uint8 for MNIST-style files).

    Raises:
        ValueError: bad magic, unknown type code, or a body shorter/longer than the header says
            (a ``CorruptDatasetError`` for a truncated or corrupt file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated or with 0 dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[raw[2]]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise _corrupt(
            path,
            f"IDX header says shape {dims} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes after the header",
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings only: a CIFAR batch cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"CIFAR batch refers to {module}.{name}, which a CIFAR batch never holds; refusing"
            )
        if module.startswith("numpy") and module.endswith("multiarray"):
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch (``data_batch_1``, ``test_batch``, CIFAR-100 ``train``...).

    The file is a pickled dict with ``data`` (N×3072 uint8: 1024 red, then green, then blue
    values, each a 32×32 image row-major) and ``labels`` (CIFAR-10) or ``fine_labels``
    (CIFAR-100). Keys may be bytes (the original Python-2 pickles) or str. Only numpy arrays and
    plain containers are unpickled (a restricted unpickler), so a tampered file cannot run code.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,).

    Raises:
        ValueError: the dict lacks the expected keys or the sizes disagree
            (``CorruptDatasetError`` for a truncated or corrupt file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except EOFError:
            raise _corrupt(path, "truncated CIFAR batch (the pickle ends early)") from None
        except pickle.UnpicklingError as err:
            if "refusing" in str(err):
                raise
            raise _corrupt(path, f"truncated or damaged CIFAR batch ({err})") from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise _corrupt(
                path, f"not a readable CIFAR batch ({type(err).__name__}: {err})"
            ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in batch:
        raise ValueError(f"{path}: no 'data' entry (keys: {sorted(batch)})")
    label_key = "fine_labels" if "fine_labels" in batch else "labels"
    if label_key not in batch:
        raise ValueError(f"{path}: no 'labels' or 'fine_labels' entry (keys: {sorted(batch)})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8:  # a cast would wrap or floor silently (0.5 -> 0, 256 -> 0)
        raise ValueError(
            f"{path}: 'data' holds {data.dtype} values; a CIFAR batch stores uint8 pixels "
            "0-255 (float images must be converted back, e.g. (x * 255).round().astype(uint8))"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: '{label_key}' holds {labels.dtype} values, not integer labels")
    labels = labels.astype(np.int64)
    classes = 100 if label_key == "fine_labels" else 10
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"{path}: '{label_key}' holds labels in [{labels.min()}, {labels.max()}]; a "
            f"{'CIFAR-100' if classes == 100 else 'CIFAR-10'} label lies in [0, {classes})"
        )
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: data has shape {data.shape} and {labels.shape[0]} labels; expected "
            f"(N, 3072) with N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels
