"""Build a second real text corpus, of longer technical paragraphs: the docstrings of the
scientific Python libraries installed beside ``nas``, each labelled with its library.

    python bench/docstring_corpus.py       # writes bench/out/docstrings.csv
    python bench/docstring_corpus.py --per-class 0 --out bench/out/docstrings_all.csv

Which library wrote this paragraph? numpy, scipy, pandas, scikit-learn, sympy and networkx
all document array and graph maths in the same register, with identifiers, dotted names
and code fragments, so word and character statistics both matter (as on the unseen corpus
of issue 19). The files are parsed with ``ast``, never imported. A text is the docstring
of a module, or of a class or function whose name does not start with ``_`` (private
modules hold most of scipy's public functions), outside test modules:
its first two paragraphs, whitespace collapsed, cut at ``MAX_CHARS``, kept when at least
``MIN_CHARS`` long. A text seen twice (inherited or copied docstrings) is kept once, and
dropped when libraries disagree on it. ``--per-class`` texts are drawn from each library
(seeded), and rows are written sorted, so the file is the same for the same packages.

Prints the class counts and the length quantiles, ``rows: N`` last.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib.util
import random
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
DEFAULT_CSV = OUT / "docstrings.csv"
DEFAULT_DATASET = "csv:bench/out/docstrings.csv"
LIBRARIES = ("numpy", "scipy", "pandas", "sklearn", "sympy", "networkx")
MIN_CHARS, MAX_CHARS = 80, 1200


def package_dir(name: str) -> Path | None:
    """Where a top-level package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def paragraphs(doc: str) -> str:
    """The first two paragraphs of a docstring, whitespace collapsed, at most MAX_CHARS."""
    parts = [p for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()][:2]
    text = " ".join(" ".join(p.split()) for p in parts)
    return text[:MAX_CHARS]


def docstrings(root: Path) -> Iterator[str]:
    """The public docstrings of every module under ``root``, in sorted file order."""
    for path in sorted(root.rglob("*.py")):
        if any("test" in part for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        nodes: list[ast.AST] = [tree]
        nodes += [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and not n.name.startswith("_")
        ]
        for node in nodes:
            assert isinstance(
                node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            )
            doc = ast.get_docstring(node)
            if doc:
                yield paragraphs(doc)


def build(per_class: int, seed: int) -> list[tuple[str, str]]:
    labels: dict[str, set[str]] = defaultdict(set)
    for lib in LIBRARIES:
        root = package_dir(lib)
        if root is None:
            print(f"  {lib}: not installed, left out", file=sys.stderr)
            continue
        for text in docstrings(root):
            if len(text) >= MIN_CHARS:
                labels[text].add(lib)
    by_lib: dict[str, list[str]] = defaultdict(list)
    for text, libs in sorted(labels.items()):
        if len(libs) == 1:
            by_lib[next(iter(libs))].append(text)
    rng = random.Random(seed)
    rows = []
    for lib, texts in sorted(by_lib.items()):
        n = len(texts) if per_class == 0 else min(per_class, len(texts))
        rows += [(t, lib) for t in rng.sample(texts, n)]
    return sorted(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-class", type=int, default=500, help="texts per library (500; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="the draw of each library's texts")
    p.add_argument("--out", type=Path, default=DEFAULT_CSV)
    args = p.parse_args()
    rows = build(args.per_class, args.seed)
    if len({label for _, label in rows}) < 2:
        sys.exit("fewer than 2 of the libraries are installed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("text", "label"))
        writer.writerows(rows)
    counts: dict[str, int] = defaultdict(int)
    for _, label in rows:
        counts[label] += 1
    for label, n in sorted(counts.items()):
        print(f"  {label:<10} {n:>5}")
    lengths = sorted(len(t) for t, _ in rows)
    quantiles = ", ".join(f"{q}%: {lengths[len(lengths) * q // 100]}" for q in (5, 50, 95))
    print(f"characters per text: {quantiles}, max {lengths[-1]}")
    print(f"rows: {len(rows)}")


if __name__ == "__main__":
    main()
