"""Gradient clipping in a search trial's training: which networks learn with it and without.

Reproduce (about 12 minutes on a 2-core CPU)::

    .venv/bin/python bench/grad_clip.py
    .venv/bin/python bench/grad_clip.py --samples 4 --dataset digits   # a smoke run

Networks: ``--samples`` random samples of the default space (``attention_cnn``, seeded;
those over the search's default FLOPs limit skipped, as the search skips them) and the
hand design ``seed_cnn``; a network whose training is estimated from its first steps at
over ``--max-train-seconds`` is skipped and named (the search's cost limit refuses such). Each
is trained exactly as a search trial trains
(``nas.search.trial_train_config``: the default budget, 128 optimiser steps on
Fashion-MNIST), from the same initialisation and seed, once with ``grad_clip=None`` and
once with the default (global norm 1), and scored on the whole validation split. Printed:
both accuracies and the last training loss of each network; networks at chance (accuracy
under twice chance) with each setting; the mean accuracy gain of clipping over the
networks that learn either way. Last line ``at_chance: A -> B`` (without → with).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import optuna
import torch
from _common import OverCost, cost_cap, default_trial_config, space_samples
from optuna.trial import FixedTrial

from nas.data import load_data
from nas.model import build_model
from nas.search import load_builtin_space
from nas.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=120.0,
        help="skip a network whose training is estimated over this (the search's cost "
        "limit refuses such networks; a few here would take most of the run)",
    )
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(args.threads)
    data = load_data(args.dataset, device="cpu", seed=args.seed)
    task = data.task
    config = default_trial_config(data)
    nets = space_samples(task, args.samples, args.seed)
    nets.append(("seed_cnn", load_builtin_space("seed_cnn").suggest(FixedTrial({}), task)))

    chance = 2.0 / task.classes
    print(f"{config.epochs:.3g} epochs per trial; clip: None vs {TrainConfig().grad_clip}")
    rows = []
    for i, (name, spec) in enumerate(nets):
        seed = args.seed + i
        accs = []
        for clip in (None, TrainConfig().grad_clip):
            run = dataclasses.replace(config, seed=seed, grad_clip=clip)
            try:
                r = train(
                    build_model(spec, seed=seed),
                    data,
                    run,
                    estimate=cost_cap(args.max_train_seconds),
                )
            except OverCost as e:
                print(f"{name:<10} skipped: {e} (--max-train-seconds)")
                break
            accs.append((r.val_accuracy, r.loss_curve[-1][1] if r.loss_curve else float("nan")))
        if len(accs) < 2:
            continue
        rows.append(accs)
        (a0, l0), (a1, l1) = accs
        print(
            f"{name:<10} none {a0:.4f} (loss {l0:.3f})  clipped {a1:.4f} (loss {l1:.3f})  "
            f"{spec.summary()}",
            flush=True,
        )
    before = sum(r[0][0] < chance for r in rows)
    after = sum(r[1][0] < chance for r in rows)
    both = [r[1][0] - r[0][0] for r in rows if r[0][0] >= chance and r[1][0] >= chance]
    gain = statistics.mean(both) if both else float("nan")
    print(f"at chance (< {chance:.2f}): {before} without, {after} with, of {len(rows)}")
    print(f"mean gain where both learn: {gain:+.4f} over {len(both)} networks")
    print(f"at_chance: {before} -> {after}")


if __name__ == "__main__":
    main()
