"""Our trainer against a plain PyTorch loop: same model, same data, same epochs.

Reproduce (about 6 minutes on 2 CPU cores)::

    .venv/bin/python bench/trainer.py                     # seed_cnn, 10k images, 2 epochs
    .venv/bin/python bench/trainer.py --threads 1 --train-size 8000   # busy shared machine

(On a machine whose cores other processes also load, one thread beats two by a wide
margin: each OpenMP barrier waits for a descheduled peer. ``--threads`` applies to all
three runs alike.)
    .venv/bin/python bench/trainer.py --model resnet --train-size 54000 --epochs 1

Three runs of the same architecture, each from the same initial weights, on a
Fashion-MNIST subset (the first ``--train-size`` images of the training split; the full
6,000-image validation split scores every run):

(a) *plain*: a loop as a typical user writes it: the uint8 images normalised to a float
    ``TensorDataset``, a shuffling ``torch.utils.data.DataLoader`` at batch 64, Adam at
    1e-3, fp32, default (contiguous) memory format, each batch moved with ``.to(device)``.
(b) *ours*: ``nas.train.train`` with its defaults (Nesterov SGD, one-cycle, label
    smoothing, flip + translate augmentation, ``auto`` precision and memory format).
(c) *hand*: the fastest hand-written loop we could write with the settings (b) resolves to:
    data resident as normalised floats, batches by index from ``randperm``, the same batch
    size, memory format and precision, no augmentation, no NaN checks, no schedule.

Images/s count training steps only (evaluation excluded) for all three. The runs follow
one another in one process; on a shared machine a neighbour's load can land on one run
and not another, so run it twice and read the spread. Prints the three figures and
accuracies; the last line is ``speedup: X`` (ours / plain images per second).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nas.data import Data, Split, load_data
from nas.model import build_model
from nas.search import load_space
from nas.train import (
    TrainConfig,
    count_flops,
    count_params,
    evaluate,
    fingerprint,
    normalize,
    resolve_memory_format,
    resolve_precision,
    train,
)


def plain_loop(
    model: nn.Module, data: Data, epochs: int, batch_size: int, seed: int
) -> tuple[float, float]:
    """(images/s, val accuracy) of the typical DataLoader loop."""
    torch.manual_seed(seed)
    x = normalize(data.train.x, data.mean, data.std)
    loader = DataLoader(TensorDataset(x, data.train.y), batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    device = torch.device("cpu")
    model.train()
    images, seconds = 0, 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            images += xb.shape[0]
        seconds += time.perf_counter() - start
    acc = evaluate(model, data.val, data.mean, data.std)
    return images / seconds, acc


def hand_loop(
    model: nn.Module,
    data: Data,
    epochs: int,
    config: TrainConfig,
    precision: str,
    channels_last: bool,
) -> tuple[float, float]:
    """(images/s, val accuracy) of a minimal resident-tensor loop with our settings."""
    g = torch.Generator().manual_seed(config.seed)
    x = normalize(data.train.x, data.mean, data.std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
    y = data.train.y
    # A constant learning rate at half the one-cycle peak (about its mean): this loop is a
    # speed reference, its accuracy is printed only to show it trained.
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr * 0.5,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    n, b = len(y), config.batch_size
    model.train()
    start = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(n // b):
            idx = perm[i * b : (i + 1) * b]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(x[idx])
            loss = F.cross_entropy(out.float(), y[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - start
    mf = "channels_last" if channels_last else "contiguous"
    acc = evaluate(model, data.val, data.mean, data.std, memory_format=mf)  # type: ignore[arg-type]
    return steps * b / seconds, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="seed_cnn", help="a fixed design: seed_cnn or resnet")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--plain-batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="repeats, best images/s kept")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every run (default: torch's own, one per core)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        # This process is the benchmark: setting the thread count for all three runs alike
        # is the point. On a busy shared machine one thread avoids OpenMP barrier stalls.
        torch.set_num_threads(args.threads)

    full = load_data("fashion_mnist")
    n = min(args.train_size, len(full.train))
    data = Data(
        full.task,
        Split(full.train.x[:n], full.train.y[:n]),
        full.val,
        full.test,
        full.mean,
        full.std,
        full.flip,
    )
    spec = load_space(args.model).spec(data.task)
    initial = build_model(spec, seed=args.seed)
    shape = (data.task.channels, data.task.height, data.task.width)
    config = TrainConfig(epochs=args.epochs, report_every=None, seed=args.seed)
    precision = resolve_precision(config.precision, torch.device("cpu"))
    memory_format = resolve_memory_format(config.memory_format, torch.device("cpu"))
    fp = fingerprint()
    print(
        f"device: {fp['cpu']} ({fp['cpu_count']} cpus, {fp['torch_threads']} threads, "
        f"bf16 native: {fp['cpu_bf16']}), torch {fp['torch']}"
    )
    print(
        f"model: {args.model}, {count_params(initial):,} params, "
        f"{count_flops(initial, shape) / 1e6:.1f} MFLOP/image"
    )
    print(
        f"data: fashion_mnist, {n} training images, {len(data.val)} validation images, "
        f"{args.epochs} epochs"
    )

    # Rounds in rotating order, best images/s per method kept (as timeit keeps the best
    # time): a neighbour's burst of load then slows one run of a method, not its figure.
    # Every run is deterministic, so each round repeats the same accuracies.
    best: dict[str, float] = {}
    acc: dict[str, float] = {}
    labels = {
        "plain": f"plain  (DataLoader, batch {args.plain_batch}, Adam, fp32, contiguous)",
        "ours": f"ours   (nas.train, batch {config.batch_size}, {precision}, {memory_format})",
        "hand": f"hand   (resident tensors, randperm, batch {config.batch_size}, {precision}, "
        f"{memory_format}, no augmentation)",
    }
    order = ["plain", "ours", "hand"]
    for r in range(args.rounds):
        for method in order[r % 3 :] + order[: r % 3]:
            model = copy.deepcopy(initial)
            if method == "plain":
                ips, a = plain_loop(model, data, args.epochs, args.plain_batch, args.seed)
            elif method == "ours":
                result = train(model, data, config)
                ips, a = result.images_per_second, result.val_accuracy
            else:
                ips, a = hand_loop(
                    model, data, args.epochs, config, precision, memory_format == "channels_last"
                )
            best[method] = max(best.get(method, 0.0), ips)
            acc[method] = a
            print(
                f"  round {r + 1} {method:5s} {ips:7.1f} images/s  val_accuracy {a:.4f}  "
                f"(load avg {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    for method in order:
        print(f"{labels[method]}: {best[method]:7.1f} images/s  val_accuracy {acc[method]:.4f}")
    print(f"ours / hand images/s: {best['ours'] / best['hand']:.3f}")
    speedup = best["ours"] / best["plain"] if best["plain"] > 0 else math.nan
    print(f"speedup: {speedup:.2f}")


if __name__ == "__main__":
    main()
