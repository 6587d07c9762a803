"""Search spaces by name or path: find, load and check one (``python -m nas.space`` looks
at one).

A space is a module with ``suggest(trial, task) -> ArchSpec``: a built-in one in
``search_spaces/``, or a ``.py`` file the user names on the command line (never one a
study names: :func:`load_builtin_space`). It may declare ``TASK_KINDS`` (the task kinds it
builds networks for; default ``("image",)``), ``EXAMPLE_TASK`` (the task
``python -m nas.space`` describes and samples it on; default Fashion-MNIST's shape) and
``STARTING_POINTS`` (parameter sets a new search tries first; default none).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

import search_spaces
from nas.errors import NasError
from nas.model import FASHION_MNIST, ArchSpec, Task

Suggest = Callable[[optuna.Trial, Task], ArchSpec]
Params = dict[str, str | int | float | bool | None]  # Optuna's choice types

# The space a search uses when none is named, by the dataset's task kind.
DEFAULT_SPACES = {"image": "attention_cnn", "text": "manet_text"}


class SpaceError(NasError):
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
        raise SpaceError(f"EXAMPLE_TASK of space {module.__name__!r} must be a nas.model.Task")
    return task


def starting_points(module: ModuleType, task: Task, name: str) -> list[Params]:
    """The space's ``STARTING_POINTS``, to be enqueued as a search's first trials; a
    ``SpaceError`` unless each is exactly the parameters ``suggest`` asks for on ``task``
    (replayed with a ``FixedTrial``), every value within its distribution. ``name``: the
    space as the user named it, for the messages."""
    points = getattr(module, "STARTING_POINTS", ())
    if not isinstance(points, tuple | list):
        raise SpaceError(f"STARTING_POINTS of space {name!r}: {points!r} is not a tuple of dicts")
    checked: list[Params] = []
    for point in points:
        ok = isinstance(point, Mapping) and all(
            isinstance(k, str) and (v is None or type(v) in (str, int, float, bool))
            for k, v in point.items()
        )
        if not ok:
            raise SpaceError(
                f"STARTING_POINTS of space {name!r}: {point!r} is not a dict of parameter "
                "names to str, int, float, bool or None values"
            )
        trial = optuna.trial.FixedTrial(dict(point))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unused parameters: refused below
                module.suggest(trial, task)
        except Exception as e:
            raise SpaceError(
                f"STARTING_POINTS of space {name!r}: {dict(point)!r} does not build a "
                f"network for {task.name!r}: {e}"
            ) from None
        unused = sorted(set(point) - set(trial.params))
        if unused:
            raise SpaceError(
                f"STARTING_POINTS of space {name!r}: {dict(point)!r} sets parameters the "
                f"space does not ask for here: {', '.join(unused)}"
            )
        for key, dist in trial.distributions.items():  # FixedTrial only warns of these
            if not _within(dist, point[key]):
                raise SpaceError(
                    f"STARTING_POINTS of space {name!r}: {key} = {point[key]!r} is outside "
                    f"its distribution {dist}"
                )
        checked.append(dict(point))
    return checked


def _within(dist: BaseDistribution, value: object) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, IntDistribution | FloatDistribution):
        return isinstance(value, int | float) and dist.low <= value <= dist.high
    return True  # another distribution: Optuna's own checks apply
