"""Pareto pruning against no pruning: compute saved versus hypervolume lost, real searches.

Reproduce (about an hour on the shared 2-core CPU with one thread; ``--quick``: ~5)::

    .venv/bin/python bench/pruning.py                       # 48 trials × 0.3 epoch
    .venv/bin/python bench/pruning.py --epochs 0.1 --trials 24 --warmup 5
    .venv/bin/python bench/pruning.py --quick

    # the two searches side by side, one core and one lock folder each (so neither waits
    # for the other's training to measure latency), then the comparison:
    NAS_LOCK_DIR=/tmp/core0 taskset -c 0 .venv/bin/python bench/pruning.py --only none &
    NAS_LOCK_DIR=/tmp/core1 taskset -c 1 .venv/bin/python bench/pruning.py --only pareto
    wait
    .venv/bin/python bench/pruning.py --reuse

Two real searches of the default space (``attention_cnn``) on Fashion-MNIST with the
search's default limits (over the FLOPs cap: recorded, never trained), each in its own
SQLite study under ``bench/out/``: ``--trials`` trials of ``--epochs`` epochs each (rungs
every quarter), scored on the first ``--val-size`` validation images, once with no pruner
and once with ``ParetoPruner(--eta, --min-peers, --warmup)``, by default the search's
pruner with the search's warm-up (``nas.search.first_judged_step``: no judgement in
the first 32 optimiser steps, where ranks are still noise).

Why 0.3 epochs: rungs must rank for pruning to pay. Rank correlation of a rung's accuracy
with the end's, measured here: at 0.1 epoch 0.32 / 0.54 / 0.86 at the three rungs; at 0.3
epoch 0.80 / 0.95 / 0.98.

Why ``--sampler random`` by default: with the *same seed* the random sampler proposes the
same architectures in the same order whatever happened before, and each trial trains
with seed ``seed + trial.number`` (bit-identical on CPU), so the two runs differ only by
the pruner — a trial that is not pruned gets the same accuracy in both. With TPE the runs
diverge as soon as pruning changes what TPE has seen; that is inherent to adaptive
samplers and mixes the pruner's effect with the sampler's (``--sampler tpe`` runs it so).

Measured:

- compute saved = 1 − Σ epochs trained with pruning / Σ epochs without (``epochs_done``);
  wall time of both runs (it also includes latency measurement and rung evaluations,
  which pruning does not shorten as much);
- hypervolume lost = 1 − HV(pruned run's front) / HV(unpruned run's front) in (accuracy ↑,
  latency ↓), both against one reference point from the union of both runs: (lowest
  accuracy − 0.01, highest latency × 1.1). Latency is re-measured in each run, so the
  two runs' points differ by measurement noise as well.
- a replay: since unpruned trials are deterministic, the unpruned run's learning curves
  say exactly what any ``ParetoPruner`` setting would have pruned (up to latency noise).
  ``ParetoPruner.prune`` itself is replayed, trial by trial, over a grid of settings —
  the way the defaults were checked against the bar (≥ 40% saved, ≤ 1% HV lost).

Prints both runs, the replay grid, then ``hv_lost`` and, last, ``compute_saved: X``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import optuna
from _common import (
    Run,
    bench_data,
    bench_pruner_name,
    epochs_done,
    first_judged,
    hypervolume,
    load_run,
    points,
    progress,
    quiet,
    reference_point,
    run_search,
    table,
)
from optuna.trial import FrozenTrial, TrialState

from nas.search import ParetoPruner


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=48)
    p.add_argument("--epochs", type=float, default=0.3, help="per-trial budget (4 rungs)")
    p.add_argument("--sampler", default="random", choices=("random", "tpe", "nsga2"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space", default="attention_cnn")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--val-size", type=int, default=2000, help="validation images scored")
    p.add_argument("--eta", type=float, help="default: ParetoPruner's, as the search uses")
    p.add_argument("--min-peers", type=int, help="default: ParetoPruner's")
    p.add_argument(
        "--warmup",
        type=int,
        help="n_warmup_steps (1/100 epoch each; default the search's: after 32 optimiser steps)",
    )
    # One thread: with two on a shared 2-core machine, latencies of small networks were
    # measured at 10-100x their quiet value (oversubscribed cores), which reorders peers.
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 trials, 0.04 epoch")
    p.add_argument(
        "--only",
        choices=("none", "pareto"),
        help="run only this search (e.g. the two side by side on separate cores); "
        "compare them afterwards with --reuse",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="run nothing: compare the first --trials trials of bench/out/pruning-none.db "
        "and bench/out/pruning-pareto.db",
    )
    args = p.parse_args()
    if args.quick:
        args.trials, args.epochs, args.val_size = 8, 0.04, 300
    return args


# ------------------------------------------------------------------------ replay


@dataclass
class _Trials:
    """Just what ParetoPruner.prune reads of a study: get_trials(deepcopy, states)."""

    trials: list[FrozenTrial]

    def get_trials(self, deepcopy: bool = False, states: tuple[TrialState, ...] = ()):
        return [t for t in self.trials if not states or t.state in states]


def _frozen(number: int, curve: dict[int, float], latency: float) -> FrozenTrial:
    t = optuna.trial.create_trial(
        state=TrialState.PRUNED, intermediate_values=curve, user_attrs={"latency_ms": latency}
    )
    t.number = number
    return t


def replay(trials: list[FrozenTrial], pruner: ParetoPruner) -> tuple[float, set[int]]:
    """(epochs that pruned run would train, numbers of the trials it would prune).

    Trials in order; each is asked at every rung but the last (as the objective does),
    against the earlier trials' curves as the pruned run would have left them.
    """
    seen: list[FrozenTrial] = []
    spent, pruned = 0.0, set()
    for t in trials:
        steps = sorted(t.intermediate_values)
        latency = t.user_attrs.get("latency_ms", math.nan)
        kept = len(steps)
        for k in range(len(steps) - 1):
            curve = {s: t.intermediate_values[s] for s in steps[: k + 1]}
            if pruner.prune(_Trials(seen), _frozen(t.number, curve, latency)):  # type: ignore[arg-type]
                kept = k + 1
                pruned.add(t.number)
                break
        seen.append(_frozen(t.number, {s: t.intermediate_values[s] for s in steps[:kept]}, latency))
        spent += epochs_done(t) * kept / max(len(steps), 1)
    return spent, pruned


def replay_grid(base: Run, warmup: int) -> list[tuple[object, ...]]:
    trials = [t for t in base.trials if t.state == TrialState.COMPLETE]
    full = sum(epochs_done(t) for t in trials)
    pts = points(trials)
    ref = reference_point(pts)
    hv_full = hypervolume(pts, ref)
    steps = sorted({s for t in trials for s in t.intermediate_values})
    warmups = sorted({0, warmup, *([steps[1]] if len(steps) > 1 else [])})
    rows: list[tuple[object, ...]] = [("eta", "min_peers", "warmup", "pruned", "saved", "hv lost")]
    for eta, min_peers, warmup in itertools.product((3, 6, 8), (1, 2, 4), warmups):
        spent, pruned = replay(trials, ParetoPruner(eta, min_peers, warmup))
        kept = points([t for t in trials if t.number not in pruned])
        hv = hypervolume(kept, ref)
        rows.append(
            (
                eta,
                min_peers,
                warmup,
                len(pruned),
                f"{1 - spent / full:.1%}",
                f"{1 - hv / hv_full:.2%}" if hv_full else "n/a",
            )
        )
    return rows


def first_trials(run: Run, n: int) -> Run:
    """``run`` cut to its first ``n`` trials; its wall time is theirs."""
    cut = dataclasses.replace(run, first=n)
    if len(cut.trials) < n:
        raise SystemExit(f"{run.name} has {len(cut.trials)} finished trials of the first {n}")
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in cut.trials)  # type: ignore[operator]
    return dataclasses.replace(cut, wall_s=wall)


# ------------------------------------------------------------------------ main


def main() -> None:
    args = parse_args()
    quiet(args.threads)
    data = bench_data(args.dataset, args.val_size, seed=args.seed)
    common = dict(sampler=args.sampler, seed=args.seed, epochs=args.epochs, space=args.space)
    warmup = first_judged(data) if args.warmup is None else args.warmup
    defaults = ParetoPruner()
    pruner = ParetoPruner(
        defaults.eta if args.eta is None else args.eta,
        defaults.min_peers if args.min_peers is None else args.min_peers,
        warmup,
    )
    print(f"{args.trials} trials × {args.epochs} epoch, sampler {args.sampler} seed {args.seed}")
    runs: dict[str, Run] = {}
    for i, (name, p) in enumerate((("none", optuna.pruners.NopPruner()), ("pareto", pruner))):
        if args.reuse:
            runs[name] = first_trials(load_run(f"pruning-{name}"), args.trials)
            used = runs[name].study.user_attrs.get("pruner", "?")
            print(f"run {i + 1}/2: {used}, the first {args.trials} trials of pruning-{name}.db")
        elif args.only in (None, name):
            print(f"run {i + 1}/2: {bench_pruner_name(p)}", flush=True)
            runs[name] = run_search(
                f"pruning-{name}",
                data,
                pruner=p,
                trials=args.trials,
                on_trial=progress(f"{name:6s}"),
                **common,  # type: ignore[arg-type]
            )
    if len(runs) < 2:
        print("\ncompare the two runs with the same options and --reuse")
        return
    base, pruned = runs["none"], runs["pareto"]

    pts_base, pts_pruned = points(base.trials), points(pruned.trials)
    ref = reference_point(pts_base, pts_pruned)
    hv_base, hv_pruned = hypervolume(pts_base, ref), hypervolume(pts_pruned, ref)
    rows: list[tuple[object, ...]] = [
        ("run", "trials", "complete", "pruned", "epochs", "wall s", "front", "hypervolume")
    ]
    for run, hv in ((base, hv_base), (pruned, hv_pruned)):
        states = [t.state for t in run.trials]
        rows.append(
            (
                run.name,
                len(states),
                states.count(TrialState.COMPLETE),
                states.count(TrialState.PRUNED),
                f"{run.epochs():.3f}",
                f"{run.wall_s:.0f}",
                len(run.study.best_trials),
                f"{hv:.4f}",
            )
        )
    print()
    print(table(rows))
    print(f"reference point: accuracy {ref[0]:.4f}, latency {ref[1]:.3f} ms")

    # The same architectures in both runs (random sampler, same seed)? Same accuracy where
    # both completed?
    same = sum(a.params == b.params for a, b in zip(base.trials, pruned.trials, strict=False))
    both = [
        (a.values[0], b.values[0])
        for a, b in zip(base.trials, pruned.trials, strict=False)
        if a.values and b.values
    ]
    diff = max((abs(x - y) for x, y in both), default=0.0)
    print(
        f"same architectures in both runs: {same}/{len(base.trials)}; "
        f"largest accuracy difference where both completed: {diff:.4f}"
    )

    print(f"\nreplay of ParetoPruner on the unpruned run's curves ({args.trials} trials):")
    print(table(replay_grid(base, warmup)))

    # The pruner's effect alone: the pruned run's completed trials placed at the latency
    # the unpruned run measured for the same trial (same architecture with a random
    # sampler), against the unpruned run's own reference point.
    latency = {t.number: t.values[1] for t in base.trials if t.values}
    matched = np.array(
        [
            (t.values[0], latency[t.number])
            for t in pruned.trials
            if t.values and t.number in latency
        ]
    ).reshape(-1, 2)
    ref_base = reference_point(pts_base)
    hv_matched = hypervolume(matched, ref_base) / hypervolume(pts_base, ref_base)

    saved = 1 - pruned.epochs() / base.epochs()
    print(f"\nwall time saved: {1 - pruned.wall_s / base.wall_s:.1%}")
    print(f"hv_lost (each run's own latencies): {1 - hv_pruned / hv_base:.4f}")
    print(f"hv_lost (the same latencies for the same trials): {1 - hv_matched:.4f}")
    print(f"compute_saved: {saved:.4f}")


if __name__ == "__main__":
    main()
