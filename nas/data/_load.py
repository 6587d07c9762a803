"""Datasets as uint8 tensors on the training device, split into train / val / test.

The fastest small-image trainers keep the whole dataset on the training device and
augment in batches there, so a loader's job ends once: read the files, convert to
``uint8`` ``(N, C, H, W)`` and ``int64`` labels, carve the validation split, compute the
normalisation statistics and move everything to the device. Nothing here runs per sample
in a training loop.

Splits:

* ``train`` / ``val`` are carved from the dataset's *training* split, stratified by class
  and deterministic for a seed (an explicit ``numpy`` generator, never global state).
* ``test`` is the official test split; it never contributes to train or val. Datasets
  without one (``digits``, an ``imagefolder`` without ``train/`` and ``test/``) get a
  stratified 20 % test split carved with a fixed seed, so that the test set does not move
  when the search seed does.

Text datasets (``csv:PATH``, ``jsonl:PATH``, ``textfolder:PATH``, ``ag_news``, ``imdb``)
are read, tokenised and encoded by :mod:`nas.text`; their splits hold ``int64`` token ids
``(N, L)`` instead of images, with the same split rules.

Heavy imports (torchvision, scikit-learn, PIL) happen inside the loaders that need them,
so ``import nas.data`` stays cheap for CLIs that only validate arguments.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import gzip
import hashlib
import json
import math
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data._common import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    DataError,
    cache_dir,
    data_root,
    stratified_split,
)
from nas.data._text import (
    TEXT_DATASETS,
    TEXT_PREFIXES,
    TextSplits,
    Tokenizer,
    Vocabulary,
    is_text_name,
    load_text,
    text_task,
)
from nas.model import Task


@dataclass(frozen=True)
class Split:
    """One split of a dataset, whole, on one device.

    Attributes:
        x: ``uint8`` images, shape ``(N, C, H, W)``, contiguous, raw pixel values 0..255;
            or, for text, ``int64`` token ids, shape ``(N, L)``, padded with 0.
        y: ``int64`` class indices, shape ``(N,)``, on the same device as ``x``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        # Cheap checks that catch a float or channels-last tensor built by hand before it
        # silently trains on wrongly scaled pixels.
        images = self.x.dtype == torch.uint8 and self.x.dim() == 4
        tokens = self.x.dtype == torch.int64 and self.x.dim() == 2
        if not (images or tokens):
            raise DataError(
                f"Split.x must be a uint8 tensor of shape (N, C, H, W) (images) or an int64 "
                f"tensor of shape (N, L) (token ids), "
                f"got {self.x.dtype} of shape {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise DataError(
                f"Split.y must be an int64 tensor of shape (N,), "
                f"got {self.y.dtype} of shape {tuple(self.y.shape)}"
            )
        if self.x.shape[0] != self.y.shape[0]:
            what = "images" if images else "sequences"
            raise DataError(
                f"Split.x has {self.x.shape[0]} {what} but Split.y has {self.y.shape[0]} labels"
            )
        if self.x.device != self.y.device:
            raise DataError(f"Split.x is on {self.x.device} but Split.y is on {self.y.device}")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Data:
    """A loaded dataset: three splits on the training device and how to normalise them.

    Attributes:
        task: what a network for this dataset is asked to solve (shape, classes).
        train: what the search trains on (the training split minus ``val``), in source
            order: shuffle when batching.
        val: carved from the training split, stratified, deterministic for the seed.
        test: the official test split; only final evaluation reads it, never a search.
        mean: per-channel mean of ``train`` pixels scaled to [0, 1]; ``()`` for text.
        std: per-channel (population) standard deviation of ``train`` pixels, same units;
            a constant channel reports 1.0 so that normalising never divides by zero;
            ``()`` for text.
        flip: whether a horizontal flip is a label-preserving augmentation here (never for
            text).
        vocab: text only: the vocabulary built from ``train`` (encodes new texts; the
            exporter saves it); None for images.
        texts: text only: the raw texts of each split, row for row (for baselines and
            error analysis); None for images.
    """

    task: Task
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    # Defaulted and last: image code builds Data positionally with the seven fields above.
    vocab: Vocabulary | None = None
    texts: TextSplits | None = None

    def full_train(self) -> Split:
        """``train`` and ``val`` concatenated, for retraining the chosen architecture.

        Built on each call (one device-side copy) rather than stored, so a search that
        never retrains does not hold the training set twice.
        """
        return Split(torch.cat((self.train.x, self.val.x)), torch.cat((self.train.y, self.val.y)))


