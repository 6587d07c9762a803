"""Search spaces by name or path: find, load and check one (``python -m nas.space`` looks
at one).

A space is a module with ``suggest(trial, task) -> ArchSpec``: a built-in one in
``search_spaces/``, or a ``.py`` file the user names on the command line (never one a
study names: :func:`load_builtin_space`). It may declare ``TASK_KINDS`` (the task kinds it
builds networks for; default ``("image",)``) and ``EXAMPLE_TASK`` (the task
``python -m nas.space`` describes and samples it on; default Fashion-MNIST's shape).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import optuna

import search_spaces
from nas.errors import NasError
from nas.model import FASHION_MNIST, ArchSpec, Task

Suggest = Callable[[optuna.Trial, Task], ArchSpec]

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
