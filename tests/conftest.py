"""Suite-wide settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import nas.data._text as nt
from nas.data._vocab import Tokenizer, Vocabulary

ROOT = Path(__file__).resolve().parents[1]

# The suite's searches share locks with each other but not with searches or benchmarks
# that happen to run on the same machine (they would wait for each other's trainings).
os.environ["NAS_LOCK_DIR"] = tempfile.mkdtemp(prefix="nas-test-locks-")


@pytest.fixture(autouse=True, scope="session")
def single_thread() -> Iterator[None]:
    """Run in-process torch work on one thread.

    The suite's models are small, and on a 2-core machine that other processes also load,
    two OpenMP threads wait on each other at every barrier: building and running 30
    random attention_cnn models took 132 s with two threads and 8 s with one, measured
    side by side under load.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class StudyRef:
    """A finished study in a real SQLite storage."""

    storage: str
    name: str


def _search(args: list[str]) -> None:
    """Run ``python -m nas.search`` for a fixture; a failure shows the search's stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "nas.search", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory: pytest.TempPathFactory) -> StudyRef:
    """A real search, shared by the report, dashboard and export tests (read-only: copy it
    to change it). Eight trials on digits: the two hand designs, then attention_cnn samples."""
    folder = tmp_path_factory.mktemp("digits_study")
    ref = StudyRef(f"sqlite:///{folder}/digits.db", "digits")
    args = ["--trials", "8", "--epochs", "2", "--dataset", "digits", "--seed", "0"]
    args += ["--enqueue-baselines", "--storage", ref.storage, "--study-name", ref.name]
    # No cost limit: digits trials cost a second, and timing noise at that scale refused
    # 1-4 of the 6 samples, so the tests that need 3 complete ones failed now and then.
    args += ["--max-train-seconds", "0"]
    _search(args)
    return ref


TEXT_SEED = 3  # not the default 0: the export must rebuild the vocabulary with this one


def build_vocabulary(
    texts: Iterable[str],
    *,
    tokenizer: Tokenizer = "words",
    max_vocab: int = nt.DEFAULT_MAX_VOCAB,
    min_freq: int = nt.DEFAULT_MIN_FREQ,
    length: int | None = None,
) -> Vocabulary:
    """A vocabulary of ``texts`` by the rules the text loaders use (``nas.data._text``), for
    tests that need one without writing a dataset."""
    nt._check_options(tokenizer, max_vocab, min_freq, length)
    tokens = nt._tokenise([str(t) for t in texts], tokenizer)
    everything = np.arange(len(tokens.lengths))
    return nt._vocabulary(tokens, everything, tokenizer, max_vocab, min_freq, length, "texts")[0]


def write_text_corpus(path: Path, per_class: int = 50) -> Path:
    """A small CSV a text model can learn: each class has its own words, every text some
    shared filler, and consecutive pairs of rows share a rare word, so the vocabulary
    (words seen twice in the training split) depends on the split seed."""
    import csv
    import random

    words = {
        "sports": ["goal", "match", "team", "score"],
        "science": ["atom", "theory", "cell", "physics"],
        "business": ["market", "shares", "profit", "bank"],
        "weather": ["rain", "storm", "sunny", "cloud"],
    }
    filler = ["the", "a", "of", "and", "today", "new", "report", "says"]
    rng = random.Random(0)
    rows = []
    for i in range(per_class * len(words)):
        label = list(words)[i % len(words)]
        text = rng.choices(words[label], k=3) + rng.choices(filler, k=rng.randint(1, 6))
        rng.shuffle(text)
        rows.append((" ".join([*text, f"rare{i // 2}"]).capitalize() + "!", label))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("text", "label"))
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class TextStudyRef(StudyRef):
    dataset: str


@pytest.fixture(scope="session")
def text_study(tmp_path_factory: pytest.TempPathFactory) -> TextStudyRef:
    """A real search on a CSV text corpus with the default space (manet_text), shared by the
    text search and export tests (read-only: copy it to change it)."""
    folder = tmp_path_factory.mktemp("text_study")
    dataset = f"csv:{write_text_corpus(folder / 'news.csv')}"
    ref = TextStudyRef(f"sqlite:///{folder}/text.db", "text", dataset)
    args = ["--trials", "3", "--epochs", "1", "--dataset", dataset, "--seed", str(TEXT_SEED)]
    args += ["--storage", ref.storage, "--study-name", ref.name]
    _search(args)
    return ref
