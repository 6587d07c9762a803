"""The built-in image sets, read from their published on-disk formats into CPU pools.

* ``fashion_mnist`` and ``mnist``: idx files (gzip-compressed or not), parsed here;
* ``cifar10`` and ``cifar100``: the official python pickles, read by an unpickler that
  builds arrays only;
* ``digits``: scikit-learn's bundled 8x8 digits, with a fixed stratified test split.

MNIST and CIFAR are downloaded by torchvision (its mirrors and md5 checks) into
:func:`nas.data._common.data_root` when absent; every other check is ours, so that a
corrupt file gets a message naming it. Heavy imports (torchvision, scikit-learn) happen
inside the loaders that need them.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import math
import os
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data._common import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    DataError,
    Pools,
    data_root,
    stratified_split,
)

_FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_CIFAR = {
    # name: (folder, train files, test files, meta file, meta key, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "label_names",
        "labels",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_label_names",
        "fine_labels",
        100,
    ),
}


# --------------------------------------------------------------------------- idx (MNIST)


def _find_idx(folder: Path, base: str) -> Path | None:
    """``base.gz`` or ``base`` in ``folder`` (torchvision keeps both after a download)."""
    for candidate in (folder / f"{base}.gz", folder / base):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an idx file of unsigned bytes (gzip-compressed or not) into an array.

    Format: two zero bytes, a type code (0x08: unsigned byte), the number of dimensions,
    then one big-endian uint32 per dimension, then the data.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err
    # Decide by content, not by name: a renamed or already-decompressed file still works.
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path} is a corrupt or truncated gzip file ({err}); fetch it again"
            ) from err
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, not even an idx header")
    magic = int.from_bytes(raw[:4], "big")
    expected_magic = 0x0800 | ndim
    if magic != expected_magic:
        raise DataError(
            f"{path} has idx magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension(s)); it is not the file its name says"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header gives shape {dims}, i.e. {expected} bytes, "
            f"but the data has {len(raw)}"
        )
    # Copy: frombuffer views immutable bytes, and torch wants a writable array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_idx_pair(
    images: Path, labels: Path, classes: int, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    x = _read_idx(images, 3)
    y = _read_idx(labels, 1)
    if x.shape[1:] != (side, side):
        raise DataError(f"{images} holds {x.shape[1]}x{x.shape[2]} images, expected {side}x{side}")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    if len(y) and int(y.max()) >= classes:
        raise DataError(f"{labels} has label {int(y.max())}, expected 0..{classes - 1}")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _idx_pools(folder: Path, classes: int, side: int) -> Pools:
    paths = [_find_idx(folder, base) for base in _IDX_NAMES]
    if any(p is None for p in paths):
        raise DataError(f"idx files missing in {folder}")  # callers check first
    ti, tl, si, sl = (p for p in paths if p is not None)
    x_train, y_train = _read_idx_pair(ti, tl, classes, side)
    x_test, y_test = _read_idx_pair(si, sl, classes, side)
    return Pools(x_train, y_train, x_test, y_test)


def _missing_idx(folder: Path) -> list[str]:
    return [base for base in _IDX_NAMES if _find_idx(folder, base) is None]


def load_fashion_mnist(data_dir: str | Path | None) -> Pools:
    """Fashion-MNIST from idx files; Debian's dataset-fashion-mnist package by default.

    An explicit ``data_dir`` or ``$NAS_DATA_DIR`` is honoured exclusively (no silent fall
    back to another copy). Both the flat layout and torchvision's ``FashionMNIST/raw``
    under it are accepted.
    """
    env = os.environ.get("NAS_DATA_DIR")
    if data_dir is not None:
        base, source = Path(data_dir).expanduser(), "data_dir"
    elif env:
        base, source = Path(env).expanduser(), "NAS_DATA_DIR"
    else:
        base, source = _FASHION_DEBIAN_DIR, "the default location"
    folders = [base, base / "FashionMNIST" / "raw"]
    for folder in folders:
        if not _missing_idx(folder):
            return _idx_pools(folder, 10, 28)
    missing = ", ".join(f"{b}.gz" for b in _missing_idx(base))
    raise DataError(
        f"fashion_mnist: files not found in {base} ({source}); missing {missing} "
        f"(also looked in {folders[1]}). Install them with "
        f"`apt-get install -y dataset-fashion-mnist` (into {_FASHION_DEBIAN_DIR}), or point "
        f"--data-dir / NAS_DATA_DIR at a folder holding them"
    )


def load_mnist(data_dir: str | Path | None) -> Pools:
    """MNIST in torchvision's layout, ``<root>/MNIST/raw``, downloaded by torchvision if absent.

    The files are read by :func:`_read_idx` rather than by ``torchvision.datasets.MNIST``
    so that a corrupt file gets a message naming it, and so that MNIST and Fashion-MNIST
    share one parser.
    """
    root = data_root(data_dir)
    raw = root / "MNIST" / "raw"
    if _missing_idx(raw):
        _fetch("mnist", root)
        if missing := _missing_idx(raw):
            raise DataError(f"mnist: {', '.join(missing)} still missing in {raw} after download")
    return _idx_pools(raw, 10, 28)


# --------------------------------------------------------------------------- CIFAR


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, lists, dicts and strings.

    CIFAR's python version is a pickle, and a pickle can run any code on load; these files
    come from a download or a shared disk, so only the globals an array needs resolve.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _pickle_allowlist().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: a CIFAR file holds only arrays and lists"
            )
        return found


@functools.cache
def _pickle_allowlist() -> dict[tuple[str, str], Any]:
    # Ask numpy for its own reconstructors instead of importing private modules: the real
    # files (pickled by Python 2 with numpy 1) name ``numpy.core.multiarray``, files
    # written today name ``numpy._core``; both resolve to the current functions.
    reconstruct = np.empty(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            # latin1: the files were pickled by Python 2 (as torchvision reads them).
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err
    except Exception as err:  # unpickling raises many types on a damaged file
        raise DataError(
            f"{path} is not a readable CIFAR pickle ({type(err).__name__}: {err}); "
            f"it is corrupt or truncated, delete it to download again"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return obj


def _read_cifar_batch(path: Path, label_key: str, classes: int) -> tuple[Any, Any]:
    entry = _read_pickle(path)
    if "data" not in entry or label_key not in entry:
        raise DataError(
            f"{path} lacks the 'data' or {label_key!r} entry (has {sorted(entry)}); "
            f"is it the right CIFAR version?"
        )
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a 2-D uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    try:
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: {label_key!r} is not a list of integers") from err
    if labels.shape != (len(data),):
        raise DataError(f"{path} has {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"{path} has labels {labels.min()}..{labels.max()}, expected 0..{classes - 1}"
        )
    # Rows are already channel-major (1024 red, 1024 green, 1024 blue): NCHW directly.
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: str | Path | None) -> Pools:
    """CIFAR-10/100 from torchvision's on-disk layout (the official python pickles).

    torchvision's ``CIFAR10`` checks each file's md5 before reading it, so it only accepts
    the exact published files; we read the same format ourselves (structure and label
    checks instead of md5) and call torchvision only to download when files are absent,
    where its md5 check of the download still applies.
    """
    folder_name, train_files, test_files, meta_file, meta_key, label_key, classes = _CIFAR[name]
    root = data_root(data_dir)
    folder = root / folder_name
    needed = (*train_files, *test_files, meta_file)
    if any(not (folder / f).is_file() for f in needed):
        _fetch(name, root)
        if missing := [f for f in needed if not (folder / f).is_file()]:
            raise DataError(f"{name}: {', '.join(missing)} still missing in {folder}")
    meta = _read_pickle(folder / meta_file)
    names = meta.get(meta_key)
    if not isinstance(names, list) or len(names) != classes:
        raise DataError(f"{folder / meta_file}: {meta_key!r} should list {classes} class names")

    def read(files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [_read_cifar_batch(folder / f, label_key, classes) for f in files]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    return Pools(x_train, y_train, x_test, y_test, tuple(str(n) for n in names))


# --------------------------------------------------------------------------- downloads


def _download(name: str, root: Path) -> None:
    """Fetch with torchvision's own downloader: its mirrors, archive layout and md5 checks."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    # train=False: after downloading, the constructor loads the smaller split only.
    cls(str(root), train=False, download=True)


