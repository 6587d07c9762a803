"""Text classification datasets as token-id tensors: read once, split, build a vocabulary, pad.

:func:`nas.data._load.load_data` and :func:`nas.data._load.task_for` hand the text names
here together with their entry of the dataset table, a ``locate`` function of
:mod:`nas.data._textsources` that finds the files and reads them.

Pipeline, in this order so that nothing of validation or test leaks into training:

1. read every example (UTF-8, strict: a bad byte is an error naming its line);
2. classes: the distinct labels, sorted (numerically when every label is an integer);
   ``ag_news`` keeps its official order;
3. a dataset without a test split gets a stratified 20 % test split with the fixed seed of
   :mod:`nas.data._common`, so the test set never moves with the search seed;
4. the validation split is carved from the rest, stratified, with the search seed;
5. the vocabulary (:mod:`nas.data._vocab`) is built from the *training* split only: tokens
   seen at least ``min_freq`` times, the most frequent first, ``max_vocab`` ids in all.
   Id 0 pads, id 1 stands for every out-of-vocabulary word; ``ngrams`` drops an
   out-of-vocabulary bigram or character n-gram instead;
6. the sequence length is the 95th percentile of the training texts' encoded lengths (in
   the tokenizer's tokens, after ``ngrams`` drops its unknown n-grams), clamped to 8..2048,
   unless given; longer texts keep their first tokens, shorter ones are padded at the end.

Reading and tokenising happen once per source: the tokenised corpus is cached in memory
(keyed by the files' sizes and modification times), and only the cheap per-seed steps
(splits, vocabulary, encoding) run again, so ``task_for`` followed by ``load_data`` does
not tokenise twice.
"""

from __future__ import annotations

import re
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data._common import TEST_FRACTION, TEST_SPLIT_SEED, DataError, stratified_split
from nas.data._textsources import DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN, Locate, Raw
from nas.data._vocab import (
    OOV_ID,
    SPECIALS,
    WORD_RE,
    Tokenizer,
    Vocabulary,
    check_tokenizer,
    word_extras,
)
from nas.model import Task

DEFAULT_MAX_VOCAB = 20_000
# ``ngrams`` emits each word, its bigram and its character 3-5-grams: far more distinct
# tokens than words. On the demo corpus (bench/out/debian_descriptions.csv, 21,905
# training texts at seed 0) 63,976 of them are seen twice or more (words: 6,632), 43,603
# three times or more. A bag of embeddings (width 256, the search's recipe, 2 epochs,
# validation accuracy over seeds 0-2, one thread of a loaded 2-core machine) scored
# 0.8446 on words, 0.8549 with 20,000 n-gram ids (those seen 8+ times), 0.8586 with
# 50,000 (every one seen 3+ times and some seen twice) and 0.8593 with all 63,976: the
# last 14,000 gained nothing, while the embedding's dense AdamW update costs every step
# in proportion to ids x width (2 epochs took 22-38 s, 57-113 s and 119-168 s). 50,000
# keeps the gain and caps that cost on larger corpora.
DEFAULT_MAX_VOCAB_NGRAMS = 50_000
DEFAULT_MIN_FREQ = 2
LENGTH_PERCENTILE = 95
# Short enough sequences still leave pooling and convolution layers some positions. The
# cap bounds a step's cost (attention's square is bounded by the space's memory budget,
# which pools the keys of long sequences). At 512 it cut 36 % of the docstrings corpus's
# texts under ``ngrams`` (95th percentile 1,180 tokens at seed 0, bench/docstring_corpus.py); at
# 1,200 a bag of embeddings (width 64, 8 epochs, seeds 0-2) went from 0.792 to 0.814
# validation and 0.812 to 0.817 test accuracy.
MIN_LENGTH = 8
MAX_LENGTH = 2048

_CORPUS_CACHE_SIZE = 2


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


