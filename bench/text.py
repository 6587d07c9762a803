"""Searched MANet-text + retrain vs TF-IDF + logistic regression, on real corpora.

    python bench/text.py                                  # 3 corpora x 3 seeds, 10-min searches
    python bench/text.py --corpora docstrings --seeds 0 --minutes 5
    python bench/text.py --report                         # only the tables from the records

Corpora (built into ``bench/out/`` when missing, not committed):

- ``demo``: Debian package synopses labelled with their section, 8 classes, median 7 words
  (``bench/text_corpus.py``);
- ``docstrings``: the first paragraphs of numpy, scipy, pandas, scikit-learn, sympy and
  networkx docstrings labelled with their library, 6 × 500 texts, median 179 characters
  (``bench/docstring_corpus.py``);
- ``docstrings_all``: the same libraries' every such docstring, 11,518 texts, 1,102
  (numpy) to 3,567 (sympy) a library: a test split of about 2,300 texts, where the 600
  of ``docstrings`` give a binomial standard deviation (about 1.5 points a seed) larger
  than the gain to be told apart.

For each corpus and seed (the seed sets the split, the vocabulary and the search):

1. ``python -m nas.search`` on it for ``--minutes`` (defaults: ``manet_text``, accuracy ×
   latency, promotions), ``--tokenizer`` passed on when given;
2. the most accurate trial by validation accuracy retrained as ``nas.export --weights``
   retrains it (train + validation, the export's default budget unless
   ``--retrain-epochs``), scored once on the test split;
3. TF-IDF word 1-2-grams and TF-IDF character 2-5-grams (char_wb), each + logistic
   regression with ``C`` chosen on the same validation split, scored on the same test split
   (``text_corpus.tfidf_baseline``).

Each (corpus, seed) is a JSON line in ``bench/results/text.jsonl`` keyed by its settings and
the machine; a rerun skips what is measured. The report prints, per corpus, mean ± sd over
seeds of ours and of both baselines, ours − the better baseline (the higher mean test
accuracy), the share of the search's front holding an attention op, pruned trials and the
wall time. Last line ``accuracy_gain: X``: ours − the better baseline, in points, mean over
seeds, on the corpus where it is lowest.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, append_record, load_records, machine, matches, table
from text_corpus import tfidf_baseline

from nas.data import MAX_LENGTH
from nas.export import RETRAIN_BAG_TOKEN_DROPOUT, RETRAIN_STEPS, RETRAIN_TOKEN_DROPOUT
from nas.search import load_space
from nas.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "text.jsonl"
# corpus → (dataset, the command line in bench/ that builds it)
CORPORA = {
    "demo": ("csv:bench/out/debian_descriptions.csv", ["text_corpus.py"]),
    "docstrings": ("csv:bench/out/docstrings.csv", ["docstring_corpus.py"]),
    "docstrings_all": (
        "csv:bench/out/docstrings_all.csv",
        ["docstring_corpus.py", "--per-class", "0", "--out", "bench/out/docstrings_all.csv"],
    ),
}
ANALYZERS = ("word", "char_wb")


def settings(args: argparse.Namespace, corpus: str, seed: int) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "seed": seed,
        "minutes": args.minutes,
        "tokenizer": args.tokenizer,
        "retrain_epochs": args.retrain_epochs,
        # The search's promotion rule: "asha" (nothing promoted before 3 trials reached
        # the rung); records without it promoted the first trial at a rung.
        "promotion": "asha",
        # The cost limit's floor: text_cnn's estimated cost; records without it had none.
        "cost_floor": "text_cnn",
        # The text recipe's learning rate and the cap on the sequence length (records
        # without them: 0.01 and 512).
        "lr": TrainConfig.for_task("text").lr,
        "max_length": MAX_LENGTH,
        # The export's text retrain: this many optimiser steps (records without it: 10
        # epochs, about 190 steps on the docstrings and 1,900 on the demo corpus).
        "retrain_steps": RETRAIN_STEPS if args.retrain_epochs is None else None,
        # Its word dropout, with stages and without (records without it: none).
        "retrain_token_dropout": [RETRAIN_TOKEN_DROPOUT, RETRAIN_BAG_TOKEN_DROPOUT],
        # The trials the search tries first (records without it: none).
        "starting_points": list(load_space("manet_text").STARTING_POINTS),
        "machine": machine("cpu"),
    }


def measure(args: argparse.Namespace, corpus: str, seed: int) -> dict[str, Any]:
    from nas.export import retrain
    from nas.model import ArchSpec
    from nas.search import counts, front, load_existing_study

    dataset, _ = CORPORA[corpus]
    db = OUT / "text" / f"{corpus}-{args.tokenizer or 'default'}-seed{seed}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)  # a run cut short starts again
    storage = f"sqlite:///{db}"
    search = [sys.executable, "-m", "nas.search", "--dataset", dataset, "--trials", "100000"]
    search += ["--timeout", str(args.minutes * 60), "--storage", storage, "--study-name", "text"]
    search += ["--seed", str(seed)]
    if args.tokenizer is not None:
        search += ["--tokenizer", args.tokenizer]
    started = time.perf_counter()
    subprocess.run(search, check=True, cwd=ROOT)
    searched = time.perf_counter() - started

    study = load_existing_study(storage, "text")
    members = front(study)
    best = members[0]
    spec = ArchSpec.from_dict(best.user_attrs["arch"])
    t0 = time.perf_counter()
    ours = retrain(study, spec, seed, "cpu", None, epochs=args.retrain_epochs)
    retrained = time.perf_counter() - t0
    record: dict[str, Any] = {
        "ours": ours.test_accuracy,
        "ours_val": best.values[0],
        "summary": spec.summary(),
        "arch": best.user_attrs["arch"],  # to retrain the pick another way, with no search
        "latency_ms": best.user_attrs.get("latency_ms"),
        "trials": counts(study),
        "front": [m.user_attrs.get("summary") for m in members],
        "search_seconds": searched,
        "retrain_seconds": retrained,
    }
    for analyzer in ANALYZERS:
        b = tfidf_baseline(dataset, seed=seed, analyzer=analyzer)
        record[analyzer] = b["test_accuracy"]
        record[f"{analyzer}_C"] = b["C"]
    return record


def has_attention(summary: str) -> bool:
    """Whether a network's summary names an attention op (``softmax(4x8)``, ``channel(r8)``)."""
    from nas.model import layers

    return any(f"{op}(" in summary for op in layers.ATTENTIONS)


