"""Fixed text networks on a text corpus (the demo one by default), trained as a search
trial trains them, against TF-IDF + logistic regression on the same split: does the space
hold networks that match a linear n-gram model, and what does a change to the layers
(masking, say) or the tokenizer do to them?

    python bench/text_networks.py                      # 2 epochs, seed 0
    python bench/text_networks.py --epochs 6 --seeds 0 1 2
    git worktree add /tmp/before REV && PYTHONPATH=/tmp/before python bench/text_networks.py
                                                       # the same networks at another revision
    python bench/text_networks.py --mask-cost          # what masking costs in training time
    python bench/text_networks.py --dataset csv:bench/out/docstrings.csv --tokenizer ngrams
    python bench/text_networks.py --only bag64 bag64_attention --tokenizer ngrams --vary lr=0.01
                                                       # the recipe at another learning rate
    python bench/text_networks.py --only bag64_attention --vary token_dropout=0,0.1,0.2,0.3
                                                       # each network at each word dropout

Each network trains ``--epochs`` on the training split with the text recipe
(``TrainConfig.for_task("text")``: AdamW, lr 0.03), once per value of ``--vary
FIELD=V[,V...]`` (one of the recipe's fields) if given, and is scored on the validation and
the test split; mean ± standard deviation over ``--seeds`` (the seed sets the split and the
initial weights). The baseline is ``text_corpus.tfidf_baseline`` (word
1-2-grams, C chosen on validation) for each seed. Last line ``best_gain: X``: the best
network's mean test accuracy minus the baseline's, in points.

``--mask-cost`` trains each network ``--epochs`` with its padding mask and with the mask
switched off (``Net.text = False``: the image path, where pads take part), alternating,
``--rounds`` times each in one process, and prints the median time ratio masked /
unmasked per network; last line ``mask_cost: X``, the largest ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from text_corpus import DEFAULT_CSV, DEFAULT_DATASET, tfidf_baseline

import nas
from nas.data import Data, load_data
from nas.model import (
    ArchSpec,
    AttentionSpec,
    HeadSpec,
    InputSpec,
    StageSpec,
    StemSpec,
    build_model,
)
from nas.train import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parents[1]

# name → (stem width, stages, global pool); the input and classes come from the data.
NETWORKS: dict[str, tuple[int, tuple[StageSpec, ...], str]] = {
    # the mean of the tokens' embeddings into a linear layer (fastText)
    "bag64": (64, (), "avg"),
    "bag128": (128, (), "avg"),
    "bag256": (256, (), "avg"),
    # a learned weight per token (softmax over the text) in place of the mean
    "bag64_attention": (64, (), "attention"),
    "bag128_attention": (128, (), "attention"),
    "bag256_attention": (256, (), "attention"),
    # the bag plus what a k-wide conv adds to it (separable blocks keep a skip at one width)
    "sep64_attention": (64, (StageSpec("separable", 64, kernel=7),), "attention"),
    "sep128_attention": (128, (StageSpec("separable", 128, kernel=7),), "attention"),
    # the best network of issue 19's run on an unseen corpus
    "conv64": (256, (StageSpec("plain", 64, kernel=7),), "avgmax"),
    "conv64_attention": (256, (StageSpec("plain", 64, kernel=7),), "attention"),
    # the best of bench/text.py's 30-minute search on this corpus (before masking)
    "attention128": (
        256,
        (
            StageSpec(
                "residual", 128, kernel=5, attention=AttentionSpec("sigmoid", 1, 16, "learned")
            ),
        ),
        "attention",
    ),
    "manet_pool": (
        128,
        (
            StageSpec("plain", 96, kernel=3, downsample="max"),
            StageSpec("residual", 96, attention=AttentionSpec("manet_pool", 2, 16, pool_stride=2)),
        ),
        "max",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--tokenizer", help="load_data's (default: words)")
    parser.add_argument("--length", type=int, help="load_data's (default: from the data)")
    parser.add_argument("--max-vocab", type=int, help="load_data's (default: its tokenizer's)")
    parser.add_argument("--min-freq", type=int, help="load_data's (default: seen twice)")
    parser.add_argument(
        "--vary",
        type=vary,
        metavar="FIELD=V[,V...]",
        help="train each network with this TrainConfig field at each value",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", choices=NETWORKS, help="these networks only")
    parser.add_argument("--mask-cost", action="store_true", help="time masked vs unmasked")
    parser.add_argument("--rounds", type=int, default=3, help="--mask-cost rounds")
    args = parser.parse_args()
    if args.dataset == DEFAULT_DATASET and not DEFAULT_CSV.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "text_corpus.py")], check=True)
    print(f"nas from {Path(nas.__file__).parent}; torch threads {torch.get_num_threads()}")
    names = args.only or list(NETWORKS)
    if args.mask_cost:
        mask_cost(names, args.epochs, args.rounds, args.dataset)
        return
    recipe = replace(TrainConfig.for_task("text"), epochs=args.epochs)
    field, values = args.vary or ("", [])
    variants = [(f"@{v}", {field: v}) for v in values] or [("", {})]
    runs = [(n, change, n + suffix) for n in names for suffix, change in variants]
    results: dict[str, list[tuple[float, float, float]]] = {key: [] for _, _, key in runs}
    baseline: list[float] = []
    for seed in args.seeds:
        data = load_data(
            args.dataset,
            seed=seed,
            tokenizer=args.tokenizer,
            length=args.length,
            max_vocab=args.max_vocab,
            min_freq=args.min_freq,
        )
        base = tfidf_baseline(args.dataset, seed=seed)
        baseline.append(float(base["test_accuracy"]))
        print(f"seed {seed}: baseline test {baseline[-1]:.4f} (C {base['C']})", flush=True)
        for name, change, key in runs:
            spec = network(name, data)
            model = build_model(spec, seed=seed)
            config = replace(recipe, seed=seed, **change)
            t0 = time.perf_counter()
            train(model, data, config)
            seconds = time.perf_counter() - t0
            val = evaluate(model, data.val, (), ())
            test = evaluate(model, data.test, (), ())
            results[key].append((val, test, seconds))
            print(
                f"  {key:13s} val {val:.4f} test {test:.4f} {seconds:6.1f} s  {spec.summary()}",
                flush=True,
            )
    varied = f", {field} {','.join(map(str, values))}" if values else ""
    print(f"\n{len(args.seeds)} seed(s), {args.epochs:g} epochs{varied}; mean ± sd over seeds")
    print(f"{'network':13s} {'val':>15s} {'test':>15s} {'train s':>8s}")

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    for key, rows in results.items():
        vals, tests, secs = zip(*rows, strict=True)
        print(
            f"{key:13s} {ms(list(vals)):>15s} {ms(list(tests)):>15s} {statistics.mean(secs):8.1f}"
        )
    print(f"{'tfidf+lr':13s} {'':>15s} {ms(baseline):>15s}")
    best = max(results, key=lambda k: statistics.mean(t for _, t, _ in results[k]))
    gain = 100 * (statistics.mean(t for _, t, _ in results[best]) - statistics.mean(baseline))
    print(f"best: {best}")
    print(f"best_gain: {gain:.2f}")


def vary(text: str) -> tuple[str, list[Any]]:
    """``FIELD=V[,V...]`` → the TrainConfig field and its values, typed as its default is."""
    field, sep, values = text.partition("=")
    names = [f.name for f in fields(TrainConfig)]
    if not sep or field not in names:
        raise argparse.ArgumentTypeError(f"want FIELD=V[,V...] with FIELD one of {names}")
    default = getattr(TrainConfig.for_task("text"), field)
    return field, [typed(v, default) for v in values.split(",")]


def typed(text: str, default: Any) -> Any:
    if text.lower() == "none":
        return None
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"want true or false, got {text!r}")
        return text.lower() == "true"
    for kind in (int, float):
        if isinstance(default, kind) or default is None:
            try:
                return kind(text)
            except ValueError:
                pass
    if isinstance(default, int | float):
        raise argparse.ArgumentTypeError(f"want a number, got {text!r}")
    return text


def network(name: str, data: Data) -> ArchSpec:
    width, stages, pool = NETWORKS[name]
    return ArchSpec(
        input=InputSpec.for_task(data.task),
        stem=StemSpec(width),
        stages=stages,
        global_pool=pool,
        head=HeadSpec(),
        classes=data.task.classes,
    )


def mask_cost(names: list[str], epochs: float, rounds: int, dataset: str) -> None:
    data = load_data(dataset, seed=0)
    config = replace(TrainConfig.for_task("text"), epochs=epochs)
    worst = 0.0
    for name in names:
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for masked in (True, False):
                model = build_model(network(name, data), seed=0)
                model.text = masked
                t0 = time.perf_counter()
                train(model, data, config)
                seconds[masked].append(time.perf_counter() - t0)
        ratio = statistics.median(seconds[True]) / statistics.median(seconds[False])
        worst = max(worst, ratio)
        print(
            f"{name:13s} masked {statistics.median(seconds[True]):6.2f} s, unmasked "
            f"{statistics.median(seconds[False]):6.2f} s: x{ratio:.2f}",
            flush=True,
        )
    print(f"mask_cost: {worst:.2f}")


if __name__ == "__main__":
    main()
