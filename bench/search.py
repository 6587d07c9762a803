"""Our default search against random search at equal compute: anytime hypervolume.

Reproduce (one thread per search: about 45 minutes per seed on this 2-core CPU, so the
two seeds side by side, one core each, then the report on both; ``--quick``: ~6 minutes,
a smoke run whose figures mean nothing: TPE's first 10 trials are random ones, the same
as the random search's with the same seed)::

    mkdir -p bench/out; for s in 0 1; do NAS_LOCK_DIR=/tmp/core$s taskset -c $s \
      .venv/bin/python bench/search.py --seeds $s > bench/out/search-s$s.log & done; wait
    .venv/bin/python bench/search.py --reuse --seeds 0 1  # report on bench/out/ again
    .venv/bin/python bench/search.py                      # or both seeds one after another
    .venv/bin/python bench/search.py --budget 3           # a third of the compute
    .venv/bin/python bench/search.py --quick

For each seed, two real searches of the default space (``attention_cnn``) on Fashion-MNIST,
each in its own SQLite study under ``bench/out/``, both starting with the hand designs
``seed_cnn`` and ``resnet`` (``--enqueue-baselines``), every trial trained ``--epochs``
epochs (rungs every quarter) and scored on the first ``--val-size`` validation images:

- *ours*: the sampler and pruner of ``python -m nas.search`` — TPE (multivariate,
  grouped) and the Pareto pruner (``make_pruner("pareto")``) — at half its default
  epochs per trial;
- *random*: the random sampler, no pruning.

Equal compute = equal total epochs trained (``epochs_done`` summed over trials; a pruned
trial counts the epochs it trained): each run stops once it has trained ``--budget``
epochs, so pruning buys *ours* more trials. Wall time is printed but not equalised
(latency measurement and rung evaluations cost time that epochs do not count).

Measured, against one reference point for all runs — (lowest accuracy − 0.01, highest
latency × 1.1) over every run's completed trials:

- anytime hypervolume: HV of the completed trials within the first 25/50/75/100% of the
  budget (trials in the order they ran);
- the baselines' accuracy and latency, and the best accuracy of a searched trial at or
  below ``seed_cnn``'s latency, measured in the same run;
- how far we are from "random search's final hypervolume with half its compute": the
  share of the budget *ours* needed to reach it, and HV(ours at 50%) / HV(random at 100%).

Last line ``hypervolume_ratio: X`` — HV(ours) / HV(random) at the full budget, mean over
seeds.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np
import optuna
from _common import (
    Run,
    bench_data,
    default_pruner,
    epochs_done,
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

CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    # 9 epochs: what *ours* trains in about 100 trials of 0.15 epoch, the trial count of
    # the README's main command. At 3 (~35 trials, 10 of them TPE's random start-up) TPE
    # has too few to learn from.
    p.add_argument("--budget", type=float, default=9.0, help="epochs trained per run")
    # Half the search's default per trial (0.3), so a seed fits in 45 minutes: the
    # README's figures were measured so.
    p.add_argument("--epochs", type=float, default=0.15, help="per-trial budget (4 rungs)")
    p.add_argument("--space", default="attention_cnn")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--val-size", type=int, default=1000, help="validation images scored")
    # One thread: with two on a shared 2-core machine latencies were measured at 10-100x
    # their quiet value, which moves every point of the fronts.
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--reuse", action="store_true", help="report on the studies in bench/out/, run nothing"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 trials' budget")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.val_size = args.seeds[:1], 0.04, 300
        args.budget = 4 * args.epochs
    return args


def within(trials: Sequence[FrozenTrial], budget: float) -> list[FrozenTrial]:
    """The trials that ran within the first ``budget`` epochs (in the order they ran)."""
    out, spent = [], 0.0
    for t in sorted(trials, key=lambda t: t.number):
        spent += epochs_done(t)
        if spent > budget + 1e-9:
            break
        out.append(t)
    return out


def epochs_to_reach(trials: Sequence[FrozenTrial], target: float, ref: tuple[float, float]):
    """Epochs after which the trials so far reach hypervolume ``target`` (None: never)."""
    spent = 0.0
    done: list[FrozenTrial] = []
    for t in sorted(trials, key=lambda t: t.number):
        spent += epochs_done(t)
        done.append(t)
        if hypervolume(points(done), ref) >= target - 1e-12:
            return spent
    return None


def baseline_row(run: Run) -> tuple[object, ...]:
    complete = [t for t in run.trials if t.state == TrialState.COMPLETE]
    by_name = {t.user_attrs.get("baseline"): t for t in run.trials}

    def show(name: str) -> str:
        t = by_name.get(name)
        if t is None:
            return "n/a"
        if t.state != TrialState.COMPLETE:  # e.g. "over budget, not trained"
            return str(t.user_attrs.get("reason", t.state.name)).split(":")[0]
        return f"{t.values[0]:.4f} @ {t.values[1]:.2f} ms"

    seed_cnn = by_name.get("seed_cnn")
    best = "n/a"
    if seed_cnn is not None and seed_cnn.state == TrialState.COMPLETE:
        fast = [
            t
            for t in complete
            if "baseline" not in t.user_attrs and t.values[1] <= seed_cnn.values[1]
        ]
        if fast:
            t = max(fast, key=lambda t: t.values[0])
            best = f"{t.values[0]:.4f} @ {t.values[1]:.2f} ms (#{t.number})"
    states = [t.state for t in run.trials]
    return (
        run.name,
        len(states),
        states.count(TrialState.PRUNED),
        f"{run.epochs():.2f}",
        f"{run.wall_s:.0f}",
        show("seed_cnn"),
        show("resnet"),
        best,
    )


def main() -> None:
    args = parse_args()
    quiet(args.threads)
    pairs: list[tuple[Run, Run]] = []
    for seed in args.seeds:
        if args.reuse:
            pairs.append((load_run(f"search-ours-s{seed}"), load_run(f"search-random-s{seed}")))
            continue
        data = bench_data(args.dataset, args.val_size, seed=seed)
        common = dict(
            seed=seed,
            epochs=args.epochs,
            space=args.space,
            epoch_budget=args.budget,
            enqueue_baselines=True,
        )
        print(f"seed {seed}: ours (tpe + pareto pruner)", flush=True)
        ours = run_search(
            f"search-ours-s{seed}",
            data,
            sampler="tpe",
            pruner=default_pruner(data),
            on_trial=progress(f"ours   s{seed}"),
            **common,  # type: ignore[arg-type]
        )
        print(f"seed {seed}: random (no pruning)", flush=True)
        rand = run_search(
            f"search-random-s{seed}",
            data,
            sampler="random",
            pruner=optuna.pruners.NopPruner(),
            on_trial=progress(f"random s{seed}"),
            **common,  # type: ignore[arg-type]
        )
        pairs.append((ours, rand))

    runs = [r for pair in pairs for r in pair]
    ref = reference_point(*(points(within(r.trials, args.budget)) for r in runs))
    print(f"\nreference point: accuracy {ref[0]:.4f}, latency {ref[1]:.3f} ms")
    print(f"equal compute: {args.budget} epochs per run, {args.epochs} epoch per trial\n")

    # Anytime hypervolume.
    rows: list[tuple[object, ...]] = [("epochs", *(r.name for r in runs), "ours/random (mean)")]
    hv: dict[tuple[str, float], float] = {}
    for c in CHECKPOINTS:
        for r in runs:
            hv[r.name, c] = hypervolume(points(within(r.trials, c * args.budget)), ref)
        ratios = [hv[o.name, c] / hv[q.name, c] for o, q in pairs if hv[q.name, c] > 0]
        rows.append(
            (
                f"{c * args.budget:.2f}",
                *(f"{hv[r.name, c]:.4f}" for r in runs),
                f"{np.mean(ratios):.3f}" if ratios else "n/a",
            )
        )
    print(table(rows))

    print("\nbaselines (accuracy @ latency); best searched trial at most as slow as seed_cnn:")
    head = ("run", "trials", "pruned", "epochs", "wall s", "seed_cnn", "resnet", "best ≤ seed_cnn")
    print(table([head, *(baseline_row(r) for r in runs)]))

    print("\nrandom search's final hypervolume with half its compute?")
    half_rows: list[tuple[object, ...]] = [
        ("seed", "HV random@100%", "HV ours@50%", "ours@50%/random@100%", "ours reached it at")
    ]
    for seed, (ours, rand) in zip(args.seeds, pairs, strict=True):
        target = hv[rand.name, 1.0]
        reach = epochs_to_reach(within(ours.trials, args.budget), target, ref)
        half_rows.append(
            (
                seed,
                f"{target:.4f}",
                f"{hv[ours.name, 0.5]:.4f}",
                f"{hv[ours.name, 0.5] / target:.3f}" if target else "n/a",
                f"{reach / args.budget:.0%} of the budget" if reach is not None else "not reached",
            )
        )
    print(table(half_rows))

    final = [hv[o.name, 1.0] / hv[q.name, 1.0] for o, q in pairs if hv[q.name, 1.0] > 0]
    print(f"\nhypervolume_ratio: {np.mean(final) if final else math.nan:.4f}")


if __name__ == "__main__":
    main()
