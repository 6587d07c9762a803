"""Shared helpers of the benchmarks: run real searches and score them (bench/pruning.py,
bench/search.py); sample the default space and train as a search's trial trains
(bench/fidelity.py, bench/grad_clip.py, bench/fast_end.py, bench/pruned_to_the_end.py).

A search here is what ``python -m nas.search`` runs — the same ``Objective`` (latency
measured before training, rungs reported through ``nas.search._pruning``), the same ``run_trial``,
the same samplers (``nas.search.make_sampler``) and a real Optuna study in a SQLite file
under ``bench/out/`` — driven by a small in-process loop so that a benchmark can

- pass a pruner object (``ParetoPruner(eta, min_peers, n_warmup_steps)``; the CLI only
  takes a pruner name),
- stop at a compute budget (total epochs trained) rather than a trial count,
- score on a fixed subset of the validation split (``--val-size`` images; the rungs of a
  brief training are evaluated four times, and on 2 CPU cores evaluating all 6,000
  validation images costs more than training 0.1 epochs), and
- evaluate in batches of 256 rather than 1,024 (see ``EVAL_BATCH``).

Benchmarks set ``NAS_ATTENTION_BUDGET_MB`` (the space maps bigger attention to fewer heads
or pooled keys, by its documented rule) so that one trial stays within seconds on a CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from nas.data import Data, Split, load_data
from nas.model import ArchSpec, Task, build_model
from nas.search import (
    BASELINES,
    DEFAULT_EPOCHS,
    LR_PARAM,
    Limits,
    Objective,
    default_max_flops,
    first_judged_step,
    load_space,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
    run_trial,
    trial_train_config,
)
from nas.search._settings import MIN_TRAIN_STEPS
from nas.train import TrainConfig, count_flops, fingerprint, measure_latency

OUT = Path(__file__).resolve().parent / "out"
OBJECTIVES = ("accuracy", "latency")
# Evaluation batch: at 1,024 one attention layer at 28×28 holds 1,024 score matrices of
# 784² floats per head at once (GiBs); a trial of the default space was OOM-killed at
# 22 GiB on this 23 GiB machine during a probe with the CLI defaults.
EVAL_BATCH = 256
DEFAULT_ATTENTION_BUDGET_MB = "2"


def quiet(threads: int) -> None:
    """Optuna's logs off, the benchmarks' attention budget, ``threads`` torch threads (used
    for training and for the latency measurement alike)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # run_trial keeps heartbeats itself, as nas.search's worker loop does.
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    os.environ.setdefault("NAS_ATTENTION_BUDGET_MB", DEFAULT_ATTENTION_BUDGET_MB)
    torch.set_num_threads(threads)


def bench_data(dataset: str, val_size: int, seed: int = 0) -> Data:
    data = load_data(dataset, device="cpu", seed=seed)
    if val_size < len(data.val.y):
        # The validation split is a stratified random draw kept in source order, so its
        # first images are a random sample of it.
        data = replace(data, val=Split(data.val.x[:val_size], data.val.y[:val_size]))
    return data


@dataclass
class Run:
    name: str
    study: optuna.Study
    wall_s: float
    first: int | None = None  # only trials numbered below this (a run cut short)

    @property
    def trials(self) -> list[FrozenTrial]:
        """Finished trials (COMPLETE, PRUNED, FAIL) in the order they ran."""
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        trials = self.study.get_trials(deepcopy=False, states=finished)
        if self.first is not None:
            trials = [t for t in trials if t.number < self.first]
        return sorted(trials, key=lambda t: t.number)

    def epochs(self) -> float:
        return sum(epochs_done(t) for t in self.trials)


def epochs_done(t: FrozenTrial) -> float:
    return float(t.user_attrs.get("epochs_done", 0.0))