# --------------------------------------------------------------------------- constants

DATASETS: tuple[str, ...] = ("fashion_mnist", "mnist", "cifar10", "cifar100", "digits")
IMAGEFOLDER_PREFIX = "imagefolder:"

# imagefolder images are resized once to this square size unless ``image_size`` says
# otherwise: CIFAR's size keeps the search cheap on a CPU and most small-image spaces
# are designed for it.
DEFAULT_IMAGE_SIZE = 32

_FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_TASKS: dict[str, Task] = {
    "fashion_mnist": Task("fashion_mnist", "image", channels=1, height=28, width=28, classes=10),
    "mnist": Task("mnist", "image", channels=1, height=28, width=28, classes=10),
    "cifar10": Task("cifar10", "image", channels=3, height=32, width=32, classes=10),
    "cifar100": Task("cifar100", "image", channels=3, height=32, width=32, classes=100),
    "digits": Task("digits", "image", channels=1, height=8, width=8, classes=10),
}

# Whether a horizontal flip keeps the label. Garments are close to mirror-symmetric (a
# mirrored shirt is still a shirt) and fast small-image trainers in the airbench style flip
# Fashion-MNIST and gain from it, so it is on there. A mirrored 2, 3 or 7 is not a digit,
# so it is off for mnist and digits. CIFAR's objects and animals face either way.
_FLIP: dict[str, bool] = {
    "fashion_mnist": True,
    "mnist": False,
    "cifar10": True,
    "cifar100": True,
    "digits": False,
}
# An image folder is most often natural photographs, where flipping is the standard
# augmentation (torchvision's reference recipes); a folder of text or digits would want it
# off, and a trainer can always ignore ``flip``.
_IMAGEFOLDER_FLIP = True

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

_IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# Bump when the cached content or its layout changes, so old cache files are not reused.
_IMAGEFOLDER_CACHE_VERSION = 1


