"""Datasets for the experiments: digits (embedded), MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

The studies follow Smith & Topin, *Super-Convergence* (2017/2019: CIFAR-10 with ResNet-56, the
limited-data Table 1, MNIST with LeNet) and Smith, *Cyclical Learning Rates* (WACV 2017). The
CIFAR augmentation is that of He et al., *Deep Residual Learning* (CVPR 2016, §4.2): pad 4
pixels on each side, take a random 32×32 crop, flip horizontally with probability 1/2.

Everything lives in memory as tensors: ``load_dataset`` returns a ``Dataset`` holding ``x``
(float32, N×C×H×W, per-channel normalized with train-split statistics) and ``y`` (int64, N).
``make_loader`` wraps it in a ``torch.utils.data.DataLoader`` whose batch order is a pure
function of ``(seed, epoch)``, so a resumed run replays exactly the same batches.

Where files are looked for, in this order (the first folder holding every file wins):

1. ``root`` (the argument), 2. ``$HESSIAN_LR_DATA``, 3. ``~/.cache/hessian_lr``,
4. ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` package installs there).

Inside each of these, the dataset's own folder (``mnist/``, ``fashion-mnist/``,
``cifar-10-batches-py/``, ``cifar-100-python/``) and torchvision's layout (``MNIST/raw/``,
``FashionMNIST/raw/``) are tried, and ``root`` may also be the folder holding the files.
``download=True`` fetches missing files into ``root`` (or ``$HESSIAN_LR_DATA``, or
``~/.cache/hessian_lr``) and checks their SHA-256; nothing is downloaded unless asked.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import math
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "Dataset",
    "DatasetNotFoundError",
    "ChecksumError",
    "load_dataset",
    "dataset_info",
    "search_dirs",
    "read_idx",
    "read_cifar_batch",
    "stratified_indices",
    "augment_batch",
    "synthetic_like",
    "ResumableBatchSampler",
    "make_loader",
]

#: Where Debian's ``dataset-*`` packages put their files (``/usr/share/datasets/<name>``).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: Environment variable naming a data folder searched before the cache.
DATA_ENV = "HESSIAN_LR_DATA"
#: The digits train/test split is fixed (80/20, stratified, this seed), independent of ``seed``.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not in any searched folder (or could not be downloaded).

    The message says which files to put in which folder, and how to download them.
    """


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 differs from the published one (the file is deleted)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset: shape, classes, files and where to fetch them.

    Attributes:
        name: canonical name (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ...).
        shape: one example's shape (C, H, W).
        num_classes: number of labels.
        train_size, test_size: examples per split.
        subdirs: folders tried under each search base; the first is where downloads go.
        files: files that must all be present in one folder (IDX files may lack ``.gz``).
        mirrors: base URLs tried in order by ``download=True``.
        archive: for CIFAR, the tarball holding ``subdirs[0]`` (downloaded, then extracted).
        sha256: published SHA-256 of every downloadable file (the ``.gz`` files, the tarballs).
        md5: published MD5 (torchvision's table), kept for reference; SHA-256 is what is checked.
        homepage: where the dataset is described.
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    subdirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    archive: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)
    homepage: str = ""


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# SHA-256 values: the ones TensorFlow Datasets, Keras and the Fashion-MNIST README publish for the
# canonical files (cross-checked in several public repositories); MD5 values: torchvision's table.
_DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        shape=(1, 8, 8),
        num_classes=10,
        train_size=1438,
        test_size=359,
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        shape=(1, 28, 28),
        num_classes=10,
        train_size=60000,
        test_size=10000,
        subdirs=("mnist", "MNIST/raw", "."),
        files=_IDX_FILES,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        shape=(1, 28, 28),
        num_classes=10,
        train_size=60000,
        test_size=10000,
        subdirs=("fashion-mnist", "FashionMNIST/raw", "."),
        files=_IDX_FILES,
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        shape=(3, 32, 32),
        num_classes=10,
        train_size=50000,
        test_size=10000,
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "."),
        files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        archive="cifar-10-python.tar.gz",
        sha256={
            "cifar-10-python.tar.gz": (
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
            )
        },
        md5={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        shape=(3, 32, 32),
        num_classes=100,
        train_size=50000,
        test_size=10000,
        subdirs=("cifar-100-python", "cifar100/cifar-100-python", "."),
        files=("train", "test"),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        archive="cifar-100-python.tar.gz",
        sha256={
            "cifar-100-python.tar.gz": (
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
            )
        },
        md5={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(_DATASETS)
_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """The static description (shape, classes, files, URLs, checksums) of dataset ``name``."""
    return _DATASETS[_canonical(name)]


# --------------------------------------------------------------------------------------------
# The in-memory dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set held in memory; a map-style dataset for ``DataLoader``.

    ``ds[i]`` gives ``(x[i], y[i])``; ``ds[index_tensor]`` gives a whole batch at once (what
    ``make_loader`` uses). ``x, y = ds.tensors`` for full-batch work (a Hessian on a fixed batch).

    Attributes:
        name: dataset name (``"digits"``, ``"synthetic-cifar10"``, ...).
        split: ``"train"`` or ``"test"``.
        x: float32 images, shape (N, C, H, W); normalized per channel when ``normalized``.
        y: int64 labels, shape (N,), in ``[0, num_classes)``.
        num_classes: number of classes (of the full dataset, even if a subset misses one).
        mean, std: per-channel statistics of the full *train* split in [0, 1] pixel units,
            used as ``x = (pixels - mean) / std`` (both splits use the train statistics).
        normalized: whether ``mean``/``std`` were applied.
        indices: for a subset, the positions of its examples in the full split (sorted), else None.
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalized: bool = True
    indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"y must have shape ({self.x.shape[0]},) to match x, got {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.input_shape}, num_classes={self.num_classes})"
        )

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: images (N, C, H, W) float32 and labels (N,) int64."""
        return self.x, self.y

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One example's shape (C, H, W)."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def input_size(self) -> int:
        """Image height (all our datasets are square)."""
        return int(self.x.shape[2])

    def class_counts(self) -> torch.Tensor:
        """Examples per class, shape (num_classes,) int64."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def subset(self, size: float | int, *, seed: int = 0) -> Dataset:
        """A stratified, deterministic subset (see ``stratified_indices``).

        Args:
            size: a fraction in (0, 1] (``0.25`` keeps 25 %) or a count (int >= 1).
            seed: selects which examples of each class are kept.
        """
        idx = stratified_indices(self.y, size, seed=seed)
        base = self.indices[idx] if self.indices is not None else idx
        return replace(self, x=self.x[idx], y=self.y[idx], indices=base)

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with ``x`` and ``y`` on ``device`` (e.g. to skip host-device copies)."""
        return replace(self, x=self.x.to(device), y=self.y.to(device))


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------

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
        raw = gzip.decompress(raw)
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
        ValueError: bad magic, unknown type code, or a body shorter/longer than the header says.
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
        raise ValueError(
            f"{path}: IDX header says shape {dims} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes after the header"
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
        ValueError: the dict lacks the expected keys or the sizes disagree.
    """
    path = Path(path)
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in batch:
        raise ValueError(f"{path}: no 'data' entry (keys: {sorted(batch)})")
    label_key = "fine_labels" if "fine_labels" in batch else "labels"
    if label_key not in batch:
        raise ValueError(f"{path}: no 'labels' or 'fine_labels' entry (keys: {sorted(batch)})")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: data has shape {data.shape} and {labels.shape[0]} labels; expected "
            f"(N, 3072) with N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------------------------
# Finding and downloading files
# --------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "hessian_lr"


def _bases(root: str | os.PathLike | None) -> list[Path]:
    bases = []
    if root is not None:
        bases.append(Path(root).expanduser())
    if os.environ.get(DATA_ENV):
        bases.append(Path(os.environ[DATA_ENV]).expanduser())
    bases.append(_cache_dir())
    bases.append(SYSTEM_DATA_DIR)
    return bases


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (the first complete one is used).

    Under ``root``, ``$HESSIAN_LR_DATA`` and the cache: the dataset's folder (``mnist/``,
    ``cifar-10-batches-py/``, ...) and torchvision's (``MNIST/raw/``); ``root`` itself is also
    tried (so ``root`` may be the folder holding the files). ``SYSTEM_DATA_DIR``
    (``/usr/share/datasets``) is searched as ``/usr/share/datasets/<name>``. A shared folder
    is never used bare, because MNIST and Fashion-MNIST files have the same names.
    """
    info = dataset_info(name)
    out: list[Path] = []
    for i, base in enumerate(_bases(root)):
        if base == SYSTEM_DATA_DIR:
            subdirs: tuple[str, ...] = (info.name,)
        else:
            explicit_root = root is not None and i == 0
            subdirs = tuple(s for s in info.subdirs if s != "." or explicit_root)
        for sub in subdirs:
            path = (base / sub) if sub != "." else base
            if path not in out:
                out.append(path)
    return out


def _find_file(directory: Path, filename: str) -> Path | None:
    """``directory/filename``, or for IDX files the uncompressed twin without ``.gz``."""
    for candidate in (filename, filename.removesuffix(".gz")):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _complete(directory: Path, info: DatasetInfo) -> bool:
    return all(_find_file(directory, f) is not None for f in info.files)


def _download_target(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return _cache_dir()


def _missing_message(info: DatasetInfo, root, searched: Sequence[Path], reason: str = "") -> str:
    target = _download_target(root) / info.subdirs[0]
    env = os.environ.get(DATA_ENV)
    places = []
    if root is not None:
        places.append(f"    {Path(root).expanduser() / info.subdirs[0]}   (root=...)")
    places.append(
        f"    {Path(env) / info.subdirs[0] if env else '$' + DATA_ENV + '/' + info.subdirs[0]}"
        f"   ({'$' + DATA_ENV if env else 'after setting $' + DATA_ENV})"
    )
    places.append(f"    {_cache_dir() / info.subdirs[0]}   (the cache)")
    if info.name == "fashion-mnist":
        places.append(f"    {SYSTEM_DATA_DIR / info.name}   (apt install dataset-fashion-mnist)")
    if info.archive is None:
        what = f"the files {', '.join(info.files)} (gzipped or not) into one of these folders:"
        url = info.mirrors[0]
    else:
        what = (
            f"the folder {info.subdirs[0]}/ (with {', '.join(info.files)}), extracted from "
            f"{info.archive} (`tar xzf {info.archive} -C DIR`), so that one of these exists:"
        )
        url = info.mirrors[0] + info.archive
    lines = [
        f"Dataset {info.name!r} not found." + (f" {reason}" if reason else ""),
        f"Put {what}",
        *places,
        f"or download it (SHA-256 checked) from {url} into {target}:",
        f"    load_dataset({info.name!r}, download=True)",
        "Searched: " + ", ".join(str(p) for p in searched),
    ]
    return "\n".join(lines)


def _fetch(url: str, dest: Path, sha256: str) -> None:
    """Stream ``url`` to ``dest`` (atomically, via ``dest.part``), checking its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: SHA-256 is {digest.hexdigest()}, expected {sha256}; the file was deleted. "
            f"Retry, or fetch it by hand and put it in {dest.parent}"
        )
    os.replace(part, dest)


