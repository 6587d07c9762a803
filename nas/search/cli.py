"""python -m nas.search: find the most accurate and fastest architectures.

    python -m nas.search --trials 100                # attention_cnn on Fashion-MNIST
    python -m nas.search --trials 100                # again: resumes, never starts over
    python -m nas.search --trials 40 --jobs 2 --storage postgresql://me@db/nas

``--trials N`` is the number of finished trials the study should hold; running the same
command again continues the study. Ctrl-C, or ``kill PID`` (SIGTERM: what ``timeout``
and job schedulers send), stops after marking the running trial (it is queued again for
the next run).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from nas import command
from nas.data import DATASETS, is_text_name, load_data, task_for
from nas.model import Task, TaskKind, attention_budget_bytes
from nas.search import _pruning as pruning
from nas.search._objective import Limits, Objective, first_judged_step
from nas.search._results import counts, front, front_table
from nas.search._spaces import check_task, default_space, load_space
from nas.search._storage import (
    HEARTBEAT_SECONDS,
    OBJECTIVE_SETS,
    SAMPLERS,
    check_storage_url,
    finished_count,
    machine_lock_timeout,
    make_sampler,
    make_storage,
    open_study,
    parse_objectives,
    requeue,
    slot_counts,
    slot_lock,
)
from nas.search._timelimit import time_limit
from nas.train import TrainConfig

# Per-trial budget by task kind: brief enough for a 100-trial search within the hour on a
# 2-core CPU, long enough to rank networks (times per CPU: the README's "Searching").
DEFAULT_EPOCHS: dict[TaskKind, float] = {"image": 0.3, "text": 2.0}
BASELINES = ("seed_cnn", "resnet")

# --trial-timeout's default: generous while the study knows few trial durations, then a
# multiple of their median, so that a trial stuck for many times the usual is ended.
DEFAULT_TRIAL_TIMEOUT = 3600.0
MIN_TRIAL_TIMEOUT = 600.0
TIMEOUT_FACTOR = 10.0
TIMEOUT_HISTORY = 3


@dataclass
class Settings:
    trials: int
    timeout: float | None
    space: str
    dataset: str
    data_dir: str | None
    epochs: float
    storage: str
    study_name: str
    objectives: tuple[str, ...]
    limits: Limits
    latency_device: str
    latency_batch: int
    latency_threads: int
    sampler: str
    pruner: str
    seed: int
    jobs: int
    device: str
    enqueue_baselines: bool
    threads: int = 0
    text_column: str = "text"
    label_column: str = "label"
    trial_timeout: float | None = None  # None: derived from the study (trial_time_limit)
    allow_changed_settings: bool = False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command.parse("search", __doc__, add_arguments, argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trials", type=int, default=100, help="finished trials in the study (default 100)"
    )
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument(
        "--space",
        help="space name or .py path (default: attention_cnn for images, manet_text for text)",
    )
    p.add_argument(
        "--dataset", default="fashion_mnist", help=f"{', '.join(DATASETS)} or imagefolder:PATH"
    )
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument(
        "--text-column", default="text", help="text datasets: column/key of the text (csv, jsonl)"
    )
    p.add_argument(
        "--label-column",
        default="label",
        help="text datasets: column/key of the label (csv, jsonl)",
    )
    p.add_argument(
        "--epochs",
        type=float,
        help="training budget per trial in epochs (default "
        + ", ".join(f"{e:g} for {kind}s" for kind, e in DEFAULT_EPOCHS.items())
        + ")",
    )
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--study-name", help="default: <space>-<dataset>")
    p.add_argument("--objectives", default="accuracy,latency", help=" | ".join(OBJECTIVE_SETS))
    p.add_argument("--max-latency-ms", type=float, help="hard latency budget (not trained if over)")
    p.add_argument("--max-params", type=int, help="hard parameter budget")
    p.add_argument(
        "--max-flops",
        type=float,
        help="hard FLOP budget per example (default for images: 100M up to 28×28 inputs, "
        "128k per input pixel above, so that a brief search stays brief; 0: none)",
    )
    p.add_argument(
        "--latency-device", default=None, help="where latency is measured (default: --device)"
    )
    p.add_argument(
        "--latency-batch", type=int, default=1, help="batch size of the latency measurement"
    )
    p.add_argument(
        "--latency-threads",
        type=int,
        default=1,
        help="CPU threads of the latency measurement (default 1: what one request sees on "
        "one core, and repeatable on a shared machine; 0: all of this worker's threads)",
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument(
        "--pruner",
        default=None,
        choices=("pareto", "hyperband", "median", "none"),
        help="default: pareto (multi-objective) or hyperband (single)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per worker (default: the cores split between the workers; "
        "1 beside other busy processes, where a thread waiting for a core stalls the rest)",
    )
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument(
        "--enqueue-baselines",
        action="store_true",
        help=f"run the hand designs ({', '.join(BASELINES)}) as the first trials",
    )
    p.add_argument(
        "--trial-timeout",
        type=float,
        help="seconds one trial may take before it is failed with that reason (default: "
        f"{DEFAULT_TRIAL_TIMEOUT:g} until the study has {TIMEOUT_HISTORY} complete trials, then "
        f"{TIMEOUT_FACTOR:g}x their median duration, at least {MIN_TRIAL_TIMEOUT:g}; 0: none)",
    )
    p.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="resume a study with other settings (epochs, limits, latency setting, seed) "
        "than it was made with; the change is recorded in the study",
    )


# Networks far over this per-pixel cost hold most of a search's compute and are neither
# fast nor needed for small inputs (measured: the README's "Searching"). Over it: recorded
# as pruned with the reason, never trained.
FLOPS_PER_PIXEL = 128_000


def default_max_flops(given: float | None, task: Task) -> int | None:
    """``--max-flops`` as given (0: no limit), else the per-pixel default for images."""
    if given is not None:
        return int(given) if given > 0 else None
    if task.kind != "image":
        return None
    return FLOPS_PER_PIXEL * max(task.height * task.width, 28 * 28)


def _check_number(flag: str, value: float | None, *, zero: str = "") -> None:
    """Refuse a flag's number that cannot work: NaN, infinite, or not positive (``zero``:
    what 0 means where it is allowed)."""
    if value is None or (zero and value == 0):
        return
    if not (math.isfinite(value) and value > 0):
        allowed = f" (or 0: {zero})" if zero else ""
        raise ValueError(f"{flag} must be a finite number above 0{allowed}, got {value:g}")


def settings_from(args: argparse.Namespace) -> Settings:
    """Validate everything before anything is written."""
    objectives = parse_objectives(args.objectives)
    if args.trials < 1:
        raise ValueError(f"--trials must be at least 1, got {args.trials}")
    _check_number("--epochs", args.epochs)
    _check_number("--timeout", args.timeout)
    _check_number("--trial-timeout", args.trial_timeout, zero="no limit")
    _check_number("--max-latency-ms", args.max_latency_ms)
    _check_number("--max-params", args.max_params)
    _check_number("--max-flops", args.max_flops, zero="no limit")
    if args.latency_batch < 1:
        raise ValueError(f"--latency-batch must be at least 1, got {args.latency_batch}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.latency_threads < 0:
        raise ValueError(f"--latency-threads must be 0 or more, got {args.latency_threads}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if not 0 <= args.seed < 2**32:  # numpy's and Optuna's samplers take no other seed
        raise ValueError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.study_name is not None and not args.study_name.strip():
        raise ValueError(f"--study-name must not be empty, got {args.study_name!r}")
    module = load_space(args.space) if args.space else None  # a typo fails before any reading
    task = task_for(
        args.dataset,
        data_dir=args.data_dir,
        seed=args.seed,  # a text task's vocabulary comes from the seed's training split
        text_column=args.text_column,
        label_column=args.label_column,
    )
    space = args.space or default_space(task)
    check_task(module or load_space(space), task, space)
    if args.enqueue_baselines and task.kind != "image":
        raise ValueError(
            f"--enqueue-baselines: the hand designs ({', '.join(BASELINES)}) are image "
            f"networks; {args.dataset!r} is a {task.kind} dataset"
        )
    epochs = DEFAULT_EPOCHS[task.kind] if args.epochs is None else args.epochs
    device = _device(args.device, "--device")
    latency_device = _device(args.latency_device or device, "--latency-device")
    space_name = Path(space).stem
    study_name = (
        args.study_name or f"{space_name}-{args.dataset.replace(':', '_').replace('/', '_')}"
    )
    storage = args.storage or f"sqlite:///studies/{study_name}.db"
    check_storage_url(storage)
    pruning.make_pruner(args.pruner or "pareto", multi_objective=len(objectives) > 1)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return Settings(
        trials=args.trials,
        timeout=args.timeout,
        space=space,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=epochs,
        storage=storage,
        study_name=study_name,
        objectives=objectives,
        limits=Limits(
            args.max_latency_ms,
            None if args.max_params is None else int(args.max_params),
            default_max_flops(args.max_flops, task),
        ),
        latency_device=latency_device,
        latency_batch=args.latency_batch,
        latency_threads=args.latency_threads,
        sampler=args.sampler,
        pruner=args.pruner or "pareto",
        seed=args.seed,
        jobs=args.jobs,
        device=device,
        enqueue_baselines=args.enqueue_baselines,
        threads=threads,
        text_column=args.text_column,
        label_column=args.label_column,
        trial_timeout=args.trial_timeout,
        allow_changed_settings=args.allow_changed_settings,
    )


def _device(name: str, flag: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` → the device to use; one that is not there
    or cannot be named is refused."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{flag}: unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag}: unsupported device {name!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} {name}: no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA devices")
    return name


# Sampler seeds of successive workers on a study are this far apart (a prime), so that no
# two workers, on this machine or another, draw the same random start-up trials.
WORKER_SEED_STRIDE = 104_729


def comparable_settings(s: Settings) -> dict[str, Any]:
    """The settings two trials must share for their figures to stand on one front: the
    training budget, the limits, how latency is measured, the seed (it carves the
    validation split) and the attention memory budget (it decides which specs are valid).
    The study records them; :func:`nas.study.open_study` refuses a run with other ones."""
    return {
        "epochs": s.epochs,
        "max_latency_ms": s.limits.max_latency_ms,
        "max_params": s.limits.max_params,
        "max_flops": s.limits.max_flops,
        "latency_device": s.latency_device,
        "latency_batch": s.latency_batch,
        "latency_threads": s.latency_threads or s.threads,
        "seed": s.seed,
        "attention_budget_mb": attention_budget_bytes() / 2**20,
    }


def build_study(s: Settings, n_warmup_steps: int = 0, *, worker: bool = True) -> optuna.Study:
    """Open (or create) the study for ``s``; with ``enqueue_baselines``, queue the hand
    designs the study does not hold yet.

    ``worker``: the study will sample trials, so its sampler gets a seed no other worker
    of this study has had (``s.seed`` for the first one, so a one-worker search repeats).
    """
    multi = len(s.objectives) > 1
    pruner = pruning.make_pruner(s.pruner, multi, n_warmup_steps=n_warmup_steps)
    text = is_text_name(s.dataset)
    # Workers starting together would race to create the tables, to count the workers and
    # to enqueue the baselines: all three happen under the slot lock.
    with slot_lock(s.storage, s.study_name):
        study = open_study(
            make_storage(s.storage),
            s.study_name,
            s.objectives,
            make_sampler(s.sampler, s.seed, multi),
            pruner,
            space=s.space,
            dataset=s.dataset,
            # What a text model's vocabulary, hence its embedding, depends on: the export
            # rebuilds vocab.json from them.
            seed=s.seed if text else None,
            text_column=s.text_column if text else None,
            label_column=s.label_column if text else None,
            settings=comparable_settings(s),
            allow_changed_settings=s.allow_changed_settings,
        )
        if worker:
            # A study made before workers were counted: one number per trial is as unique.
            started = study.user_attrs.get("workers_started", len(study.trials))
            started = started if type(started) is int and started >= 0 else len(study.trials)
            study.set_user_attr("workers_started", started + 1)
            seed = (s.seed + WORKER_SEED_STRIDE * started) % 2**32
            study.sampler = make_sampler(s.sampler, seed, multi)
        if s.enqueue_baselines:
            held = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
            for name in BASELINES:
                if name not in held:
                    study.enqueue_trial({}, user_attrs={"baseline": name})
        return study


def run_worker(
    s: Settings, worker: int = 0, on_trial: Callable[[optuna.Study], None] | None = None
) -> None:
    """Run trials until the study holds ``s.trials`` finished ones (or time runs out)."""
    torch.set_num_threads(s.threads)
    data = load_data(
        s.dataset,
        device=s.device,
        seed=s.seed,
        data_dir=s.data_dir,
        text_column=s.text_column,
        label_column=s.label_column,
    )
    train_config = TrainConfig.for_task(
        data.task.kind,
        epochs=s.epochs,
        report_every=s.epochs / 4,
        # Rungs on 2,000 validation images, the end on all: scoring four rungs on the
        # whole split cost more than 0.3 epochs of training on Fashion-MNIST.
        rung_val_size=2000,
    )
    warmup = first_judged_step(len(data.train.y), train_config.batch_size)
    study = build_study(s, n_warmup_steps=warmup)
    if "mean" not in study.user_attrs:  # the export writes them into model.py
        study.set_user_attr("mean", list(data.mean))
        study.set_user_attr("std", list(data.std))
    objective = Objective(
        suggest=load_space(s.space).suggest,
        data=data,
        objectives=s.objectives,
        train_config=train_config,
        limits=s.limits,
        latency_device=s.latency_device,
        latency_batch=s.latency_batch,
        latency_threads=s.latency_threads or s.threads,
        seed=s.seed,
        device=s.device,
    )
    deadline = None if s.timeout is None else time.monotonic() + s.timeout
    while deadline is None or time.monotonic() < deadline:
        trial = None
        # Asked for, a trial is RUNNING before its heartbeat starts: stopped in between,
        # it would stay RUNNING with no heartbeat to go stale, and a rerun wait on it.
        with _signals_held() as held, slot_lock(s.storage, s.study_name):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            finished, running, waiting = slot_counts(trials)
            limit = trial_time_limit(s.trial_timeout, trials)
            if finished < s.trials and (finished + running + waiting < s.trials or waiting):
                with warnings.catch_warnings():
                    # Optuna warns that heartbeats are meant for Study.optimize: this loop
                    # runs them itself (run_trial), around its own slot lock.
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                # From here on, a stop before run_trial's heartbeat leaves a heartbeat
                # that goes stale: a rerun fails the trial and retries it.
                if is_heartbeat_enabled(study._storage):
                    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        if held:
            stopped = Stopped(held[0])
            if trial is not None:
                _requeue_interrupted(study, trial, stopped)
            raise stopped
        if finished >= s.trials:
            return
        if trial is None:  # the last slots are running elsewhere: wait for them
            time.sleep(2)
            continue
        objective.lock_timeout = machine_lock_timeout(limit)
        run_trial(study, trial, objective, limit)
        if on_trial is not None:
            on_trial(study)


def trial_time_limit(given: float | None, trials: list[FrozenTrial]) -> float | None:
    """Seconds the next trial may run: ``--trial-timeout`` (0: no limit), else the default
    derived from the study's complete trials (see ``DEFAULT_TRIAL_TIMEOUT``)."""
    if given is not None:
        return given or None
    durations = [
        t.duration.total_seconds()
        for t in trials
        if t.state == TrialState.COMPLETE and t.duration is not None
    ]
    if len(durations) < TIMEOUT_HISTORY:
        return DEFAULT_TRIAL_TIMEOUT
    return max(MIN_TRIAL_TIMEOUT, TIMEOUT_FACTOR * statistics.median(durations))


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Objective,
    limit: float | None = None,
) -> None:
    """Run one trial and tell the study; failures (its time limit too) are recorded, never
    raised."""
    try:
        _run_and_tell(study, trial, objective, limit)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # ValueError: tell's
        if not study._storage.get_trial(trial._trial_id).state.is_finished():
            raise
        # Taken for dead (paused past the heartbeat grace) and already failed and queued
        # again by another worker: the retry's result is the one that counts.
        warnings.warn(
            f"trial {trial.number} was failed as stale while it ran (paused longer than "
            "the heartbeat grace?); its retry trains it again, this result is dropped",
            stacklevel=2,
        )