def _fetch(name: str, root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        _download(name, root)
    except Exception as err:  # network, disk or checksum: all end the same way for the user
        raise DataError(
            f"{name}: files not found under {root} and the download failed "
            f"({type(err).__name__}: {err}); put torchvision's {name} files there, or pass "
            f"--data-dir / set NAS_DATA_DIR to where they are"
        ) from err


# --------------------------------------------------------------------------- digits


def load_digits(data_dir: str | Path | None) -> Pools:
    """scikit-learn's bundled 8x8 digits (no download), with a fixed 20 % test split.

    The data has no official test split, so one is carved here, stratified, with
    ``TEST_SPLIT_SEED``: it is the same for every search seed and every run.
    """
    del data_dir  # bundled with scikit-learn
    from sklearn import datasets

    bunch = datasets.load_digits()
    # Values are 0..16 (counts of set pixels in 4x4 blocks); stretch to the uint8 range
    # so that the trainer's "/255" convention holds for every dataset.
    x = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    y = np.asarray(bunch.target, dtype=np.int64)
    keep, test = stratified_split(
        y, 10, TEST_FRACTION, TEST_SPLIT_SEED, part="test", pool="digits data"
    )
    xt = torch.from_numpy(x).unsqueeze(1)
    yt = torch.from_numpy(y)
    return Pools(xt[keep], yt[keep], xt[test], yt[test])