@dataclass(frozen=True)
class _Pools:
    """A dataset's training and test pools on the CPU, before the validation carve."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...] | None = None


# --------------------------------------------------------------------------- public API


def task_for(
    name: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    val_fraction: float = 0.1,
    tokenizer: Tokenizer | None = None,
    max_vocab: int | None = None,
    min_freq: int | None = None,
    length: int | None = None,
) -> Task:
    """The :class:`Task` of a dataset, without loading its pixels where possible.

    Built-in datasets have constant shapes and class counts, so nothing is read (``data_dir``
    is accepted so that a CLI can pass the same arguments here and to :func:`load_data`).
    An ``imagefolder:PATH`` is scanned: class folders are listed and image headers read to
    decide between one (all grayscale) and three channels.

    A text dataset is read and tokenised (its vocabulary size and length depend on the
    data) and the result is cached, so a following :func:`load_data` does not tokenise
    again. Its vocabulary comes from the training split, which depends on ``seed`` and
    ``val_fraction``: pass the ones :func:`load_data` will get to obtain the same task.
    The text arguments are those of :func:`load_data`; images ignore ``seed`` and
    ``val_fraction``.

    Raises:
        DataError: unknown name, bad ``image_size``, or an image folder that cannot be used.
    """
    size = _check_image_size(image_size)
    if is_text_name(name):
        _no_image_size(name, size)
        fraction = _check_fraction(val_fraction)
        return text_task(
            name,
            data_dir=data_dir,
            seed=_check_seed(seed),
            val_fraction=fraction,
            **_text_options(text_column, label_column, tokenizer, max_vocab, min_freq, length),
        )
    _no_text_options(name, text_column, label_column, tokenizer, max_vocab, min_freq, length)
    del data_dir  # not needed for any built-in; see the docstring
    if name.startswith(IMAGEFOLDER_PREFIX):
        root = _imagefolder_root(name)
        classes, train_files, test_files = _scan_imagefolder(root)
        gray = all(_is_gray(path) for path, _ in train_files + (test_files or []))
        side = size if size is not None else DEFAULT_IMAGE_SIZE
        return Task(name, "image", 1 if gray else 3, side, side, len(classes))
    task = _builtin_task(name)
    _check_builtin_size(task, size)
    return task


def load_data(
    name: str = "fashion_mnist",
    *,
    device: str | torch.device = "cpu",
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    tokenizer: Tokenizer | None = None,
    max_vocab: int | None = None,
    min_freq: int | None = None,
    length: int | None = None,
) -> Data:
    """Load a dataset onto ``device`` with a stratified validation split.

    Args:
        name: one of :data:`DATASETS`, or ``imagefolder:PATH`` (one folder of images per
            class; ``PATH/train`` and ``PATH/test`` are used as the splits when both exist);
            or a text dataset: ``csv:PATH``, ``jsonl:PATH``, ``textfolder:PATH``, ``ag_news``,
            ``imdb`` (see :mod:`nas.text`).
        device: where every tensor lives; moved there once.
        val_fraction: share of each class's training samples carved off as ``val``
            (rounded per class, at least one sample each side).
        seed: picks the validation samples; the test split never depends on it.
        data_dir: where the files are. ``fashion_mnist``: the folder with the idx ``.gz``
            files (default ``$NAS_DATA_DIR``, else Debian's ``/usr/share/datasets/
            fashion-mnist``). ``mnist``/``cifar10``/``cifar100``: torchvision's root
            (default ``$NAS_DATA_DIR``, else ``$XDG_CACHE_HOME/nas/data`` or
            ``~/.cache/nas/data``), downloaded there when absent.
        image_size: square side images are resized to; ``imagefolder`` only (default
            :data:`DEFAULT_IMAGE_SIZE`). Built-ins accept only their native size.
        text_column, label_column: text only: the columns (``csv:``) or keys (``jsonl:``)
            holding each example's text and label.
        tokenizer, max_vocab, min_freq, length: text only: ``words`` (default) or
            ``bytes``; the vocabulary's size (PAD and OOV included, default 20,000) and the
            fewest training occurrences of a kept token (default 2); tokens per example
            (default: the 95th percentile of training lengths, 8..512). ``ag_news`` and
            ``imdb`` are downloaded to ``data_dir`` like the torchvision datasets.

    Raises:
        DataError: anything about the request or the files, naming the value or path.
    """
    fraction = _check_fraction(val_fraction)
    seed = _check_seed(seed)
    size = _check_image_size(image_size)
    dev = _check_device(device)

    if is_text_name(name):
        _no_image_size(name, size)
        return _load_text(
            name,
            dev,
            fraction,
            seed,
            data_dir,
            _text_options(text_column, label_column, tokenizer, max_vocab, min_freq, length),
        )
    _no_text_options(name, text_column, label_column, tokenizer, max_vocab, min_freq, length)
    if name.startswith(IMAGEFOLDER_PREFIX):
        pools, task = _load_imagefolder(name, size if size is not None else DEFAULT_IMAGE_SIZE)
        flip = _IMAGEFOLDER_FLIP
    else:
        task = _builtin_task(name)
        _check_builtin_size(task, size)
        pools = _BUILTIN_LOADERS[name](data_dir)
        flip = _FLIP[name]
    _check_pools(pools, task)

    train_idx, val_idx = stratified_split(
        pools.y_train.numpy(),
        task.classes,
        fraction,
        int(seed),
        part="validation",
        pool=f"{task.name} training split",
        class_names=pools.class_names,
    )
    train = _take(pools.x_train, pools.y_train, train_idx)
    val = _take(pools.x_train, pools.y_train, val_idx)
    # Statistics from the train part only: val and test must not leak into normalisation.
    mean, std = _channel_stats(train.x)
    test = Split(pools.x_test.contiguous(), pools.y_test.contiguous())
    return Data(
        task=task,
        train=_to(train, dev),
        val=_to(val, dev),
        test=_to(test, dev),
        mean=mean,
        std=std,
        flip=flip,
    )


# --------------------------------------------------------------------------- validation


def _builtin_task(name: str) -> Task:
    task = _TASKS.get(name)
    if task is None:
        valid = ", ".join(DATASETS + TEXT_DATASETS)
        paths = ", ".join(f"{p}PATH" for p in (IMAGEFOLDER_PREFIX, *TEXT_PREFIXES))
        raise DataError(f"unknown dataset {name!r}; valid names: {valid}, or {paths}")
    return task


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- text


def _no_image_size(name: str, size: int | None) -> None:
    if size is not None:
        raise DataError(
            f"image_size applies to {IMAGEFOLDER_PREFIX}PATH datasets only; {name!r} is a "
            f"text dataset, got image_size={size}"
        )


def _text_options(
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer | None,
    max_vocab: int | None,
    min_freq: int | None,
    length: int | None,
) -> dict[str, Any]:
    """The keyword arguments of nas.text for the options given (None: its default)."""
    options: dict[str, Any] = {"text_column": text_column, "label_column": label_column}
    given = {"tokenizer": tokenizer, "max_vocab": max_vocab, "min_freq": min_freq}
    options.update({k: v for k, v in given.items() if v is not None})
    options["length"] = length
    return options


def _no_text_options(
    name: str,
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer | None,
    max_vocab: int | None,
    min_freq: int | None,
    length: int | None,
) -> None:
    # The columns have real defaults (a CLI always passes them); the rest are None unless
    # asked for, and asking for them on an image dataset is a mistake worth reporting.
    given = [
        what
        for what, value, default in (
            ("text_column", text_column, "text"),
            ("label_column", label_column, "label"),
            ("tokenizer", tokenizer, None),
            ("max_vocab", max_vocab, None),
            ("min_freq", min_freq, None),
            ("length", length, None),
        )
        if value != default
    ]
    if given:
        raise DataError(
            f"{', '.join(given)}: options that apply to text datasets only; {name!r} is "
            f"an image dataset"
        )


def _load_text(
    name: str,
    dev: torch.device,
    fraction: float,
    seed: int,
    data_dir: str | Path | None,
    options: dict[str, Any],
) -> Data:
    pools = load_text(name, data_dir=data_dir, seed=seed, val_fraction=fraction, **options)
    return Data(
        task=pools.task,
        train=_to(Split(pools.x_train, pools.y_train), dev),
        val=_to(Split(pools.x_val, pools.y_val), dev),
        test=_to(Split(pools.x_test, pools.y_test), dev),
        # Token ids are not normalised, and mirroring a sentence changes its meaning.
        mean=(),
        std=(),
        flip=False,
        vocab=pools.vocab,
        texts=pools.texts,
    )


def _check_fraction(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise DataError(f"val_fraction must be a number in (0, 1), got {value!r}")
    # Written so that NaN fails too.
    if not 0.0 < float(value) < 1.0:
        raise DataError(f"val_fraction must be strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_image_size(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"image_size must be a positive integer or None, got {value!r}")
    return int(value)


def _check_builtin_size(task: Task, size: int | None) -> None:
    # Resizing a built-in would silently change a benchmark; only imagefolder resizes.
    if size is not None and (size != task.height or size != task.width):
        raise DataError(
            f"image_size applies to {IMAGEFOLDER_PREFIX}PATH datasets only; {task.name} is "
            f"{task.height}x{task.width}, got image_size={size}"
        )


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
        # Allocating nothing on it surfaces "CUDA not available" and friends now, before
        # minutes of decoding, rather than at the final move.
        torch.empty(0, device=dev)
    except (RuntimeError, TypeError, AssertionError, ValueError) as err:
        raise DataError(f"device {device!r} cannot be used: {err}") from err
    return dev


def _check_pools(pools: _Pools, task: Task) -> None:
    """Internal consistency of what a loader produced against the task it claims."""
    expected = (task.channels, task.height, task.width)
    for part, x, y in (
        ("train", pools.x_train, pools.y_train),
        ("test", pools.x_test, pools.y_test),
    ):
        if tuple(x.shape[1:]) != expected or x.dtype != torch.uint8:
            raise DataError(
                f"{task.name}: {part} images are {x.dtype} {tuple(x.shape[1:])}, "
                f"expected uint8 {expected}"
            )
        if len(x) != len(y):
            raise DataError(f"{task.name}: {part} has {len(x)} images but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= task.classes):
            raise DataError(
                f"{task.name}: {part} labels must be in 0..{task.classes - 1}, "
                f"got {int(y.min())}..{int(y.max())}"
            )
    if len(pools.y_test) == 0:
        raise DataError(f"{task.name}: the test split is empty")


# --------------------------------------------------------------------------- splitting


def _take(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> Split:
    index = torch.from_numpy(idx.astype(np.int64))
    return Split(x[index].contiguous(), y[index].contiguous())


def _to(split: Split, device: torch.device) -> Split:
    if split.x.device == device:
        return split
    try:
        return Split(split.x.to(device).contiguous(), split.y.to(device).contiguous())
    except (RuntimeError, AssertionError) as err:  # out of device memory, mostly
        raise DataError(f"cannot move {len(split)} examples to {device}: {err}") from err


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 pixels, in [0, 1] units.

    A uint8 channel has only 256 values, so a histogram gives exact statistics in
    float64 without materialising a float copy of the training set.
    """
    values = torch.arange(256, dtype=torch.float64)
    means: list[float] = []
    stds: list[float] = []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        std = float(var.sqrt()) / 255.0
        means.append(float(mean) / 255.0)
        stds.append(std if std > 0.0 else 1.0)
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- locations


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


