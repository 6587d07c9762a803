"""``imagefolder:PATH`` datasets: one folder of images per class, decoded once and cached.

``PATH/<class>/<image>`` (torchvision's ImageFolder layout; classes sorted by folder name)
or, when both exist, ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` as the
official splits. Images are resized to a square side (shorter side, then a centre crop)
and kept as one channel when every image is grayscale. A folder without ``test/`` gets
the stratified test split of :mod:`nas.data._common` with its fixed seed.

Decoding is the slow part, so the decoded pools are cached under
``cache_dir()/imagefolder``, keyed by every file's path, size and modification time.
PIL is imported inside the functions that read images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nas.data._common import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    DataError,
    Pools,
    cache_dir,
    stratified_split,
)
from nas.model import Task

IMAGEFOLDER_PREFIX = "imagefolder:"

# imagefolder images are resized once to this square size unless ``image_size`` says
# otherwise: CIFAR's size keeps the search cheap on a CPU and most small-image spaces
# are designed for it.
DEFAULT_IMAGE_SIZE = 32

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


def _read_cache(path: Path, size: int) -> Pools | None:
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


def _cached_pools(blob: object, size: int) -> Pools:
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
    return Pools(**parts, class_names=tuple(classes))


def _write_cache(path: Path, pools: Pools) -> None:
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


def load_imagefolder(name: str, size: int) -> tuple[Pools, Task]:
    """The pools and task of an image folder resized to ``size``: from the cache when it
    matches the files, else decoded (and cached for the next call)."""
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
            pools = Pools(
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
            pools = Pools(xt[keep], yt[keep], xt[test], yt[test], tuple(classes))
        _write_cache(cache, pools)
    channels = int(pools.x_train.shape[1])
    return pools, Task(name, "image", channels, size, size, len(classes))


def imagefolder_task(name: str, size: int) -> Task:
    """The task of an image folder without decoding it: class folders are listed and image
    headers read to decide between one (all grayscale) and three channels."""
    root = _imagefolder_root(name)
    classes, train_files, test_files = _scan_imagefolder(root)
    gray = all(_is_gray(path) for path, _ in train_files + (test_files or []))
    return Task(name, "image", 1 if gray else 3, size, size, len(classes))