def run_search(
    name: str,
    data: Data,
    *,
    sampler: str,
    pruner: optuna.pruners.BasePruner,
    seed: int,
    epochs: float,
    space: str = "attention_cnn",
    trials: int | None = None,
    epoch_budget: float | None = None,
    enqueue_baselines: bool = False,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> Run:
    """A fresh study ``name`` in ``bench/out/<name>.db``, run until ``trials`` trials have
    finished or ``epoch_budget`` epochs have been trained (whichever is given)."""
    db = OUT / f"{name}.db"
    OUT.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    study = open_study(
        make_storage(f"sqlite:///{db}"),
        name,
        OBJECTIVES,
        make_sampler(sampler, seed, multi_objective=True),
        pruner,
        space=space,
        dataset=data.task.name,
    )
    study.set_user_attr("pruner", bench_pruner_name(pruner))
    if enqueue_baselines:
        for baseline in BASELINES:
            study.enqueue_trial({}, user_attrs={"baseline": baseline})
    objective = Objective(
        suggest=load_space(space).suggest,
        data=data,
        objectives=OBJECTIVES,
        train_config=TrainConfig(
            epochs=epochs, report_every=epochs / 4, eval_batch_size=EVAL_BATCH
        ),
        # The search's default limit: the FLOPs cap keeps the slow tail out of both runs.
        limits=Limits(max_flops=default_max_flops(None, data.task)),
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    done, spent = 0, 0.0
    while (trials is None or done < trials) and (epoch_budget is None or spent < epoch_budget):
        trial = study.ask()
        run_trial(study, trial, objective)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        done += 1
        spent += epochs_done(frozen)
        if on_trial is not None:
            on_trial(frozen)
    wall_s = time.perf_counter() - start
    study.set_user_attr("bench_wall_s", wall_s)
    return Run(name, study, wall_s)


def bench_pruner_name(pruner: optuna.pruners.BasePruner) -> str:
    """The pruner with its settings where its repr shows them (ParetoPruner's does)."""
    if type(pruner).__repr__ is object.__repr__:
        return type(pruner).__name__
    return repr(pruner)


def first_judged(data: Data) -> int:
    """The search's ``n_warmup_steps`` for this data (``nas.search.first_judged_step``)."""
    return first_judged_step(len(data.train.y), TrainConfig().batch_size)


def default_pruner(data: Data) -> optuna.pruners.BasePruner:
    """The pruner ``python -m nas.search`` uses for accuracy × latency on this data."""
    return make_pruner("pareto", multi_objective=True, n_warmup_steps=first_judged(data))


def load_run(name: str) -> Run:
    """A study that :func:`run_search` left in ``bench/out/<name>.db``."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{OUT / f'{name}.db'}")
    return Run(name, study, float(study.user_attrs.get("bench_wall_s", math.nan)))


def progress(prefix: str) -> Callable[[FrozenTrial], None]:
    def show(t: FrozenTrial) -> None:
        a = t.user_attrs
        value = f"{t.values[0]:.4f}" if t.values else "-"
        print(
            f"  {prefix} #{t.number:<3d} {t.state.name:8s} acc {value:6s} "
            f"lat {a.get('latency_ms', float('nan')):7.3f} ms  epochs {epochs_done(t):.3f}",
            flush=True,
        )

    return show


# ------------------------------------------------------------------------ hypervolume


def points(trials: Sequence[FrozenTrial]) -> np.ndarray:
    """(accuracy, latency) of COMPLETE trials; pruned and failed ones have no values."""
    rows = [t.values for t in trials if t.state == TrialState.COMPLETE and t.values]
    return np.array(rows, dtype=float).reshape(-1, 2)


def reference_point(*point_sets: np.ndarray, margin: float = 0.01) -> tuple[float, float]:
    """(worst accuracy − margin, worst latency × 1.1) over all runs compared."""
    allp = np.concatenate([p for p in point_sets if len(p)])
    return float(allp[:, 0].min() - margin), float(allp[:, 1].max() * 1.1)


def hypervolume(p: np.ndarray, ref: tuple[float, float]) -> float:
    """Area dominated in (accuracy ↑, latency ↓) up to ``ref``; accuracy negated to minimise."""
    if not len(p):
        return 0.0
    loss = np.stack([-p[:, 0], p[:, 1]], axis=1)
    ref_loss = np.array([-ref[0], ref[1]])
    inside = np.all(loss < ref_loss, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(loss[inside], ref_loss))


def table(rows: Sequence[Sequence[object]]) -> str:
    text = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(text[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text)


def space_samples(task: Task, n: int, seed: int) -> list[tuple[str, ArchSpec]]:
    """``n`` seeded random samples of the default space that a search would train: those
    over its default FLOPs limit are skipped, as the search refuses them untrained."""
    space = load_space("attention_cnn")
    limit = default_max_flops(None, task)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[tuple[str, ArchSpec]] = []
    while len(out) < n:
        spec = space.suggest(study.ask(), task)
        if limit is None or count_flops(build_model(spec), spec.input) <= limit:
            out.append((f"sample {study.trials[-1].number}", spec))
    return out


class OverCost(Exception):
    """A network whose training the search's cost limit would refuse."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"training estimated at {seconds:.0f} s")
        self.seconds = seconds


def cost_cap(seconds: float) -> Callable[[float, bool], None]:
    """A trainer ``estimate`` callback raising :class:`OverCost` over ``seconds``: the
    benchmarks skip what the search's cost limit would refuse (on this CPU a few random
    samples of the default space train for 10 minutes where most take a minute)."""

    def estimate(estimated: float, final: bool) -> None:
        if estimated > seconds:
            raise OverCost(estimated)

    return estimate


def default_trial_config(data: Data) -> TrainConfig:
    """How a trial of the default search trains on ``data``: its default epochs and step
    floor, as ``python -m nas.search`` without ``--epochs`` sets them."""
    kind = data.task.kind
    return trial_train_config(kind, len(data.train.y), DEFAULT_EPOCHS[kind], MIN_TRAIN_STEPS)


def searched_lr(trial: FrozenTrial) -> float | None:
    """The learning rate ``trial`` searched (``--lr-factor``); None: it trained at the
    recipe's."""
    lr = trial.params.get(LR_PARAM)
    return None if lr is None else float(lr)


def latency_ms(spec: ArchSpec) -> float:
    """``spec``'s latency as the search measures a trial: batch 1, one thread."""
    return measure_latency(build_model(spec), spec.input, batch=1, threads=1).median_ms


# --------------------------------------------------------------------------- records
# Benchmarks longer than a session keep a JSON line per measured unit, keyed by its
# settings and the machine: a budget in minutes buys different compute on another CPU.


def machine(device: str) -> dict[str, Any]:
    fp = fingerprint()
    gpu = fp["gpu"] if device == "cuda" else None
    return {
        "cpu": fp["cpu"],
        "capability": fp["cpu_capability"],
        "cpus": fp["cpu_count"],
        "device": device,
        "gpu": gpu,
    }


def matches(record: dict[str, Any], key: dict[str, Any]) -> bool:
    return all(record.get(k) == v for k, v in key.items())


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
