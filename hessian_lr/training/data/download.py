"""Where dataset files are found, and how they are downloaded (SHA-256 checked).

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

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .registry import ChecksumError, DatasetInfo, DatasetNotFoundError, dataset_info

__all__ = ["SYSTEM_DATA_DIR", "DATA_ENV", "search_dirs", "locate", "find_file"]

#: Where Debian's ``dataset-*`` packages put their files (``/usr/share/datasets/<name>``).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: Environment variable naming a data folder searched before the cache.
DATA_ENV = "HESSIAN_LR_DATA"


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


def find_file(directory: Path, filename: str) -> Path | None:
    """``directory/filename``, or for IDX files the uncompressed twin without ``.gz``."""
    for candidate in (filename, filename.removesuffix(".gz")):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _complete(directory: Path, info: DatasetInfo) -> bool:
    return all(find_file(directory, f) is not None for f in info.files)


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
            if find_file(folder, filename) is None:
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


def locate(info: DatasetInfo, root: str | os.PathLike | None, download: bool) -> Path:
    """The folder holding every file of ``info`` (downloading them first when asked).

    Raises:
        DatasetNotFoundError: not found (and not downloaded); the message says where to put what.
    """
    searched = search_dirs(info.name, root)
    for directory in searched:
        if _complete(directory, info):
            return directory
    if download:
        return _download(info, root, searched)
    raise DatasetNotFoundError(_missing_message(info, root, searched))
