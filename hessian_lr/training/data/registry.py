"""The dataset registry: names, shapes, classes, files, mirrors and published checksums.

One :class:`DatasetInfo` per dataset (digits, MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) and the
errors the loaders raise. Nothing here reads or downloads a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ChecksumError",
    "CorruptDatasetError",
    "dataset_info",
]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not in any searched folder (or could not be downloaded).

    The message says which files to put in which folder, and how to download them.
    """


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 differs from the published one (the file is deleted)."""


class CorruptDatasetError(ValueError):
    """A dataset file is truncated or corrupt; the message names the file and the remedy."""


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
