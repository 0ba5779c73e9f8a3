"""Tests for hessian_lr.training.data: file readers on files written here in the real formats,
the search path and its error messages, downloads (mocked: no network), subsets, augmentation,
loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hessian_lr.training import data
from hessian_lr.training.data import (
    ChecksumError,
    DatasetNotFoundError,
    ResumableBatchSampler,
    augment_batch,
    dataset_info,
    load_dataset,
    make_loader,
    read_cifar_batch,
    read_idx,
    search_dirs,
    stratified_indices,
    synthetic_like,
)

# --------------------------------------------------------------------------------------------
# helpers writing the real binary formats (independently of the library)
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C}
    dtype = array.dtype if array.dtype.itemsize == 1 else array.dtype.newbyteorder(">")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_mnist(folder: Path, *, n_train=40, n_test=20, seed=0, compress=(True, False, True, False)):
    """Write the four MNIST files (28×28), some gzipped and some not; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for (name, array), gz in zip(arrays.items(), compress):
        write_idx(folder / (name + (".gz" if gz else "")), array, compress=gz)
    return arrays


def cifar_pickle(data_: np.ndarray, labels, *, label_key=b"labels", extra=None) -> bytes:
    batch = {b"batch_label": b"fake batch", b"data": data_, label_key: labels}
    batch.update(extra or {})
    return pickle.dumps(batch, protocol=2)


def fake_cifar10(folder: Path, *, per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / name).write_bytes(cifar_pickle(d, labels))
        out[name] = (d, labels)
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data folder is visible: HOME, $HESSIAN_LR_DATA and /usr/share/datasets redirected."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setattr(data.download, "SYSTEM_DATA_DIR", tmp_path / "system")
    data._train_stats.cache_clear()

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(data.download.urllib.request, "urlopen", no_network)
    yield tmp_path
    data._train_stats.cache_clear()


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    images = np.random.default_rng(1).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    path = tmp_path / "x.idx"  # no .gz suffix even when compressed: content decides
    write_idx(path, images, compress=compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, images)
    ints = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    write_idx(tmp_path / "i.idx", ints, compress=compress)
    got = read_idx(tmp_path / "i.idx")
    np.testing.assert_array_equal(got, ints.astype(np.int32))
    assert got.dtype.isnative


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    raw = idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="6 bytes of data"):
        read_idx(tmp_path / "short")


def test_load_mnist_from_root_gz_and_raw(isolated):
    root = isolated / "data"
    arrays = fake_mnist(root / "mnist")
    train = load_dataset("mnist", root=root, normalize=False)
    assert train.x.shape == (40, 1, 28, 28) and train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64 and train.num_classes == 10
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32)[:, None] / 255
    np.testing.assert_allclose(train.x.numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(train.y.numpy(), arrays["train-labels-idx1-ubyte"])

    # normalization: train statistics (population std), applied to both splits
    normed = load_dataset("mnist", root=root)
    exact = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    mean, std = exact.mean(), exact.std()
    assert normed.mean == pytest.approx((mean,), rel=1e-12)
    assert normed.std == pytest.approx((std,), rel=1e-12)
    assert abs(normed.x.mean().item()) < 1e-5
    assert normed.x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    test = load_dataset("mnist", root=root, split="test")
    raw_test = arrays["t10k-images-idx3-ubyte"].astype(np.float64)[:, None] / 255
    np.testing.assert_allclose(test.x.numpy(), (raw_test - mean) / std, atol=1e-5)
    assert test.mean == normed.mean and len(test) == 20


def test_torchvision_layout_and_env_var(isolated, monkeypatch):
    fake_mnist(isolated / "env" / "MNIST" / "raw")
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    ds = load_dataset("mnist", split="test", normalize=False)
    assert len(ds) == 20
    assert search_dirs("mnist")[0] == isolated / "env" / "mnist"
    assert isolated / "env" not in search_dirs("mnist")  # shared folders never used bare
    assert search_dirs("mnist", root=isolated / "r")[2] == isolated / "r"


def test_root_may_be_the_folder_itself(isolated):
    fake_mnist(isolated / "files")
    assert len(load_dataset("fashion-mnist", root=isolated / "files", split="test")) == 20


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


def test_read_cifar_batch_layout(tmp_path):
    d = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 251
    (tmp_path / "b").write_bytes(cifar_pickle(d.astype(np.uint8), [3, 7]))
    images, labels = read_cifar_batch(tmp_path / "b")
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [3, 7])
    # red plane first, each plane row-major
    for i, c, r, col in [(0, 0, 0, 0), (1, 2, 31, 31), (0, 1, 5, 17), (1, 0, 10, 3)]:
        assert images[i, c, r, col] == d[i, c * 1024 + r * 32 + col]


