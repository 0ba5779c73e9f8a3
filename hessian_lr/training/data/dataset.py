"""The in-memory dataset and ``load_dataset``: raw pixels -> normalized float32 tensors.

Datasets for the experiments: digits (embedded), MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.
The studies follow Smith & Topin, *Super-Convergence* (2017/2019: CIFAR-10 with ResNet-56, the
limited-data Table 1, MNIST with LeNet) and Smith, *Cyclical Learning Rates* (WACV 2017).

Everything lives in memory as tensors: ``load_dataset`` returns a ``Dataset`` holding ``x``
(float32, N×C×H×W, per-channel normalized with train-split statistics) and ``y`` (int64, N).
Files are found (or downloaded) by :mod:`.download` and parsed by :mod:`.formats`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .download import find_file, locate
from .formats import read_cifar_batch, read_idx
from .registry import CorruptDatasetError, DatasetInfo, dataset_info
from .transforms import channel_stats, stratified_indices

__all__ = ["Dataset", "load_dataset", "synthetic_like", "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION"]

#: The digits train/test split is fixed (80/20, stratified, this seed), independent of ``seed``.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


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
        """Image channels (C)."""
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
        images_path = find_file(directory, f"{prefix}-images-idx3-ubyte.gz")
        labels_path = find_file(directory, f"{prefix}-labels-idx1-ubyte.gz")
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{images_path}: expected (N, H, W) uint8 images, got {images.shape}")
        if images.shape[0] == 0:
            raise CorruptDatasetError(
                f"{images_path}: the IDX file holds 0 images (its header says shape "
                f"{images.shape}). Replace it with the published file (delete it and call "
                f"load_dataset({info.name!r}, download=True))"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path}: {labels.shape} labels for {images.shape[0]} images in "
                f"{images_path}"
            )
        if not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() >= info.num_classes)
        ):
            raise ValueError(
                f"{labels_path}: labels must be integers in [0, {info.num_classes}) for "
                f"{info.name}, got {labels.dtype} in [{labels.min()}, {labels.max()}]"
            )
        return _Raw(images[:, None], labels.astype(np.int64), 255.0)
    if info.name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        names = [split]
    parts = [read_cifar_batch(directory / n) for n in names]
    for n, p in zip(names, parts):
        if p[0].shape[0] == 0:
            raise CorruptDatasetError(
                f"{directory / n}: the CIFAR batch holds 0 images. Replace it with the published "
                f"file (delete the folder and call load_dataset({info.name!r}, download=True))"
            )
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _Raw(images, labels, 255.0)


@functools.lru_cache(maxsize=8)
def _train_stats(name: str, directory: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel statistics of the train split of ``name`` (read from ``directory``)."""
    raw = _load_raw(dataset_info(name), Path(directory) if directory else None, "train")
    return channel_stats(raw.images, raw.scale)


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
    directory = None if info.name == "digits" else locate(info, root, download)
    raw = _load_raw(info, directory, split)
    x = torch.from_numpy(raw.images).to(torch.float32).div_(raw.scale)
    y = torch.from_numpy(raw.labels)
    channels = x.shape[1]
    mean, std = (0.0,) * channels, (1.0,) * channels
    if normalize:
        if split == "train":
            mean, std = channel_stats(raw.images, raw.scale)
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
