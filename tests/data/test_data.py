"""Tests for nas.data: every loader from fixture files in the real on-disk formats.

Fixture images carry their identity in their first pixels (an id in two bytes and a
train/test marker), so splits can be checked for leaks by reading the pixels back.
Nothing here touches the network: the torchvision downloader is replaced for every test.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

import nas.data._common as nc
import nas.data._imagefolder as nf
import nas.data._images as ni
from nas.data import DATASETS, Data, DataError, Split, load_data, task_for
from nas.model import FASHION_MNIST

TRAIN_MARK, TEST_MARK = 1, 2


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no user cache, no user data dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("NAS_DATA_DIR", raising=False)

    def no_network(name: str, root: Path) -> None:
        raise URLError(f"network disabled in tests ({name} -> {root})")

    monkeypatch.setattr(ni, "_download", no_network)


# --------------------------------------------------------------------------- fixtures


def tagged_images(n: int, channels: int, side: int, *, first_id: int, mark: int, seed: int):
    """``n`` noise images (N, C, H, W) whose pixels [0, 0, 0..2] hold id and marker."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, channels, side, side), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)
    x[:, 0, 0, 0] = ids // 256
    x[:, 0, 0, 1] = ids % 256
    x[:, 0, 0, 2] = mark
    return x


def ids_of(split: Split) -> np.ndarray:
    x = split.x.cpu().numpy().astype(np.int64)
    return x[:, 0, 0, 0] * 256 + x[:, 0, 0, 1]


def marks_of(split: Split) -> np.ndarray:
    return split.x.cpu().numpy()[:, 0, 0, 2]


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(
    folder: Path,
    *,
    n_train: int = 120,
    n_test: int = 30,
    classes: int = 10,
    compress: bool = True,
) -> dict[str, np.ndarray]:
    """MNIST-style idx files; labels cycle through the classes (balanced)."""
    folder.mkdir(parents=True, exist_ok=True)
    xtr = tagged_images(n_train, 1, 28, first_id=0, mark=TRAIN_MARK, seed=1)[:, 0]
    xte = tagged_images(n_test, 1, 28, first_id=1000, mark=TEST_MARK, seed=2)[:, 0]
    ytr = (np.arange(n_train) % classes).astype(np.uint8)
    yte = (np.arange(n_test) % classes).astype(np.uint8)
    arrays = {
        "train-images-idx3-ubyte": xtr,
        "train-labels-idx1-ubyte": ytr,
        "t10k-images-idx3-ubyte": xte,
        "t10k-labels-idx1-ubyte": yte,
    }
    for base, arr in arrays.items():
        raw = idx_bytes(arr)
        if compress:
            (folder / f"{base}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / base).write_bytes(raw)
    return arrays


def cifar_pickle(path: Path, obj: object) -> None:
    # Protocol 2, as the published files use (but written by Python 3: see py2_batch).
    path.write_bytes(pickle.dumps(obj, protocol=2))


def py2_batch(data: np.ndarray, labels: list[int], label_key: str) -> bytes:
    """A batch pickled byte for byte as Python 2 with numpy 1 wrote the published files.

    Python 3 cannot write this form (it pickles bytes through ``_codecs.encode``), so the
    opcodes are spelled out: ``numpy.core.multiarray._reconstruct`` and the pixels as a
    Python 2 ``str``, which only loads with ``encoding="latin1"``.
    """

    def text(raw: bytes) -> bytes:  # BINSTRING: 4-byte little-endian length, then bytes
        return b"T" + len(raw).to_bytes(4, "little") + raw

    def int4(value: int) -> bytes:  # BININT
        return b"J" + value.to_bytes(4, "little", signed=True)

    rows, cols = data.shape
    return (
        b"\x80\x02}("
        + text(b"data")
        + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + int4(0)
        + b"\x85"
        + text(b"b")
        + b"\x87R("
        + int4(1)
        + int4(rows)
        + int4(cols)
        + b"\x86cnumpy\ndtype\n"
        + text(b"u1")
        + int4(0)
        + int4(1)
        + b"\x87R("
        + int4(3)
        + text(b"|")
        + b"NNN"
        + int4(-1)
        + int4(-1)
        + int4(0)
        + b"tb\x89"
        + text(data.astype(np.uint8).tobytes())
        + b"tb"
        + text(label_key.encode())
        + b"]("
        + b"".join(int4(v) for v in labels)
        + b"eu."
    )


def write_cifar10(root: Path, *, per_batch: int = 10, n_test: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        x = tagged_images(per_batch, 3, 32, first_id=b * per_batch, mark=TRAIN_MARK, seed=b)
        labels = [int(i % 10) for i in range(b * per_batch, (b + 1) * per_batch)]
        batch = {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": labels,
            "data": x.reshape(per_batch, -1),
            "filenames": [f"img_{i}.png" for i in range(per_batch)],
        }
        if b == 0:  # one batch in the exact Python 2 form of the published files
            (folder / "data_batch_1").write_bytes(py2_batch(batch["data"], labels, "labels"))
        else:
            cifar_pickle(folder / f"data_batch_{b + 1}", batch)
    xt = tagged_images(n_test, 3, 32, first_id=1000, mark=TEST_MARK, seed=9)
    test = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(i % 10) for i in range(n_test)],
        "data": xt.reshape(n_test, -1),
        "filenames": [f"t_{i}.png" for i in range(n_test)],
    }
    cifar_pickle(folder / "test_batch", test)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    cifar_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    return folder


