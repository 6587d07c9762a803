"""Where would the trials a search pruned have ended? Train them to the end and compare.

Reproduce (a minute per network on a 2-core CPU)::

    .venv/bin/python bench/pruned_to_the_end.py --study sqlite:///bench/out/default.db
    .venv/bin/python bench/pruned_to_the_end.py --study URL --min-latency 1 --limit 6

Takes the trials of a finished default search (``--study URL``, ``--study-name``) that the
pruner stopped at a rung (not those refused untrained), slowest first, at least
``--min-latency`` ms, up to ``--limit`` of them; each spec is read back and validated by
``ArchSpec.from_dict``. Each is trained again exactly as its trial was (the search's
default trial training, the trial's seed) but never pruned, and scored on the whole
validation split as a trial's end is. Printed per network: its accuracy at the rung it
was stopped at in the search, at that rung again here, and at the end; then the best
accuracy of the search's complete trials at most 10× faster, and the fastest complete trial
more accurate than it ended (``none``: it would have been on the front). Last line
``would_be_on_front: K of N``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import optuna
import torch
from _common import default_trial_config, searched_lr
from optuna.trial import TrialState

from nas.data import load_data
from nas.model import ArchSpec, build_model
from nas.search._objective import STEPS_PER_EPOCH
from nas.train import train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="storage URL of a default search")
    p.add_argument("--study-name", default="attention_cnn-fashion_mnist")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--min-latency", type=float, default=0.0, help="ms")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(args.threads)
    study = optuna.load_study(study_name=args.study_name, storage=args.study)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        t
        for t in trials
        if t.state == TrialState.PRUNED
        and t.last_step is not None
        and t.user_attrs.get("latency_ms", 0) >= args.min_latency
    ]
    pruned.sort(key=lambda t: -t.user_attrs["latency_ms"])
    data = load_data(args.dataset, device="cpu", seed=0)
    config = default_trial_config(data)
    print(
        f"{len(pruned)} trials pruned at a rung; training {min(len(pruned), args.limit)} to "
        f"the end ({config.epochs:.3g} epochs, as a trial)"
    )
    on_front = 0
    shown = pruned[: args.limit]
    for t in shown:
        spec = ArchSpec.from_dict(t.user_attrs["arch"])
        latency = t.user_attrs["latency_ms"]
        seed = t.user_attrs.get("seed", 0)
        run = replace(config, seed=seed, lr=searched_lr(t) or config.lr)
        result = train(build_model(spec, seed=seed), data, run)
        stopped = t.intermediate_values[t.last_step]
        rung = next((a for e, a in result.curve if round(e * STEPS_PER_EPOCH) >= t.last_step), None)
        faster = [c for c in complete if c.user_attrs["latency_ms"] <= latency]
        near = [c.values[0] for c in faster if c.user_attrs["latency_ms"] >= latency / 10]
        beats = [c for c in faster if c.values[0] >= result.val_accuracy]
        dominated_by = min(beats, key=lambda c: c.user_attrs["latency_ms"]) if beats else None
        on_front += dominated_by is None
        print(
            f"trial {t.number:>3} {latency:6.2f} ms: stopped at {stopped:.4f} (step "
            f"{t.last_step}), here {rung if rung is None else round(rung, 4)}, end "
            f"{result.val_accuracy:.4f}; best complete within 10x faster "
            f"{max(near) if near else float('nan'):.4f}; dominated by "
            + (
                "none"
                if dominated_by is None
                else f"#{dominated_by.number} ({dominated_by.values[0]:.4f} at "
                f"{dominated_by.user_attrs['latency_ms']:.3f} ms)"
            )
            + f"  {spec.summary()}",
            flush=True,
        )
    print(f"would_be_on_front: {on_front} of {len(shown)}")


if __name__ == "__main__":
    main()
