"""What AdamW's fused kernel saves in training text networks: side by side, one process.

    python bench/optimizer.py                                    # demo corpus, words
    python bench/optimizer.py --dataset csv:bench/out/docstrings.csv --tokenizer ngrams

Each of ``text_networks.py``'s networks trains ``--epochs`` as a search trial trains it
(``TrainConfig.for_task("text")``: AdamW, lr 0.01), with ``torch.optim.AdamW(fused=True)``
(the trainer's default) and with the loop of tensor ops PyTorch uses otherwise,
alternating, ``--rounds`` times each. Printed per network: the median training time of
each, their ratio, and each one's validation accuracy (the two compute the same update,
so they should agree to within noise). Last line ``fused_speedup: X``, the smallest ratio
(unfused / fused time) over the networks.

Measured on an Intel Xeon (family 6 model 167, 2 cores, AVX-512, AMX; bf16), 2 rounds:

- ``--tokenizer ngrams --epochs 0.5`` (demo corpus: 21,905 texts of 171 ids, 50,000-id
  vocabulary): ``bag256`` 8.59 → 4.79 s (×1.79), ``conv64`` 13.30 → 8.99 s (×1.48);
  validation accuracy 0.8101 both, 0.8261 → 0.8257;
- ``--dataset csv:bench/out/docstrings.csv --tokenizer ngrams`` (2,160 texts of 512 ids,
  37,647 ids): ×1.07 and ×1.17, the same accuracies.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_corpus import DEFAULT_DATASET
from text_networks import NETWORKS, network

import nas.train._trainer as trainer
from nas.data import load_data
from nas.model import build_model
from nas.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--tokenizer", choices=("words", "bytes", "ngrams"))
    p.add_argument("--networks", nargs="+", choices=NETWORKS, default=["bag256", "conv64"])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    data = load_data(args.dataset, seed=0, tokenizer=args.tokenizer)
    print(f"{args.dataset}, tokenizer {args.tokenizer or 'words'}: {tuple(data.train.x.shape)}")
    config = replace(TrainConfig.for_task("text"), epochs=args.epochs)
    worst = float("inf")
    for name in args.networks:
        seconds: dict[bool, list[float]] = {True: [], False: []}
        accuracy: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for fused in (True, False):
                trainer.FUSED_ADAMW = fused
                model = build_model(network(name, data), seed=0)
                t0 = time.perf_counter()
                result = train(model, data, config)
                seconds[fused].append(time.perf_counter() - t0)
                accuracy[fused].append(result.val_accuracy)
        ratio = statistics.median(seconds[False]) / statistics.median(seconds[True])
        worst = min(worst, ratio)
        print(
            f"{name:13s} fused {statistics.median(seconds[True]):6.2f} s "
            f"(val {statistics.mean(accuracy[True]):.4f}), unfused "
            f"{statistics.median(seconds[False]):6.2f} s "
            f"(val {statistics.mean(accuracy[False]):.4f}): x{ratio:.2f}",
            flush=True,
        )
    print(f"fused_speedup: {worst:.2f}")


if __name__ == "__main__":
    main()