def _idx_pools(folder: Path, classes: int, side: int) -> _Pools:
    paths = [_find_idx(folder, base) for base in _IDX_NAMES]
    if any(p is None for p in paths):
        raise DataError(f"idx files missing in {folder}")  # callers check first
    ti, tl, si, sl = (p for p in paths if p is not None)
    x_train, y_train = _read_idx_pair(ti, tl, classes, side)
    x_test, y_test = _read_idx_pair(si, sl, classes, side)
    return _Pools(x_train, y_train, x_test, y_test)


def _missing_idx(folder: Path) -> list[str]:
    return [base for base in _IDX_NAMES if _find_idx(folder, base) is None]


def _load_fashion_mnist(data_dir: str | Path | None) -> _Pools:
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


def _load_mnist(data_dir: str | Path | None) -> _Pools:
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


def _load_cifar(name: str, data_dir: str | Path | None) -> _Pools:
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
    return _Pools(x_train, y_train, x_test, y_test, tuple(str(n) for n in names))


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


def _load_digits(data_dir: str | Path | None) -> _Pools:
    """scikit-learn's bundled 8x8 digits (no download), with a fixed 20 % test split.

    The data has no official test split, so one is carved here, stratified, with
    ``TEST_SPLIT_SEED``: it is the same for every search seed and every run.
    """
    del data_dir  # bundled with scikit-learn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Values are 0..16 (counts of set pixels in 4x4 blocks); stretch to the uint8 range
    # so that the trainer's "/255" convention holds for every dataset.
    x = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    y = np.asarray(bunch.target, dtype=np.int64)
    keep, test = stratified_split(
        y, 10, TEST_FRACTION, TEST_SPLIT_SEED, part="test", pool="digits data"
    )
    xt = torch.from_numpy(x).unsqueeze(1)
    yt = torch.from_numpy(y)
    return _Pools(xt[keep], yt[keep], xt[test], yt[test])


