"""What a study found: its Pareto front (as trials, a table, points) and its counts.

Shared by the search's summary, the report and the export. Stored values are untrusted:
the table shows them through :mod:`nas.stored`.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.stored import figure, printable

#: The user attr of a hand design's trial: the name of its built-in space (the runner's
#: enqueued baselines).
BASELINE_ATTR = "baseline"

# The user attr of a trial pruned as a repeat: the number of the trial it repeats (the
# objective's ``repeated``).
REPEAT_OF = "repeat_of"


def is_repeat(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was drawn again and marked so (``REPEAT_OF``), whatever the stored
    value: it is set before the trial is pruned, so a running one may carry it too."""
    return trial.user_attrs.get(REPEAT_OF) is not None


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front, most accurate first (single objective: the best trial)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)


def front_table(study: optuna.Study) -> str:
    rows = [("trial", "accuracy", "latency ms", "params", "MFLOPs", "structure")]
    for t in front(study):
        a = t.user_attrs
        baseline = f"[{a[BASELINE_ATTR]}] " if a.get(BASELINE_ATTR) is not None else ""
        rows.append(
            (
                str(t.number),
                figure(t.values[0], ".4f"),
                figure(a.get("latency_ms"), ".3f"),
                figure(a.get("params"), ",", integer=True),
                figure(a.get("flops"), ".1f", scale=1e6),
                printable(baseline + str(a.get("summary", ""))),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, and ``repeat``: the pruned ones that were repeats (not trained)."""
    trials = study.get_trials(deepcopy=False)
    out = {state.name.lower(): 0 for state in TrialState} | {"repeat": 0}
    for t in trials:
        out[t.state.name.lower()] += 1
        out["repeat"] += t.state == TrialState.PRUNED and is_repeat(t)
    return out


def tally(c: dict[str, int]) -> str:
    """``counts`` in words: "40 complete, 302 pruned (79 repeats), 0 failed"."""
    repeats = f" ({c['repeat']} repeats)" if c.get("repeat") else ""
    return f"{c['complete']} complete, {c['pruned']} pruned{repeats}, {c['fail']} failed"


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (latency ↓, accuracy ↑) points, by latency ascending."""
    out: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or acc > out[-1][1]:
            out.append((lat, acc))
    return out


def hypervolume(points: list[tuple[float, float]], ref_latency: float) -> float:
    """Area dominated by (latency, accuracy) points, bounded by accuracy 0 and ref_latency."""
    area = best = 0.0
    for lat, acc in pareto(points):
        if lat < ref_latency and acc > best:
            area += (ref_latency - lat) * (acc - best)
            best = acc
    return area


def longest_share(study: optuna.Study) -> tuple[int, float, float] | None:
    """The finished trial that took longest: its number, seconds, and share of the time all
    finished trials took (how evenly the search spent its compute); None before one."""
    durations = [
        (t.duration.total_seconds(), t.number)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.duration is not None
    ]
    total = sum(seconds for seconds, _ in durations)
    if not durations or total <= 0:
        return None
    seconds, number = max(durations)
    return number, seconds, seconds / total
