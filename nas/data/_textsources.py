"""Where text datasets are and how their files read: raw texts and string labels.

Each ``locate_*`` function is an entry of the dataset table in :mod:`nas.data._load`; it
checks the name, finds the files (downloading a built-in when absent) and returns them
with their reader, so that :mod:`nas.data._text` can key its cache on the files before
reading them.

* ``csv:PATH`` — a header row, then one example per row, read from ``text_column`` and
  ``label_column``. The delimiter follows the extension (``.tsv``/``.tab``: tab, ``.csv``:
  comma); any other extension is sniffed from the header line (tab, comma, ``;`` or ``|``).
* ``jsonl:PATH`` — one JSON object per line, with the same two keys.
* ``textfolder:PATH`` — one sub-folder of ``.txt`` files per class (a file is one example);
  ``PATH/train`` and ``PATH/test`` are the splits when both exist (IMDB's
  ``aclImdb/{train,test}/{pos,neg}`` layout; a ``train/unsup`` folder of unlabelled
  reviews, as IMDB has, is skipped).
* ``ag_news`` — the AG News CSV files (``train.csv``/``test.csv``: class index 1-4, title,
  description; no header) under ``<root>/ag_news_csv``, downloaded when absent.
* ``imdb`` — the Large Movie Review Dataset under ``<root>/aclImdb``, downloaded and
  unpacked when absent. ``<root>`` is ``data_dir``, else ``$NAS_DATA_DIR``, else the user
  cache (``~/.cache/nas/data``), as for torchvision's datasets in :mod:`nas.data._images`.

Every file is read as strict UTF-8: a bad byte is an error naming its line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nas.data._common import DataError, data_root

CSV_PREFIX = "csv:"
JSONL_PREFIX = "jsonl:"
TEXTFOLDER_PREFIX = "textfolder:"

DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"

AG_NEWS_URLS = {
    # The copy of the original CSVs (Zhang et al., 2015) that Hugging Face's ag_news
    # script and many tutorials download; the original is behind a Google Drive link.
    "train.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
    "test.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
}
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # class index 1..4
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_CLASSES = ("neg", "pos")

_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Raw:
    """What a reader returns: texts and string labels of the training pool and test."""

    source: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str] | None = None
    test_labels: list[str] | None = None
    classes: tuple[str, ...] | None = None  # an official class order, else sorted labels


@dataclass(frozen=True)
class Source:
    """A located dataset: its name in messages, the files it reads, and its reader."""

    description: str
    files: tuple[Path, ...]
    read: Callable[[], Raw]


# What a table entry calls with (name, data_dir, text_column, label_column).
Locate = Callable[[str, str | Path | None, str, str], Source]


# --------------------------------------------------------------------------- locating


def locate_csv(
    name: str, data_dir: str | Path | None, text_column: str, label_column: str
) -> Source:
    del data_dir  # the name holds the path
    path = _file_of(name, CSV_PREFIX)
    return Source(str(path), (path,), lambda: _read_csv(path, text_column, label_column))


def locate_jsonl(
    name: str, data_dir: str | Path | None, text_column: str, label_column: str
) -> Source:
    del data_dir  # the name holds the path
    path = _file_of(name, JSONL_PREFIX)
    return Source(str(path), (path,), lambda: _read_jsonl(path, text_column, label_column))


def locate_textfolder(
    name: str, data_dir: str | Path | None, text_column: str, label_column: str
) -> Source:
    _no_columns(name, text_column, label_column)
    del data_dir  # the name holds the path
    root = _folder_of(name)
    scan = _scan_textfolder(root)
    files = tuple(p for p, _ in scan[1] + (scan[2] or []))
    return Source(str(root), files, lambda: _read_textfolder(root, scan))


def _no_columns(name: str, text_column: str, label_column: str) -> None:
    # Only csv and jsonl have columns; naming them for another source is a mistake to report.
    if (text_column, label_column) != (DEFAULT_TEXT_COLUMN, DEFAULT_LABEL_COLUMN):
        raise DataError(
            f"text_column/label_column apply to {CSV_PREFIX}PATH and {JSONL_PREFIX}PATH "
            f"datasets only; {name!r} has no columns"
        )


def _file_of(name: str, prefix: str) -> Path:
    raw = name[len(prefix) :]
    if not raw.strip():
        raise DataError(f"{name!r} names no file; use {prefix}PATH")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataError(f"{prefix[:-1]}: {path} does not exist")
    if not path.is_file():
        raise DataError(f"{prefix[:-1]}: {path} is not a file")
    return path


def _folder_of(name: str) -> Path:
    raw = name[len(TEXTFOLDER_PREFIX) :]
    if not raw.strip():
        raise DataError(f"{name!r} names no folder; use {TEXTFOLDER_PREFIX}PATH")
    root = Path(raw).expanduser()
    if not root.exists():
        raise DataError(f"textfolder: {root} does not exist")
    if not root.is_dir():
        raise DataError(f"textfolder: {root} is not a folder")
    return root


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """A whole file as text: strict UTF-8 (a BOM is dropped); errors name the line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
            f"{column}); save the file as UTF-8"
        ) from err