_BUILTIN_LOADERS: dict[str, Callable[[str | Path | None], _Pools]] = {
    "fashion_mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "cifar10": functools.partial(_load_cifar, "cifar10"),
    "cifar100": functools.partial(_load_cifar, "cifar100"),
    "digits": _load_digits,
}


# --------------------------------------------------------------------------- imagefolder

_Files = list[tuple[Path, int]]


def _imagefolder_root(name: str) -> Path:
    path = name[len(IMAGEFOLDER_PREFIX) :]
    if not path.strip():
        raise DataError(f"{name!r} names no folder; use {IMAGEFOLDER_PREFIX}PATH")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"imagefolder: {root} does not exist")
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder")
    return root


def _list_classes(folder: Path, known: Sequence[str] | None = None) -> tuple[list[str], _Files]:
    """Class folders of ``folder`` (sorted, as torchvision's ImageFolder) and their images.

    With ``known`` (the training classes), every class found must be one of them and takes
    its label from there.
    """
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"imagefolder: {folder} has no class folders; expected one sub-folder of images "
            f"per class, like {folder}/<class>/<image>.png"
        )
    names = [p.name for p in class_dirs]
    files: _Files = []
    for index, cdir in enumerate(class_dirs):
        if known is None:
            label = index
        elif cdir.name in known:
            label = list(known).index(cdir.name)
        else:
            raise DataError(
                f"imagefolder: {cdir} is a class that the training folder does not have "
                f"(training classes: {', '.join(known)})"
            )
        images = sorted(
            p
            for p in cdir.rglob("*")
            if p.is_file()
            and p.suffix.lower() in _IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(cdir).parts)
        )
        if not images:
            raise DataError(
                f"imagefolder: class folder {cdir} has no images "
                f"(looked for {' '.join(_IMAGE_EXTENSIONS)})"
            )
        files.extend((p, label) for p in images)
    return names, files


