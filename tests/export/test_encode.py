"""The exported model.py's encode() tokenises exactly as nas.data.Vocabulary does, for every
tokenizer, run where nas cannot be imported (the generated file needs torch and the
standard library only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nas.data import TOKENIZERS, Vocabulary
from nas.export import _codegen as codegen
from nas.model import ArchSpec, HeadSpec, InputSpec, StemSpec
from tests.conftest import build_vocabulary

# Code identifiers, digits, non-ASCII, the words whose n-grams would spell the special
# tokens, punctuation alone, and texts longer than the sequence.
CORPUS = [
    "os.path.join(root, name) joins paths",
    "snake_case_name and CamelCase names",
    "naïve café, 日本語 text; 42 files",
    "pad unk <pad> <unk> os.path",
    "the path of os.path.join is a path",
]
TEXTS = [
    "OS.Path.Join(ROOT, x)",
    "",
    "snake_case_names CamelCaseIsh 4242",
    "naïve café 日本語!",
    "pad, unk and <unk>",
    "path " * 80,
    "a\tb\nc",
    "zebra quagga",
]

# The exported file's encode, where "import nas" fails.
CHECK = """
import importlib.util, json, sys
sys.modules["nas"] = None
import torch
for case in json.loads(sys.argv[1]):
    spec = importlib.util.spec_from_file_location(case["name"], case["code"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = module.encode(case["texts"], case["vocab"])
    assert ids.dtype == torch.int64 and ids.tolist() == case["ids"], case["name"]
    assert module.encode(case["texts"][0], case["vocab"]).tolist() == case["ids"][:1]
print("ok")
"""


def vocabularies() -> dict[str, Vocabulary]:
    return {
        "words": build_vocabulary(CORPUS, min_freq=1, length=23),
        "bytes": Vocabulary("bytes", (), 31),
        "ngrams": build_vocabulary(CORPUS, tokenizer="ngrams", min_freq=2, length=97),
        # A cap: most of the n-grams are unknown and dropped.
        "ngrams_capped": build_vocabulary(CORPUS, tokenizer="ngrams", max_vocab=40, length=64),
    }


def text_spec(vocab: Vocabulary) -> ArchSpec:
    """fastText: an embedding, the mean over the real tokens, a linear head."""
    return ArchSpec(
        input=InputSpec(1, 1, vocab.length, kind="text", vocab_size=vocab.size),
        stem=StemSpec(8),
        stages=(),
        global_pool="avg",
        head=HeadSpec(),
        classes=2,
    )


def test_every_tokenizer_is_covered() -> None:
    assert {v.tokenizer for v in vocabularies().values()} == set(TOKENIZERS)


def test_exported_encode_equals_the_vocabulary_for_every_tokenizer(tmp_path: Path) -> None:
    cases = []
    for name, vocab in vocabularies().items():
        code = tmp_path / f"{name}.py"
        code.write_text(codegen.render_code(text_spec(vocab), docstring=name))
        vocab.save(tmp_path / f"{name}.vocab.json")
        ids = vocab.encode(TEXTS)
        if vocab.tokenizer == "ngrams":  # unknown n-grams dropped, not OOV; never a pad
            for row, text in enumerate(TEXTS):
                n = len(vocab.ids(text))
                assert 0 not in ids[row, : min(n, vocab.length)].tolist()
        cases.append(
            {
                "name": name,
                "code": str(code),
                "vocab": str(tmp_path / f"{name}.vocab.json"),
                "texts": TEXTS,
                "ids": ids.tolist(),
            }
        )
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


REFUSE = """
import importlib.util, sys
sys.modules["nas"] = None
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
for path in sys.argv[2:]:
    try:
        m.encode("x", path)
        print("accepted")
    except ValueError as e:
        print(e)
"""


def test_exported_encode_refuses_a_vocabulary_of_another_rule(tmp_path: Path) -> None:
    vocab = vocabularies()["ngrams"]
    code = tmp_path / "m.py"
    code.write_text(codegen.render_code(text_spec(vocab), docstring="m"))
    rule = vocab.to_dict()["ngrams"]
    changes: list[tuple[dict[str, object], str]] = [
        ({"ngrams": {**rule, "min_n": 2}}, "makes n-grams other than"),
        ({"ngrams": None}, "makes n-grams other than"),
        ({"tokenizer": "chars"}, "unknown tokenizer 'chars'"),
        ({"pattern": r"\S+"}, "splits words other than"),
        ({}, "accepted"),
    ]
    paths = []
    for i, (change, _) in enumerate(changes):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps({**vocab.to_dict(), **change}), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", REFUSE, str(code), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(changes)
    for line, (_, expect) in zip(lines, changes, strict=True):
        assert expect in line, (line, expect)
