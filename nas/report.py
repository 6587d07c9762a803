"""python -m nas.report: what a search found, as a table, a CSV and plots.

    python -m nas.report --storage sqlite:///studies/attention_cnn-fashion_mnist.db \\
        --study-name attention_cnn-fashion_mnist [--out DIR]

Prints the Pareto front and writes to ``--out`` (default ``studies/<study-name>-report/``):

- ``trials.csv``: one row per trial: state, objective values, latency, params, FLOPs,
  training figures, why it failed or was pruned, the hand design's name, the learning
  rate it searched (``--lr-factor``; empty: the recipe's), and the structure as columns
  (``s0_block``, ``s0_width``, ``s0_attention``, ...). Stored
  strings are quoted, and one that a spreadsheet would take for a formula (starting with
  ``=``, ``+``, ``-``, ``@``, tab or CR) starts with ``'``; numbers stay numbers;
- ``report.html``: Optuna's interactive plots, plotly.js inline (works offline);
- ``accuracy_vs_latency.png``, ``history.png``, ``learning_curves.png``,
  ``importances.png``, ``accuracy_by_attention.png`` for terminals and papers.

A plot that cannot be drawn (no complete trials, say) is skipped with a note. It never
creates a storage: a missing SQLite or journal file is an error.
"""

from __future__ import annotations

import argparse
import csv
import html
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from optuna.trial import FrozenTrial, TrialState

from nas import command
from nas.model import ATTENTION_FIELDS, ArchSpec
from nas.search import (
    BASELINE_ATTR,
    LR_PARAM,
    OBJECTIVES,
    STEPS_PER_EPOCH,
    StudyError,
    counts,
    front_table,
    hypervolume,
    load_existing_study,
    pareto,
    tally,
)
from nas.stored import number, printable

# "none": no attention layer anywhere in the network; then every op the spec knows.
ATTENTION_OPS = ("none", *ATTENTION_FIELDS)
# Objective name -> CSV column; latency is the ``latency_ms`` the objective returns.
VALUE_COLUMNS = {"accuracy": "accuracy", "latency": "latency_ms"}
MEASURED = ("latency_ms", "latency_iqr_ms", "params", "flops", "epochs_done", "images_per_second")
ATTR_COLUMNS = (*MEASURED, "train_status", "reason", BASELINE_ATTR, "summary")
STAGE_FIELDS = ("block", "width", "depth", "attention", "heads", "downsample")
# OWASP's CSV-injection list: a cell starting with one of these is a spreadsheet formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MIN_IMPORTANCE_TRIALS = 3  # the evaluators need two; below three the bars are noise anyway


class Skip(Exception):
    """A plot this study cannot give (no complete trials, say); the message says why."""


def open_study(url: str, name: str) -> optuna.Study:
    """Load an existing study with at least one finished trial, or raise StudyError."""
    study = load_existing_study(url, name)
    if not any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
        raise StudyError(f"study {name!r} in {url} has no finished trials yet")
    return study


def objective_names(study: optuna.Study) -> list[str]:
    """From the study's ``objectives`` attr (a string, or a list in older studies); the
    default names when it is missing or not what nas.search writes."""
    raw = study.user_attrs.get("objectives")
    names = raw.split(",") if isinstance(raw, str) else list(raw or [])
    # Only names nas.search writes, once each: any other stored string would become a CSV
    # header or overwrite a column ("number", say).
    known = all(isinstance(n, str) and n in OBJECTIVES for n in names)
    if not known or len(set(names)) != len(names) or len(names) != len(study.directions):
        names = ["accuracy"] + [f"value{i}" for i in range(1, len(study.directions))]
    return [str(n) for n in names]


def _spec(t: FrozenTrial) -> ArchSpec | None:
    try:
        return ArchSpec.from_dict(t.user_attrs.get("arch"))
    except Exception:  # a missing or invalid arch (hand-edited database): no structure
        return None


def _accuracy(t: FrozenTrial) -> float | None:
    return number(t.values[0]) if t.state == TrialState.COMPLETE and t.values else None