def write_cifar100(root: Path, *, per_class: int = 3) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    n = 100 * per_class
    for split, first, mark, count in (("train", 0, TRAIN_MARK, n), ("test", 5000, TEST_MARK, 100)):
        x = tagged_images(count, 3, 32, first_id=first, mark=mark, seed=first)
        fine = [int(i % 100) for i in range(count)]
        entry = {
            "filenames": [f"{split}_{i}.png" for i in range(count)],
            "batch_label": split,
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": x.reshape(count, -1),
        }
        cifar_pickle(folder / split, entry)
    cifar_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
    )
    return folder


def write_image_folder(
    root: Path,
    counts: dict[str, int],
    *,
    side: int = 8,
    mode: str = "RGB",
    first_id: int = 0,
    mark: int = TRAIN_MARK,
) -> int:
    """One folder of PNGs per class; pixel (0, 0) carries the id (R, G) and mark (B)."""
    from PIL import Image

    next_id = first_id
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            rng = np.random.default_rng(next_id)
            if mode == "L":
                arr = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
                arr[0, 0], arr[0, 1], arr[0, 2] = next_id // 256, next_id % 256, mark
            else:
                arr = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
                arr[0, 0] = (next_id // 256, next_id % 256, mark)
            Image.fromarray(arr, mode).save(root / name / f"img_{next_id:04d}.png")
            next_id += 1
    return next_id


def imagefolder_ids(split: Split) -> np.ndarray:
    """Ids of image-folder samples: RGB keeps them in channels 0/1 of pixel (0, 0)."""
    x = split.x.cpu().numpy().astype(np.int64)
    if x.shape[1] == 3:
        return x[:, 0, 0, 0] * 256 + x[:, 1, 0, 0]
    return x[:, 0, 0, 0] * 256 + x[:, 0, 0, 1]


def imagefolder_marks(split: Split) -> np.ndarray:
    x = split.x.cpu().numpy()
    return x[:, 2, 0, 0] if x.shape[1] == 3 else x[:, 0, 0, 2]


@pytest.fixture
def fashion_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fmnist"
    write_idx_set(folder)
    return folder


def assert_split_ok(split: Split, n: int, shape: tuple[int, int, int]) -> None:
    assert split.x.dtype == torch.uint8
    assert split.y.dtype == torch.int64
    assert tuple(split.x.shape) == (n, *shape)
    assert tuple(split.y.shape) == (n,)
    assert split.x.device.type == "cpu"
    assert split.y.device.type == "cpu"
    assert split.x.is_contiguous()
    assert split.y.is_contiguous()
    assert len(split) == n


# --------------------------------------------------------------------------- fashion_mnist


def test_fashion_mnist_from_data_dir(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=0.25)
    assert isinstance(data, Data)
    assert data.task == FASHION_MNIST
    assert data.flip is True
    assert_split_ok(data.train, 90, (1, 28, 28))
    assert_split_ok(data.val, 30, (1, 28, 28))
    assert_split_ok(data.test, 30, (1, 28, 28))
    assert len(data.mean) == len(data.std) == 1


def test_splits_disjoint_and_test_never_leaks(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=0.2, seed=3)
    train, val, test = ids_of(data.train), ids_of(data.val), ids_of(data.test)
    assert set(train).isdisjoint(val)
    assert sorted([*train, *val]) == list(range(120))  # every training sample, once
    assert sorted(test) == list(range(1000, 1030))  # exactly the official test split
    assert set(marks_of(data.train)) == {TRAIN_MARK}
    assert set(marks_of(data.val)) == {TRAIN_MARK}
    assert set(marks_of(data.test)) == {TEST_MARK}
    # Labels travel with their images.
    assert (data.train.y.numpy() == train % 10).all()
    assert (data.val.y.numpy() == val % 10).all()
    assert (data.test.y.numpy() == (test - 1000) % 10).all()


def test_val_is_stratified(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=0.25)
    assert torch.bincount(data.val.y, minlength=10).tolist() == [3] * 10
    assert torch.bincount(data.train.y, minlength=10).tolist() == [9] * 10


def test_split_deterministic_for_seed_and_varies_with_it(fashion_dir: Path) -> None:
    a = load_data("fashion_mnist", data_dir=fashion_dir, seed=7)
    b = load_data("fashion_mnist", data_dir=fashion_dir, seed=7)
    c = load_data("fashion_mnist", data_dir=fashion_dir, seed=8)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert a.mean == b.mean and a.std == b.std
    assert set(ids_of(a.val)) != set(ids_of(c.val))
    assert torch.equal(a.test.x, c.test.x)  # the test split does not depend on the seed


def test_mean_std_from_train_part_only(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir)
    pixels = data.train.x.numpy().astype(np.float64) / 255.0
    assert data.mean[0] == pytest.approx(pixels.mean(), abs=1e-12)
    assert data.std[0] == pytest.approx(pixels.std(), abs=1e-12)
    everything = torch.cat([data.train.x, data.val.x, data.test.x]).numpy() / 255.0
    assert data.mean[0] != pytest.approx(everything.mean(), abs=1e-12)


def test_full_train_is_train_plus_val(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir)
    full = data.full_train()
    assert len(full) == 120
    assert sorted(ids_of(full)) == list(range(120))
    assert torch.equal(full.x[: len(data.train)], data.train.x)


def test_fashion_mnist_env_dir_torchvision_layout_and_plain_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's FashionMNIST/raw layout with already-decompressed files, via the env.
    write_idx_set(tmp_path / "root" / "FashionMNIST" / "raw", compress=False)
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "root"))
    data = load_data("fashion_mnist")
    assert len(data.full_train()) == 120 and len(data.test) == 30