def _fetch_any(info: DatasetInfo, filename: str, dest: Path, root, searched) -> None:
    errors = []
    for mirror in info.mirrors:
        try:
            _fetch(mirror + filename, dest, info.sha256[filename])
            return
        except (urllib.error.URLError, OSError) as exc:  # HTTPError and timeouts included
            errors.append(f"{mirror + filename}: {exc}")
    raise DatasetNotFoundError(
        _missing_message(
            info, root, searched, reason="Download failed (offline?): " + "; ".join(errors)
        )
    )


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            target = (into / member.name).resolve()
            if not (member.isfile() or member.isdir()) or into.resolve() not in (
                target,
                *target.parents,
            ):
                raise ValueError(f"{archive}: refusing to extract unsafe member {member.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: the safe filter
            tar.extractall(into, filter="data")
        else:  # members checked above: plain files and folders inside `into`
            tar.extractall(into)


def _download(info: DatasetInfo, root, searched: Sequence[Path]) -> Path:
    base = _download_target(root)
    folder = base / info.subdirs[0]
    if info.archive is None:
        for filename in info.files:
            if _find_file(folder, filename) is None:
                _fetch_any(info, filename, folder / filename, root, searched)
        return folder
    archive = base / info.archive
    if not archive.is_file() or _sha256(archive) != info.sha256[info.archive]:
        _fetch_any(info, info.archive, archive, root, searched)
    _extract(archive, base)
    archive.unlink()
    if not _complete(folder, info):
        raise DatasetNotFoundError(
            _missing_message(info, root, searched, reason=f"{info.archive} lacked files")
        )
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _locate(info: DatasetInfo, root, download: bool) -> Path:
    searched = search_dirs(info.name, root)
    for directory in searched:
        if _complete(directory, info):
            return directory
    if download:
        return _download(info, root, searched)
    raise DatasetNotFoundError(_missing_message(info, root, searched))


# --------------------------------------------------------------------------------------------
# Raw pixels and statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    images: np.ndarray  # integer pixels, (N, C, H, W)
    labels: np.ndarray  # int64, (N,)
    scale: float  # pixel value that maps to 1.0


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # local import: scikit-learn only needed here

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]  # values 0..16
    return images, bunch.target.astype(np.int64)


