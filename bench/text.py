"""Searched MANet-text vs a TF-IDF + logistic-regression baseline, on real text.

    python bench/text.py                      # a 30-minute search (about 40 minutes in all)
    python bench/text.py --minutes 10         # a shorter search

1. The demo corpus: this machine's Debian package descriptions labelled with their
   section (``bench/text_corpus.py``; built into ``bench/out/`` if missing).
2. ``python -m nas.search`` on it for ``--minutes`` (space ``manet_text``, the default
   for text; accuracy × latency; each trial ``--epochs`` on the training split, scored on
   the validation split).
3. The most accurate trial by validation accuracy is retrained on training + validation
   for ``--retrain-epochs`` (``nas.export``'s retrain) and scored once on the test split.
4. The baseline (``tfidf_baseline``): TF-IDF word 1-2-grams and logistic regression, ``C``
   chosen on the same validation split, scored on the same test split.

Prints both test accuracies; last line ``accuracy_gain: X``: ours − baseline, in points.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_corpus import DEFAULT_CSV, DEFAULT_DATASET, tfidf_baseline

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="search time")
    parser.add_argument(
        "--epochs", type=float, help="per-trial epochs (default: the search's for text)"
    )
    parser.add_argument("--retrain-epochs", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="the search's --threads (default its own)")
    args = parser.parse_args()

    if not DEFAULT_CSV.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "text_corpus.py")], check=True)
    storage = f"sqlite:///{OUT}/text.db"
    (OUT / "text.db").unlink(missing_ok=True)
    started = time.monotonic()
    search = [
        sys.executable,
        "-m",
        "nas.search",
        "--dataset",
        DEFAULT_DATASET,
        "--trials",
        "10000",
        "--timeout",
        str(args.minutes * 60),
        "--storage",
        storage,
        "--study-name",
        "text",
        "--seed",
        str(args.seed),
    ]
    if args.epochs is not None:
        search += ["--epochs", str(args.epochs)]
    if args.threads is not None:
        search += ["--threads", str(args.threads)]
    subprocess.run(search, check=True, cwd=ROOT)
    searched = time.monotonic() - started

    import torch

    from nas.export import retrain

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from nas.model import ArchSpec
    from nas.search import load_existing_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_existing_study(storage, "text")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.values[0])
    spec = ArchSpec.from_dict(best.user_attrs["arch"])
    print(
        f"search: {len(study.trials)} trials ({len(complete)} complete) in {searched / 60:.1f} "
        f"min; best by validation: trial {best.number} val {best.values[0]:.4f} "
        f"latency {best.user_attrs['latency_ms']:.3f} ms: {spec.summary()}"
    )
    ours = retrain(
        study, spec, seed=args.seed, device="cpu", data_dir=None, epochs=args.retrain_epochs
    ).test_accuracy
    print(f"ours: retrained {args.retrain_epochs:g} epochs on train+val: test accuracy {ours:.4f}")
    baseline = tfidf_baseline(DEFAULT_DATASET, seed=args.seed)
    print(f"baseline: {baseline}")
    gain = 100 * (ours - float(baseline["test_accuracy"]))
    print(f"accuracy_gain: {gain:.2f}")


if __name__ == "__main__":
    main()