@pytest.mark.parametrize("how", ["data_dir", "env", "default"])
def test_fashion_mnist_missing_files_say_where_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    nowhere = tmp_path / "nowhere"
    kwargs: dict[str, object] = {}
    if how == "data_dir":
        kwargs["data_dir"] = nowhere
    elif how == "env":
        monkeypatch.setenv("NAS_DATA_DIR", str(nowhere))
    else:
        monkeypatch.setattr(ni, "_FASHION_DEBIAN_DIR", nowhere)
    with pytest.raises(DataError) as err:
        load_data("fashion_mnist", **kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert str(nowhere) in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "--data-dir" in message and "NAS_DATA_DIR" in message


def _gz(arr_bytes: bytes) -> bytes:
    return gzip.compress(arr_bytes)


@pytest.mark.parametrize(
    ("file", "damage", "expect"),
    [
        ("train-images-idx3-ubyte.gz", lambda raw: raw[: len(raw) // 2], "corrupt or truncated"),
        ("train-images-idx3-ubyte.gz", lambda raw: b"\x1f\x8bgarbage", "corrupt or truncated"),
        (
            "t10k-images-idx3-ubyte.gz",
            lambda raw: _gz(gzip.decompress(raw)[:-100]),
            "is truncated",
        ),
        ("t10k-labels-idx1-ubyte.gz", lambda raw: _gz(gzip.decompress(raw) + b"\0"), "longer"),
        ("train-labels-idx1-ubyte.gz", lambda raw: _gz(b"\0\0\x08"), "is truncated"),
        (
            "train-labels-idx1-ubyte.gz",
            lambda raw: _gz(b"\0\0\x08\x03" + gzip.decompress(raw)[4:]),
            "magic number",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            lambda raw: _gz(idx_bytes(np.zeros(119, np.uint8))),
            "119 labels",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            lambda raw: _gz(idx_bytes(np.full(120, 10, np.uint8))),
            "label 10",
        ),
        (
            "train-images-idx3-ubyte.gz",
            lambda raw: _gz(idx_bytes(np.zeros((120, 27, 28), np.uint8))),
            "27x28",
        ),
    ],
)
def test_corrupt_idx_files_name_file_and_problem(
    fashion_dir: Path, file: str, damage, expect: str
) -> None:
    path = fashion_dir / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as err:
        load_data("fashion_mnist", data_dir=fashion_dir)
    assert file.removesuffix(".gz") in str(err.value)
    assert expect in str(err.value)


def test_class_too_small_to_split(tmp_path: Path) -> None:
    folder = tmp_path / "small"
    write_idx_set(folder, n_train=11)  # class 0 has two samples, classes 1..9 one each
    with pytest.raises(DataError, match=r"class 1 has 1 sample\(s\).*validation"):
        load_data("fashion_mnist", data_dir=folder)


def test_each_class_keeps_one_each_side(fashion_dir: Path) -> None:
    tiny = load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=0.001)
    huge = load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=0.999)
    assert torch.bincount(tiny.val.y, minlength=10).tolist() == [1] * 10
    assert torch.bincount(huge.train.y, minlength=10).tolist() == [1] * 10


@pytest.mark.skipif(
    not (ni._FASHION_DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_debian_fashion_mnist() -> None:
    data = load_data("fashion_mnist")
    assert len(data.train) + len(data.val) == 60_000
    assert len(data.val) == 6_000
    assert len(data.test) == 10_000
    assert tuple(data.train.x.shape[1:]) == (1, 28, 28)
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    assert 0.25 < data.mean[0] < 0.32 and 0.3 < data.std[0] < 0.4


# --------------------------------------------------------------------------- mnist


def test_mnist_from_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path / "MNIST" / "raw", compress=False)
    data = load_data("mnist", data_dir=tmp_path)
    assert data.task.name == "mnist" and data.task.classes == 10
    assert data.flip is False
    assert sorted(ids_of(data.full_train())) == list(range(120))
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))