def _latency(t: FrozenTrial) -> float | None:
    return number(t.user_attrs.get("latency_ms"))


def structure(spec: ArchSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    stem = spec.stem
    row: dict[str, Any] = {
        "n_stages": len(spec.stages),
        "stem": stem.kind,
        "stem_width": stem.width,
    }
    for i, s in enumerate(spec.stages):
        a = s.attention
        heads = a.heads if a and a.op != "channel" else None  # channel attention has none
        values = (s.block, s.width, s.depth, a.op if a else "none", heads, s.downsample)
        row.update({f"s{i}_{k}": v for k, v in zip(STAGE_FIELDS, values, strict=True)})
    row["global_pool"] = spec.global_pool
    row["head_hidden"] = "-".join(map(str, spec.head.hidden)) or "none"
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    value_cols = [VALUE_COLUMNS.get(n, n) for n in objective_names(study)]
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower()}
        for i, col in enumerate(value_cols):
            row[col] = t.values[i] if t.values else None
        for col in ATTR_COLUMNS:
            if row.get(col) is None:
                row[col] = t.user_attrs.get(col)
        row["lr"] = number(t.params.get(LR_PARAM))  # None: the recipe's (a hand design)
        rows.append(row | structure(_spec(t)))
    n_stages = max((r.get("n_stages", 0) for r in rows), default=0)
    columns = list(dict.fromkeys(["number", "state", *value_cols, *ATTR_COLUMNS, "lr"]))
    columns += ["n_stages", "stem", "stem_width"]
    columns += [f"s{i}_{k}" for i in range(n_stages) for k in STAGE_FIELDS]
    columns += ["global_pool", "head_hidden"]
    # Objects, not inferred dtypes: a width missing in some rows stays "64", not "64.0".
    return pd.DataFrame(rows, columns=columns, dtype=object)


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as it was stored: numbers as numbers, anything else as
    text, with ``'`` before a string that would start a formula (OWASP's CSV advice)."""
    if value is None or isinstance(value, int | float):  # bool is an int: True, not text
        return value
    text = str(value)  # a list or dict attr is written as its text
    return "'" + text if text.startswith(FORMULA_START) else text


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as CSV with :func:`csv_cell` on every cell and header."""
    safe = frame.map(csv_cell).rename(columns=csv_cell)
    # Every string quoted: a stored ";" or CR would otherwise split a cell (or a row) in
    # two, the second half starting a formula in a spreadsheet that splits on it.
    safe.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)


def _latency_label(trials: list[FrozenTrial]) -> str:
    how: Any = next((t.user_attrs["latency"] for t in trials if "latency" in t.user_attrs), {})
    how = how if isinstance(how, dict) else {}
    extra = "".join(f", {k} {how[k]}" for k in ("batch", "device") if k in how)
    return f"latency, ms (median{extra})"


