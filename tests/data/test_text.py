"""Tests for the text loaders (nas.data._text, ._textsources, ._vocab) and the text paths of
nas.data, nas.train and nas.search.

Every loader reads fixture files that the tests write in the real on-disk formats (CSV,
TSV, JSON lines, class folders of .txt files, AG News' header-less CSV, IMDB's aclImdb
folders). Nothing touches the network: the downloader is replaced for every test.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nas.data._text as nt
import nas.data._textsources as ns
import nas.data._vocab as nv
from nas.data import Data, DataError, Split, load_data, task_for
from nas.model import Task, TaskError
from nas.train import TrainConfig, evaluate, train
from tests.conftest import TEXT_SEED, TextStudyRef, build_vocabulary

# Learnable fixture corpus: each class has its own words, every text also has shared
# filler words, so a bag-of-embeddings model separates the classes within a few epochs.
CLASS_WORDS = {
    "sports": ["goal", "match", "team", "score", "league"],
    "science": ["atom", "theory", "experiment", "cell", "physics"],
    "business": ["market", "shares", "profit", "bank", "trade"],
    "weather": ["rain", "storm", "sunny", "cloud", "forecast"],
}
FILLER = ["the", "a", "of", "and", "today", "new", "report", "says", "we", "it"]


def tokenize(text: str) -> list[str]:
    """The ``words`` tokens of ``text`` as the vocabulary counts them: lower-cased, then
    split by the pattern the vocabulary file records."""
    return re.findall(nv.WORD_PATTERN, text.lower())


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no user cache, no user data dir, no corpus cached by another test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("NAS_DATA_DIR", raising=False)

    def no_network(url: str, target: Path) -> None:
        raise OSError(f"network disabled in tests ({url} -> {target})")

    monkeypatch.setattr(ns, "_download", no_network)
    nt.clear_cache()


def make_rows(
    per_class: int, seed: int = 0, classes: Sequence[str] = tuple(CLASS_WORDS)
) -> list[tuple[str, str]]:
    """``(text, label)`` rows, classes interleaved, 4-14 words each."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(per_class):
        for label in classes:
            words = list(rng.choice(FILLER, size=int(rng.integers(2, 10))))
            words += list(rng.choice(CLASS_WORDS[label], size=int(rng.integers(2, 5))))
            rng.shuffle(words)
            text = " ".join(words).capitalize() + ("!" if i % 3 == 0 else ".")
            rows.append((text, label))
    return rows


def write_csv(
    path: Path,
    rows: Sequence[Sequence[str]],
    header: Sequence[str] = ("text", "label"),
    delimiter: str = ",",
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, objects: Sequence[object]) -> Path:
    path.write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8"
    )
    return path


def write_folder(root: Path, rows: Sequence[tuple[str, str]]) -> Path:
    for i, (text, label) in enumerate(rows):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.txt").write_text(text, encoding="utf-8")
    return root


def class_counts(split: Split, classes: int) -> list[int]:
    return np.bincount(split.y.numpy(), minlength=classes).tolist()


# --------------------------------------------------------------------------- loaders


def test_csv_gives_token_ids_classes_and_texts(tmp_path: Path) -> None:
    rows = make_rows(20)
    path = write_csv(tmp_path / "news.csv", rows)
    data = load_data(f"csv:{path}", seed=0)
    task = data.task
    assert task.kind == "text" and (task.channels, task.height, task.width) == (1, 1, 1)
    assert task.class_names == ("business", "science", "sports", "weather")  # sorted
    assert task.classes == 4 and task.vocab_size == len(data.vocab or ()) > 3
    assert data.mean == () and data.std == () and data.flip is False
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1] == task.length
        assert split.x.device.type == "cpu" and split.y.dtype == torch.int64
        assert int(split.x.min()) >= 0 and int(split.x.max()) < task.vocab_size
    # 80 rows: 20 % test (fixed seed), then 10 % of the rest as validation, per class.
    assert (len(data.train), len(data.val), len(data.test)) == (56, 8, 16)
    assert data.texts is not None and data.vocab is not None
    assert len(data.texts.train) == len(data.train)
    # The raw texts line up with the rows: encoding them again gives the same ids.
    parts = (data.texts.train, data.texts.val, data.texts.test)
    for texts, split in zip(parts, (data.train, data.val, data.test), strict=True):
        assert torch.equal(data.vocab.encode(list(texts)), split.x)
    by_text = dict(rows)
    for text, label in zip(data.texts.test, data.test.y.tolist(), strict=True):
        assert task.class_names[label] == by_text[text]
    # Padding at the end, tokens first.
    assert (data.train.x[:, 0] != nv.PAD_ID).all()


def test_tsv_by_extension_and_sniffed_delimiters(tmp_path: Path) -> None:
    rows = [(f"{text}, with a comma; and more", label) for text, label in make_rows(10)]
    reference = load_data(f"csv:{write_csv(tmp_path / 'a.csv', rows)}")
    variants = [
        write_csv(tmp_path / "b.tsv", rows, delimiter="\t"),
        write_csv(tmp_path / "c.txt", rows, delimiter="\t"),  # sniffed from the header
        write_csv(tmp_path / "d.dat", rows, delimiter=";"),
    ]
    for path in variants:
        data = load_data(f"csv:{path}")
        assert data.texts == reference.texts
        assert torch.equal(data.train.x, reference.train.x)
        assert torch.equal(data.test.y, reference.test.y)