def test_mnist_fixture_is_torchvisions_format(tmp_path: Path) -> None:
    """torchvision itself reads the fixture (MNIST checks presence, not md5) the same way."""
    from torchvision.datasets import MNIST

    write_idx_set(tmp_path / "MNIST" / "raw", compress=False)
    ours = ni.load_mnist(tmp_path)
    theirs = MNIST(str(tmp_path), train=True, download=False)
    assert torch.equal(ours.x_train[:, 0], theirs.data)
    assert torch.equal(ours.y_train, theirs.targets)


def test_mnist_missing_files_trigger_download_then_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_data("mnist", data_dir=tmp_path / "mroot")
    message = str(err.value)
    assert str(tmp_path / "mroot") in message
    assert "download failed" in message and "network disabled" in message


def test_mnist_download_path_used_when_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Path]] = []

    def fake_download(name: str, root: Path) -> None:
        calls.append((name, root))
        write_idx_set(root / "MNIST" / "raw")  # what torchvision leaves behind

    monkeypatch.setattr(ni, "_download", fake_download)
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "env-root"))
    data = load_data("mnist")
    assert calls == [("mnist", tmp_path / "env-root")]
    assert len(data.test) == 30
    load_data("mnist")  # present now: no second download
    assert len(calls) == 1


def test_default_data_root_is_under_cache(tmp_path: Path) -> None:
    assert nc.data_root(None) == tmp_path / "xdg-cache" / "nas" / "data"