def text_task(
    name: str,
    locate: Locate,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    tokenizer: Tokenizer = "words",
    max_vocab: int | None = None,
    min_freq: int = DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> Task:
    """The :class:`Task` that :func:`load_text` gives for the same arguments, without encoding.

    The vocabulary (hence ``vocab_size``) comes from the training split, which depends on
    ``seed`` and ``val_fraction``: pass the ones the data will be loaded with.
    """
    corpus, _, vocab, _ = _prepare(
        name,
        locate,
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
    locate: Locate,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    tokenizer: Tokenizer = "words",
    max_vocab: int | None = None,
    min_freq: int = DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> TextPools:
    """Read, split, build the vocabulary and encode a text dataset, on the CPU.

    Args:
        name: ``csv:PATH``, ``jsonl:PATH``, ``textfolder:PATH``, ``ag_news`` or ``imdb``.
        locate: the dataset table's entry for ``name``: finds its files and their reader.
        data_dir: root of ``ag_news``/``imdb`` (see :mod:`nas.data._textsources`); unused
            otherwise.
        seed: picks the validation examples; the test split never depends on it.
        val_fraction: share of each class's training examples carved off as validation.
        text_column, label_column: the columns (csv) or keys (jsonl) to read.
        tokenizer: ``words``, ``bytes`` or ``ngrams`` (:mod:`nas.data._vocab`).
        max_vocab: most ids in the vocabulary, PAD and OOV included (``words``: default
            ``DEFAULT_MAX_VOCAB``; ``ngrams``: ``DEFAULT_MAX_VOCAB_NGRAMS``; not ``bytes``).
        min_freq: fewest occurrences in the training split for a token to get an id.
        length: tokens per example; default the 95th percentile of the training texts'
            encoded lengths, clamped to ``MIN_LENGTH..MAX_LENGTH``.

    Raises:
        DataError: naming the file, line or value at fault.
    """
    corpus, (train_idx, val_idx, test_idx), vocab, stream = _prepare(
        name,
        locate,
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
        x = _encode(stream, idx, vocab.length)
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
    of token ``g`` (``words``, ``ngrams``; for ``bytes`` the id is the byte and the table
    is empty). ``words[k]`` (``ngrams`` only) says whether token ``k`` is a word, which is
    OOV when unknown, rather than a bigram or n-gram, which is then dropped. Counting and
    remapping these arrays per seed is vectorised, and far smaller than lists of token
    strings.
    """

    table: tuple[str, ...]
    ids: np.ndarray
    offsets: np.ndarray
    words: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class _Stream:
    """Every text's vocabulary ids, as encoded (``ngrams``' unknown n-grams dropped):
    ``ids[offsets[i]:offsets[i + 1]]`` are text ``i``'s."""

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


_CORPUS_CACHE: OrderedDict[tuple[Any, ...], _Corpus] = OrderedDict()


def _prepare(
    name: str,
    locate: Locate,
    data_dir: str | Path | None,
    seed: int,
    val_fraction: float,
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer,
    max_vocab: int | None,
    min_freq: int,
    length: int | None,
) -> tuple[_Corpus, tuple[np.ndarray, np.ndarray, np.ndarray], Vocabulary, _Stream]:
    """The corpus (cached), its train / val / test indices for ``seed``, and the
    vocabulary of that training split with every text encoded by it."""
    if max_vocab is None:
        max_vocab = default_max_vocab(tokenizer)
    _check_options(tokenizer, max_vocab, min_freq, length)
    for what, value in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(value, str) or not value:
            raise DataError(f"{what} must be a non-empty string, got {value!r}")
    if text_column == label_column:
        raise DataError(f"text_column and label_column are both {text_column!r}")
    corpus = _corpus(name, locate, data_dir, text_column, label_column, tokenizer)
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
    vocab, stream = _vocabulary(
        corpus, train_idx, tokenizer, max_vocab, min_freq, length, corpus.source
    )
    return corpus, (train_idx, corpus.pool[carve], corpus.test), vocab, stream


def default_max_vocab(tokenizer: Tokenizer) -> int:
    """``max_vocab``'s default for ``tokenizer`` (``bytes`` ignores it)."""
    return DEFAULT_MAX_VOCAB_NGRAMS if tokenizer == "ngrams" else DEFAULT_MAX_VOCAB


def _check_options(tokenizer: str, max_vocab: int, min_freq: int, length: int | None) -> None:
    check_tokenizer(tokenizer)

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
    locate: Locate,
    data_dir: str | Path | None,
    text_column: str,
    label_column: str,
    tokenizer: Tokenizer,
) -> _Corpus:
    source = locate(name, data_dir, text_column, label_column)
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


def _build_corpus(raw: Raw, tokenizer: Tokenizer) -> _Corpus:
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
    if tokenizer == "ngrams":
        return _tokenise_ngrams(texts, lengths)
    table: dict[str, int] = {}
    flat: list[int] = []
    for i, text in enumerate(texts):
        words = WORD_RE.findall(text.lower())
        lengths[i + 1] = len(words)
        for w in words:
            g = table.get(w)
            if g is None:
                g = table[w] = len(table)
            flat.append(g)
    return _Tokens(tuple(table), np.array(flat, dtype=np.int32), np.cumsum(lengths))


def _tokenise_ngrams(texts: Sequence[str], lengths: np.ndarray) -> _Tokens:
    """``ngrams`` tokens by :func:`nas.data._vocab.word_extras`, the one definition that
    :meth:`Vocabulary.ids` also follows; a string that is a word in one place and an
    n-gram in another is one token (one count, one id)."""
    table: dict[str, int] = {}
    flat = array("i")
    words = array("b")
    for i, text in enumerate(texts):
        start = len(flat)
        previous = None
        for word in WORD_RE.findall(text.lower()):
            extras = word_extras(previous, word)
            for token in (word, *extras):
                g = table.get(token)
                if g is None:
                    g = table[token] = len(table)
                flat.append(g)
            words.append(1)
            words.extend(bytes(len(extras)))
            previous = word
        lengths[i + 1] = len(flat) - start
    return _Tokens(
        tuple(table),
        np.frombuffer(flat, dtype=np.int32).copy() if flat else np.zeros(0, np.int32),
        np.cumsum(lengths),
        np.frombuffer(words, dtype=np.int8).astype(bool) if words else np.zeros(0, bool),
    )


def _vocabulary(
    corpus: _Corpus | _Tokens,
    train_idx: np.ndarray,
    tokenizer: Tokenizer,
    max_vocab: int,
    min_freq: int,
    length: int | None,
    source: str,
) -> tuple[Vocabulary, _Stream]:
    """The vocabulary of the texts ``train_idx`` and every text encoded by it."""
    tokens = corpus.tokens if isinstance(corpus, _Corpus) else corpus
    if tokenizer == "bytes":
        remap = np.arange(256, dtype=np.int64) + len(SPECIALS)
        stream = _Stream(remap[tokens.ids], tokens.offsets)
        return Vocabulary("bytes", (), _length(stream, train_idx, length)), stream
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
    room = max_vocab - len(SPECIALS)
    if len(candidates) > room:
        # Only the tokens as frequent as the room-th most frequent can be kept, ties
        # included: sorting just those keeps an ngrams corpus's millions of rare n-grams
        # out of the Python sort.
        least = np.partition(counts[candidates], len(candidates) - room)[len(candidates) - room]
        candidates = candidates[counts[candidates] >= least]
    chosen = sorted(candidates.tolist(), key=lambda g: (-int(counts[g]), table[g]))[:room]
    # int32: an ngrams corpus holds tens of millions of tokens (ids stay under 2**31).
    remap = np.full(len(table), OOV_ID, dtype=np.int32)
    remap[np.array(chosen, dtype=np.int64)] = np.arange(len(chosen)) + len(SPECIALS)
    stream = _Stream(remap[tokens.ids], tokens.offsets)
    if tokens.words is not None:  # ngrams: an unknown bigram or n-gram is dropped
        keep = tokens.words | (stream.ids != OOV_ID)
        # Text i's kept tokens end where the tokens kept before its old end do.
        before = np.concatenate(([0], np.cumsum(keep)))
        stream = _Stream(stream.ids[keep], before[tokens.offsets])
    chosen_tokens = SPECIALS + tuple(table[g] for g in chosen)
    return Vocabulary(tokenizer, chosen_tokens, _length(stream, train_idx, length)), stream


def _length(stream: _Stream, train_idx: np.ndarray, length: int | None) -> int:
    """``length`` if given, else the 95th percentile of the training texts' encoded
    lengths, clamped to ``MIN_LENGTH..MAX_LENGTH``."""
    if length is not None:
        return length
    lengths = stream.lengths[train_idx]
    # "higher": an actual training length, so at least 95 % of texts fit untruncated.
    typical = 0
    if len(lengths):
        typical = int(np.percentile(lengths, LENGTH_PERCENTILE, method="higher"))
    return min(max(typical, MIN_LENGTH), MAX_LENGTH)


def _encode(stream: _Stream, idx: np.ndarray, length: int) -> torch.Tensor:
    """``(len(idx), length)`` int64 ids: first ``length`` tokens, PAD after the end."""
    starts = stream.offsets[idx]
    kept = np.minimum(stream.lengths[idx], length)
    positions = np.arange(length)
    valid = positions[None, :] < kept[:, None]
    out = np.zeros((len(idx), length), dtype=np.int64)
    out[valid] = stream.ids[(starts[:, None] + positions[None, :])[valid]]
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
