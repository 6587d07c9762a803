"""What every dataset loader shares: its error, the fixed test split, the data folders and
the CPU pools an image loader hands back.

Imports no loader, so that the image loaders (:mod:`nas.data._images`,
:mod:`nas.data._imagefolder`), the text loaders (:mod:`nas.data._text`) and the public API
(:mod:`nas.data._load`) all build on it without importing each other's internals.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas.errors import NasError


class DataError(NasError):
    """A dataset that cannot be loaded as asked; the message names the value or path."""


# Datasets without an official test split get this fraction carved off as test, with a
# seed that never changes: a test set that moved with the search seed would let
# different studies report accuracy on different images.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 20_240_601


@dataclass(frozen=True)
class Pools:
    """A dataset's training and test pools on the CPU, before the validation carve."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...] | None = None


def stratified_split(
    y: np.ndarray,
    classes: int,
    fraction: float,
    seed: int,
    *,
    part: str,
    pool: str,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (kept, carved), carving ``fraction`` of every class.

    Each class gives ``round(n * fraction)`` samples, clamped to at least one and at most
    ``n - 1``, so both sides see every class; a class with fewer than two samples cannot
    be split and is an error. Classes are visited in index order with one generator, so the
    result depends only on ``y``, ``fraction`` and ``seed``. Both index arrays are sorted
    (source order), which keeps the splits reproducible byte for byte.
    """
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    carved: list[np.ndarray] = []
    for c in range(classes):
        members = np.flatnonzero(y == c)
        n = len(members)
        if n < 2:
            label = f"class {c}" + (f" ({class_names[c]!r})" if class_names else "")
            raise DataError(
                f"{label} has {n} sample(s) in the {pool}; carving a {part} split needs at "
                f"least 2 per class so that both sides keep one"
            )
        # floor(x + 0.5) rather than round(): banker's rounding would make 2.5 -> 2.
        k = min(max(math.floor(n * fraction + 0.5), 1), n - 1)
        order = rng.permutation(members)
        carved.append(order[:k])
        kept.append(order[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nas`` (when absolute, as the XDG spec asks), else ``~/.cache/nas``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "nas"


def data_root(data_dir: str | Path | None) -> Path:
    """Where torchvision-format datasets live (and are downloaded to)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("NAS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"