def test_read_cifar_batch_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar_batch(tmp_path / "evil")


def test_load_cifar10_and_cifar100(isolated):
    root = isolated / "data"
    batches = fake_cifar10(root / "cifar-10-batches-py")
    train = load_dataset("cifar10", root=root, normalize=False)
    assert train.x.shape == (30, 3, 32, 32) and train.num_classes == 10
    first = batches["data_batch_1"][0].reshape(-1, 3, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(train.x[:6].numpy(), first, atol=1e-7)
    assert train.y[6:12].tolist() == batches["data_batch_2"][1]
    test = load_dataset("cifar10", root=root, split="test")
    allpix = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    allpix = allpix.reshape(-1, 3, 1024).astype(np.float64) / 255
    assert test.mean == pytest.approx(tuple(allpix.mean(axis=(0, 2))), rel=1e-12)
    assert test.std == pytest.approx(tuple(allpix.std(axis=(0, 2))), rel=1e-12)

    folder = root / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for split, n in (("train", 8), ("test", 4)):
        d = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        blob = cifar_pickle(d, fine, label_key=b"fine_labels", extra={b"coarse_labels": [0] * n})
        (folder / split).write_bytes(blob)
    c100 = load_dataset("cifar100", root=root, split="test")
    assert c100.num_classes == 100 and c100.x.shape == (4, 3, 32, 32)
    assert c100.y.tolist() == fine


# --------------------------------------------------------------------------------------------
# missing files, downloads
# --------------------------------------------------------------------------------------------


def test_missing_dataset_message(isolated):
    root = isolated / "mydata"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=root)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for needle in (
        "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        str(root / "mnist"),
        str(isolated / "home" / ".cache" / "hessian_lr" / "mnist"),
        "HESSIAN_LR_DATA",
        "download=True",
    ):
        assert needle in msg, needle

    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=root)
    msg = str(info.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "cifar-10-python.tar.gz" in msg and "data_batch_5" in msg


def test_incomplete_folder_is_not_used(isolated):
    folder = isolated / "data" / "mnist"
    fake_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", root=isolated / "data")


def test_download_offline(isolated, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(data.download.urllib.request, "urlopen", offline)
    root = isolated / "dl"
    with pytest.raises(DatasetNotFoundError, match="Download failed") as info:
        load_dataset("fashion-mnist", root=root, download=True)
    assert "name resolution" in str(info.value)
    assert len(calls) == len(dataset_info("fashion-mnist").mirrors)  # every mirror tried once
    assert not list(root.rglob("*.part"))


def test_download_checksum_mismatch(isolated, monkeypatch):
    monkeypatch.setattr(
        data.download.urllib.request,
        "urlopen",
        lambda url, timeout=None: io.BytesIO(b"not the file"),
    )
    root = isolated / "dl"
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_dataset("mnist", root=root, download=True)
    assert not list(root.rglob("*-ubyte*"))  # nothing half-written is left behind


def test_download_success_idx(isolated, monkeypatch):
    src = isolated / "served"
    fake_mnist(src, compress=(True, True, True, True))
    blobs = {p.name: p.read_bytes() for p in src.iterdir()}
    info = dataset_info("mnist")
    hashes = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    monkeypatch.setitem(data._DATASETS, "mnist", replace(info, sha256=hashes))
    fetched = []

    def serve(url, timeout=None):
        fetched.append(url)
        return io.BytesIO(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data.download.urllib.request, "urlopen", serve)
    root = isolated / "dl"
    ds = load_dataset("mnist", root=root, download=True, split="test", normalize=False)
    assert len(ds) == 20
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(blobs)
    assert all(u.startswith(info.mirrors[0]) for u in fetched) and len(fetched) == 4
    load_dataset("mnist", root=root, download=True)  # present now: no second download
    assert len(fetched) == 4


def test_download_success_cifar_tarball(isolated, monkeypatch):
    src = isolated / "served"
    fake_cifar10(src / "cifar-10-batches-py")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    blob = buf.getvalue()
    info = dataset_info("cifar10")
    hashes = {info.archive: hashlib.sha256(blob).hexdigest()}
    monkeypatch.setitem(data._DATASETS, "cifar10", replace(info, sha256=hashes))
    monkeypatch.setattr(
        data.download.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(blob)
    )
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))  # download target without root
    ds = load_dataset("cifar10", download=True, split="test")
    assert len(ds) == 6
    assert (isolated / "env" / "cifar-10-batches-py" / "test_batch").is_file()
    assert not (isolated / "env" / "cifar-10-python.tar.gz").exists()


