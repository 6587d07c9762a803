"""Build the demo text corpus from this machine's Debian package descriptions, and score
a TF-IDF + logistic-regression baseline on it.

    python bench/text_corpus.py                 # writes bench/out/debian_descriptions.csv
    python bench/text_corpus.py --baseline      # ... then the baseline on nas.data's split

The corpus: ``apt-cache dumpavail`` lists every package apt knows; each package's
``Description`` (the synopsis line and, where the package lists carry it, the long
description) is one text and its ``Section`` (``contrib/`` and ``non-free/`` prefixes
stripped) its label. Identical descriptions are kept once (a text whose copies disagree
on the section is dropped: it cannot be classified), then the ``--top-k`` largest sections
with at least ``--min-examples`` texts each are kept. The package name is left out of the
text: ``python3-foo`` would give its section away. Rows are written sorted by package
name, so the file is the same byte for byte for the same apt lists.

Note: images built with ``Acquire::Languages "none"`` (Docker's default) have no
``Translation-en`` files, so ``dumpavail`` gives only the one-line synopsis; the long
descriptions are used wherever they are present.

The baseline (:func:`tfidf_baseline`) reads the dataset through :func:`nas.data.load_data`,
so it trains, selects and tests on exactly the train / validation / test split a search
of the same dataset and seed uses: TF-IDF (word 1-2-grams, sublinear tf) fitted on the
training texts, logistic regression for each ``C``, the ``C`` with the best validation
accuracy reported with its test accuracy.

Prints the class counts, the baseline's figures when asked, and ``rows: N`` last.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
DEFAULT_CSV = OUT / "debian_descriptions.csv"
DEFAULT_DATASET = "csv:bench/out/debian_descriptions.csv"
_SECTION_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/")


# --------------------------------------------------------------------------- corpus


def stanzas(dump: str) -> Iterator[dict[str, str]]:
    """RFC 822 paragraphs of an apt package list: field name → value (continuations kept,
    each on its own line, with their leading space)."""
    fields: dict[str, str] = {}
    last = None
    for line in dump.split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t" and last is not None:
            fields[last] += "\n" + line
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    if fields:
        yield fields


def description_text(value: str) -> str:
    """A Description field as plain text: synopsis, then the long description's lines with
    their one leading space removed and " ." paragraph separators as blank lines."""
    synopsis, *rest = value.split("\n")
    lines = [synopsis.strip()]
    for line in rest:
        body = line[1:] if line.startswith(" ") else line
        lines.append("" if body.strip() == "." else body.rstrip())
    return "\n".join(lines).strip()


def section_of(value: str) -> str:
    for prefix in _SECTION_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def build_corpus(
    dump: str, top_k: int = 8, min_examples: int = 100
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """``(text, section)`` rows and figures about what was dropped."""
    entries: list[tuple[str, str, str]] = []  # (package, text, section)
    for fields in stanzas(dump):
        package, description, section = (
            fields.get("Package"),
            fields.get("Description"),
            fields.get("Section"),
        )
        if not package or not description or not section:
            continue
        entries.append((package, description_text(description), section_of(section)))
    entries.sort()
    # Identical texts: keep the first package's copy; drop texts with conflicting labels.
    sections_of: dict[str, set[str]] = defaultdict(set)
    for _, text, section in entries:
        sections_of[text].add(section)
    seen: set[str] = set()
    unique: list[tuple[str, str]] = []
    for _, text, section in entries:
        if text in seen or len(sections_of[text]) > 1:
            continue
        seen.add(text)
        unique.append((text, section))
    counts = Counter(section for _, section in unique)
    ranked = sorted(counts, key=lambda s: (-counts[s], s))
    kept = [s for s in ranked if counts[s] >= min_examples][:top_k]
    rows = [(text, section) for text, section in unique if section in kept]
    figures = {
        "stanzas": len(entries),
        "unique_texts": len(unique),
        "conflicting_texts": sum(1 for s in sections_of.values() if len(s) > 1),
        "sections": len(counts),
    }
    return rows, figures


def write_csv(rows: Sequence[tuple[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("text", "label"))
        writer.writerows(rows)


def apt_dump() -> str:
    done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, check=True)
    # Control files are UTF-8 by policy; a stray byte should not stop the benchmark.
    return done.stdout.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- baseline


def tfidf_baseline(
    dataset: str = DEFAULT_DATASET,
    seed: int = 0,
    *,
    val_fraction: float = 0.1,
    cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    data_dir: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    max_iter: int = 2000,
    analyzer: str = "word",
) -> dict[str, Any]:
    """TF-IDF + logistic regression on the split ``nas.data.load_data`` gives ``dataset``.

    ``analyzer``: ``word`` (word 1-2-grams) or ``char_wb`` (character 2-5-grams inside
    word boundaries: on identifiers and code fragments it can beat words).

    Fits the vectoriser and each model on the training texts only, picks ``C`` by
    validation accuracy and reports that model's test accuracy.

    Returns:
        ``dataset``, ``seed``, the split sizes (``train``, ``val``, ``test``), ``classes``,
        ``features``, ``val_by_C``, the chosen ``C``, ``val_accuracy``, ``test_accuracy``
        and ``seconds``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from nas.data import load_data

    t0 = time.perf_counter()
    data = load_data(
        dataset,
        seed=seed,
        val_fraction=val_fraction,
        data_dir=data_dir,
        text_column=text_column,
        label_column=label_column,
    )
    if data.texts is None:
        raise ValueError(f"{dataset} is not a text dataset")
    y_train, y_val, y_test = (s.y.cpu().numpy() for s in (data.train, data.val, data.test))
    ngrams = {"word": (1, 2), "char_wb": (2, 5)}[analyzer]
    vectoriser = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2)
    x_train = vectoriser.fit_transform(data.texts.train)
    x_val = vectoriser.transform(data.texts.val)
    x_test = vectoriser.transform(data.texts.test)
    best: tuple[float, float, Any] | None = None
    val_by_c: dict[float, float] = {}
    for c in cs:
        model = LogisticRegression(C=c, max_iter=max_iter)
        model.fit(x_train, y_train)
        acc = float((model.predict(x_val) == y_val).mean())
        val_by_c[c] = acc
        if best is None or acc > best[0]:  # ties keep the smaller C (more regularised)
            best = (acc, c, model)
    assert best is not None
    val_acc, c, model = best
    return {
        "dataset": dataset,
        "analyzer": analyzer,
        "seed": seed,
        "train": len(y_train),
        "val": len(y_val),
        "test": len(y_test),
        "classes": data.task.classes,
        "features": int(x_train.shape[1]),
        "val_by_C": val_by_c,
        "C": c,
        "val_accuracy": val_acc,
        "test_accuracy": float((model.predict(x_test) == y_test).mean()),
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--top-k", type=int, default=8, help="sections kept (default 8)")
    p.add_argument(
        "--min-examples", type=int, default=100, help="fewest texts of a kept section (100)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_CSV, help="the CSV to write")
    p.add_argument("--dump", type=Path, help="read this saved `apt-cache dumpavail` output")
    p.add_argument("--baseline", action="store_true", help="then score TF-IDF + LR on it")
    p.add_argument("--seed", type=int, default=0, help="the split seed of the baseline")
    args = p.parse_args(argv)

    dump = args.dump.read_text(encoding="utf-8", errors="replace") if args.dump else apt_dump()
    rows, figures = build_corpus(dump, args.top_k, args.min_examples)
    if len({label for _, label in rows}) < 2:
        sys.exit(f"fewer than 2 sections have {args.min_examples} descriptions; lower it")
    write_csv(rows, args.out)
    print(
        f"{figures['stanzas']} package entries, {figures['unique_texts']} distinct "
        f"descriptions ({figures['conflicting_texts']} dropped: same text, other sections), "
        f"{figures['sections']} sections; kept the top {args.top_k} with >= "
        f"{args.min_examples} each -> {args.out}"
    )
    counts = Counter(label for _, label in rows)
    for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {label:<12} {n:>6}")
    lengths = sorted(len(text.split()) for text, _ in rows)
    print(f"words per text: median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    if args.baseline:
        result = tfidf_baseline(f"csv:{args.out}", args.seed)
        val_by_c = ", ".join(f"C={c:g}: {a:.4f}" for c, a in result["val_by_C"].items())
        print(
            f"tfidf+logreg (seed {result['seed']}; train/val/test {result['train']}/"
            f"{result['val']}/{result['test']}, {result['features']} features, "
            f"{result['seconds']:.1f} s): val {val_by_c}"
        )
        print(
            f"tfidf_baseline: C={result['C']:g} val_accuracy {result['val_accuracy']:.4f} "
            f"test_accuracy {result['test_accuracy']:.4f}"
        )
    print(f"rows: {len(rows)}")


if __name__ == "__main__":
    main()