# --------------------------------------------------------------------------- cifar


def test_cifar10_from_pickles(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    data = load_data("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert data.task.channels == 3 and data.task.height == 32 and data.task.classes == 10
    assert data.flip is True
    assert_split_ok(data.train, 40, (3, 32, 32))
    assert_split_ok(data.val, 10, (3, 32, 32))
    assert_split_ok(data.test, 20, (3, 32, 32))
    assert sorted(ids_of(data.full_train())) == list(range(50))
    assert set(marks_of(data.test)) == {TEST_MARK}
    assert set(ids_of(data.train)).isdisjoint(ids_of(data.val))
    assert len(data.mean) == 3 and len(data.std) == 3


def test_python2_pickle_form_reads() -> None:
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    loaded = pickle.loads(py2_batch(data, [0, 7], "labels"), encoding="latin1")
    assert loaded["labels"] == [0, 7]
    assert (loaded["data"] == data).all()


def test_cifar10_matches_torchvision_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same pixels and labels as torchvision's CIFAR10, once its md5 check is waived."""
    import torchvision.datasets.cifar as tvc

    write_cifar10(tmp_path)
    monkeypatch.setattr(tvc, "check_integrity", lambda *args, **kwargs: True)
    ours = ni.load_cifar("cifar10", tmp_path)
    for train, x, y in ((True, ours.x_train, ours.y_train), (False, ours.x_test, ours.y_test)):
        theirs = tvc.CIFAR10(str(tmp_path), train=train, download=False)
        assert torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(theirs.data))
        assert y.tolist() == theirs.targets


def test_cifar100_from_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    data = load_data("cifar100", data_dir=tmp_path, val_fraction=0.3)
    assert data.task.classes == 100
    assert torch.bincount(data.val.y, minlength=100).tolist() == [1] * 100
    assert sorted(ids_of(data.full_train())) == list(range(300))
    assert sorted(ids_of(data.test)) == list(range(5000, 5100))
    assert data.test.y.tolist() == list(range(100))  # fine labels, not coarse


def test_cifar_missing_files_try_download(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="download failed") as err:
        load_data("cifar10", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("file", "content", "expect"),
    [
        ("data_batch_2", b"\x80\x02}q\x00(X", "not a readable CIFAR pickle"),
        ("data_batch_2", pickle.dumps({"data": _Evil()}, protocol=2), "refusing global"),
        ("test_batch", pickle.dumps([1, 2], protocol=2), "expected a CIFAR batch dict"),
        ("test_batch", pickle.dumps({"data": 1}, protocol=2), "lacks the 'data'"),
        (
            "test_batch",
            pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, protocol=2),
            "expected 3072",
        ),
        (
            "data_batch_1",
            pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=2),
            "2 images but 1 labels",
        ),
        (
            "data_batch_1",
            pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [10]}, protocol=2),
            "expected 0..9",
        ),
        ("batches.meta", pickle.dumps({"label_names": ["a"]}, protocol=2), "10 class names"),
    ],
)
def test_corrupt_cifar_files(tmp_path: Path, file: str, content: bytes, expect: str) -> None:
    folder = write_cifar10(tmp_path)
    (folder / file).write_bytes(content)
    with pytest.raises(DataError) as err:
        load_data("cifar10", data_dir=tmp_path)
    assert str(folder / file) in str(err.value)
    assert expect in str(err.value)


# --------------------------------------------------------------------------- digits