def report(records: list[dict[str, Any]], args: argparse.Namespace) -> float:
    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    rows = [("corpus", "seeds", "ours", "tfidf word", "tfidf char", "gain", "attn front", "pruned")]
    gains = {}
    for corpus in args.corpora:
        mine = [r for r in records if r["corpus"] == corpus]
        if not mine:
            continue
        ours = [r["ours"] for r in mine]
        base = {a: [r[a] for r in mine] for a in ANALYZERS}
        better = max(ANALYZERS, key=lambda a: statistics.mean(base[a]))
        gains[corpus] = 100 * (statistics.mean(ours) - statistics.mean(base[better]))
        front_size = sum(len(r["front"]) for r in mine)
        pruned = sum(r["trials"]["pruned"] for r in mine)
        total = sum(sum(r["trials"].values()) for r in mine)
        rows.append(
            (
                corpus,
                ",".join(str(r["seed"]) for r in mine),
                ms(ours),
                ms(base["word"]),
                ms(base["char_wb"]),
                f"{gains[corpus]:+.2f} vs {better}",
                f"{sum(has_attention(s) for r in mine for s in r['front'])}/{front_size}",
                f"{pruned}/{total}",
            )
        )
        for r in mine:
            minutes = (r["search_seconds"] + r["retrain_seconds"]) / 60
            print(
                f"  {corpus} seed {r['seed']}: ours {r['ours']:.4f} (val {r['ours_val']:.4f}, "
                f"{r['latency_ms']:.3f} ms) {r['summary']}; word {r['word']:.4f}, char "
                f"{r['char_wb']:.4f}; {minutes:.1f} min ({r['retrain_seconds'] / 60:.1f} retrain)"
            )
    print(table(rows))
    tokenizer = args.tokenizer or "default"
    print(f"{args.minutes:g}-minute searches, tokenizer {tokenizer}; {machine('cpu')}")
    return min(gains.values()) if gains else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=10.0, help="search time per run")
    p.add_argument("--tokenizer", help="the search's --tokenizer (default: its own)")
    p.add_argument("--retrain-epochs", type=float, help="default: nas.export's")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true", help="only the tables from --out")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.report:
        measured = load_records(args.out)
        for corpus in args.corpora:
            dataset, (script, *options) = CORPORA[corpus]
            if not (ROOT / dataset.removeprefix("csv:")).exists():
                command = [sys.executable, str(ROOT / "bench" / script), *options]
                subprocess.run(command, check=True, cwd=ROOT)
            for seed in args.seeds:
                key = settings(args, corpus, seed)
                if any(matches(r, key) for r in measured):
                    print(f"[{corpus} seed {seed}] measured before: skipped", flush=True)
                    continue
                record = key | measure(args, corpus, seed)
                append_record(args.out, record)
                print(f"[{corpus} seed {seed}] ours {record['ours']:.4f}", flush=True)
    records = [
        r
        for r in load_records(args.out)
        if r["seed"] in args.seeds and matches(r, settings(args, r["corpus"], r["seed"]))
    ]
    gain = report(records, args)
    print(f"accuracy_gain: {gain:.2f}")


if __name__ == "__main__":
    main()
