"""A variant of the export's retraining recipe on the networks the end-to-end bench
retrained: each recorded pick retrained again with ``--recipe`` for the training time its
record had, printed beside its recorded test accuracy.

    .venv/bin/python bench/retrain_recipe.py --recipe crop_pad=2 --seeds 1
    .venv/bin/python bench/retrain_recipe.py --recipe crop_pad=2 --arm seed_cnn --seeds 0

Measured (Intel Xeon family 6 model 167, AVX-512 + AMX, bf16 training, 2 cores; the
60-minute records of ``bench/results/endtoend.jsonl``): translation by up to 2 pixels
(``crop_pad=2``) on ours' seed-1 pick (``patch8/2 | residual16x2 manet_pool(1x8,s4) |
flatten | fc``, 40,338 parameters), 41.9 minutes: 0.9186 test accuracy after 81.3 epochs
against the recorded 0.9245 after 84.1 without (−0.59 points); 0.9392 on 10,000 training
images, so the small network underfits and translation costs it. Ran alone.
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import load_records
from endtoend import RESULTS, chosen

from nas.data import Split, load_data
from nas.export import retrain_on
from nas.model import ArchSpec
from nas.train import evaluate


def value(text: str) -> object:
    """A ``--recipe`` value: JSON (numbers, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", nargs="+", required=True, help="TrainConfig fields: name=value")
    p.add_argument("--arm", default="ours")
    p.add_argument("--seeds", default="1", help="comma-separated")
    p.add_argument("--minutes", type=float, default=60.0, help="the records' budget per arm")
    p.add_argument("--cpu", default="Intel", help="records of a CPU model starting so")
    args = p.parse_args()
    recipe = {}
    for item in args.recipe:
        name, sep, text = item.partition("=")
        if not sep:
            p.error(f"--recipe takes name=value, got {item!r}")
        recipe[name] = value(text)
    data = load_data("fashion_mnist", device="cpu")
    records = load_records(RESULTS)
    for seed in [int(s) for s in args.seeds.split(",")]:
        found = [
            r
            for r in records
            if (r["arm"], r["seed"], r["minutes"]) == (args.arm, seed, args.minutes)
            and r["machine"]["cpu"].startswith(args.cpu)
        ]
        net = chosen(found[-1]) if found else None
        if net is None:
            sys.exit(f"no {args.arm} network at seed {seed}, {args.minutes:g} minutes, {args.cpu}")
        spec = ArchSpec.from_dict(net["spec"])
        minutes = net["train_seconds"] / 60
        r = retrain_on(data, spec, seed, "cpu", minutes=minutes, recipe=recipe, show_progress=True)
        head = data.full_train()
        fit = evaluate(r.model, Split(head.x[:10_000], head.y[:10_000]), data.mean, data.std)
        print(
            f"{args.arm} seed {seed} {spec.summary()}: {r.test_accuracy:.4f} after "
            f"{r.training.epochs_done:.1f} epochs with {recipe} (training images "
            f"{fit:.4f}); recorded {net['test']:.4f} after {net['epochs']:.1f}, "
            f"{minutes:.1f} minutes",
            flush=True,
        )


if __name__ == "__main__":
    main()
