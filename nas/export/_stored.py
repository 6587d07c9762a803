"""What the export reads back from the study, checked: a database anyone may have edited.

The spec goes through ``ArchSpec`` validation only (never evaluated), against the attention
budget the study recorded; seeds, dataset names, columns, the tokenizer and the pixels' mean
and std must be values of the right kind and range, else an :class:`ExportError` names the
bad one.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.data import TOKENIZERS, Tokenizer, is_text_name
from nas.export._error import ExportError
from nas.model import ArchSpec, ArchSpecError, check_budget_mb
from nas.stored import number, shown


def stored_budget(study: optuna.Study) -> float | None:
    """The attention budget (MiB) the study was searched with; None if it records none."""
    raw = study.user_attrs.get("attention_budget_mb")
    if raw is None:
        return None
    try:
        return check_budget_mb(raw)
    except ArchSpecError as e:
        raise ExportError(
            f"study {study.study_name!r}'s attention budget is refused: {e}"
        ) from None


def stored_spec(trial: FrozenTrial) -> ArchSpec:
    """The trial's spec, through ``ArchSpec`` validation only (never evaluated)."""
    if "arch" not in trial.user_attrs:
        raise ExportError(f"trial {trial.number} has no stored spec (user attr 'arch')")
    try:
        return ArchSpec.from_dict(trial.user_attrs["arch"])
    except ArchSpecError as e:
        raise ExportError(f"trial {trial.number}'s stored spec is refused: {e}") from None


def stored_seed(value: object, what: str) -> int:
    """A stored seed: an integer the samplers and numpy take, else an ``ExportError``."""
    seed = number(value, integer=True)
    if seed is None or not 0 <= seed < 2**32:
        raise ExportError(f"{what} must be an integer in [0, 2**32), got {shown(value)}")
    return int(seed)


def stored_dataset(study: optuna.Study) -> str | None:
    """The dataset the study names (None: an older study records none); only a string."""
    dataset = study.user_attrs.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise ExportError(f"study attr dataset must be a string, got {shown(dataset)}")
    return dataset


# The columns a text study reads, and their defaults where it records none.
_COLUMNS = {"text_column": "text", "label_column": "label"}


def stored_tokenizer(study: optuna.Study) -> Tokenizer:
    """The tokenizer a text study searched with: one of the names, compared as a string
    (never imported or evaluated); a study made before it was recorded used ``words``."""
    raw = study.user_attrs.get("tokenizer", "words")
    for name in TOKENIZERS:
        if isinstance(raw, str) and raw == name:
            return name
    raise ExportError(
        f"study attr tokenizer must be one of {', '.join(TOKENIZERS)}, got {shown(raw)}"
    )


def data_options(study: optuna.Study, spec: ArchSpec) -> dict[str, Any]:
    """How the search loaded its dataset for ``spec``, as keyword arguments of ``load_data``.

    Text: the seed, columns and tokenizer the study recorded (a text task's vocabulary
    depends on them) and the sequence length the network was trained at (its spec's: the
    rule that derives a length from the data may have changed since, as its cap did from
    512 to 2,048 tokens). Images: none (their task does not depend on the seed).
    """
    attrs = study.user_attrs
    if not is_text_name(stored_dataset(study) or ""):
        return {}
    seed = stored_seed(attrs.get("seed", 0), "study attr seed")
    columns = {key: attrs.get(key, default) for key, default in _COLUMNS.items()}
    for key, column in columns.items():
        if not isinstance(column, str):
            raise ExportError(f"study attr {key} must be a string, got {shown(column)}")
    tokenizer = stored_tokenizer(study)
    return {"seed": seed, **columns, "tokenizer": tokenizer, "length": spec.input.width}


def checked_normalisation(
    mean: object, std: object, channels: int, source: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels scaled to [0, 1]: ``channels`` finite numbers
    each, means in [0, 1], stds in [1e-6, 1] (model.py writes 6 decimals and divides)."""

    def numbers(values: object, low: float) -> tuple[float, ...] | None:
        if not isinstance(values, list | tuple) or len(values) != channels:
            return None
        got = [number(v) for v in values]
        if any(v is None or not low <= v <= 1 for v in got):
            return None
        return tuple(float(v) for v in got if v is not None)

    m, s = numbers(mean, 0.0), numbers(std, 1e-6)
    if m is None or s is None:
        raise ExportError(
            f"{source} mean and std are refused: each must be {channels} finite numbers (one "
            f"per input channel), means in [0, 1] and stds in [1e-6, 1]; got mean "
            f"{shown(mean)}, std {shown(std)}"
        )
    return m, s


def stored_normalisation(
    study: optuna.Study, spec: ArchSpec
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The training pixels' mean and std the search stored, checked; None if absent."""
    attrs = study.user_attrs
    if "mean" not in attrs and "std" not in attrs:
        return None
    return checked_normalisation(
        attrs.get("mean"), attrs.get("std"), spec.input.channels, f"study {study.study_name!r}'s"
    )
