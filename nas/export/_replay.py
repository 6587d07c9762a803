"""The replay: a trial's params run through its space again must give the stored spec, so a
space edited since the study is caught rather than exported (``--trust-stored-spec``
skips it).

A space name read from the study is only ever a built-in space (a trial's ``baseline``
too); a space file is imported only when the user names it with ``--space PATH``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
from optuna.trial import FixedTrial, FrozenTrial

from nas.data import DATASETS, task_for
from nas.export._error import ExportError
from nas.model import ArchSpec, Task
from nas.search import BASELINE_ATTR, SpaceError, load_builtin_space, load_space, space_names
from nas.stored import shown


def _differences(a: Any, b: Any, path: str = "spec") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: stored {a!r}, replayed {b!r}"]


def replay_task(dataset: str | None, spec: ArchSpec) -> Task:
    """The task to replay a trial on, without reading any data.

    A built-in image dataset has a constant shape (nothing is read), so an edited input
    or class count is caught by the replay; any other takes the validated spec's own.
    """
    if dataset in DATASETS:
        return task_for(dataset)
    inp = spec.input
    if inp.is_text:
        return Task(
            "the stored spec's input", "text", 1, 1, 1, spec.classes, inp.width, inp.vocab_size
        )
    return Task(
        "the stored spec's input", "image", inp.channels, inp.height, inp.width, spec.classes
    )


def replay_space(study: optuna.Study, trial: FrozenTrial, user_space: str | None) -> ModuleType:
    """The space to replay ``trial`` through. A stored name is only ever a built-in space;
    a file is imported only when the user names it (``user_space``, from ``--space``)."""
    if BASELINE_ATTR in trial.user_attrs:
        try:
            return load_builtin_space(trial.user_attrs[BASELINE_ATTR])
        except SpaceError as e:
            raise ExportError(f"trial {trial.number}'s baseline is refused: {e}") from None
    stored = study.user_attrs.get("space")
    if stored is None:
        raise ExportError(
            f"study {study.study_name!r} does not record its space (made by an older nas), "
            "so its trials cannot be replayed; pass --trust-stored-spec"
        )
    if not isinstance(stored, str):
        raise ExportError(f"study attr space must be a string, got {shown(stored)}")
    if user_space is not None:
        # The search stores --space as given (a path relative to where it ran): the file
        # names must agree; the replay then checks the file still gives the stored spec.
        if Path(user_space).stem != Path(stored).stem:
            raise ExportError(
                f"--space {user_space!r} is not the study's space {shown(stored)} "
                "(their file names differ)"
            )
        return load_space(user_space)
    if stored in space_names():
        return load_builtin_space(stored)
    raise ExportError(
        f"study {study.study_name!r}'s space {shown(stored)} is not a built-in space "
        f"({', '.join(space_names())}); a file named by a study is never imported: pass "
        "--space PATH (the space file the search used) to replay through it, or "
        "--trust-stored-spec"
    )


def check_replay(
    study: optuna.Study,
    trial: FrozenTrial,
    spec: ArchSpec,
    task: Task,
    user_space: str | None = None,
) -> None:
    """Replay the trial's params through its space; a different spec is an ``ExportError``."""
    module = replay_space(study, trial, user_space)
    name = module.__name__.removeprefix("search_spaces.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial warns about unused params
            replayed = module.suggest(FixedTrial(trial.params), task)
    except Exception as e:
        raise ExportError(
            f"trial {trial.number}'s params no longer replay through space {name!r} "
            f"({e.__class__.__name__}: {e}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        ) from None
    diffs = _differences(spec.to_dict(), replayed.to_dict())
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise ExportError(
            f"trial {trial.number}'s params replayed through space {name!r} give another "
            f"network than the stored spec ({shown}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        )
