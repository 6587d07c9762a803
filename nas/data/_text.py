"""Text classification datasets as token-id tensors: read, tokenise, build a vocabulary, pad.

:func:`nas.data.load_data` and :func:`nas.data.task_for` hand the text names here:

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
  cache (``~/.cache/nas/data``), as for torchvision's datasets in :mod:`nas.data`.

Pipeline, in this order so that nothing of validation or test leaks into training:

1. read every example (UTF-8, strict: a bad byte is an error naming its line);
2. classes: the distinct labels, sorted (numerically when every label is an integer);
   ``ag_news`` keeps its official order;
3. a dataset without a test split gets a stratified 20 % test split with the fixed seed of
   :mod:`nas.data`, so the test set never moves with the search seed;
4. the validation split is carved from the rest, stratified, with the search seed;
5. the vocabulary is built from the *training* split only: tokens seen at least
   ``min_freq`` times, the most frequent first, ``max_vocab`` ids in all. Id 0 pads, id 1
   stands for every out-of-vocabulary token;
6. the sequence length is the 95th percentile of training lengths, clamped to 8..512,
   unless given; longer texts keep their first tokens, shorter ones are padded at the end.

Tokenisers (no dependencies): ``words`` lower-cases and splits with ``\\w+|[^\\w\\s]``
(runs of word characters; each other non-space character alone); ``bytes`` maps each
UTF-8 byte ``b`` to id ``b + 2`` (a fixed vocabulary of 258, no OOV).

Token ids are ``int64``: it is PyTorch's index type (``nn.Embedding``, ``gather``, ONNX
``Gather`` inputs, and what ``torch.tensor`` makes of Python ints), so a model and its
exported graph take the same dtype as a user's own tensors; the memory cost is small
(AG News: 120,000 × 64 ids, 61 MB).

Reading and tokenising happen once per source: the tokenised corpus is cached in memory
(keyed by the files' sizes and modification times), and only the cheap per-seed steps
(splits, vocabulary, encoding) run again, so ``task_for`` followed by ``load_data`` does
not tokenise twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nas.data._common import TEST_FRACTION, TEST_SPLIT_SEED, DataError, data_root, stratified_split
from nas.model import Task

Tokenizer = Literal["words", "bytes"]

CSV_PREFIX = "csv:"
JSONL_PREFIX = "jsonl:"
TEXTFOLDER_PREFIX = "textfolder:"
TEXT_PREFIXES: tuple[str, ...] = (CSV_PREFIX, JSONL_PREFIX, TEXTFOLDER_PREFIX)
TEXT_DATASETS: tuple[str, ...] = ("ag_news", "imdb")

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
# The regex cannot produce these two (``<`` is a token of its own), so no word collides.
SPECIALS = (PAD_TOKEN, OOV_TOKEN)
WORD_PATTERN = r"\w+|[^\w\s]"
_WORD_RE = re.compile(WORD_PATTERN)
BYTE_VOCAB_SIZE = 256 + len(SPECIALS)

DEFAULT_MAX_VOCAB = 20_000
DEFAULT_MIN_FREQ = 2
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"
LENGTH_PERCENTILE = 95
# Short enough sequences still leave pooling and convolution layers some positions; long
# ones are capped because attention scores grow with the square of the length.
MIN_LENGTH = 8
MAX_LENGTH = 512

AG_NEWS_URLS = {
    # The copy of the original CSVs (Zhang et al., 2015) that Hugging Face's ag_news
    # script and many tutorials download; the original is behind a Google Drive link.
    "train.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
    "test.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
}
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # class index 1..4
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_CLASSES = ("neg", "pos")

_VOCAB_FORMAT = "nas.vocabulary"
_VOCAB_VERSION = 1
_CORPUS_CACHE_SIZE = 2
_DOWNLOAD_TIMEOUT_S = 60


# --------------------------------------------------------------------------- tokenising


def tokenize(text: str, tokenizer: Tokenizer = "words") -> list[str]:
    """The tokens of ``text``: lower-cased words and punctuation, or its UTF-8 bytes.

    Byte tokens are returned as one-character strings of the byte's latin-1 character so
    that both tokenisers return strings; :meth:`Vocabulary.ids` maps bytes directly.
    """
    if tokenizer == "words":
        return _WORD_RE.findall(text.lower())
    if tokenizer == "bytes":
        return list(text.encode("utf-8").decode("latin-1"))
    raise DataError(f"tokenizer must be 'words' or 'bytes', got {tokenizer!r}")


@dataclass(frozen=True)
class Vocabulary:
    """Token strings ↔ ids, and the sequence length, of one trained text model.

    ``words``: ``tokens[i]`` is the token of id ``i``; ``tokens[0]`` is ``<pad>`` and
    ``tokens[1]`` is ``<unk>``. ``bytes``: ``tokens`` is empty and byte ``b`` is id ``b + 2``.
    Saved as JSON beside an exported model (:meth:`save`), it encodes new texts exactly as
    the training data was encoded (:meth:`encode`).

    Attributes:
        tokenizer: ``words`` or ``bytes``.
        tokens: id → token (``words`` only).
        length: tokens per encoded example; longer texts keep their first ``length``
            tokens, shorter ones are padded with id 0 at the end.
    """

    tokenizer: Tokenizer
    tokens: tuple[str, ...]
    length: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.tokenizer not in ("words", "bytes"):
            raise DataError(
                f"vocabulary tokenizer must be 'words' or 'bytes', got {self.tokenizer!r}"
            )
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise DataError(f"vocabulary length must be a positive integer, got {self.length!r}")
        if not isinstance(self.tokens, tuple) or not all(isinstance(t, str) for t in self.tokens):
            raise DataError("vocabulary tokens must be a tuple of strings")
        if self.tokenizer == "bytes":
            if self.tokens:
                raise DataError("a bytes vocabulary has no token list (byte b is id b + 2)")
        else:
            if self.tokens[:2] != SPECIALS:
                raise DataError(
                    f"vocabulary tokens must start with {SPECIALS!r} (ids 0 and 1), "
                    f"got {self.tokens[:2]!r}"
                )
            if len(self.tokens) < 3:
                raise DataError("a words vocabulary needs at least one token besides <pad>/<unk>")
        index = {t: i for i, t in enumerate(self.tokens)}
        if len(index) != len(self.tokens):
            raise DataError("vocabulary tokens repeat a token")
        object.__setattr__(self, "_index", index)

    @property
    def size(self) -> int:
        """Number of ids (``Task.vocab_size``), PAD and OOV included."""
        return BYTE_VOCAB_SIZE if self.tokenizer == "bytes" else len(self.tokens)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._index and token not in SPECIALS

    def ids(self, text: str) -> list[int]:
        """The ids of every token of ``text``, neither truncated nor padded."""
        if self.tokenizer == "bytes":
            return [b + len(SPECIALS) for b in text.encode("utf-8")]
        get = self._index.get
        return [get(t, OOV_ID) for t in _WORD_RE.findall(text.lower())]

    def encode(self, texts: str | Sequence[str], length: int | None = None) -> torch.Tensor:
        """``int64`` ids of shape ``(len(texts), length)`` (``(1, length)`` for one string).

        ``length`` defaults to the training length, which is what the model was trained on.
        """
        n = self.length if length is None else length
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"length must be a positive integer, got {length!r}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros((len(batch), n), dtype=torch.int64)
        for row, text in enumerate(batch):
            ids = self.ids(text)[:n]
            if ids:
                out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``pattern`` and the ids are spelled out for non-Python readers."""
        return {
            "format": _VOCAB_FORMAT,
            "version": _VOCAB_VERSION,
            "tokenizer": self.tokenizer,
            "lowercase": self.tokenizer == "words",
            "pattern": WORD_PATTERN if self.tokenizer == "words" else None,
            "byte_offset": len(SPECIALS) if self.tokenizer == "bytes" else None,
            "length": self.length,
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "size": self.size,
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Vocabulary:
        """Inverse of :meth:`to_dict`; rejects other formats, versions and tokenisers."""
        if not isinstance(data, dict):
            raise DataError(f"a vocabulary is a JSON object, got {type(data).__name__}")
        if data.get("format") != _VOCAB_FORMAT or data.get("version") != _VOCAB_VERSION:
            raise DataError(
                f"not a {_VOCAB_FORMAT} version {_VOCAB_VERSION} file "
                f"(format {data.get('format')!r}, version {data.get('version')!r})"
            )
        tokenizer = data.get("tokenizer")
        if tokenizer == "words" and data.get("pattern") != WORD_PATTERN:
            # Tokenising differently from training would silently change every id.
            raise DataError(
                f"vocabulary pattern {data.get('pattern')!r} is not this version's {WORD_PATTERN!r}"
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise DataError("vocabulary 'tokens' must be a list")
        if tokenizer not in ("words", "bytes"):
            raise DataError(f"vocabulary tokenizer must be 'words' or 'bytes', got {tokenizer!r}")
        length = data.get("length")
        if isinstance(length, bool) or not isinstance(length, int):
            raise DataError(f"vocabulary 'length' must be an integer, got {length!r}")
        vocab = cls(tokenizer, tuple(tokens), length)  # validates the rest
        if data.get("size") != vocab.size:
            raise DataError(
                f"vocabulary 'size' is {data.get('size')!r}, its tokens give {vocab.size}"
            )
        return vocab

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"vocabulary is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the JSON to ``path`` (UTF-8)."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read vocabulary {path}: {err}") from err
        try:
            return cls.from_json(text)
        except DataError as err:
            raise DataError(f"{path}: {err}") from err


def build_vocabulary(
    texts: Iterable[str],
    *,
    tokenizer: Tokenizer = "words",
    max_vocab: int = DEFAULT_MAX_VOCAB,
    min_freq: int = DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> Vocabulary:
    """A vocabulary of ``texts`` by the rules the loaders use (see the module docstring)."""
    _check_options(tokenizer, max_vocab, min_freq, length)
    corpus = _tokenise([str(t) for t in texts], tokenizer)
    everything = np.arange(len(corpus.lengths))
    return _vocabulary(corpus, everything, tokenizer, max_vocab, min_freq, length, "texts")[0]


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class TextSplits:
    """The raw texts of each split, in the order of the rows of the id tensors."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class TextPools:
    """A text dataset split and encoded on the CPU: what :func:`nas.data.load_data` moves."""

    task: Task
    vocab: Vocabulary
    texts: TextSplits
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def is_text_name(name: str) -> bool:
    """Whether ``name`` names a text dataset (a text prefix or a text built-in)."""
    return name in TEXT_DATASETS or name.startswith(TEXT_PREFIXES)


def text_task(
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    tokenizer: Tokenizer = "words",
    max_vocab: int = DEFAULT_MAX_VOCAB,
    min_freq: int = DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> Task:
    """The :class:`Task` that :func:`load_text` gives for the same arguments, without encoding.

    The vocabulary (hence ``vocab_size``) comes from the training split, which depends on
    ``seed`` and ``val_fraction``: pass the ones the data will be loaded with.
    """
    corpus, _, vocab, _ = _prepare(
        name,
        data_dir,
        seed,
        val_fraction,
        text_column,
        label_column,
        tokenizer,
        max_vocab,
        min_freq,
        length,
    )
    return _task(name, corpus, vocab)


def load_text(
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    tokenizer: Tokenizer = "words",
    max_vocab: int = DEFAULT_MAX_VOCAB,
    min_freq: int = DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> TextPools:
    """Read, split, build the vocabulary and encode a text dataset, on the CPU.

    Args:
        name: ``csv:PATH``, ``jsonl:PATH``, ``textfolder:PATH``, ``ag_news`` or ``imdb``.
        data_dir: root of ``ag_news``/``imdb`` (see the module docstring); unused otherwise.
        seed: picks the validation examples; the test split never depends on it.
        val_fraction: share of each class's training examples carved off as validation.
        text_column, label_column: the columns (csv) or keys (jsonl) to read.
        tokenizer: ``words`` or ``bytes``.
        max_vocab: most ids in the vocabulary, PAD and OOV included (``words`` only).
        min_freq: fewest occurrences in the training split for a token to get an id.
        length: tokens per example; default the 95th percentile of training lengths,
            clamped to ``MIN_LENGTH..MAX_LENGTH``.

    Raises:
        DataError: naming the file, line or value at fault.
    """
    corpus, (train_idx, val_idx, test_idx), vocab, remap = _prepare(
        name,
        data_dir,
        seed,
        val_fraction,
        text_column,
        label_column,
        tokenizer,
        max_vocab,
        min_freq,
        length,
    )
    labels = torch.from_numpy(corpus.labels)

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        x = _encode(corpus, remap, idx, vocab.length)
        return x, labels[torch.from_numpy(idx)].contiguous(), tuple(corpus.texts[i] for i in idx)

    x_train, y_train, t_train = part(train_idx)
    x_val, y_val, t_val = part(val_idx)
    x_test, y_test, t_test = part(test_idx)
    return TextPools(
        task=_task(name, corpus, vocab),
        vocab=vocab,
        texts=TextSplits(t_train, t_val, t_test),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
    )


def clear_cache() -> None:
    """Forget every cached corpus (tests; or to free memory after loading)."""
    _CORPUS_CACHE.clear()


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class _Tokens:
    """Every text as ids into a corpus-wide token table (seed-independent).

    ``ids[offsets[i]:offsets[i + 1]]`` are text ``i``'s tokens; ``table[g]`` is the string
    of token ``g`` (``words``; for ``bytes`` the id is the byte and the table is empty).
    Counting and remapping these arrays per seed is vectorised, and far smaller than
    lists of token strings.
    """

    table: tuple[str, ...]
    ids: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class _Corpus:
    """A read, labelled and tokenised source, with its fixed test split."""

    source: str
    texts: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    pool: np.ndarray  # indices of the training pool (train + val)
    test: np.ndarray  # indices of the test split
    tokens: _Tokens

    @property
    def lengths(self) -> np.ndarray:
        return self.tokens.lengths


@dataclass(frozen=True)
class _Raw:
    """What a reader returns: texts and string labels of the training pool and test."""

    source: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str] | None = None
    test_labels: list[str] | None = None
    classes: tuple[str, ...] | None = None  # an official class order, else sorted labels


@dataclass(frozen=True)
class _Source:
    """A located dataset: its name in messages, the files it reads, and its reader."""

    description: str
    files: tuple[Path, ...]
    read: Callable[[], _Raw]


_CORPUS_CACHE: OrderedDict[tuple[Any, ...], _Corpus] = OrderedDict()


def _prepare(
    name: str,
    data_dir: str | Path | None,
    seed: int,
    val_fraction: float,
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer,
    max_vocab: int,
    min_freq: int,
    length: int | None,
) -> tuple[_Corpus, tuple[np.ndarray, np.ndarray, np.ndarray], Vocabulary, np.ndarray]:
    """The corpus (cached), its train / val / test indices for ``seed``, and the
    vocabulary of that training split with its corpus-id → vocabulary-id map."""
    _check_options(tokenizer, max_vocab, min_freq, length)
    for what, value in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(value, str) or not value:
            raise DataError(f"{what} must be a non-empty string, got {value!r}")
    if text_column == label_column:
        raise DataError(f"text_column and label_column are both {text_column!r}")
    corpus = _corpus(name, data_dir, text_column, label_column, tokenizer)
    keep, carve = stratified_split(
        corpus.labels[corpus.pool],
        len(corpus.classes),
        val_fraction,
        seed,
        part="validation",
        pool=f"training split of {corpus.source}",
        class_names=corpus.classes,
    )
    train_idx = corpus.pool[keep]
    vocab, remap = _vocabulary(
        corpus, train_idx, tokenizer, max_vocab, min_freq, length, corpus.source
    )
    return corpus, (train_idx, corpus.pool[carve], corpus.test), vocab, remap


def _check_options(tokenizer: str, max_vocab: int, min_freq: int, length: int | None) -> None:
    if tokenizer not in ("words", "bytes"):
        raise DataError(f"tokenizer must be 'words' or 'bytes', got {tokenizer!r}")

    def positive(value: object, minimum: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and value >= minimum

    if not positive(max_vocab, len(SPECIALS) + 1):
        raise DataError(
            f"max_vocab must be an integer >= 3 (PAD, OOV and a token), got {max_vocab!r}"
        )
    if not positive(min_freq, 1):
        raise DataError(f"min_freq must be an integer >= 1, got {min_freq!r}")
    if length is not None and not positive(length, 1):
        raise DataError(f"length must be a positive integer or None, got {length!r}")


def _corpus(
    name: str,
    data_dir: str | Path | None,
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer,
) -> _Corpus:
    source = _locate(name, data_dir, text_column, label_column)
    stamps = []
    for path in source.files:
        try:
            st = path.stat()
        except OSError as err:
            raise DataError(f"cannot read {path}: {err}") from err
        stamps.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    key = (name, tuple(stamps), text_column, label_column, tokenizer)
    cached = _CORPUS_CACHE.get(key)
    if cached is not None:
        _CORPUS_CACHE.move_to_end(key)
        return cached
    corpus = _build_corpus(source.read(), tokenizer)
    _CORPUS_CACHE[key] = corpus
    while len(_CORPUS_CACHE) > _CORPUS_CACHE_SIZE:
        _CORPUS_CACHE.popitem(last=False)
    return corpus


def _class_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Distinct labels, sorted; numerically when all are integers (so "10" follows "9")."""
    distinct = set(labels)
    if distinct and all(re.fullmatch(r"[+-]?\d+", s) for s in distinct):
        return tuple(sorted(distinct, key=lambda s: (int(s), s)))
    return tuple(sorted(distinct))


def _build_corpus(raw: _Raw, tokenizer: Tokenizer) -> _Corpus:
    texts = raw.train_texts + (raw.test_texts or [])
    if not texts:
        raise DataError(f"{raw.source} has no examples")
    if all(not t.strip() for t in texts):
        raise DataError(f"{raw.source}: all {len(texts)} texts are empty")
    classes = raw.classes or _class_order(raw.train_labels)
    if len(classes) < 2:
        raise DataError(
            f"{raw.source}: every example has label {classes[0]!r}; classification needs "
            f"at least 2 distinct labels"
        )
    index = {c: i for i, c in enumerate(classes)}
    for part, labels in (("training", raw.train_labels), ("test", raw.test_labels or [])):
        for label in labels:
            if label not in index:
                where = "the test split" if part == "test" else "the data"
                raise DataError(
                    f"{raw.source}: label {label!r} in {where} is not one of the training "
                    f"labels ({', '.join(classes)})"
                )
    y = np.array([index[s] for s in raw.train_labels + (raw.test_labels or [])], dtype=np.int64)
    n_pool = len(raw.train_texts)
    carve_test = raw.test_texts is None
    # Checked here with the label's name (rather than by the split) so that the message
    # says what the user can fix: which label, how many examples, how many it needs.
    need = 3 if carve_test else 2
    counts = np.bincount(y[:n_pool], minlength=len(classes))
    for c, count in enumerate(counts):
        if count < need:
            sides = "training, validation and test" if carve_test else "training and validation"
            raise DataError(
                f"{raw.source}: label {classes[c]!r} has {count} example(s); every label "
                f"needs at least {need} (one each for {sides})"
            )
    if carve_test:
        keep, test = stratified_split(
            y,
            len(classes),
            TEST_FRACTION,
            TEST_SPLIT_SEED,
            part="test",
            pool=raw.source,
            class_names=classes,
        )
        pool = keep
    else:
        pool = np.arange(n_pool)
        test = np.arange(n_pool, len(texts))
    return _Corpus(
        source=raw.source,
        texts=tuple(texts),
        labels=y,
        classes=tuple(classes),
        pool=pool,
        test=test,
        tokens=_tokenise(texts, tokenizer),
    )


def _tokenise(texts: Sequence[str], tokenizer: Tokenizer) -> _Tokens:
    lengths = np.zeros(len(texts) + 1, dtype=np.int64)
    if tokenizer == "bytes":
        chunks = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
        lengths[1:] = [len(c) for c in chunks]
        ids = np.concatenate(chunks).astype(np.int32) if chunks else np.zeros(0, np.int32)
        return _Tokens((), ids, np.cumsum(lengths))
    table: dict[str, int] = {}
    flat: list[int] = []
    for i, text in enumerate(texts):
        words = _WORD_RE.findall(text.lower())
        lengths[i + 1] = len(words)
        for w in words:
            g = table.get(w)
            if g is None:
                g = table[w] = len(table)
            flat.append(g)
    return _Tokens(tuple(table), np.array(flat, dtype=np.int32), np.cumsum(lengths))


def _vocabulary(
    corpus: _Corpus | _Tokens,
    train_idx: np.ndarray,
    tokenizer: Tokenizer,
    max_vocab: int,
    min_freq: int,
    length: int | None,
    source: str,
) -> tuple[Vocabulary, np.ndarray]:
    """The vocabulary of the texts ``train_idx`` and the corpus-id → vocabulary-id map."""
    tokens = corpus.tokens if isinstance(corpus, _Corpus) else corpus
    lengths = tokens.lengths[train_idx]
    if length is None:
        # "higher": an actual training length, so at least 95 % of texts fit untruncated.
        typical = 0
        if len(lengths):
            typical = int(np.percentile(lengths, LENGTH_PERCENTILE, method="higher"))
        length = min(max(typical, MIN_LENGTH), MAX_LENGTH)
    if tokenizer == "bytes":
        remap = np.arange(256, dtype=np.int64) + len(SPECIALS)
        return Vocabulary("bytes", (), length), remap
    in_train = np.zeros(len(tokens.lengths), dtype=bool)
    in_train[train_idx] = True
    owner = np.repeat(in_train, tokens.lengths)
    counts = np.bincount(tokens.ids[owner], minlength=len(tokens.table))
    candidates = np.flatnonzero(counts >= min_freq)
    if len(candidates) == 0:
        raise DataError(
            f"{source}: no token occurs {min_freq} time(s) in the {len(train_idx)} training "
            f"texts, so the vocabulary would be empty; lower min_freq or add data"
        )
    # Most frequent first; ties by the token itself, so the order never depends on the
    # order of the file.
    table = tokens.table
    chosen = sorted(candidates.tolist(), key=lambda g: (-int(counts[g]), table[g]))
    chosen = chosen[: max_vocab - len(SPECIALS)]
    remap = np.full(len(table), OOV_ID, dtype=np.int64)
    remap[np.array(chosen, dtype=np.int64)] = np.arange(len(chosen)) + len(SPECIALS)
    vocab = Vocabulary("words", SPECIALS + tuple(table[g] for g in chosen), length)
    return vocab, remap


def _encode(corpus: _Corpus, remap: np.ndarray, idx: np.ndarray, length: int) -> torch.Tensor:
    """``(len(idx), length)`` int64 ids: first ``length`` tokens, PAD after the end."""
    tokens = corpus.tokens
    starts = tokens.offsets[idx]
    kept = np.minimum(tokens.lengths[idx], length)
    positions = np.arange(length)
    valid = positions[None, :] < kept[:, None]
    out = np.zeros((len(idx), length), dtype=np.int64)
    out[valid] = remap[tokens.ids[(starts[:, None] + positions[None, :])[valid]]]
    return torch.from_numpy(out)


def _task(name: str, corpus: _Corpus, vocab: Vocabulary) -> Task:
    return Task(
        name,
        "text",
        channels=1,
        height=1,
        width=1,
        classes=len(corpus.classes),
        length=vocab.length,
        vocab_size=vocab.size,
        class_names=corpus.classes,
    )


# --------------------------------------------------------------------------- locating


def _locate(name: str, data_dir: str | Path | None, text_column: str, label_column: str) -> _Source:
    """Find a dataset's files (downloading a built-in when absent) and pick its reader."""
    tabular = name.startswith((CSV_PREFIX, JSONL_PREFIX))
    if not tabular and (text_column, label_column) != (DEFAULT_TEXT_COLUMN, DEFAULT_LABEL_COLUMN):
        raise DataError(
            f"text_column/label_column apply to {CSV_PREFIX}PATH and {JSONL_PREFIX}PATH "
            f"datasets only; {name!r} has no columns"
        )
    if name.startswith(CSV_PREFIX):
        path = _file_of(name, CSV_PREFIX)
        return _Source(str(path), (path,), lambda: _read_csv(path, text_column, label_column))
    if name.startswith(JSONL_PREFIX):
        path = _file_of(name, JSONL_PREFIX)
        return _Source(str(path), (path,), lambda: _read_jsonl(path, text_column, label_column))
    if name.startswith(TEXTFOLDER_PREFIX):
        root = _folder_of(name)
        scan = _scan_textfolder(root)
        files = tuple(p for p, _ in scan[1] + (scan[2] or []))
        return _Source(str(root), files, lambda: _read_textfolder(root, scan))
    if name == "ag_news":
        return _locate_ag_news(data_dir)
    if name == "imdb":
        return _locate_imdb(data_dir)
    raise DataError(f"unknown text dataset {name!r}")  # callers check is_text_name first


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


def _read_csv(path: Path, text_column: str, label_column: str) -> _Raw:
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
    return _Raw(str(path), texts, labels)


def _read_jsonl(path: Path, text_column: str, label_column: str) -> _Raw:
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
    return _Raw(str(path), texts, labels)


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
) -> _Raw:
    _, train_files, test_files = scan

    def read(files: _TextFiles) -> tuple[list[str], list[str]]:
        return [clean(_read_text(p)) for p, _ in files], [c for _, c in files]

    train_texts, train_labels = read(train_files)
    if test_files is None:
        return _Raw(str(root), train_texts, train_labels, classes=classes)
    test_texts, test_labels = read(test_files)
    return _Raw(str(root), train_texts, train_labels, test_texts, test_labels, classes)


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


def _locate_ag_news(data_dir: str | Path | None) -> _Source:
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
    return _Source(f"ag_news ({found})", (train, test), lambda: _read_ag_news(train, test))


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


def _read_ag_news(train: Path, test: Path) -> _Raw:
    train_texts, train_labels = _read_ag_news_file(train)
    test_texts, test_labels = _read_ag_news_file(test)
    source = f"ag_news ({train.parent})"
    return _Raw(source, train_texts, train_labels, test_texts, test_labels, AG_NEWS_CLASSES)


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


def _locate_imdb(data_dir: str | Path | None) -> _Source:
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
    return _Source(
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