def _run_and_tell(
    study: optuna.Study, trial: optuna.Trial, objective: Objective, limit: float | None
) -> None:
    try:  # around the heartbeat too: a stop while it starts still marks the trial
        with _heartbeat(study, trial), time_limit(limit):
            values = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt as e:
        _requeue_interrupted(study, trial, e)
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        raise
    except Exception as e:  # recorded with its reason; the study goes on
        if trial.user_attrs.get("reason") is None:
            trial.set_user_attr("reason", f"{e.__class__.__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, values)


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs.

    Optuna's own heartbeat thread (optuna/storages/_heartbeat.py, HeartbeatThread) ends
    at its first failed write ("database is locked", a dropped connection), after which
    the live trial goes stale and is failed; this one warns and beats again.
    """
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        yield
        return
    assert isinstance(storage, BaseHeartbeat)
    interval = storage.get_heartbeat_interval() or HEARTBEAT_SECONDS
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as e:  # the next beat may get through; the grace allows it
                warnings.warn(f"heartbeat of trial {trial.number} not recorded: {e}", stacklevel=1)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial, stop: KeyboardInterrupt) -> None:
    # A Stopped names its signal; a bare KeyboardInterrupt is Python's own Ctrl-C.
    trial.set_user_attr("reason", f"interrupted ({str(stop) or 'SIGINT'}); queued again")
    requeue(study, study.tell(trial, state=TrialState.FAIL))


def _worker_main(s: Settings, worker: int, errors: multiprocessing.SimpleQueue[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _stop_on_signals()
    try:
        run_worker(s, worker)
    except KeyboardInterrupt:  # the parent reports the interruption
        pass
    except Exception as e:  # the parent prints the first worker's error and exits 1
        errors.put(f"worker {worker}: {e.__class__.__name__}: {e}")
        sys.exit(1)


def _stop_on_signals() -> dict[int, Any]:
    """Make SIGTERM stop this process as Ctrl-C does, and either signal do it only once.

    The first SIGINT or SIGTERM raises ``KeyboardInterrupt``, which marks the running
    trial and queues it again; later ones are ignored, so a second Ctrl-C or a scheduler's
    repeated SIGTERM cannot cut that bookkeeping short. SIGINT stays ignored where it was
    (a shell's background job). Returns the handlers it replaced.
    """

    def stop(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if _held is not None:
            _held.append(signum)
        else:
            raise Stopped(signum)

    previous: dict[int, Any] = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    signal.signal(signal.SIGTERM, stop)
    if previous[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, stop)
    return previous


# While a worker asks for a trial, the stop signal it receives (set by _signals_held).
_held: list[int] | None = None


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold back the stop that ``_stop_on_signals`` raises until this block has ended:
    the list it yields then holds the signal, for the caller to stop on."""
    global _held
    _held = []
    try:
        yield _held
    finally:
        _held = None


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the signal: the exit status is 128 + it, as shells report."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_workers(procs: list[multiprocessing.process.BaseProcess]) -> None:
    """After the parent was stopped: stop its workers too, each marking and re-queueing
    its trial. Ctrl-C reached them already (it signals the whole process group) and they
    ignore this second signal; ``kill PID`` reached only the parent.
    """
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(60)
        if proc.is_alive():  # stuck: its trial is failed by the heartbeat and retried
            proc.kill()


# ------------------------------------------------------------------------ reporting


class Progress:
    """Trials done of total, pruned/failed counts, best accuracy, front size, ETA.

    On a terminal a tqdm bar; otherwise (a log file, ``nohup``, CI) one line per change,
    since a bar redrawn every few seconds fills a log with carriage returns.
    """

    def __init__(self, study: optuna.Study, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, unit="trial", dynamic_ncols=True, file=sys.stderr, disable=None
        )
        self.total = total
        self.last = ""
        self.started = time.monotonic()
        self.first = finished_count(study)
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        c = counts(study)
        done = min(finished_count(study), self.total)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = max((t.values[0] for t in complete), default=math.nan)
        size = len(front(study)) if complete else 0
        if not self.bar.disable:
            self.bar.n = done
            self.bar.set_postfix(
                pruned=c["pruned"], failed=c["fail"], best=f"{best:.4f}", front=size, refresh=False
            )
            self.bar.refresh()
            return
        line = (
            f"{done}/{self.total} trials ({c['pruned']} pruned, {c['fail']} failed), "
            f"best accuracy {best:.4f}, front {size}"
        )
        if line == self.last:
            return
        self.last = line
        elapsed = time.monotonic() - self.started
        if done > self.first:
            left = elapsed / (done - self.first) * (self.total - done)
            line += f", {_clock(elapsed)} elapsed, about {_clock(left)} left"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    study = build_study(s, worker=False)
    print(
        f"study {s.study_name!r} in {s.storage}: {finished_count(study)} of {s.trials} "
        f"trials finished; {s.jobs} worker(s), {s.threads} thread(s) each, device {s.device}",
        file=sys.stderr,
    )
    bounds = {
        "latency ms": s.limits.max_latency_ms,
        "params": s.limits.max_params,
        "FLOPs": s.limits.max_flops,
    }
    if any(v is not None for v in bounds.values()):
        shown = ", ".join(
            f"{k} <= {v:g}" if k == "latency ms" else f"{k} <= {v:,.0f}"
            for k, v in bounds.items()
            if v is not None
        )
        print(f"limits (over them: pruned, not trained): {shown}", file=sys.stderr)
    progress = Progress(study, s.trials)
    # Signal handlers can only be set from the main thread (main() may run in another).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = _stop_on_signals() if in_main_thread else {}
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        if s.jobs == 1:
            run_worker(s, 0, on_trial=progress.update)
        else:
            ctx = multiprocessing.get_context("spawn")
            errors: multiprocessing.SimpleQueue[str] = ctx.SimpleQueue()
            procs = [ctx.Process(target=_worker_main, args=(s, w, errors)) for w in range(s.jobs)]
            for proc in procs:
                proc.start()
            while any(proc.is_alive() for proc in procs):
                time.sleep(2)
                progress.update(study)
            failed = [(w, p.exitcode) for w, p in enumerate(procs) if p.exitcode]
            if failed:
                progress.close()
                first = errors.get() if not errors.empty() else None
                worker, code = failed[0]
                died = f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"
                print(f"error: {first or f'worker {worker}: exited with {died}'}", file=sys.stderr)
                if len(failed) > 1:
                    print(f"({len(failed)} of {s.jobs} workers failed)", file=sys.stderr)
                return 1
    except KeyboardInterrupt as e:
        _stop_workers(procs)
        progress.close()
        print(
            "\ninterrupted: the running trial is queued again; rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + getattr(e, "signum", signal.SIGINT)
    except BaseException:
        progress.close()
        raise
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)
    progress.update(study)
    progress.close()
    c = counts(study)
    print(
        f"\n{finished_count(study)} trials finished ({c['complete']} complete, "
        f"{c['pruned']} pruned, {c['fail']} failed)"
    )
    title = "Pareto front" if len(s.objectives) > 1 else "Best trial"
    print(f"\n{title} ({', '.join(s.objectives)}):\n{front_table(study)}")
    print(f"\nstudy: {s.study_name}  storage: {s.storage}")
    print("next:")
    print(f"  python -m nas.report    --storage {s.storage} --study-name {s.study_name}")
    print(f"  python -m nas.dashboard --storage {s.storage}")
    print(f"  python -m nas.export    --storage {s.storage} --study-name {s.study_name} --best")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("search", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