def _delimiter(path: Path, content: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    # Sniffed from the header line only: csv.Sniffer guesses from whole rows and is
    # easily misled by punctuation inside texts; column names rarely hold delimiters.
    header = content.split("\n", 1)[0]
    counts = {d: header.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, text_column: str, label_column: str) -> Raw:
    content = _read_text(path)
    if not content.strip():
        raise DataError(f"{path} is empty")
    delimiter = _delimiter(path, content)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    texts: list[str] = []
    labels: list[str] = []
    try:
        header = next((r for r in reader if any(f.strip() for f in r)), None)
        if header is None:
            raise DataError(f"{path} is empty (only delimiters)")
        columns = [c.strip() for c in header]
        missing = [c for c in (text_column, label_column) if c not in columns]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r}; columns present: "
                f"{', '.join(repr(c) for c in columns)} (delimiter {delimiter!r}; choose "
                f"with text_column / label_column, --text-column / --label-column)"
            )
        ti, li = columns.index(text_column), columns.index(label_column)
        for row in reader:
            if not any(f.strip() for f in row):
                continue  # a blank line
            if len(row) != len(columns):
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} fields, the header has "
                    f"{len(columns)} (an unquoted {delimiter!r} inside a text?)"
                )
            label = row[li].strip()
            if not label:
                raise DataError(f"{path}: line {reader.line_num} has an empty {label_column!r}")
            texts.append(row[ti])
            labels.append(label)
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: {err}") from err
    if not texts:
        raise DataError(f"{path} has a header but no rows")
    return Raw(str(path), texts, labels)


def _read_jsonl(path: Path, text_column: str, label_column: str) -> Raw:
    content = _read_text(path)
    if not content.strip():
        raise DataError(f"{path} is empty")
    texts: list[str] = []
    labels: list[str] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends unescaped.
    for number, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {number} is a {type(obj).__name__}, not an object")
        for key in (text_column, label_column):
            if key not in obj:
                present = ", ".join(repr(k) for k in obj) or "none"
                raise DataError(
                    f"{path}: line {number} has no key {key!r}; keys present: {present} "
                    f"(choose with text_column / label_column)"
                )
        text, label = obj[text_column], obj[label_column]
        if not isinstance(text, str):
            raise DataError(
                f"{path}: line {number}: {text_column!r} must be a string, got {text!r}"
            )
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(
                f"{path}: line {number}: {label_column!r} must be a string or an integer, "
                f"got {label!r}"
            )
        label = str(label).strip()
        if not label:
            raise DataError(f"{path}: line {number} has an empty {label_column!r}")
        texts.append(text)
        labels.append(label)
    return Raw(str(path), texts, labels)


_TextFiles = list[tuple[Path, str]]


def _class_files(folder: Path, skip: Sequence[str] = ()) -> _TextFiles:
    """``(file, class)`` for every ``.txt`` under each class sub-folder, sorted."""
    class_dirs = sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in skip
    )
    if not class_dirs:
        raise DataError(
            f"textfolder: {folder} has no class folders; expected one sub-folder of .txt "
            f"files per class, like {folder}/<class>/<text>.txt"
        )
    files: _TextFiles = []
    for cdir in class_dirs:
        found = sorted(
            p
            for p in cdir.rglob("*.txt")
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(cdir).parts)
        )
        if not found:
            raise DataError(f"textfolder: class folder {cdir} has no .txt files")
        files.extend((p, cdir.name) for p in found)
    return files


def _scan_textfolder(root: Path) -> tuple[Path, _TextFiles, _TextFiles | None]:
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        # IMDB keeps 50,000 unlabelled reviews in train/unsup: not a class.
        return root, _class_files(train_dir, skip=("unsup",)), _class_files(test_dir)
    return root, _class_files(root), None


def _read_textfolder(
    root: Path,
    scan: tuple[Path, _TextFiles, _TextFiles | None],
    clean: Callable[[str], str] = lambda s: s,
    classes: tuple[str, ...] | None = None,
) -> Raw:
    _, train_files, test_files = scan

    def read(files: _TextFiles) -> tuple[list[str], list[str]]:
        return [clean(_read_text(p)) for p, _ in files], [c for _, c in files]

    train_texts, train_labels = read(train_files)
    if test_files is None:
        return Raw(str(root), train_texts, train_labels, classes=classes)
    test_texts, test_labels = read(test_files)
    return Raw(str(root), train_texts, train_labels, test_texts, test_labels, classes)