def test_digits_fixed_test_split() -> None:
    a = load_data("digits", seed=0)
    b = load_data("digits", seed=1)
    assert a.task.channels == 1 and (a.task.height, a.task.width) == (8, 8)
    assert a.flip is False
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert 340 <= len(a.test) <= 380  # ~20 %, rounded per class
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.val.x, b.val.x)
    assert int(a.train.x.max()) == 255 and int(a.train.x.min()) == 0
    assert (torch.bincount(a.test.y, minlength=10) > 0).all()
    assert_split_ok(a.test, len(a.test), (1, 8, 8))


def test_digits_test_split_disjoint_from_training_pool() -> None:
    from sklearn.datasets import load_digits

    y = load_digits().target
    keep, test = nc.stratified_split(
        y, 10, nc.TEST_FRACTION, nc.TEST_SPLIT_SEED, part="test", pool="digits"
    )
    assert set(keep).isdisjoint(test)
    assert len(keep) + len(test) == len(y)


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_carves_fixed_test_split(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    write_image_folder(root, {"cat": 5, "dog": 5, "fish": 5})
    a = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.25, seed=0)
    b = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.25, seed=1)
    assert a.task.name == f"imagefolder:{root}"
    assert (a.task.channels, a.task.height, a.task.width, a.task.classes) == (3, 8, 8, 3)
    assert_split_ok(a.test, 3, (3, 8, 8))  # 20 % of 5, per class
    assert_split_ok(a.val, 3, (3, 8, 8))
    assert_split_ok(a.train, 9, (3, 8, 8))
    everything = [*imagefolder_ids(a.train), *imagefolder_ids(a.val), *imagefolder_ids(a.test)]
    assert sorted(everything) == list(range(15))
    assert torch.equal(a.test.x, b.test.x)  # test split independent of the seed
    assert set(imagefolder_ids(a.val)) != set(imagefolder_ids(b.val))
    assert task_for(f"imagefolder:{root}", image_size=8) == a.task
    # Labels follow sorted folder names: cat 0..4, dog 5..9, fish 10..14.
    assert (a.train.y.numpy() == imagefolder_ids(a.train) // 5).all()


def test_imagefolder_train_test_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "split"
    nxt = write_image_folder(root / "train", {"a": 4, "b": 4})
    write_image_folder(root / "test", {"a": 2, "b": 1}, first_id=nxt, mark=TEST_MARK)
    data = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.25)
    assert sorted(imagefolder_ids(data.test)) == list(range(nxt, nxt + 3))
    assert set(imagefolder_marks(data.test)) == {TEST_MARK}
    assert set(imagefolder_marks(data.train)) == {TRAIN_MARK}
    assert set(imagefolder_marks(data.val)) == {TRAIN_MARK}
    assert data.test.y.tolist() == [0, 0, 1]
    assert len(data.train) + len(data.val) == 8


def test_imagefolder_grayscale_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "gray"
    write_image_folder(root, {"x": 3, "y": 3}, side=12, mode="L")
    data = load_data(f"imagefolder:{root}", image_size=6, val_fraction=0.5)
    assert data.task.channels == 1
    assert tuple(data.train.x.shape[1:]) == (1, 6, 6)
    default = load_data(f"imagefolder:{root}", val_fraction=0.5)
    assert default.task.height == default.task.width == nf.DEFAULT_IMAGE_SIZE
    assert task_for(f"imagefolder:{root}").channels == 1