def _scan_imagefolder(root: Path) -> tuple[list[str], _Files, _Files | None]:
    """Classes, training files and (when ``train/`` and ``test/`` exist) test files."""
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        classes, train_files = _list_classes(train_dir)
        _, test_files = _list_classes(test_dir, known=classes)
    else:
        classes, train_files = _list_classes(root)
        test_files = None
    if len(classes) < 2:
        raise DataError(
            f"imagefolder: {root} has one class ({classes[0]!r}); classification needs "
            f"at least 2 class folders"
        )
    return classes, train_files, test_files


def _is_gray(path: Path) -> bool:
    """Whether an image is single-channel, from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in _GRAY_MODES
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"imagefolder: cannot read image {path}: {err}") from err


def _decode_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """One image as ``(size, size, 3)`` uint8 and whether it was grayscale.

    Resized so the shorter side is ``size``, then centre-cropped: the aspect ratio is
    kept (no squashing), as in torchvision's ``Resize`` + ``CenterCrop`` evaluation recipe.
    Everything goes through RGB; a grayscale source converts to three equal channels, so
    taking one back is exact when the whole folder turns out grayscale.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            gray = im.mode in _GRAY_MODES
            rgb = im.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"imagefolder: cannot read image {path}: {err}") from err
    w, h = rgb.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8), gray


