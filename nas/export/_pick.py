"""Choosing the trial to export: ``--trial N``, ``--best`` (the most accurate on the front)
or ``--pick CONDITIONS`` (the most accurate that satisfies them)."""

from __future__ import annotations

import math
import re

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.export._error import ExportError
from nas.search import front
from nas.stored import number

# --pick conditions: metric, comparison, number, unit; several joined by "," or "and".
_CONDITION = re.compile(
    r"^\s*(accuracy|latency|params|flops)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z%]*)\s*$"
)
_UNITS = {
    "accuracy": {"": 1.0, "%": 0.01},
    "latency": {"": 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3},
    "params": {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6},
    "flops": {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9},
}


def parse_pick(text: str) -> list[tuple[str, str, float]]:
    """``"latency<=2ms, params<100k"`` → [(metric, op, value in base units), ...]."""
    conditions = []
    for part in re.split(r",|\band\b", text):
        match = _CONDITION.match(part)
        if match is None:
            raise ExportError(
                f"--pick: cannot read {part.strip()!r}; write e.g. 'latency<=2ms', "
                "'params<100k', 'flops<=50M', 'accuracy>=0.9'"
            )
        metric, op, number, unit = match.groups()
        if unit not in _UNITS[metric]:
            known = ", ".join(repr(u) for u in _UNITS[metric] if u)
            raise ExportError(f"--pick: unknown unit {unit!r} for {metric}; use {known}")
        conditions.append((metric, op, float(number) * _UNITS[metric][unit]))
    return conditions


def _metric(trial: FrozenTrial, metric: str) -> float:
    if metric == "accuracy":
        return float(trial.values[0])
    key = {"latency": "latency_ms", "params": "params", "flops": "flops"}[metric]
    value = number(trial.user_attrs.get(key))
    return math.nan if value is None else value  # NaN satisfies no condition


def _holds(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound, ">": value > bound}[op]


def choose_trial(
    study: optuna.Study, trial: int | None, best: bool, pick: str | None
) -> FrozenTrial:
    """The trial to export; an unknown, unfinished or failed one is an ``ExportError``."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if trial is not None:
        if not 0 <= trial < len(trials):
            span = f"0..{len(trials) - 1}" if trials else "none"
            raise ExportError(
                f"--trial {trial} does not exist in study {study.study_name!r} (trials: {span})"
            )
        chosen = trials[trial]
        if chosen.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            reason = chosen.user_attrs.get("reason")
            raise ExportError(
                f"trial {trial} is {chosen.state.name}"
                + (f" ({reason})" if reason else "")
                + ": nothing to export; pick a COMPLETE trial"
            )
        return chosen
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trials to export")
    if best:
        return front(study)[0]
    assert pick is not None
    conditions = parse_pick(pick)
    fitting = [t for t in complete if all(_holds(_metric(t, m), o, b) for m, o, b in conditions)]
    if not fitting:
        raise ExportError(f"no complete trial of {len(complete)} satisfies --pick {pick!r}")
    return max(fitting, key=lambda t: t.values[0])