def test_published_checksums_are_sha256():
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
        info = dataset_info(name)
        wanted = info.files if info.archive is None else (info.archive,)
        assert set(info.sha256) == set(wanted)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in info.sha256.values())


# --------------------------------------------------------------------------------------------
# digits and the system Fashion-MNIST
# --------------------------------------------------------------------------------------------


def test_digits_split_and_normalization():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.x.shape[1:] == (1, 8, 8) and train.num_classes == 10
    assert abs(train.x.mean().item()) < 1e-6
    assert train.x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert test.mean == train.mean and test.std == train.std
    # stratified: every class within 1 of 20 % of its size
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target)
    assert np.all(np.abs(test.class_counts().numpy() - 0.2 * full) <= 1)
    raw = load_dataset("digits", normalize=False)
    assert raw.x.min().item() == 0.0 and raw.x.max().item() == 1.0
    np.testing.assert_allclose(
        (raw.x - train.mean[0]) / train.std[0], train.x, atol=1e-5
    )  # same order, same examples
    again = load_dataset("digits", split="test")
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y)


def test_fashion_mnist_from_system_folder():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion-mnist", split="test")
    assert ds.x.shape == (10000, 1, 28, 28)
    assert ds.class_counts().tolist() == [1000] * 10
    # the published Fashion-MNIST train statistics
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-4)


# --------------------------------------------------------------------------------------------
# subsets
# --------------------------------------------------------------------------------------------


def test_stratified_indices_proportions_and_determinism():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100)]
    idx = stratified_indices(labels, 0.5, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [25, 15, 10]
    assert torch.equal(idx, stratified_indices(labels, 0.5, seed=3))
    assert not torch.equal(idx, stratified_indices(labels, 0.5, seed=4))
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 50
    for n in (1, 7, 10, 33, 99, 100):
        counts = torch.bincount(labels[stratified_indices(labels, n, seed=0)], minlength=3)
        assert counts.sum().item() == n
        assert torch.all((counts - torch.tensor([0.5, 0.3, 0.2]) * n).abs() < 1)
    # largest remainders: 10 of (50, 30, 20) -> 5, 3, 2 exactly; 7 -> 3.5, 2.1, 1.4 -> 4, 2, 1
    assert torch.bincount(labels[stratified_indices(labels, 7, seed=0)]).tolist() == [4, 2, 1]
    for bad in (0.0, 1.5, 0, 101, -3):
        with pytest.raises(ValueError):
            stratified_indices(labels, bad)
    with pytest.raises(TypeError):
        stratified_indices(labels, True)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.1])