def plot_accuracy_latency(ax: Axes, trials: list[FrozenTrial]) -> None:
    measured = [(t, _latency(t), _accuracy(t)) for t in trials]
    done = [(t, lat, acc) for t, lat, acc in measured if lat is not None and acc is not None]
    if not done:
        raise Skip("no complete trial with a latency")
    # Pruned trials at the accuracy they had when stopped (where the pruner cut), and those
    # over a budget, never trained, as ticks on the latency axis: only their latency is known.
    stopped, untrained = [], []
    for t in trials:
        if t.state == TrialState.PRUNED and (lat := _latency(t)) is not None:
            if t.last_step is None:
                untrained.append(lat)
            else:
                stopped.append((lat, t.intermediate_values[t.last_step]))
    if stopped:
        xs, ys = np.transpose(stopped)
        ax.scatter(xs, ys, s=18, c="0.6", alpha=0.4, label="pruned (accuracy when stopped)")
    if untrained:
        foot = ax.get_xaxis_transform()  # x in data, y in axes coordinates: the axis's foot
        ys = [0.02] * len(untrained)
        ax.scatter(untrained, ys, marker="|", s=80, c="0.5", transform=foot, label="over budget")
    ax.scatter([d[1] for d in done], [d[2] for d in done], s=24, c="tab:blue", label="complete")
    front = pareto([(lat, acc) for _, lat, acc in done])
    xs, ys = np.transpose(front)
    # The step line runs on to the slowest trial: everything below it is dominated.
    right = max(d[1] for d in done)
    ax.step([*xs, right], [*ys, ys[-1]], where="post", c="tab:red", lw=1.2, zorder=2)
    # Rings, drawn on top: a hand design on the front shows both its star and the ring.
    ring: dict[str, Any] = {"facecolors": "none", "edgecolors": "tab:red", "linewidths": 1.8}
    ax.scatter(xs, ys, s=130, zorder=5, label=f"Pareto front ({len(front)})", **ring)
    hand = [(lat, acc) for t, lat, acc in done if t.user_attrs.get(BASELINE_ATTR)]
    if hand:
        xs, ys = np.transpose(hand)
        ax.scatter(xs, ys, s=140, marker="*", c="tab:green", zorder=4, label="hand design")
    for t, lat, acc in done:
        name = t.user_attrs.get(BASELINE_ATTR) or (f"#{t.number}" if (lat, acc) in front else "")
        ax.annotate(str(name), (lat, acc), xytext=(6, -10), textcoords="offset points", fontsize=8)
    # Both ends of the front by structure: the fastest network and the most accurate.
    ends = {"fastest": front[0], "most accurate": front[-1]} if len(front) > 1 else {}
    for label, (lat, acc) in ends.items():
        t = next(t for t, la, ac in done if (la, ac) == (lat, acc))
        summary = printable(t.user_attrs.get("summary", ""))
        summary = summary if len(summary) <= 60 else summary[:57] + "..."
        below = label == "most accurate"  # the accurate end is top right: its label below
        ax.annotate(
            f"{label}: {summary}",
            (lat, acc),
            xytext=(0, -28 if below else 14),
            textcoords="offset points",
            ha="right" if below else "left",
            fontsize=7,
            color="tab:red",
            arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.6},
        )
    lats = [d[1] for d in done] + [s[0] for s in stopped] + untrained
    if max(lats) > 10 * min(lats):
        ax.set_xscale("log")
        # Plain numbers at 1-2-5 steps: "10^1" is hard to read off as milliseconds.
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_latency_label(trials))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Accuracy vs latency: {len(done)} complete trials")
    ax.legend(loc="best", fontsize=8)


def plot_history(ax: Axes, trials: list[FrozenTrial], names: list[str]) -> None:
    finished = [t for t in trials if t.state.is_finished()]
    finished.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    accs = [_accuracy(t) for t in finished]
    if all(a is None for a in accs):
        raise Skip("no complete trials")
    x = list(range(1, len(finished) + 1))
    if len(names) == 2:  # (accuracy ↑, latency/params/FLOPs ↓), as nas.search makes them
        points = [
            (cost, a) if a is not None and (cost := number(t.values[1])) is not None else None
            for t, a in zip(finished, accs, strict=True)
        ]
        ref = 1.1 * max((p[0] for p in points if p), default=math.nan)
        y = [hypervolume([p for p in points[:k] if p], ref) for k in x]
        ax.step(x, y, where="post", c="tab:red", marker=".")
        unit = " ms" if names[1] == "latency" else ""
        ax.set_ylabel(f"hypervolume (accuracy × {names[1]}{unit})")
        ax.set_title(
            "Hypervolume of the front after each finished trial\n"
            f"reference point: accuracy 0, {names[1]} 1.1 × max = {ref:.3g}{unit}"
        )
    else:
        best = np.fmax.accumulate([np.nan if a is None else a for a in accs])
        ax.scatter(x, [np.nan if a is None else a for a in accs], s=14, c="0.5", label="trial")
        ax.step(x, best, where="post", c="tab:red", label="best so far")
        ax.set_ylabel("validation accuracy")
        ax.set_title("Best accuracy after each finished trial")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("finished trials (complete, pruned or failed), in order of finishing")