def _load_raw(info: DatasetInfo, directory: Path | None, split: str) -> _Raw:
    if info.name == "digits":
        images, labels = _digits_all()
        test = stratified_indices(labels, DIGITS_TEST_FRACTION, seed=DIGITS_SPLIT_SEED).numpy()
        mask = np.zeros(len(labels), dtype=bool)
        mask[test] = True
        keep = mask if split == "test" else ~mask
        return _Raw(images[keep], labels[keep], 16.0)
    if directory is None:
        raise ValueError(f"{info.name}: no data folder given")
    if info.archive is None:  # IDX
        prefix = "train" if split == "train" else "t10k"
        images_path = _find_file(directory, f"{prefix}-images-idx3-ubyte.gz")
        labels_path = _find_file(directory, f"{prefix}-labels-idx1-ubyte.gz")
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{images_path}: expected (N, H, W) uint8 images, got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path}: {labels.shape} labels for {images.shape[0]} images in "
                f"{images_path}"
            )
        return _Raw(images[:, None], labels.astype(np.int64), 255.0)
    if info.name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        names = [split]
    parts = [read_cifar_batch(directory / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _Raw(images, labels, 255.0)


@functools.lru_cache(maxsize=8)
def _train_stats(name: str, directory: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel statistics of the train split of ``name`` (read from ``directory``)."""
    return _channel_stats(
        _load_raw(_DATASETS[name], Path(directory) if directory else None, "train")
    )


def _channel_stats(raw: _Raw) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (population) in [0, 1] units.

    Computed from a histogram of the integer pixel values, so no float copy is made.
    """
    means, stds = [], []
    values = np.arange(int(raw.images.max()) + 1, dtype=np.float64) / raw.scale
    for c in range(raw.images.shape[1]):
        counts = np.bincount(raw.images[:, c].ravel(), minlength=len(values)).astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(math.sqrt(var))
    return tuple(means), tuple(stds)


def load_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    subset: float | int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> Dataset:
    """Load a dataset split into memory as normalized float32 tensors.

    Args:
        name: ``"digits"`` (scikit-learn's 8×8 digits, always available), ``"mnist"``,
            ``"fashion-mnist"``, ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``. For digits, a fixed stratified 80/20 split
            (1438/359 images, seed ``DIGITS_SPLIT_SEED``).
        root: a folder searched first (and where ``download=True`` writes).
        download: fetch missing files from the canonical source, checking SHA-256.
        subset: keep a stratified subset: a fraction in (0, 1] or a count (see
            ``stratified_indices``); ``None`` keeps everything.
        seed: chooses the subset's examples (ignored when ``subset`` is None).
        normalize: subtract the per-channel mean and divide by the std of the full train split
            (the same statistics for both splits and for every subset).

    Returns:
        A ``Dataset`` with ``x`` (N, C, H, W) float32 and ``y`` (N,) int64.

    Raises:
        DatasetNotFoundError: files absent (message: which files, which folders, the download
            flag) or the download failed.
        ChecksumError: a downloaded file does not match its published SHA-256.
        ValueError: unknown name or split, a malformed file, an invalid subset size.
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = None if info.name == "digits" else _locate(info, root, download)
    raw = _load_raw(info, directory, split)
    x = torch.from_numpy(raw.images).to(torch.float32).div_(raw.scale)
    y = torch.from_numpy(raw.labels)
    channels = x.shape[1]
    mean, std = (0.0,) * channels, (1.0,) * channels
    if normalize:
        if split == "train":
            mean, std = _channel_stats(raw)
        else:
            mean, std = _train_stats(info.name, str(directory) if directory else None)
        x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    ds = Dataset(
        name=info.name,
        split=split,
        x=x,
        y=y,
        num_classes=info.num_classes,
        mean=tuple(mean),
        std=tuple(std),
        normalized=normalize,
    )
    return ds if subset is None else ds.subset(subset, seed=seed)


# --------------------------------------------------------------------------------------------
# Subsets, augmentation, synthetic data
# --------------------------------------------------------------------------------------------


def stratified_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int], size: float | int, *, seed: int = 0
) -> torch.Tensor:
    """Indices of a stratified, deterministic subset: class proportions kept as exactly as
    integers allow.

    The count is ``round(size * N)`` for a fraction, else ``size``. Class c gets
    ``floor(n N_c / N)`` examples plus one for the classes with the largest remainders
    (Hamilton's method, exact integer arithmetic), so every class count is within 1 of
    proportional. Which examples: the first ``k_c`` of a permutation of class c drawn from
    ``numpy.random.SeedSequence((seed, c))``; so for a fixed seed a class's examples at a
    smaller size are (up to the ±1 rounding) among those at a larger size.

    Args:
        labels: (N,) integer labels.
        size: fraction in (0, 1] or count in [1, N].
        seed: which examples are drawn.

    Returns:
        Sorted int64 indices, shape (n,).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    total = len(y)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"size must be a fraction or a count, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size <= 1.0:
            raise ValueError(f"a fractional size must lie in (0, 1], got {size}")
        n = max(1, round(float(size) * total))
    else:
        n = int(size)
        if not 1 <= n <= total:
            raise ValueError(f"a count must lie in [1, {total}], got {n}")
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts
    take = quota // total
    remainder = quota % total
    extra = n - int(take.sum())
    order = np.argsort(-remainder, kind="stable")  # ties: smaller label first
    take[order[:extra]] += 1
    chosen = []
    for c, k in zip(classes, take):
        members = np.flatnonzero(y == c)
        rng = np.random.default_rng(np.random.SeedSequence((int(seed), int(c))))
        chosen.append(rng.permutation(members)[:k])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).to(torch.int64)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop after zero padding, then a random horizontal flip, per example (He et al. 2016).

    Each image is zero-padded by ``padding`` pixels on every side (zero = the mean colour when
    ``x`` is normalized), a window of the original size is cut at a uniform random offset, and
    with probability 1/2 mirrored left-right. Vectorized: one gather for the whole batch.

    Random numbers: first the (N, 2) offsets ``torch.randint(0, 2 * padding + 1)``, then the
    flips ``torch.rand(N) < 0.5``, both drawn from ``generator`` on its own device (CPU when
    None: the global generator), so a seeded CPU generator gives the same result on any device.

    Args:
        x: images (N, C, H, W); not modified.
        generator: the random source (seed it for reproducibility; save its ``get_state()`` to
            resume).
        padding: pixels added on each side (4 for CIFAR).
        flip: also mirror at random.

    Returns:
        Augmented images, same shape, dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=gen_device)
    offsets = offsets.to(x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=gen_device).to(x.device) < 0.5
        cols = torch.where(mirrored[:, None], (w - 1) - cols, cols)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + cols  # (N, W)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def synthetic_like(
    name: str, n: int, *, seed: int = 0, split: str = "train", num_classes: int | None = None
) -> Dataset:
    """Random data with the shape and classes of dataset ``name`` (for benchmarks, smoke tests).

    ``x`` is standard normal (as if normalized), ``y`` uniform over the classes; both from a
    CPU generator seeded with ``seed``. Nothing is read from disk.

    Args:
        name: a dataset name (its shape and number of classes are used).
        n: number of examples.
        seed: random seed.
        split: recorded in the result.
        num_classes: override the number of classes.
    """
    info = dataset_info(name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = info.num_classes if num_classes is None else int(num_classes)
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn((n, *info.shape), generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    channels = info.shape[0]
    return Dataset(
        name=f"synthetic-{info.name}",
        split=split,
        x=x,
        y=y,
        num_classes=k,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


# --------------------------------------------------------------------------------------------
# Loading batches, resumably
# --------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence((int(seed), int(epoch))).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


class ResumableBatchSampler(Sampler[torch.Tensor]):
    """Yields index batches (int64 tensors) in an order fixed by ``(seed, epoch)``.

    Epoch e uses ``permutation(e)``, a ``torch.randperm`` drawn from a generator seeded with a
    hash of ``(seed, e)`` (identity order when ``shuffle=False``), cut into batches of
    ``batch_size`` (the last one shorter unless ``drop_last``). Iterating runs one epoch starting
    at batch ``step`` of epoch ``epoch``, then advances to the next epoch at step 0; so plain
    ``for epoch in ...: for x, y in loader`` sees a fresh order each epoch.

    To resume after a restart at global step s (batches already consumed)::

        epoch, step = divmod(s, len(loader))
        loader.sampler.set_epoch(epoch, step=step)
        for x, y in loader: ...   # the exact batches the uninterrupted run would have seen

    No hidden random state is consumed, so this works without saving anything but ``s``.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last=False
    ) -> None:
        if n < 1:
            raise ValueError(f"the dataset is empty (n={n})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(f"drop_last with batch_size {batch_size} > {n} examples: no batches")
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.step = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the examples in epoch ``epoch``, shape (n,) int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The index batches of epoch ``epoch`` from batch ``start`` on."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size]

    def set_epoch(self, epoch: int, step: int = 0) -> None:
        """Make the next iteration start at batch ``step`` of epoch ``epoch``."""
        if epoch < 0 or not 0 <= step <= len(self):
            raise ValueError(f"need epoch >= 0 and 0 <= step <= {len(self)}, got {epoch}, {step}")
        self.epoch, self.step = int(epoch), int(step)

    def state_dict(self) -> dict:
        """``{"epoch", "step"}``: where the next iteration starts (not what a loop consumed)."""
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"], step=state["step"])

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, start = self.epoch, self.step
        yield from self.batches(epoch, start)
        self.epoch, self.step = epoch + 1, 0


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over an in-memory ``Dataset`` with a reproducible, resumable order.

    Batches are fetched with one indexing operation (``dataset[index_tensor]``), not example by
    example. The order is that of ``ResumableBatchSampler`` (reachable as ``loader.sampler``):
    a pure function of ``(seed, epoch)``. Resume at global step s with
    ``loader.sampler.set_epoch(*divmod(s, len(loader)))`` -- see the sampler's docstring.

    Args:
        dataset: a ``Dataset`` (or anything with ``len`` and tensor indexing).
        batch_size: examples per batch.
        shuffle: a fresh permutation each epoch (else the stored order).
        seed: seeds every epoch's permutation.
        drop_last: drop the last, shorter batch of each epoch.
        num_workers, pin_memory: passed to ``DataLoader``.

    Returns:
        A ``DataLoader`` yielding ``(x, y)`` with x (B, C, H, W) and y (B,).
    """
    sampler = ResumableBatchSampler(
        len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