def test_subset_of_digits(fraction):
    full = load_dataset("digits")
    sub = load_dataset("digits", subset=fraction, seed=7)
    assert len(sub) == round(fraction * len(full))
    assert torch.all((sub.class_counts() - fraction * full.class_counts()).abs() < 1)
    assert torch.equal(sub.x, full.x[sub.indices]) and torch.equal(sub.y, full.y[sub.indices])
    assert sub.mean == full.mean  # statistics of the full train split


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------


def test_augment_batch_matches_reference_and_is_seeded():
    x = torch.randn(16, 3, 8, 8)
    x_copy = x.clone()
    out = augment_batch(x, torch.Generator().manual_seed(5), padding=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, x_copy)  # input untouched
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(5), padding=2))
    assert not torch.equal(out, augment_batch(x, torch.Generator().manual_seed(6), padding=2))
    # reference: same draws (offsets then flips), sliced one image at a time
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 5, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        a, b = offsets[i].tolist()
        ref = padded[i, :, a : a + 8, b : b + 8]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref), i
    assert flips.any() and not flips.all()


def test_augment_batch_identity_and_validation():
    x = torch.randn(4, 1, 5, 5)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), padding=0, flip=False), x)
    flipped = augment_batch(x, torch.Generator().manual_seed(0), padding=0, flip=True)
    for i in range(4):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    with pytest.raises(ValueError):
        augment_batch(x[0])


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------


def test_loader_batches_and_resume():
    ds = synthetic_like("digits", 103, seed=0)
    loader = make_loader(ds, 10, shuffle=True, seed=11)
    assert len(loader) == 11
    epochs = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(3)]
    for batches in epochs:
        assert [len(y) for _, y in batches] == [10] * 10 + [3]
        xs = torch.cat([x for x, _ in batches])
        assert sorted(xs[:, 0, 0, 0].tolist()) == sorted(ds.x[:, 0, 0, 0].tolist())
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])  # new order each epoch
    sampler = loader.sampler
    assert isinstance(sampler, ResumableBatchSampler)
    idx = next(sampler.batches(1))
    assert torch.equal(epochs[1][0][0], ds.x[idx])

    # resume at global step 15 in a fresh loader: identical remaining batches
    fresh = make_loader(ds, 10, shuffle=True, seed=11)
    fresh.sampler.set_epoch(*divmod(15, len(fresh)))
    flat = [b for e in epochs for b in e]
    resumed = [x for x, _ in fresh] + [x for x, _ in fresh]
    assert len(resumed) == len(flat) - 15  # rest of epoch 1, then all of epoch 2
    for got, (want, _) in zip(resumed, flat[15:]):
        assert torch.equal(got, want)

    ordered = make_loader(ds, 50, shuffle=False, drop_last=True)
    assert len(ordered) == 2
    assert torch.equal(torch.cat([y for _, y in ordered]), ds.y[:100])
    with pytest.raises(ValueError):
        fresh.sampler.set_epoch(0, step=99)


def test_synthetic_like_and_names():
    a = synthetic_like("cifar10", 5, seed=1)
    assert a.x.shape == (5, 3, 32, 32) and a.num_classes == 10 and a.name == "synthetic-cifar10"
    assert torch.equal(a.x, synthetic_like("cifar-10", 5, seed=1).x)
    assert synthetic_like("cifar100", 300, seed=0).y.max().item() > 10
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")


# --------------------------------------------------------------------------------------------
# corrupt files name themselves and the remedy (issue 11, item 10)
# --------------------------------------------------------------------------------------------


def _assert_names_file_and_remedy(exc_info, path):
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, data.CorruptDatasetError)
    assert isinstance(exc_info.value, ValueError)
    assert str(path) in msg
    assert "download=True" in msg and "delete" in msg


