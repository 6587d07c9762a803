"""``python -m nas.space``: look at a search space before searching it.

python -m nas.space attention_cnn --describe
python -m nas.space attention_cnn --sample 5 --seed 0
python -m nas.space my_space.py --sample 200 --seed 0 --json

Spaces are found and loaded by :mod:`nas.search._spaces`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, cast

import optuna

from nas import command
from nas.model import ArchSpec, Task
from nas.search import SpaceError, Suggest, example_task, load_space, space_names


def sample(
    suggest: Suggest, task: Task, count: int, seed: int
) -> list[tuple[ArchSpec, dict[str, Any]]]:
    """``count`` specs drawn by Optuna's RandomSampler, with the params behind each."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask()
        spec = suggest(trial, task)
        out.append((spec, dict(trial.params)))
        study.tell(trial, 0.0)
    return out


def describe(suggest: Suggest, task: Task, draws: int = 300, seed: int = 0) -> str:
    """The space's parameters and their choices, found by sampling it.

    A parameter seen in fewer than all draws is conditional (marked so).
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[str, optuna.distributions.BaseDistribution] = {}
    counts: dict[str, int] = {}
    for _ in range(draws):
        trial = study.ask()
        suggest(trial, task)
        study.tell(trial, 0.0)
    order: list[str] = []  # suggestion order, merged across trials
    for frozen in study.trials:
        previous = None
        for name, dist in frozen.distributions.items():
            if name not in seen:
                seen[name] = dist
                order.insert(order.index(previous) + 1 if previous else len(order), name)
            counts[name] = counts.get(name, 0) + 1
            previous = name
    if not seen:
        return "(no parameters: a fixed design)"
    width = max(map(len, seen))
    lines = []
    for name in order:
        dist = seen[name]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = " | ".join(map(str, dist.choices))
        elif isinstance(dist, optuna.distributions.IntDistribution):
            choices = f"{dist.low}..{dist.high}"
        else:
            choices = repr(dist)
        when = "" if counts[name] == draws else "  (conditional)"
        lines.append(f"{name.ljust(width)}  {choices}{when}")
    return "\n".join(lines)


def _flops(spec: ArchSpec) -> int:
    from nas.model import build_model
    from nas.train import count_flops

    model = build_model(spec, seed=0)
    return count_flops(model, spec.input)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "space", help=f"a built-in space ({', '.join(space_names())}) or a .py path"
    )
    parser.add_argument("--describe", action="store_true", help="list parameters and choices")
    parser.add_argument("--sample", type=int, metavar="K", help="print K sampled specs")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line: spec, params, flops"
    )


def run(args: argparse.Namespace) -> int:
    module = load_space(args.space)
    suggest = cast(Suggest, module.suggest)
    task = example_task(module)  # spaces read only its shape
    if args.sample is not None and args.sample < 1:
        raise SpaceError(f"--sample must be at least 1, got {args.sample}")
    if args.describe or args.sample is None:
        print(describe(suggest, task))
    if args.sample is not None:
        for i, (spec, params) in enumerate(sample(suggest, task, args.sample, args.seed)):
            if args.json:
                row = {"spec": spec.to_dict(), "params": params, "flops": _flops(spec)}
                print(json.dumps(row))
            else:
                print(f"[{i}] {spec.summary()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("space", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
