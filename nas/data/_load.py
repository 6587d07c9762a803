# Over 500 lines: Data/Split cannot go to _common (Data holds a Vocabulary; _vocab imports _common).
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

Which names exist and what reads them is one table, :data:`_LOADERS`: the built-in image
sets (:mod:`nas.data._images`), ``imagefolder:PATH`` (:mod:`nas.data._imagefolder`) and
the text datasets (``csv:PATH``, ``jsonl:PATH``, ``textfolder:PATH``, ``ag_news``,
``imdb``), which :mod:`nas.data._text` reads, tokenises and encodes; their splits hold
``int64`` token ids ``(N, L)`` instead of images, with the same split rules.

Heavy imports (torchvision, scikit-learn, PIL) happen inside the loaders that need them,
so ``import nas.data`` stays cheap for CLIs that only validate arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data._common import DataError, Pools, stratified_split
from nas.data._imagefolder import (
    DEFAULT_IMAGE_SIZE,
    IMAGEFOLDER_PREFIX,
    imagefolder_task,
    load_imagefolder,
)
from nas.data._images import load_cifar, load_digits, load_fashion_mnist, load_mnist
from nas.data._text import TextSplits, load_text, text_task
from nas.data._textsources import (
    CSV_PREFIX,
    JSONL_PREFIX,
    TEXTFOLDER_PREFIX,
    Locate,
    locate_ag_news,
    locate_csv,
    locate_imdb,
    locate_jsonl,
    locate_textfolder,
)
from nas.data._vocab import Tokenizer, Vocabulary
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


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Builtin:
    """A built-in image set: its fixed shape (square images) and classes, whether a mirror
    image keeps the label, and the reader of its files (``data_dir`` in, CPU pools out)."""

    channels: int
    side: int
    classes: int
    flip: bool
    read: Callable[[str | Path | None], Pools]

    def task(self, name: str) -> Task:
        return Task(name, "image", self.channels, self.side, self.side, self.classes)


@dataclass(frozen=True)
class _Folder:
    """``imagefolder:PATH``: the task comes from the folder, the pixels from its cache."""

    flip: bool


@dataclass(frozen=True)
class _Text:
    """A text dataset: ``locate`` finds its files and their reader."""

    locate: Locate


# Every dataset name, and every prefix (ending in ":") of a ``PREFIX:PATH`` name, with what
# reads it: the one list of names; DATASETS, is_text_name and the unknown-name message
# derive from it.
#
# flip: whether a horizontal flip keeps the label. Garments are close to mirror-symmetric
# (a mirrored shirt is still a shirt) and fast small-image trainers in the airbench style
# flip Fashion-MNIST and gain from it, so it is on there. A mirrored 2, 3 or 7 is not a
# digit, so it is off for mnist and digits. CIFAR's objects and animals face either way.
# An image folder is most often natural photographs, where flipping is the standard
# augmentation (torchvision's reference recipes); a folder of text or digits would want it
# off, and a trainer can always ignore ``flip``.
_LOADERS: dict[str, _Builtin | _Folder | _Text] = {
    # name: channels, side, classes, flip, reader
    "fashion_mnist": _Builtin(1, 28, 10, True, load_fashion_mnist),
    "mnist": _Builtin(1, 28, 10, False, load_mnist),
    "cifar10": _Builtin(3, 32, 10, True, functools.partial(load_cifar, "cifar10")),
    "cifar100": _Builtin(3, 32, 100, True, functools.partial(load_cifar, "cifar100")),
    "digits": _Builtin(1, 8, 10, False, load_digits),
    IMAGEFOLDER_PREFIX: _Folder(flip=True),
    "ag_news": _Text(locate_ag_news),
    "imdb": _Text(locate_imdb),
    CSV_PREFIX: _Text(locate_csv),
    JSONL_PREFIX: _Text(locate_jsonl),
    TEXTFOLDER_PREFIX: _Text(locate_textfolder),
}