def test_csv_chosen_columns_and_a_bom(tmp_path: Path) -> None:
    rows = [(str(i), text, label, "x") for i, (text, label) in enumerate(make_rows(10))]
    path = write_csv(tmp_path / "cols.csv", rows, header=("id", "body", "topic", "extra"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's UTF-8 BOM
    data = load_data(f"csv:{path}", text_column="body", label_column="topic")
    assert data.task.classes == 4
    with pytest.raises(DataError, match="no column 'text'"):
        load_data(f"csv:{path}")


def test_jsonl_with_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    numbers = {"sports": 2, "science": 10, "business": 9, "weather": 1}
    objects = [{"text": t, "label": numbers[lab], "other": None} for t, lab in make_rows(10)]
    data = load_data(f"jsonl:{write_jsonl(tmp_path / 'd.jsonl', objects)}")
    assert data.task.class_names == ("1", "2", "9", "10")
    assert len(data.train) + len(data.val) + len(data.test) == 40


def test_textfolder_flat_carves_a_fixed_test_split(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "folder", make_rows(10))
    a = load_data(f"textfolder:{root}", seed=0)
    b = load_data(f"textfolder:{root}", seed=1)
    assert a.task.class_names == tuple(sorted(CLASS_WORDS))
    assert a.texts is not None and b.texts is not None
    assert a.texts.test == b.texts.test  # the test split does not move with the seed
    assert a.texts.val != b.texts.val
    assert class_counts(a.test, 4) == [2, 2, 2, 2]


def test_textfolder_train_test_layout_skips_unsup(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_folder(root / "train", make_rows(10, seed=1))
    write_folder(root / "test", make_rows(3, seed=2))
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0.txt").write_text("unlabelled", encoding="utf-8")
    data = load_data(f"textfolder:{root}")
    assert data.task.classes == 4
    assert len(data.test) == 12 and len(data.train) + len(data.val) == 40
    assert data.texts is not None and "unlabelled" not in data.texts.train


def ag_news_files(folder: Path, rows: Sequence[tuple[str, str]]) -> None:
    """AG News as published: no header, every field quoted, class index 1-4."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"weather": "1", "sports": "2", "business": "3", "science": "4"}
    for name, part in (("train.csv", rows[:-8]), ("test.csv", rows[-8:])):
        with (folder / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_ALL)
            for text, label in part:
                title, _, body = text.partition(" ")
                writer.writerow([index[label], title.title(), body + " \\ more"])


def test_ag_news_format_from_data_dir(tmp_path: Path) -> None:
    rows = make_rows(12)
    ag_news_files(tmp_path / "ag_news_csv", rows)
    data = load_data("ag_news", data_dir=tmp_path)
    assert data.task.class_names == ("World", "Sports", "Business", "Sci/Tech")
    assert len(data.test) == 8 and len(data.train) + len(data.val) == 40
    assert data.texts is not None and all("\\" not in t for t in data.texts.train)
    # Class index 3 is Business: the official order, not alphabetical.
    names = [data.task.class_names[i] for i in data.test.y.tolist()]
    official = {
        "weather": "World",
        "sports": "Sports",
        "business": "Business",
        "science": "Sci/Tech",
    }
    assert names == [official[label] for _, label in rows[-8:]]
    assert task_for("ag_news", data_dir=tmp_path) == data.task


def test_ag_news_flat_folder_and_missing_files(tmp_path: Path) -> None:
    ag_news_files(tmp_path / "flat", make_rows(12))
    assert load_data("ag_news", data_dir=tmp_path / "flat").task.classes == 4
    with pytest.raises(DataError) as err:
        load_data("ag_news", data_dir=tmp_path / "empty")
    message = str(err.value)
    assert "download of https://" in message and "network disabled" in message
    assert "--data-dir" in message and "ag_news_csv" in message


def imdb_tree(root: Path, per_class: int = 6) -> None:
    """aclImdb as unpacked: train/ and test/ of pos/ and neg/, train/unsup, <br /> tags."""
    rng = np.random.default_rng(0)
    words = {"pos": ["great", "loved", "superb"], "neg": ["awful", "boring", "hated"]}
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                review = " ".join(rng.choice(words[label] + FILLER, size=8))
                rating = 8 if label == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(
                    f"{review}<br /><br />The end.", encoding="utf-8"
                )
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("no label", encoding="utf-8")
    (root / "aclImdb" / "train" / "urls_pos.txt").write_text("http://x\n", encoding="utf-8")


def test_imdb_folder_format_from_data_dir(tmp_path: Path) -> None:
    imdb_tree(tmp_path)
    data = load_data("imdb", data_dir=tmp_path)
    assert data.task.class_names == ("neg", "pos")
    assert len(data.test) == 12 and len(data.train) + len(data.val) == 12
    assert data.texts is not None
    assert all("<br" not in t for t in data.texts.train + data.texts.test)
    assert "no label" not in data.texts.train
    with pytest.raises(DataError, match=r"imdb: files not found .*aclImdb_v1\.tar\.gz"):
        load_data("imdb", data_dir=tmp_path / "elsewhere")


# --------------------------------------------------------------------------- rules


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    # Every example carries a word of its own: with min_freq=1 exactly the training
    # examples' words may enter the vocabulary.
    rows = [(f"{text} uniq{i}", label) for i, (text, label) in enumerate(make_rows(15))]
    data = load_data(f"csv:{write_csv(tmp_path / 'u.csv', rows)}", min_freq=1)
    assert data.vocab is not None and data.texts is not None

    def own_word(text: str) -> str:
        return text.split()[-1]

    for text in data.texts.train:
        assert own_word(text) in data.vocab
    for text in data.texts.val + data.texts.test:
        assert own_word(text) not in data.vocab
    # ...and in the tensors the unseen word is the OOV id.
    ids = data.vocab.ids(data.texts.test[0])
    assert ids[-1] == nv.OOV_ID and data.test.x[0, len(ids) - 1] == nv.OOV_ID


def test_word_only_in_the_official_test_split_is_oov(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_folder(root / "train", make_rows(6, seed=1))
    test_rows = [(f"zebra {t}", label) for t, label in make_rows(2, seed=2)]
    write_folder(root / "test", test_rows)
    data = load_data(f"textfolder:{root}", min_freq=1)
    assert data.vocab is not None and "zebra" not in data.vocab
    assert (data.test.x[:, 0] == nv.OOV_ID).all()


def test_min_freq_and_max_vocab(tmp_path: Path) -> None:
    rows = [(f"{text} once{i}", label) for i, (text, label) in enumerate(make_rows(10))]
    path = write_csv(tmp_path / "f.csv", rows)
    data = load_data(f"csv:{path}")  # min_freq=2: words seen once are out
    assert data.vocab is not None and not any(t.startswith("once") for t in data.vocab.tokens)
    small = load_data(f"csv:{path}", max_vocab=5)
    assert small.task.vocab_size == 5 and small.vocab is not None
    # The most frequent training tokens survive (ties broken by the token).
    assert small.vocab.tokens[:2] == (nv.PAD_TOKEN, nv.OOV_TOKEN)
    assert small.texts is not None
    counts = Counter(tok for t in small.texts.train for tok in tokenize(t))
    expected = sorted(counts, key=lambda tok: (-counts[tok], tok))[:3]
    assert list(small.vocab.tokens[2:]) == expected


def test_length_is_the_95th_percentile_of_training_lengths(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        n = int(rng.integers(1, 40))
        label = "ab"[i % 2]
        rows.append((" ".join(["w", label] * n), label))
    path = write_csv(tmp_path / "len.csv", rows)
    data = load_data(f"csv:{path}")
    assert data.texts is not None
    lengths = [len(tokenize(t)) for t in data.texts.train]
    expected = int(np.percentile(lengths, 95, method="higher"))
    assert 8 < expected < nt.MAX_LENGTH and data.task.length == expected
    assert sum(n <= expected for n in lengths) >= 0.95 * len(lengths)
    # Given explicitly: longer texts keep their first tokens.
    short = load_data(f"csv:{path}", length=3)
    assert short.task.length == 3 and short.vocab is not None and short.texts is not None
    assert short.train.x[0].tolist() == short.vocab.ids(short.texts.train[0])[:3]


def test_length_is_clamped(tmp_path: Path) -> None:
    tiny = write_csv(tmp_path / "tiny.csv", [("a b", "x"), ("b a", "y")] * 5)
    assert load_data(f"csv:{tiny}").task.length == nt.MIN_LENGTH
    long = " ".join(["a b"] * nt.MAX_LENGTH)
    huge = write_csv(tmp_path / "huge.csv", [(long, "x"), (long[::-1], "y")] * 5)
    assert load_data(f"csv:{huge}").task.length == nt.MAX_LENGTH


def test_split_deterministic_for_seed_and_stratified(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", make_rows(30))
    a = load_data(f"csv:{path}", seed=5)
    nt.clear_cache()  # from scratch: the same seed gives the same bytes
    b = load_data(f"csv:{path}", seed=5)
    c = load_data(f"csv:{path}", seed=6)
    assert a.texts == b.texts and torch.equal(a.train.x, b.train.x)
    assert a.vocab == b.vocab
    assert a.texts is not None and c.texts is not None
    assert a.texts.val != c.texts.val and a.texts.test == c.texts.test
    # 30 per class: 6 test, then round(24 * 0.1) = 2 validation, 22 training, each class.
    assert class_counts(a.test, 4) == [6] * 4
    assert class_counts(a.val, 4) == [2] * 4
    assert class_counts(a.train, 4) == [22] * 4
    assert not set(a.texts.val) & set(a.texts.train)


def test_task_for_matches_load_data_and_tokenises_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "c.csv", make_rows(10))
    calls: list[int] = []
    real = nt._tokenise

    def counting(texts: Sequence[str], tokenizer: nv.Tokenizer) -> nt._Tokens:
        calls.append(len(texts))
        return real(texts, tokenizer)

    monkeypatch.setattr(nt, "_tokenise", counting)
    task = task_for(f"csv:{path}", seed=3)
    data = load_data(f"csv:{path}", seed=3)
    assert data.task == task and len(calls) == 1
    load_data(f"csv:{path}", seed=4)  # another seed: split and vocabulary only
    assert len(calls) == 1
    write_csv(path, make_rows(11))  # a changed file is read again
    assert load_data(f"csv:{path}").task.name == f"csv:{path}" and len(calls) == 2


def test_bytes_tokenizer(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "b.csv", make_rows(10))
    data = load_data(f"csv:{path}", tokenizer="bytes")
    assert data.task.vocab_size == 258 and data.vocab is not None
    assert data.vocab.ids("Aé") == [ord("A") + 2, 0xC3 + 2, 0xA9 + 2]
    assert data.texts is not None
    first = data.texts.train[0].encode("utf-8")[: data.task.length]
    assert data.train.x[0, : len(first)].tolist() == [b + 2 for b in first]


def ngram_tokens(text: str) -> list[str]:
    return [token for token, _ in nv.ngram_stream(text)]


def test_ngrams_stream_of_code_digits_and_non_ascii() -> None:
    # Words as ``words`` splits them, each followed by its bigram and the 3-5-grams of
    # "<word>", by start then length.
    assert ngram_tokens("os.path") == [
        "os", "<os", "<os>", "os>",
        ".", "os .", "<.>",
        "path", ". path", "<pa", "<pat", "<path", "pat", "path", "path>", "ath", "ath>", "th>",
    ]  # fmt: skip
    stream = nv.ngram_stream("os.path.join snake_case_name CamelCase 42 naïve café 日本語 a")
    words = [token for token, is_word in stream if is_word]
    assert words == tokenize("os.path.join snake_case_name CamelCase 42 naïve café 日本語 a")
    assert words == [
        "os", ".", "path", ".", "join", "snake_case_name", "camelcase", "42", "naïve", "café",
        "日本語", "a",
    ]  # fmt: skip
    extras: dict[str, list[str]] = {}
    word = ""
    for token, is_word in stream:
        if is_word:
            word = token
        else:
            extras.setdefault(word, []).append(token)
    assert extras["join"][:1] == [". join"] and "path ." in extras["."]
    assert extras["snake_case_name"][:4] == ["join snake_case_name", "<sn", "<sna", "<snak"]
    assert "case_" in extras["snake_case_name"] and "name>" in extras["snake_case_name"]
    assert extras["camelcase"][1:4] == ["<ca", "<cam", "<came"]  # lower-cased
    assert extras["42"] == ["camelcase 42", "<42", "<42>", "42>"]
    assert extras["café"] == [
        "naïve café", "<ca", "<caf", "<café", "caf", "café", "café>", "afé", "afé>", "fé>",
    ]  # fmt: skip
    assert extras["日本語"] == [
        "café 日本語", "<日本", "<日本語", "<日本語>", "日本語", "日本語>", "本語>",
    ]  # fmt: skip
    assert extras["a"] == ["日本語 a", "<a>"]  # "<a>" is 3 characters: one n-gram
    # No bigram before the first word; a word under one character has no n-gram at all.
    assert nv.word_extras(None, "x") == ["<x>"] and nv.word_extras("p", "q")[0] == "p q"
    assert ngram_tokens("") == [] and ngram_tokens(" \t\n") == []
    # The n-grams "<pad>" and "<unk>" would be the special tokens: they are left out.
    assert "<pad>" not in ngram_tokens("pad unk") and "<unk>" not in ngram_tokens("unk")
    assert "pad" in ngram_tokens("pad") and "<pad" in ngram_tokens("pad")


def test_ngrams_vocabulary_min_freq_max_vocab_and_dropped_oov() -> None:
    texts = [
        "os.path.join(a, b)",
        "os.path.exists(path)",
        "import os.path",
        "CamelCase snake_case",
        "snake_case naïve café",
        "pad unk pad",
    ]
    counts = Counter(tok for t in texts for tok in ngram_tokens(t))
    expected = sorted((t for t, n in counts.items() if n >= 2), key=lambda t: (-counts[t], t))
    vocab = build_vocabulary(texts, tokenizer="ngrams", min_freq=2, length=64)
    assert vocab.tokenizer == "ngrams" and vocab.tokens[:2] == (nv.PAD_TOKEN, nv.OOV_TOKEN)
    assert list(vocab.tokens[2:]) == expected and vocab.size == len(expected) + 2
    assert ". path" in vocab and "<snak" in vocab and "import" not in vocab  # import: once
    assert "<pad>" not in vocab.tokens[2:] and "pad" in vocab
    small = build_vocabulary(texts, tokenizer="ngrams", min_freq=2, max_vocab=7, length=64)
    assert small.tokens[2:] == vocab.tokens[2:7]  # the most frequent, ties by the token
    # An unknown word is OOV; its unknown bigrams and n-grams are dropped, known ones kept.
    index = {t: i for i, t in enumerate(vocab.tokens)}
    assert not {"zebra", *nv.word_extras("snake_case", "zebra")} & set(index)  # never seen
    known = [index[t] for t in nv.word_extras(None, "snake_case") if t in index]
    assert len(known) > 3 and vocab.ids("snake_case zebra") == [
        index["snake_case"],
        *known,
        nv.OOV_ID,
    ]
    cased = vocab.ids("casebook")  # an unknown word, but "<cas" and "case" are known
    assert cased[0] == nv.OOV_ID and len(cased) > 1 and nv.OOV_ID not in cased[1:]
    assert [vocab.tokens[i] for i in cased[1:]] == [
        t for t in nv.word_extras(None, "casebook") if t in index
    ]
    # Pads only at the end: no n-gram ever encodes as id 0.
    row = vocab.encode("pad unk pad")[0].tolist()
    n = len(vocab.ids("pad unk pad"))
    assert 0 not in row[:n] and row[n:] == [0] * (64 - n)


def test_ngrams_tokenizer_loads_with_its_length_and_default_max_vocab(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", make_rows(15))
    data = load_data(f"csv:{path}", tokenizer="ngrams", seed=1)
    assert data.vocab is not None and data.texts is not None
    assert data.vocab.tokenizer == "ngrams" and data.task.vocab_size == data.vocab.size
    counts = Counter(tok for t in data.texts.train for tok in ngram_tokens(t))
    kept = sum(n >= nt.DEFAULT_MIN_FREQ for n in counts.values())
    assert kept + 2 <= nt.DEFAULT_MAX_VOCAB_NGRAMS and data.vocab.size == kept + 2
    # The length counts encoded tokens (unknown n-grams dropped), 95th percentile.
    lengths = [len(data.vocab.ids(t)) for t in data.texts.train]
    assert data.task.length == int(np.percentile(lengths, 95, method="higher")) > 8
    for texts, split in zip(
        (data.texts.train, data.texts.val, data.texts.test),
        (data.train, data.val, data.test),
        strict=True,
    ):
        assert torch.equal(data.vocab.encode(list(texts)), split.x)
    capped = load_data(f"csv:{path}", tokenizer="ngrams", max_vocab=40, seed=1)
    assert capped.task.vocab_size == 40 and capped.vocab is not None
    assert capped.vocab.tokens[2:] == data.vocab.tokens[2:40]
    # Words keep their own default and corpus: the tokenizers do not share a cache entry.
    words = load_data(f"csv:{path}", seed=1)
    assert words.vocab is not None and words.vocab.tokenizer == "words"
    assert words.task.length < data.task.length


# --------------------------------------------------------------------------- errors


def error_of(name: str, **kwargs: object) -> str:
    with pytest.raises(DataError) as err:
        load_data(name, **kwargs)  # type: ignore[arg-type]
    return str(err.value)


def test_missing_column_lists_the_columns_present(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", make_rows(3), header=("body", "label"))
    message = error_of(f"csv:{path}")
    assert str(path) in message and "no column 'text'" in message
    assert "columns present: 'body', 'label'" in message
    jpath = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": "x"}, {"body": "b"}])
    message = error_of(f"jsonl:{jpath}")
    assert "line 2 has no key 'text'; keys present: 'body'" in message


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_bytes(b"")
    assert "is empty" in error_of(f"csv:{tmp_path / 'e.csv'}")
    (tmp_path / "e.jsonl").write_text("\n\n", encoding="utf-8")
    assert "is empty" in error_of(f"jsonl:{tmp_path / 'e.jsonl'}")
    header_only = write_csv(tmp_path / "h.csv", [])
    assert "header but no rows" in error_of(f"csv:{header_only}")


def test_a_label_with_one_example_is_named(tmp_path: Path) -> None:
    rows = [*make_rows(5), ("a lonely text", "lonely")]
    message = error_of(f"csv:{write_csv(tmp_path / 'one.csv', rows)}")
    assert "label 'lonely' has 1 example(s)" in message and "at least 3" in message


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "latin.csv", make_rows(3))
    lines = path.read_bytes().split(b"\n")
    lines[3] = b"caf\xe9 au lait," + b"sports\r"
    path.write_bytes(b"\n".join(lines))
    message = error_of(f"csv:{path}")
    assert f"{path}: line 4 is not valid UTF-8 (byte 0xe9 at column 4)" in message
    folder = write_folder(tmp_path / "folder", make_rows(3))
    bad = folder / "sports" / "bad.txt"
    bad.write_bytes(b"fine\nfine\n\xff")
    assert f"{bad}: line 3 is not valid UTF-8" in error_of(f"textfolder:{folder}")


def test_all_texts_empty(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "blank.csv", [("", "a"), ("  ", "b")] * 3)
    assert "all 6 texts are empty" in error_of(f"csv:{path}")


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", [("some text", "only")] * 5)
    message = error_of(f"csv:{path}")
    assert "'only'" in message and "at least 2 distinct labels" in message


def test_malformed_rows_and_lines_are_located(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\nfine,a\nnot, fine,b\n", encoding="utf-8")
    assert "line 3 has 3 fields, the header has 2" in error_of(f"csv:{path}")
    path.write_text("text,label\nfine,\n", encoding="utf-8")
    assert "line 2 has an empty 'label'" in error_of(f"csv:{path}")
    jpath = tmp_path / "bad.jsonl"
    jpath.write_text('{"text": "a", "label": "x"}\n{"text": "b", label}\n', encoding="utf-8")
    assert "line 2 is not valid JSON" in error_of(f"jsonl:{jpath}")
    jpath.write_text('{"text": 3, "label": "x"}\n', encoding="utf-8")
    assert "line 1: 'text' must be a string" in error_of(f"jsonl:{jpath}")
    jpath.write_text('["text", "label"]\n', encoding="utf-8")
    assert "line 1 is a list, not an object" in error_of(f"jsonl:{jpath}")


def test_other_bad_requests(tmp_path: Path) -> None:
    assert "does not exist" in error_of(f"csv:{tmp_path / 'nope.csv'}")
    assert "names no file" in error_of("jsonl:")
    assert "names no folder" in error_of("textfolder:")
    root = tmp_path / "corpus"
    write_folder(root / "train", make_rows(3, classes=("sports", "science")))
    write_folder(root / "test", make_rows(1, classes=("sports", "weather")))
    assert "label 'weather' in the test split" in error_of(f"textfolder:{root}")
    path = write_csv(tmp_path / "ok.csv", make_rows(5))
    assert "no token occurs 1000 time(s)" in error_of(f"csv:{path}", min_freq=1000)
    assert "tokenizer must be" in error_of(f"csv:{path}", tokenizer="chars")
    assert "max_vocab must be" in error_of(f"csv:{path}", max_vocab=2)
    assert "image_size applies to imagefolder" in error_of(f"csv:{path}", image_size=32)
    assert "apply to text datasets only" in error_of("digits", text_column="body", length=9)
    with pytest.raises(DataError, match="apply to csv:PATH and jsonl:PATH"):
        task_for(f"textfolder:{root}", label_column="y")
    with pytest.raises(DataError, match=r"unknown dataset 'news'.*ag_news, imdb.*csv:PATH"):
        task_for("news")


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_json_round_trip(tmp_path: Path) -> None:
    vocab = build_vocabulary(["Hello, world!", "hello again", "world again"], min_freq=1, length=6)
    assert vocab.tokens[:2] == ("<pad>", "<unk>") and "hello" in vocab
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = nv.Vocabulary.load(path)
    assert loaded == vocab and loaded.size == vocab.size
    texts = ["HELLO there, world", ""]
    assert torch.equal(loaded.encode(texts), vocab.encode(texts))
    assert loaded.encode("hello unknown").tolist() == [
        [vocab.tokens.index("hello"), nv.OOV_ID, 0, 0, 0, 0]
    ]
    blob = json.loads(path.read_text(encoding="utf-8"))
    assert (blob["pad_id"], blob["oov_id"], blob["length"]) == (0, 1, 6)
    assert blob["pattern"] == nv.WORD_PATTERN and blob["tokens"][2:] == list(vocab.tokens[2:])
    raw = nv.Vocabulary("bytes", (), 16)
    assert nv.Vocabulary.from_json(raw.to_json()) == raw and len(raw) == 258
    assert "ngrams" not in blob  # a words file is what version 1 always wrote
    grams = build_vocabulary(
        ["os.path.join", "os.path", "naïve café"], tokenizer="ngrams", min_freq=1, length=40
    )
    grams.save(tmp_path / "grams.json")
    loaded = nv.Vocabulary.load(tmp_path / "grams.json")
    assert loaded == grams and loaded.tokenizer == "ngrams" and ". path" in loaded
    texts = ["OS.Path.join(café)", "", "zebra"]
    assert torch.equal(loaded.encode(texts), grams.encode(texts))
    blob = json.loads((tmp_path / "grams.json").read_text(encoding="utf-8"))
    assert (blob["version"], blob["pattern"], blob["lowercase"]) == (1, nv.WORD_PATTERN, True)
    rule = {"word_bigrams": True, "min_n": 3, "max_n": 5, "begin": "<", "end": ">"}
    assert blob["ngrams"] == rule


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"format": "other"}, "not a nas.vocabulary"),
        ({"version": 2}, "not a nas.vocabulary"),
        ({"pattern": r"\S+"}, "pattern"),
        ({"tokens": ["a", "<unk>", "b"]}, "must start with"),
        ({"tokens": ["<pad>", "<unk>", "b", "b"]}, "repeat"),
        ({"length": 0}, "length must be a positive integer"),
        ({"size": 99}, "'size' is 99"),
        ({"tokenizer": "chars"}, "tokenizer must be"),
        ({"tokenizer": "ngrams"}, "n-gram rule None"),  # a words file called ngrams
    ],
)
def test_vocabulary_rejects_bad_files(change: dict[str, object], expect: str) -> None:
    blob = build_vocabulary(["a b", "b a"], min_freq=1).to_dict()
    blob.update(change)
    with pytest.raises(DataError, match=expect):
        nv.Vocabulary.from_dict(blob)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"ngrams": {**nv.NGRAM_RULE, "max_n": 6}}, "n-gram rule"),
        ({"ngrams": {**nv.NGRAM_RULE, "word_bigrams": False}}, "n-gram rule"),
        ({"pattern": r"\S+"}, "pattern"),
        ({"tokenizer": "words"}, None),  # read as words: the same tokens, other ids
    ],
)
def test_ngrams_vocabulary_rejects_another_rule(change: dict[str, object], expect: str) -> None:
    blob = build_vocabulary(["ab cd", "cd ab"], tokenizer="ngrams", min_freq=1).to_dict()
    blob.update(change)
    if expect is None:
        assert nv.Vocabulary.from_dict(blob).ids("ab cd") != nv.Vocabulary.from_dict(
            {**blob, "tokenizer": "ngrams"}
        ).ids("ab cd")
        return
    with pytest.raises(DataError, match=expect):
        nv.Vocabulary.from_dict(blob)


# --------------------------------------------------------------------------- task, split


def test_text_task_validation() -> None:
    ok = Task("t", "text", 1, 1, 1, 2, length=16, vocab_size=100, class_names=("a", "b"))
    assert ok.length == 16
    with pytest.raises(TaskError, match="length must be >= 1"):
        Task("t", "text", 1, 1, 1, 2, vocab_size=100)
    with pytest.raises(TaskError, match="vocab_size must be >= 3"):
        Task("t", "text", 1, 1, 1, 2, length=8, vocab_size=2)
    with pytest.raises(TaskError, match="channels must be 1 for a text task"):
        Task("t", "text", 3, 1, 1, 2, length=8, vocab_size=10)
    with pytest.raises(TaskError, match="applies to text tasks only"):
        Task("i", "image", 1, 8, 8, 2, length=8)
    with pytest.raises(TaskError, match="2 names for 3 classes"):
        Task("i", "image", 1, 8, 8, 3, class_names=("a", "b"))
    assert Task("i", "image", 1, 8, 8, 3) == Task("i", "image", 1, 8, 8, 3, 0, 0, ())


def test_split_holds_token_ids() -> None:
    split = Split(torch.zeros(3, 7, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    assert len(split) == 3
    with pytest.raises(DataError, match=r"int64 tensor of shape \(N, L\)"):
        Split(torch.zeros(3, 7), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match=r"3 sequences but Split\.y has 2 labels"):
        Split(torch.zeros(3, 7, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))


# --------------------------------------------------------------------------- training


class BagOfEmbeddings(nn.Module):
    """A stand-in for a text model: embeddings averaged over the non-padding positions."""

    def __init__(self, vocab_size: int, classes: int, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=nv.PAD_ID)
        self.out = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != nv.PAD_ID).unsqueeze(-1).float()
        mean = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.out(mean)


def test_trainer_learns_a_text_task(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(60))
    data: Data = load_data(f"csv:{path}", seed=0)
    torch.manual_seed(0)
    model = BagOfEmbeddings(data.task.vocab_size, data.task.classes)
    # Image-only settings (translation, cutout, mirrored evaluation) must be ignored.
    config = TrainConfig(
        epochs=4,
        batch_size=16,
        optimizer="adamw",
        lr=0.02,
        weight_decay=0,
        crop_pad=2,
        cutout=2,
        tta=True,
        report_every=1.0,
        precision="fp32",
        threads=1,
    )
    result = train(model, data, config)
    assert result.status == "ok" and result.memory_format == "contiguous"
    assert result.val_accuracy >= 0.75  # chance is 0.25
    test = evaluate(model, data.test, data.mean, data.std)
    assert test >= 0.75 and not math.isnan(test)


def test_word_dropout_trains_a_text_task_and_changes_what_it_learns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(60))
    data: Data = load_data(f"csv:{path}", seed=0)
    weights = []
    for p in (0.0, 0.3):
        torch.manual_seed(0)
        model = BagOfEmbeddings(data.task.vocab_size, data.task.classes)
        config = TrainConfig.for_task(
            "text", epochs=4, batch_size=16, token_dropout=p, precision="fp32", threads=1
        )
        assert train(model, data, config).val_accuracy >= 0.75  # chance is 0.25
        weights.append(next(model.parameters()).detach().clone())
    assert not torch.equal(*weights)  # the dropout acted


# --------------------------------------------------------------------------- search CLI


def test_search_passes_the_columns_on(tmp_path: Path) -> None:
    from nas.search.cli import parse_args, settings_from

    rows = [(label, text) for text, label in make_rows(5)]
    path = write_csv(tmp_path / "cols.csv", rows, header=("topic", "body"))
    args = parse_args(
        [
            "--dataset",
            f"csv:{path}",
            "--text-column",
            "body",
            "--label-column",
            "topic",
            "--storage",
            f"sqlite:///{tmp_path}/s.db",
        ]
    )
    settings = settings_from(args)
    assert (settings.text_column, settings.label_column) == ("body", "topic")
    with pytest.raises(DataError, match="no column 'text'"):
        settings_from(parse_args(["--dataset", f"csv:{path}"]))


def test_search_records_the_tokenizer_and_a_resume_must_give_the_same(tmp_path: Path) -> None:
    import sqlite3

    from nas.search import StudyError, build_study
    from nas.search.cli import parse_args, settings_from

    path = write_csv(tmp_path / "t.csv", make_rows(10))
    ngrams_task = task_for(f"csv:{path}", tokenizer="ngrams")
    common = ["--dataset", f"csv:{path}", "--storage", f"sqlite:///{tmp_path}/t.db"]
    first = [*common, "--study-name", "n", "--tokenizer", "ngrams"]
    settings = settings_from(parse_args(first))
    assert settings.tokenizer == "ngrams"
    study = build_study(settings, worker=False)
    assert study.user_attrs["tokenizer"] == "ngrams"
    assert ngrams_task.vocab_size > task_for(f"csv:{path}").vocab_size  # not the words task
    with pytest.raises(StudyError, match="created with --tokenizer ngrams, got words"):
        build_study(settings_from(parse_args([*common, "--study-name", "n"])), worker=False)
    # The default is words, recorded as such.
    words = build_study(settings_from(parse_args([*common, "--study-name", "w"])), worker=False)
    assert settings_from(parse_args(common)).tokenizer == "words"
    assert words.user_attrs["tokenizer"] == "words"
    # A study made before the tokenizer was recorded tokenised words: resuming it with
    # another one is refused, with words it is recorded.
    db = sqlite3.connect(tmp_path / "t.db")
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'tokenizer'")
    db.close()
    old = [*common, "--study-name", "w"]
    with pytest.raises(StudyError, match="created with --tokenizer words, got ngrams"):
        build_study(settings_from(parse_args([*old, "--tokenizer", "ngrams"])), worker=False)
    assert build_study(settings_from(parse_args(old)), worker=False).user_attrs["tokenizer"] == (
        "words"
    )


def test_search_on_a_text_dataset_uses_manet_text_and_records_the_vocabulary_inputs(
    text_study: TextStudyRef, tmp_path: Path
) -> None:
    import shutil

    import optuna

    from nas.model import ArchSpec
    from nas.search import DEFAULT_EPOCHS, StudyError, build_study, load_space, make_storage
    from nas.search.cli import parse_args, settings_from

    study = optuna.load_study(study_name=text_study.name, storage=make_storage(text_study.storage))
    attrs = study.user_attrs
    assert attrs["space"] == "manet_text" and attrs["dataset"] == text_study.dataset
    assert (attrs["seed"], attrs["text_column"], attrs["label_column"]) == (
        TEXT_SEED,
        "text",
        "label",
    )
    task = task_for(text_study.dataset, seed=TEXT_SEED)
    assert len(study.trials) == 3
    # The space's starting points are the first trials, and a resume does not queue them
    # again.
    points = load_space("manet_text").STARTING_POINTS
    assert [t.params for t in study.trials[: len(points)]] == list(points)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        spec = ArchSpec.from_dict(t.user_attrs["arch"])
        assert spec.input.is_text and spec.input.vocab_size == task.vocab_size
        assert spec.input.width == task.length and t.user_attrs["summary"].startswith("embed")
        assert t.user_attrs["flops"] > 0 and t.user_attrs["latency_ms"] > 0
    # Resuming with another seed would mix vocabularies: refused before anything is written.
    copy = tmp_path / "copy.db"
    shutil.copy(text_study.storage.removeprefix("sqlite:///"), copy)
    common = ["--dataset", text_study.dataset, "--storage", f"sqlite:///{copy}"]
    common += ["--study-name", text_study.name]
    # Text trials train whole epochs by default (an image search's 0.3 would be a few steps).
    assert settings_from(parse_args(common)).epochs == DEFAULT_EPOCHS["text"] == 2.0
    assert settings_from(parse_args([*common, "--epochs", "0.5"])).epochs == 0.5
    resumed = build_study(
        settings_from(parse_args([*common, "--epochs", "1", "--seed", str(TEXT_SEED)]))
    )
    assert len(resumed.trials) == 3
    with pytest.raises(StudyError, match=f"created with --seed {TEXT_SEED}, got 4"):
        build_study(settings_from(parse_args([*common, "--seed", "4"])))
    # Image spaces and hand designs do not take token ids.
    with pytest.raises(ValueError, match="'attention_cnn' builds networks for image tasks"):
        settings_from(parse_args([*common, "--space", "attention_cnn"]))
    with pytest.raises(ValueError, match="--enqueue-baselines: the hand designs"):
        settings_from(parse_args([*common, "--enqueue-baselines"]))