_CURVE_STYLES: dict[TrialState, dict[str, Any]] = {
    TrialState.COMPLETE: {"c": "tab:blue", "ls": "-", "alpha": 0.7, "marker": "."},
    TrialState.PRUNED: {"c": "tab:orange", "ls": "--", "alpha": 0.9, "marker": "x"},
    TrialState.FAIL: {"c": "0.5", "ls": ":", "alpha": 0.8, "marker": "."},
}


def plot_learning_curves(ax: Axes, trials: list[FrozenTrial]) -> None:
    drawn: dict[TrialState, int] = {}
    for t in trials:
        if t.state not in _CURVE_STYLES or not t.intermediate_values:
            continue
        # The objective reports at step = round(epoch * STEPS_PER_EPOCH).
        epochs = [s / STEPS_PER_EPOCH for s in sorted(t.intermediate_values)]
        ys = [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        ax.plot(epochs, ys, lw=1, ms=5, **_CURVE_STYLES[t.state])
        drawn[t.state] = drawn.get(t.state, 0) + 1
        if name := t.user_attrs.get(BASELINE_ATTR):  # hand designs named at their last point
            xy = (epochs[-1], ys[-1])
            ax.annotate(str(name), xy, xytext=(4, 0), textcoords="offset points", fontsize=8)
    if not drawn:
        raise Skip("no trial reported intermediate values")
    for state, n in drawn.items():  # one legend entry per state, not one per trial
        ax.plot([], [], lw=1, **_CURVE_STYLES[state], label=f"{state.name.lower()} ({n})")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Learning curves: validation accuracy at each rung")
    ax.margins(x=0.15)  # room for the names at the right end
    ax.legend(loc="best", fontsize=8)


def _n_importance(study: optuna.Study) -> int:
    return sum(bool(t.params) and _accuracy(t) is not None for t in study.trials)


def accuracy_importances(study: optuna.Study) -> dict[str, float]:
    """Importances of the search parameters for accuracy (hand designs have none)."""
    if (n := _n_importance(study)) < MIN_IMPORTANCE_TRIALS:
        raise Skip(f"{n} complete trials with parameters, need {MIN_IMPORTANCE_TRIALS}")
    with warnings.catch_warnings():  # "some regimes have less than 2 trials": expected
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study, target=lambda t: t.values[0])


def plot_importances(ax: Axes, study: optuna.Study) -> None:
    scores = accuracy_importances(study)
    top = list(scores.items())[:15][::-1]
    ax.barh([k for k, _ in top], [v for _, v in top], color="tab:blue")
    shown = f"top {len(top)} of {len(scores)}" if len(scores) > len(top) else str(len(top))
    n = _n_importance(study)
    ax.set_xlabel("importance for accuracy (normalised to sum 1)")
    ax.set_title(f"Parameter importances for accuracy ({shown} parameters, {n} trials)")


def plot_by_attention(ax: Axes, trials: list[FrozenTrial]) -> None:
    groups: dict[str, list[float]] = {op: [] for op in ATTENTION_OPS}
    for t in trials:
        acc, spec = _accuracy(t), _spec(t)
        if acc is None or spec is None:
            continue
        ops = {s.attention.op for s in spec.stages if s.attention} or {"none"}
        for op in ops:  # a trial counts for every op it uses
            groups.setdefault(op, []).append(acc)
    if not any(groups.values()):
        raise Skip("no complete trial with a valid arch")
    rng = np.random.default_rng(0)
    for i, values in enumerate(groups.values()):
        if len(values) >= 3:  # a box of one or two points says less than the points
            ax.boxplot([values], positions=[i], widths=0.5, showfliers=False)
        jitter = rng.uniform(-0.12, 0.12, len(values))
        ax.scatter(i + jitter, values, s=16, c="tab:blue", alpha=0.7, zorder=3)
    ax.set_xticks(range(len(groups)), [f"{k}\nn={len(v)}" for k, v in groups.items()])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xlabel("attention op (none: no attention layer in the network)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Accuracy by attention op (a trial counts for each op it uses)")