# --------------------------------------------------------------------------- built-ins


def _download(url: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` (written beside it, then renamed: never half a file)."""
    import urllib.request  # here: it pulls in http and ssl, which only a download needs

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        with (
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            tmp.open("wb") as out,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(name: str, url: str, target: Path, hint: str) -> None:
    try:
        _download(url, target)
    except Exception as err:  # network, disk, HTTP: all end the same way for the user
        raise DataError(
            f"{name}: files not found and the download of {url} failed "
            f"({type(err).__name__}: {err}); {hint}, or pass --data-dir / set NAS_DATA_DIR "
            f"to where they are"
        ) from err


def locate_ag_news(
    name: str, data_dir: str | Path | None, text_column: str, label_column: str
) -> Source:
    _no_columns(name, text_column, label_column)
    root = data_root(data_dir)
    folders = [root / "ag_news_csv", root]
    names = tuple(AG_NEWS_URLS)
    found = next((f for f in folders if all((f / n).is_file() for n in names)), None)
    if found is None:
        folder = folders[0]
        for file_name, url in AG_NEWS_URLS.items():
            if not (folder / file_name).is_file():
                hint = f"put train.csv and test.csv in {folder}"
                _fetch("ag_news", url, folder / file_name, hint)
        found = folder
    train, test = found / "train.csv", found / "test.csv"
    return Source(f"ag_news ({found})", (train, test), lambda: _read_ag_news(train, test))


def _read_ag_news_file(path: Path) -> tuple[list[str], list[str]]:
    content = _read_text(path)
    if not content.strip():
        raise DataError(f"{path} is empty")
    reader = csv.reader(io.StringIO(content, newline=""))
    texts: list[str] = []
    labels: list[str] = []
    try:
        for row in reader:
            if not any(f.strip() for f in row):
                continue
            if len(row) != 3:
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} fields; AG News rows are "
                    f"class index (1-4), title, description"
                )
            index = row[0].strip()
            if index not in ("1", "2", "3", "4"):
                raise DataError(
                    f"{path}: line {reader.line_num} has class index {index!r}, expected 1-4"
                )
            # The files mark line breaks inside a description with a backslash.
            texts.append(f"{row[1]} {row[2]}".replace("\\", " "))
            labels.append(AG_NEWS_CLASSES[int(index) - 1])
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: {err}") from err
    return texts, labels


def _read_ag_news(train: Path, test: Path) -> Raw:
    train_texts, train_labels = _read_ag_news_file(train)
    test_texts, test_labels = _read_ag_news_file(test)
    source = f"ag_news ({train.parent})"
    return Raw(source, train_texts, train_labels, test_texts, test_labels, AG_NEWS_CLASSES)


def _imdb_complete(folder: Path) -> bool:
    return all(
        (folder / split / c).is_dir() and any((folder / split / c).glob("*.txt"))
        for split in ("train", "test")
        for c in IMDB_CLASSES
    )


def _unpack_imdb(archive: Path, root: Path) -> None:
    """Extract the labelled reviews (not the 50,000 unlabelled ones) under ``root``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith("aclImdb/") and "/unsup/" not in m.name
            ]
            # "data": no absolute paths, links out of root, devices or setuid bits.
            tar.extractall(root, members=members, filter="data")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise DataError(
            f"imdb: cannot unpack {archive} ({err}); delete it to download again"
        ) from err


def locate_imdb(
    name: str, data_dir: str | Path | None, text_column: str, label_column: str
) -> Source:
    _no_columns(name, text_column, label_column)
    root = data_root(data_dir)
    folder = root / "aclImdb"
    if not _imdb_complete(folder):
        archive = root / "aclImdb_v1.tar.gz"
        if not archive.is_file():
            _fetch("imdb", IMDB_URL, archive, f"unpack aclImdb_v1.tar.gz into {root}")
        _unpack_imdb(archive, root)
        if not _imdb_complete(folder):
            raise DataError(
                f"imdb: {folder} lacks train/ and test/ folders of pos/ and neg/ reviews "
                f"after unpacking {archive}"
            )
    scan = (
        folder,
        _class_subset(folder / "train"),
        _class_subset(folder / "test"),
    )
    files = tuple(p for p, _ in scan[1] + scan[2])
    return Source(
        f"imdb ({folder})",
        files,
        lambda: _read_textfolder(folder, scan, clean=_strip_html_breaks, classes=IMDB_CLASSES),
    )


def _class_subset(folder: Path) -> _TextFiles:
    files: _TextFiles = []
    for c in IMDB_CLASSES:
        files.extend((p, c) for p in sorted((folder / c).glob("*.txt")))
    return files


def _strip_html_breaks(text: str) -> str:
    # IMDB reviews separate paragraphs with <br /> tags; as tokens they would be noise.
    return re.sub(r"<br\s*/?>", " ", text)
