"""Datasets for the experiments: digits (embedded), MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

One idea per module:

* :mod:`.registry` -- names, shapes, files, mirrors, checksums (:func:`dataset_info`);
* :mod:`.download` -- where files are searched (:func:`search_dirs`) and how they are fetched;
* :mod:`.formats` -- the IDX and CIFAR-pickle readers;
* :mod:`.transforms` -- normalisation statistics, stratified subsets, CIFAR augmentation;
* :mod:`.dataset` -- the in-memory :class:`Dataset` and :func:`load_dataset`;
* :mod:`.batches` -- the resumable sampler and loader, and :func:`batch_stream`, the one place
  where a run's seed becomes its batch order, augmentation and probe streams.

Everything public is re-exported here (``from hessian_lr.training.data import load_dataset``).
"""

from .batches import (
    BatchStream,
    ResumableBatchSampler,
    augment_seed,
    batch_stream,
    make_loader,
    probe_indices,
    probe_seed,
    trace_seed,
)
from .dataset import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    Dataset,
    _train_stats,  # noqa: F401 (tests clear its cache)
    load_dataset,
    synthetic_like,
)
from .download import DATA_ENV, SYSTEM_DATA_DIR, search_dirs
from .formats import read_cifar_batch, read_idx
from .registry import (
    _DATASETS,  # noqa: F401 (tests patch the registry)
    DATASET_NAMES,
    ChecksumError,
    CorruptDatasetError,
    DatasetInfo,
    DatasetNotFoundError,
    dataset_info,
)
from .transforms import augment_batch, channel_stats, stratified_indices

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "Dataset",
    "DatasetNotFoundError",
    "ChecksumError",
    "CorruptDatasetError",
    "load_dataset",
    "dataset_info",
    "search_dirs",
    "read_idx",
    "read_cifar_batch",
    "stratified_indices",
    "augment_batch",
    "channel_stats",
    "synthetic_like",
    "ResumableBatchSampler",
    "make_loader",
    "BatchStream",
    "batch_stream",
    "probe_indices",
    "augment_seed",
    "probe_seed",
    "trace_seed",
    "DATA_ENV",
    "SYSTEM_DATA_DIR",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
]
