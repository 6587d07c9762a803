"""The vocabulary of a text model: tokenisers, token ids, and their JSON form.

Tokenisers (no dependencies): ``words`` lower-cases and splits with ``\\w+|[^\\w\\s]``
(runs of word characters; each other non-space character alone); ``bytes`` maps each
UTF-8 byte ``b`` to id ``b + 2`` (a fixed vocabulary of 258, no OOV). Id 0 pads, id 1
stands for every out-of-vocabulary token.

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

Tokenizer = Literal["words", "bytes"]

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
# The regex cannot produce these two (``<`` is a token of its own), so no word collides.
SPECIALS = (PAD_TOKEN, OOV_TOKEN)
WORD_PATTERN = r"\w+|[^\w\s]"
WORD_RE = re.compile(WORD_PATTERN)
BYTE_VOCAB_SIZE = 256 + len(SPECIALS)

_VOCAB_FORMAT = "nas.vocabulary"
_VOCAB_VERSION = 1


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
        return [get(t, OOV_ID) for t in WORD_RE.findall(text.lower())]

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
