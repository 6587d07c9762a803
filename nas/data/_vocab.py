"""The vocabulary of a text model: tokenisers, token ids, and their JSON form.

Tokenisers (no dependencies): ``words`` lower-cases and splits with ``\\w+|[^\\w\\s]``
(runs of word characters; each other non-space character alone); ``bytes`` maps each
UTF-8 byte ``b`` to id ``b + 2`` (a fixed vocabulary of 258, no OOV); ``ngrams`` is
fastText's input: for each word ``w`` of the ``words`` tokenisation, ``w`` itself, then the
word bigram with the word before it (``"w_prev w"``: the word pattern never yields a space,
so no bigram collides with a word), then the character 3- to 5-grams of ``"<" + w + ">"``
(by start, then length, as fastText lists them). Id 0 pads, id 1 stands for every
out-of-vocabulary word; an out-of-vocabulary bigram or n-gram is dropped (an OOV id there
would only add noise and length).

Token ids are ``int64``: it is PyTorch's index type (``nn.Embedding``, ``gather``, ONNX
``Gather`` inputs, and what ``torch.tensor`` makes of Python ints), so a model and its
exported graph take the same dtype as a user's own tensors; the memory cost is small
(AG News: 120,000 × 64 ids, 61 MB).

Imports no loader: the exporter and its generated code need these ids and the pattern,
not the readers of any dataset. The text loaders (:mod:`nas.data._text`) build a
:class:`Vocabulary` from a training split.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nas.data._common import DataError

Tokenizer = Literal["words", "bytes", "ngrams"]
TOKENIZERS: tuple[Tokenizer, ...] = ("words", "bytes", "ngrams")

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
# The regex cannot produce these two (``<`` is a token of its own), so no word collides;
# an ngrams n-gram can (``<pad>`` of the word ``pad``) and is left out (word_extras).
SPECIALS = (PAD_TOKEN, OOV_TOKEN)
WORD_PATTERN = r"\w+|[^\w\s]"
WORD_RE = re.compile(WORD_PATTERN)
BYTE_VOCAB_SIZE = 256 + len(SPECIALS)
# ``ngrams``: character n-grams of NGRAM_MIN..NGRAM_MAX characters of a word between its
# boundary marks (fastText's defaults), after the word and its bigram. One string is one
# token, whether a word or an n-gram (the word "ing" and the n-gram "ing" of "<going>"
# share an id and a count), unlike fastText, which hashes n-grams apart from words: so a
# vocabulary stays one list of strings, and a frequent n-gram lends its id to a rare word.
NGRAM_MIN = 3
NGRAM_MAX = 5
WORD_BEGIN = "<"
WORD_END = ">"
# What an ngrams vocabulary file records of the tokenisation; a file that says otherwise
# was made by another rule and is refused rather than silently mis-encoded.
NGRAM_RULE: dict[str, Any] = {
    "word_bigrams": True,
    "min_n": NGRAM_MIN,
    "max_n": NGRAM_MAX,
    "begin": WORD_BEGIN,
    "end": WORD_END,
}

_VOCAB_FORMAT = "nas.vocabulary"
# Still 1 with ``ngrams``: a version-1 file of ``words`` or ``bytes`` reads as before, and
# what an ngrams file adds (its tokenizer name and ``ngrams`` rule) is checked on reading.
_VOCAB_VERSION = 1


def check_tokenizer(value: object, what: str = "tokenizer") -> Tokenizer:
    """``value`` if it names a tokenizer, else a :class:`DataError` naming it (a stored
    value is a string compared with the names, never imported or evaluated)."""
    for name in TOKENIZERS:
        if isinstance(value, str) and value == name:
            return name
    names = ", ".join(repr(t) for t in TOKENIZERS)
    raise DataError(f"{what} must be one of {names}, got {value!r}")


def word_extras(previous: str | None, word: str) -> list[str]:
    """The tokens an ``ngrams`` stream holds after ``word``: the bigram ``"previous word"``
    (none for the first word), then the character n-grams of ``"<word>"``, by start and
    then length (none when the marked word is under NGRAM_MIN characters).

    An n-gram that spells ``<pad>`` or ``<unk>`` (of the words ``pad`` and ``unk``) is left
    out: those strings are the special tokens of ids 0 and 1, and the word itself is there.
    """
    extras = [] if previous is None else [f"{previous} {word}"]
    marked = f"{WORD_BEGIN}{word}{WORD_END}"
    size = len(marked)
    for start in range(size - NGRAM_MIN + 1):
        for end in range(start + NGRAM_MIN, min(start + NGRAM_MAX, size) + 1):
            gram = marked[start:end]
            if gram not in SPECIALS:
                extras.append(gram)
    return extras


def ngram_stream(text: str) -> list[tuple[str, bool]]:
    """Every ``ngrams`` token of ``text`` in order, each with whether it is a word (an OOV
    word is id 1; any other OOV token is dropped)."""
    stream: list[tuple[str, bool]] = []
    previous = None
    for word in WORD_RE.findall(text.lower()):
        stream.append((word, True))
        stream.extend((extra, False) for extra in word_extras(previous, word))
        previous = word
    return stream


@dataclass(frozen=True)
class Vocabulary:
    """Token strings ↔ ids, and the sequence length, of one trained text model.

    ``words`` and ``ngrams``: ``tokens[i]`` is the token of id ``i``; ``tokens[0]`` is
    ``<pad>`` and ``tokens[1]`` is ``<unk>``. ``bytes``: ``tokens`` is empty and byte ``b``
    is id ``b + 2``.
    Saved as JSON beside an exported model (:meth:`save`), it encodes new texts exactly as
    the training data was encoded (:meth:`encode`).

    Attributes:
        tokenizer: ``words``, ``bytes`` or ``ngrams``.
        tokens: id → token (``words`` and ``ngrams``).
        length: tokens per encoded example; longer texts keep their first ``length``
            tokens, shorter ones are padded with id 0 at the end.
    """

    tokenizer: Tokenizer
    tokens: tuple[str, ...]
    length: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_tokenizer(self.tokenizer, "vocabulary tokenizer")
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
                raise DataError(
                    f"a {self.tokenizer} vocabulary needs at least one token besides <pad>/<unk>"
                )
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
        if self.tokenizer == "words":
            return [get(t, OOV_ID) for t in WORD_RE.findall(text.lower())]
        ids = []
        for token, is_word in ngram_stream(text):
            i = get(token)
            if i is not None:
                ids.append(i)
            elif is_word:
                ids.append(OOV_ID)
        return ids

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
        """A JSON-ready dict; ``pattern``, the n-gram rule and the ids are spelled out for
        non-Python readers (``ngrams`` only for an ngrams vocabulary, so a words or bytes
        file is what it always was)."""
        split = self.tokenizer != "bytes"  # words and ngrams split words by the pattern
        data: dict[str, Any] = {
            "format": _VOCAB_FORMAT,
            "version": _VOCAB_VERSION,
            "tokenizer": self.tokenizer,
            "lowercase": split,
            "pattern": WORD_PATTERN if split else None,
            "byte_offset": len(SPECIALS) if self.tokenizer == "bytes" else None,
            "length": self.length,
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "size": self.size,
            "tokens": list(self.tokens),
        }
        if self.tokenizer == "ngrams":
            data["ngrams"] = dict(NGRAM_RULE)
        return data

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
        if tokenizer in ("words", "ngrams") and data.get("pattern") != WORD_PATTERN:
            # Tokenising differently from training would silently change every id.
            raise DataError(
                f"vocabulary pattern {data.get('pattern')!r} is not this version's {WORD_PATTERN!r}"
            )
        if tokenizer == "ngrams" and data.get("ngrams") != NGRAM_RULE:
            raise DataError(
                f"vocabulary n-gram rule {data.get('ngrams')!r} is not this version's "
                f"{NGRAM_RULE!r}"
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise DataError("vocabulary 'tokens' must be a list")
        tokenizer = check_tokenizer(tokenizer, "vocabulary tokenizer")
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