def write_html(path: Path, study: optuna.Study, names: list[str], table: str) -> list[str]:
    """One self-contained page of Optuna's plotly figures; returns notes on skipped ones."""
    import optuna.visualization as vis

    complete = [t for t in study.trials if _accuracy(t) is not None]
    ref = [0.0, 1.1 * max((t.values[-1] for t in complete), default=0.0)]

    acc: dict[str, Any] = {"target": lambda t: t.values[0], "target_name": "accuracy"}

    def importances() -> Any:
        accuracy_importances(study)  # raises, with the reason, when too few trials
        return vis.plot_param_importances(study, **acc)

    figures: list[tuple[str, Callable[[], Any]]] = []
    if len(names) > 1:
        figures.append(("Pareto front", lambda: vis.plot_pareto_front(study, target_names=names)))
        figures.append(("Hypervolume history", lambda: vis.plot_hypervolume_history(study, ref)))
    figures += [
        ("Accuracy history", lambda: vis.plot_optimization_history(study, **acc)),
        ("Learning curves", lambda: vis.plot_intermediate_values(study)),
        ("Importances", importances),
    ]
    parts: list[str] = []
    notes: list[str] = []
    for title, make in figures:
        try:
            if not complete:
                raise Skip("no complete trials")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
            # plotly.js (a few MB) inline, once, so the page works without a network.
            parts += [f"<h2>{title}</h2>", fig.to_html(include_plotlyjs=not parts, full_html=False)]
        except Exception as e:  # one missing figure must not cost the others
            notes.append(f"report.html: skipped {title.lower()}: {e}")
    name = html.escape(f"nas report: {study.study_name}")
    path.write_text(
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{name}</title></head>"
        f"<body><h1>{name}</h1><pre>{html.escape(table)}</pre>{''.join(parts)}</body></html>\n",
        encoding="utf-8",
    )
    return notes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    p.add_argument("--study-name", required=True)
    p.add_argument("--out", type=Path, help="default studies/<study-name>-report/")


def run(args: argparse.Namespace) -> int:
    study = open_study(args.storage, args.study_name)
    out: Path = args.out or Path("studies") / f"{args.study_name}-report"
    names = objective_names(study)
    trials = study.get_trials(deepcopy=False)
    c = counts(study)
    print(f"study {study.study_name!r} in {args.storage}: {len(trials)} trials ({tally(c)})")
    title = "Pareto front" if len(names) > 1 else "Best trial"
    notes: list[str] = []
    table = f"{title} ({', '.join(names)}):\n{front_table(study)}" if c["complete"] else ""
    print(f"\n{table or 'no complete trials: no front'}\n")

    out.mkdir(parents=True, exist_ok=True)  # an unwritable folder, a full disk: exit 1
    write_csv(out / "trials.csv", trials_frame(study))
    notes += write_html(out / "report.html", study, names, table)
    written = ["trials.csv", "report.html"]
    plots: dict[str, Callable[[Axes], None]] = {
        "accuracy_vs_latency.png": lambda ax: plot_accuracy_latency(ax, trials),
        "history.png": lambda ax: plot_history(ax, trials, names),
        "learning_curves.png": lambda ax: plot_learning_curves(ax, trials),
        "importances.png": lambda ax: plot_importances(ax, study),
        "accuracy_by_attention.png": lambda ax: plot_by_attention(ax, trials),
    }
    for name, draw in plots.items():
        # A bare Figure, not pyplot: no global state, no GUI backend, Agg underneath.
        fig = Figure(figsize=(9, 5), layout="constrained")
        try:
            # Stored names are labels: "$...$" in one is text, not mathtext to parse.
            with matplotlib.rc_context({"text.parse_math": False}):
                draw(fig.subplots())
                fig.savefig(out / name, dpi=150)
            written.append(name)
        except Exception as e:  # odd data in one plot must not cost the CSV and the others
            if args.debug and not isinstance(e, Skip):
                raise
            notes.append(f"skipped {name}: {e if isinstance(e, Skip) else repr(e)}")
    print(f"wrote {out}/: {', '.join(written)}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("report", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