def test_imagefolder_non_square_keeps_aspect(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "wide"
    for cls in ("l", "r"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            arr = np.zeros((8, 16, 3), np.uint8)
            arr[:, :4] = 255  # a white band on the left quarter, cropped away by centre crop
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    data = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    assert tuple(data.test.x.shape[1:]) == (3, 8, 8)
    assert int(data.test.x.max()) == 0


def test_imagefolder_cache_reused_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cached"
    write_image_folder(root, {"a": 3, "b": 3})
    first = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    cache_files = list((tmp_path / "xdg-cache" / "nas" / "imagefolder").glob("*.pt"))
    assert len(cache_files) == 1

    real_decode = nf._decode_image
    decoded: list[Path] = []

    def counting_decode(path: Path, size: int):
        decoded.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(nf, "_decode_image", counting_decode)
    second = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    assert decoded == []  # served from the cache
    assert torch.equal(first.train.x, second.train.x)
    assert torch.equal(first.test.x, second.test.x)

    # Rewriting one image (new size and mtime) changes the key: everything is decoded again.
    target = sorted((root / "a").iterdir())[0]
    write_image_folder(tmp_path / "other", {"a": 1}, first_id=500)
    target.write_bytes((tmp_path / "other" / "a" / "img_0500.png").read_bytes())
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    third = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    assert len(decoded) == 6
    assert (
        500 in imagefolder_ids(third.full_train()).tolist() + imagefolder_ids(third.test).tolist()
    )


def test_imagefolder_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "c2"
    write_image_folder(root, {"a": 3, "b": 3})
    load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    (cache,) = (tmp_path / "xdg-cache" / "nas" / "imagefolder").glob("*.pt")
    cache.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable dataset cache"):
        data = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    assert len(data.full_train()) + len(data.test) == 6


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "xdg-cache" / "nas" / "imagefolder").glob("*"))


def test_imagefolder_cache_write_error_warns_and_leaves_no_tmp(tmp_path: Path) -> None:
    """A full disk, for real: over RLIMIT_FSIZE torch.save raises RuntimeError (not
    OSError) midway through the temp file. Loading warns and goes on, and the half-written
    temp file is removed."""
    import resource
    import signal

    root = tmp_path / "full"
    write_image_folder(root, {"a": 3, "b": 3})
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, limit[1]))
    try:
        with pytest.warns(UserWarning, match="could not write dataset cache"):
            data = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert len(data.full_train()) + len(data.test) == 6
    assert _cache_files(tmp_path) == []  # no .tmp, no .pt
    load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)  # room again: written
    assert [p.suffix for p in _cache_files(tmp_path)] == [".pt"]