DATASETS: tuple[str, ...] = tuple(k for k, v in _LOADERS.items() if isinstance(v, _Builtin))


def _loader(name: str) -> _Builtin | _Folder | _Text | None:
    """The table's entry for ``name``: the name itself, or its prefix up to the first ``:``."""
    head, colon, _ = name.partition(":")
    return _LOADERS.get(head + colon)


def is_text_name(name: str) -> bool:
    """Whether ``name`` names a text dataset (a text prefix or a text built-in)."""
    return isinstance(_loader(name), _Text)


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
    loader = _loader(name)
    if isinstance(loader, _Text):
        _no_image_size(name, size)
        fraction = _check_fraction(val_fraction)
        return text_task(
            name,
            loader.locate,
            data_dir=data_dir,
            seed=_check_seed(seed),
            val_fraction=fraction,
            **_text_options(text_column, label_column, tokenizer, max_vocab, min_freq, length),
        )
    _no_text_options(name, text_column, label_column, tokenizer, max_vocab, min_freq, length)
    del data_dir  # not needed for any built-in; see the docstring
    if isinstance(loader, _Folder):
        return imagefolder_task(name, size if size is not None else DEFAULT_IMAGE_SIZE)
    task = _builtin(name, loader).task(name)
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
            ``imdb`` (see :mod:`nas.data._textsources`).
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
        tokenizer, max_vocab, min_freq, length: text only: ``words`` (default), ``bytes``
            or ``ngrams`` (fastText's words, word bigrams and character 3-5-grams:
            :mod:`nas.data._vocab`); the vocabulary's size (PAD and OOV included, default
            20,000 for ``words``, 50,000 for ``ngrams``) and the fewest training
            occurrences of a kept token (default 2); tokens per example (default: the 95th
            percentile of the training texts' encoded lengths, 8..2048). ``ag_news`` and
            ``imdb`` are downloaded to ``data_dir`` like the torchvision datasets.

    Raises:
        DataError: anything about the request or the files, naming the value or path.
    """
    fraction = _check_fraction(val_fraction)
    seed = _check_seed(seed)
    size = _check_image_size(image_size)
    dev = _check_device(device)

    loader = _loader(name)
    if isinstance(loader, _Text):
        _no_image_size(name, size)
        return _load_text(
            name,
            loader.locate,
            dev,
            fraction,
            seed,
            data_dir,
            _text_options(text_column, label_column, tokenizer, max_vocab, min_freq, length),
        )
    _no_text_options(name, text_column, label_column, tokenizer, max_vocab, min_freq, length)
    if isinstance(loader, _Folder):
        pools, task = load_imagefolder(name, size if size is not None else DEFAULT_IMAGE_SIZE)
        flip = loader.flip
    else:
        builtin = _builtin(name, loader)
        task = builtin.task(name)
        _check_builtin_size(task, size)
        pools = builtin.read(data_dir)
        flip = builtin.flip
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


def _builtin(name: str, loader: _Builtin | _Folder | _Text | None) -> _Builtin:
    """``loader`` when it is a built-in image set; any other name is unknown here (callers
    handle text and image folders first)."""
    if not isinstance(loader, _Builtin):
        valid = ", ".join(k for k in _LOADERS if not k.endswith(":"))
        paths = ", ".join(f"{k}PATH" for k in _LOADERS if k.endswith(":"))
        raise DataError(f"unknown dataset {name!r}; valid names: {valid}, or {paths}")
    return loader


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
    """The keyword arguments of nas.data._text for the options given (None: its default)."""
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
    locate: Locate,
    dev: torch.device,
    fraction: float,
    seed: int,
    data_dir: str | Path | None,
    options: dict[str, Any],
) -> Data:
    pools = load_text(name, locate, data_dir=data_dir, seed=seed, val_fraction=fraction, **options)
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


def _check_pools(pools: Pools, task: Task) -> None:
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
