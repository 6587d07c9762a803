"""Datasets as tensors: the built-in image sets, ImageFolder trees, text corpora, and the
vocabulary that turns text into token ids. Every loader returns a :class:`Data` with the
same fixed test split.

``_load`` is the public API and its one table of dataset names; ``_images``,
``_imagefolder``, ``_text`` (with ``_textsources``) are the loaders; ``_vocab`` is the
vocabulary the exporter also needs; ``_common`` is what they all share."""

from nas.data._common import DataError, cache_dir
from nas.data._load import DATASETS, Data, Split, is_text_name, load_data, task_for
from nas.data._text import MAX_LENGTH
from nas.data._vocab import (
    BYTE_VOCAB_SIZE,
    NGRAM_MAX,
    NGRAM_MIN,
    OOV_ID,
    PAD_ID,
    TOKENIZERS,
    WORD_BEGIN,
    WORD_END,
    WORD_PATTERN,
    Tokenizer,
    Vocabulary,
)

__all__ = [
    "BYTE_VOCAB_SIZE",
    "DATASETS",
    "MAX_LENGTH",
    "NGRAM_MAX",
    "NGRAM_MIN",
    "OOV_ID",
    "PAD_ID",
    "TOKENIZERS",
    "WORD_BEGIN",
    "WORD_END",
    "WORD_PATTERN",
    "Data",
    "DataError",
    "Split",
    "Tokenizer",
    "Vocabulary",
    "cache_dir",
    "is_text_name",
    "load_data",
    "task_for",
]