class _Mkdir:
    """Pickles as a call of os.mkdir: loading it without weights_only runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def _planted(tmp_path: Path, good: dict[str, object], kind: str) -> object:
    """What a planted or damaged cache file holds instead of ``good``."""
    x, y = good["x_train"], good["y_train"]
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    return {
        "code": {**good, "classes": _Mkdir(tmp_path / "ran")},
        "not a dict": [1, 2, 3],
        "not tensors": {**good, "x_train": "images", "y_train": [0, 1]},
        "float images": {**good, "x_train": x.float()},
        "wrong size": {**good, "x_train": x[:, :, :4, :4].clone()},
        "labels out of range": {**good, "y_train": y + 99},
        "labels short": {**good, "y_train": y[:-1].clone()},
        "classes not names": {**good, "classes": [1, 2]},
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "code",
        "not a dict",
        "not tensors",
        "float images",
        "wrong size",
        "labels out of range",
        "labels short",
        "classes not names",
    ],
)
def test_imagefolder_cache_planted_or_damaged_is_rebuilt(tmp_path: Path, kind: str) -> None:
    """The cache folder may hold anything: a file that is not a cache this folder would
    write warns and is rebuilt, and nothing in it runs (weights_only)."""
    root = tmp_path / "c3"
    write_image_folder(root, {"a": 3, "b": 3})
    first = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    (cache,) = _cache_files(tmp_path)
    if kind == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:
        good = torch.load(cache, weights_only=True)
        torch.save(_planted(tmp_path, good, kind), cache)
    with pytest.warns(UserWarning, match="ignoring unreadable dataset cache"):
        data = load_data(f"imagefolder:{root}", image_size=8, val_fraction=0.5)
    assert not (tmp_path / "ran").exists()
    assert torch.equal(data.train.x, first.train.x) and torch.equal(data.test.y, first.test.y)
    again = torch.load(cache, weights_only=True)  # rewritten as a good cache
    assert torch.equal(again["x_test"], first.test.x)
    assert again["classes"] == ["a", "b"]


def _bad_image(root: Path) -> str:
    write_image_folder(root, {"a": 3, "b": 3})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return str(root / "b" / "broken.png")


def _no_images(root: Path) -> str:
    write_image_folder(root, {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("no pictures here")
    return f"{root / 'b'} has no images"


def _one_class(root: Path) -> str:
    write_image_folder(root, {"only": 3})
    return "at least 2 class folders"


def _empty(root: Path) -> str:
    root.mkdir()
    return "has no class folders"


def _unknown_test_class(root: Path) -> str:
    write_image_folder(root / "train", {"a": 3, "b": 3})
    write_image_folder(root / "test", {"a": 1, "zebra": 1})
    return "training folder does not have"


def _tiny_class(root: Path) -> str:
    write_image_folder(root, {"a": 3, "b": 2})
    return "class 1 ('b') has 1 sample(s)"


@pytest.mark.parametrize(
    "make", [_bad_image, _no_images, _one_class, _empty, _unknown_test_class, _tiny_class]
)
def test_imagefolder_problems(tmp_path: Path, make) -> None:
    root = tmp_path / "folder"
    expect = make(root)
    with pytest.raises(DataError) as err:
        load_data(f"imagefolder:{root}", image_size=8)
    assert expect in str(err.value)


def test_imagefolder_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    assert str(tmp_path / "missing") in str(err.value)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="is not a folder"):
        task_for(f"imagefolder:{tmp_path / 'file.png'}")
    with pytest.raises(DataError, match="names no folder"):
        load_data("imagefolder:")


# --------------------------------------------------------------------------- arguments


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError) as err:
        load_data("imagenet")
    message = str(err.value)
    assert "'imagenet'" in message
    for name in DATASETS:
        assert name in message
    assert "imagefolder:PATH" in message
    with pytest.raises(DataError, match="unknown dataset"):
        task_for("svhn")


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_val_fraction(fashion_dir: Path, fraction: object) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        load_data("fashion_mnist", data_dir=fashion_dir, val_fraction=fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed(fashion_dir: Path, seed: object) -> None:
    with pytest.raises(DataError, match="seed"):
        load_data("fashion_mnist", data_dir=fashion_dir, seed=seed)  # type: ignore[arg-type]


def test_image_size_only_for_imagefolder(fashion_dir: Path) -> None:
    with pytest.raises(DataError, match="image_size applies to imagefolder"):
        load_data("fashion_mnist", data_dir=fashion_dir, image_size=32)
    with pytest.raises(DataError, match="image_size must be a positive integer"):
        task_for("cifar10", image_size=0)
    assert load_data("fashion_mnist", data_dir=fashion_dir, image_size=28).task.height == 28


def test_task_for_builtins_reads_nothing(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    assert task_for("fashion_mnist", data_dir=nowhere) == FASHION_MNIST
    assert task_for("mnist").classes == 10
    assert (task_for("cifar10").channels, task_for("cifar10").height) == (3, 32)
    assert task_for("cifar100").classes == 100
    assert (task_for("digits").height, task_for("digits").width) == (8, 8)
    assert not nowhere.exists()


def test_bad_device(fashion_dir: Path) -> None:
    with pytest.raises(DataError, match="device 'nonsense'"):
        load_data("fashion_mnist", data_dir=fashion_dir, device="nonsense")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_a_data_error(fashion_dir: Path) -> None:
    with pytest.raises(DataError, match="device 'cuda'"):
        load_data("fashion_mnist", data_dir=fashion_dir, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_everything_on_cuda(fashion_dir: Path) -> None:
    data = load_data("fashion_mnist", data_dir=fashion_dir, device="cuda")
    for split in (data.train, data.val, data.test, data.full_train()):
        assert split.x.device.type == "cuda" and split.y.device.type == "cuda"


def test_split_rejects_wrong_tensors() -> None:
    with pytest.raises(DataError, match="uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="int64"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(DataError, match=r"2 images but Split\.y has 3 labels"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_import_stays_light() -> None:
    code = (
        "import sys, nas.data; "
        "print(sorted(m for m in ('torchvision', 'sklearn', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
