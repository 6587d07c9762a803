"""Search spaces by name or path, and ``python -m nas.space`` to look at one.

python -m nas.space attention_cnn --describe
python -m nas.space attention_cnn --sample 5 --seed 0
python -m nas.space my_space.py --sample 200 --seed 0 --json

A space module may declare ``TASK_KINDS`` (the task kinds it builds networks for; default
``("image",)``) and ``EXAMPLE_TASK`` (the task this CLI describes and samples it on;
default Fashion-MNIST's shape).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import optuna

import search_spaces
from nas.spec import ArchSpec
from nas.task import FASHION_MNIST, Task

Suggest = Callable[[optuna.Trial, Task], ArchSpec]

# The space a search uses when none is named, by the dataset's task kind.
DEFAULT_SPACES = {"image": "attention_cnn", "text": "manet_text"}


class SpaceError(ValueError):
    """A space that cannot be found or loaded."""


def space_names() -> list[str]:
    """The built-in spaces (modules of ``search_spaces`` not starting with ``_``)."""
    return sorted(
        m.name for m in pkgutil.iter_modules(search_spaces.__path__) if not m.name.startswith("_")
    )


def load_space(name_or_path: str) -> ModuleType:
    """The module of a space: a built-in name, or the path of a ``.py`` file.

    A path is imported, so only a user may name one (on a command line): a name read
    back from a study goes through :func:`load_builtin_space` instead.
    """
    if name_or_path.endswith(".py") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise SpaceError(f"space file {str(path)!r} does not exist")
        name = f"nas_user_space_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SpaceError(f"space file {str(path)!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs, as an import does: dataclasses and postponed
        # annotations look the module up in sys.modules while the file executes.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    elif name_or_path in space_names():
        module = importlib.import_module(f"search_spaces.{name_or_path}")
    else:
        raise SpaceError(
            f"unknown space {name_or_path!r}; built-in spaces: {', '.join(space_names())}"
            " (or give the path of a .py file)"
        )
    if not callable(getattr(module, "suggest", None)):
        raise SpaceError(f"space {name_or_path!r} has no function suggest(trial, task)")
    return module


def load_builtin_space(name: str) -> ModuleType:
    """The built-in space ``name``; anything else (a path, a file name, a non-string) is
    a ``SpaceError``. For names read from storage, which must never import a file."""
    if not isinstance(name, str) or name not in space_names():
        shown = repr(name)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."  # one short line
        raise SpaceError(
            f"space {shown} is not a built-in space; built-in spaces: {', '.join(space_names())}"
        )
    return load_space(name)


def default_space(task: Task) -> str:
    return DEFAULT_SPACES[task.kind]


def check_task(module: ModuleType, task: Task, name: str) -> None:
    """Refuse a space whose ``TASK_KINDS`` do not include the task's kind."""
    kinds = tuple(getattr(module, "TASK_KINDS", ("image",)))
    if task.kind not in kinds:
        article = "an" if task.kind[0] in "aeiou" else "a"
        raise SpaceError(
            f"space {name!r} builds networks for {' and '.join(kinds)} tasks; "
            f"{task.name!r} is {article} {task.kind} task (its default space is "
            f"{default_space(task)})"
        )


def example_task(module: ModuleType) -> Task:
    """The task to describe and sample a space on: its ``EXAMPLE_TASK``, else Fashion-MNIST."""
    task = getattr(module, "EXAMPLE_TASK", FASHION_MNIST)
    if not isinstance(task, Task):
        raise SpaceError(f"EXAMPLE_TASK of space {module.__name__!r} must be a nas.task.Task")
    return task


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
    from nas.builder import build_model
    from nas.measure import count_flops

    model = build_model(spec, seed=0)
    return count_flops(model, spec.input)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.space",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "space", help=f"a built-in space ({', '.join(space_names())}) or a .py path"
    )
    parser.add_argument("--describe", action="store_true", help="list parameters and choices")
    parser.add_argument("--sample", type=int, metavar="K", help="print K sampled specs")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line: spec, params, flops"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
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
    except Exception as e:  # one clear line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.exit(main())