def test_truncated_gzip_idx(isolated):
    root = isolated / "data"
    fake_mnist(root / "mnist")
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])  # an interrupted download
    with pytest.raises(data.CorruptDatasetError) as info:
        load_dataset("mnist", root=root)
    _assert_names_file_and_remedy(info, path)
    assert "truncated gzip" in str(info.value)


def test_corrupt_gzip_idx(isolated):
    root = isolated / "data"
    fake_mnist(root / "mnist")
    path = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(40)  # damaged deflate stream, gzip magic intact
    path.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptDatasetError) as info:
        load_dataset("mnist", split="test", root=root)
    _assert_names_file_and_remedy(info, path)
    assert "corrupt gzip" in str(info.value)


def test_idx_with_zero_images(isolated):
    root = isolated / "data"
    fake_mnist(root / "mnist", compress=(False,) * 4)
    write_idx(root / "mnist" / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8),
              compress=False)  # fmt: skip
    write_idx(root / "mnist" / "train-labels-idx1-ubyte", np.zeros((0,), np.uint8), compress=False)
    with pytest.raises(data.CorruptDatasetError) as info:
        load_dataset("mnist", root=root)
    _assert_names_file_and_remedy(info, root / "mnist" / "train-images-idx3-ubyte")
    assert "0 images" in str(info.value)


def test_truncated_cifar_pickle(isolated):
    root = isolated / "data"
    fake_cifar10(root / "cifar-10-batches-py")
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(data.CorruptDatasetError) as info:
        load_dataset("cifar10", root=root)
    _assert_names_file_and_remedy(info, path)
    assert "truncated" in str(info.value) and "CIFAR batch" in str(info.value)


def test_truncated_idx_body_is_a_corrupt_file(tmp_path):
    raw = idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(data.CorruptDatasetError, match="6 bytes of data.*download=True"):
        read_idx(tmp_path / "short")


# --------------------------------------------------------------------------------------------
# the batch stream: one place where the run's seed becomes batches, augmentation and probes
# --------------------------------------------------------------------------------------------


def test_batch_stream_is_the_sampler_order_plus_seeded_augmentation():
    ds = synthetic_like("cifar10", 50, seed=3)
    stream = data.batch_stream(ds, 8, seed=5, augment=True)
    sampler = ResumableBatchSampler(50, 8, shuffle=True, seed=5, drop_last=True)
    assert stream.steps_per_epoch == len(sampler) == 6
    gen = torch.Generator().manual_seed(5 + 777)  # the documented augmentation stream
    for step in range(14):  # across epoch boundaries
        epoch, pos = divmod(step, 6)
        idx = next(sampler.batches(epoch, pos))
        x, y = stream.batch(step)
        assert torch.equal(y, ds.y[idx])
        assert torch.equal(x, augment_batch(ds.x[idx], gen))
    # Resume: a fresh stream with the saved state continues identically.
    state = stream.state_dict()
    x_next, _ = stream.batch(14)
    again = data.batch_stream(ds, 8, seed=5, augment=True)
    again.load_state_dict(state)
    assert torch.equal(again.batch(14)[0], x_next)
    assert data.augment_seed(5) == 782 and data.probe_seed(5) == 12350
    assert data.trace_seed(5, 7) == 5 * 100003 + 7


def test_batch_stream_iterates_epoch_by_epoch_like_the_loader():
    ds = synthetic_like("digits", 30, seed=1)
    stream = data.batch_stream(ds, 7, seed=2)
    loader = make_loader(ds, 7, shuffle=True, seed=2, drop_last=True)
    for _ in range(3):  # each iteration is one epoch, as the loader's
        got = [y for _, y in stream]
        want = [y for _, y in loader]
        assert len(got) == len(want) == 4
        assert all(torch.equal(a, b) for a, b in zip(got, want))
