"""Datasets as tensors: the built-in image sets, ImageFolder trees, text corpora, and the
vocabulary that turns text into token ids. Every loader returns a :class:`Data` with the
same fixed test split."""

from nas.data._common import DataError, cache_dir
from nas.data._load import DATASETS, Data, Split, load_data, task_for
from nas.data._text import (
    BYTE_VOCAB_SIZE,
    OOV_ID,
    PAD_ID,
    WORD_PATTERN,
    Vocabulary,
    build_vocabulary,
    is_text_name,
)

__all__ = [
    "BYTE_VOCAB_SIZE",
    "DATASETS",
    "OOV_ID",
    "PAD_ID",
    "WORD_PATTERN",
    "Data",
    "DataError",
    "Split",
    "Vocabulary",
    "build_vocabulary",
    "cache_dir",
    "is_text_name",
    "load_data",
    "task_for",
]