def _decode_all(files: _Files, size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    arrays: list[np.ndarray] = []
    all_gray = True
    for path, _ in files:
        array, gray = _decode_image(path, size)
        arrays.append(array)
        all_gray &= gray
    x = np.stack(arrays).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, all_gray


def _imagefolder_key(root: Path, size: int, files: _Files) -> str:
    """Cache key: folder, size and every file's path, byte size and mtime.

    Any added, removed, renamed or rewritten image changes the key, so a stale cache is
    never read; statting is cheap next to decoding.
    """
    entries = []
    for path, label in files:
        st = path.stat()
        entries.append([str(path.relative_to(root)), label, st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {
            "version": _IMAGEFOLDER_CACHE_VERSION,
            "root": str(root.resolve()),
            "size": size,
            "test_seed": TEST_SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "files": entries,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read_cache(path: Path, size: int) -> _Pools | None:
    """The pools cached at ``path``, or None: missing, or unusable (then with a warning).

    Anyone who can write the cache folder may have planted the file: it is loaded with
    ``weights_only`` (no code runs) and every part is checked before use.
    """
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        pools = _cached_pools(blob, size)
    except Exception as err:  # a half-written, foreign or planted file: rebuild it
        warnings.warn(f"ignoring unreadable dataset cache {path}: {err}", stacklevel=3)
        return None
    return pools


def _cached_pools(blob: object, size: int) -> _Pools:
    """The pools in a loaded cache file, as :func:`_write_cache` writes them for images
    of ``size``; raises ValueError saying what is not."""
    if not isinstance(blob, dict):
        raise ValueError(f"holds a {type(blob).__name__}, not a dict")
    classes = blob.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError("its classes are not a list of names")
    parts: dict[str, torch.Tensor] = {}
    for part in ("train", "test"):
        x, y = blob.get(f"x_{part}"), blob.get(f"y_{part}")
        if not (
            isinstance(x, torch.Tensor)
            and x.dtype == torch.uint8
            and x.dim() == 4
            and x.shape[1] in (1, 3)
            and tuple(x.shape[2:]) == (size, size)
        ):
            raise ValueError(f"its x_{part} is not uint8 images of {size}x{size}")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (len(x),)):
            raise ValueError(f"its y_{part} is not one int64 label per image")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"its y_{part} has labels outside 0..{len(classes) - 1}")
        parts |= {f"x_{part}": x, f"y_{part}": y}
    if parts["x_train"].shape[1] != parts["x_test"].shape[1]:
        raise ValueError("its train and test images have different channels")
    return _Pools(**parts, class_names=tuple(classes))


def _write_cache(path: Path, pools: _Pools) -> None:
    blob = {
        "x_train": pools.x_train,
        "y_train": pools.y_train,
        "x_test": pools.x_test,
        "y_test": pools.y_test,
        "classes": list(pools.class_names or ()),
    }
    # Write then rename: parallel search workers may build the same cache at once,
    # and a reader must never see half a file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except Exception as err:  # OSError, or torch.save's RuntimeError on a full disk
        # A cache that cannot be written costs speed, not correctness.
        warnings.warn(f"could not write dataset cache {path}: {err}", stacklevel=3)
    finally:
        with contextlib.suppress(OSError):  # half a file after a failure (gone after a rename)
            tmp.unlink(missing_ok=True)


def _load_imagefolder(name: str, size: int) -> tuple[_Pools, Task]:
    root = _imagefolder_root(name)
    classes, train_files, test_files = _scan_imagefolder(root)
    cache = (
        cache_dir()
        / "imagefolder"
        / (_imagefolder_key(root, size, train_files + (test_files or [])) + ".pt")
    )
    pools = _read_cache(cache, size)
    if pools is None or list(pools.class_names or ()) != classes:
        x, y, gray = _decode_all(train_files + (test_files or []), size)
        if gray:
            x = x[:, :1]
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        if test_files is not None:
            n = len(train_files)
            # Clones: slices would keep (and torch.save would write) one shared storage.
            pools = _Pools(
                xt[:n].clone(), yt[:n].clone(), xt[n:].clone(), yt[n:].clone(), tuple(classes)
            )
        else:
            keep, test = stratified_split(
                y,
                len(classes),
                TEST_FRACTION,
                TEST_SPLIT_SEED,
                part="test",
                pool=f"image folder {root}",
                class_names=classes,
            )
            pools = _Pools(xt[keep], yt[keep], xt[test], yt[test], tuple(classes))
        _write_cache(cache, pools)
    channels = int(pools.x_train.shape[1])
    return pools, Task(name, "image", channels, size, size, len(classes))
