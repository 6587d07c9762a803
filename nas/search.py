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
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from nas import pruning
from nas.data import DATASETS, load_data, task_for
from nas.objective import Limits, Objective, first_judged_step
from nas.space import check_task, default_space, load_space
from nas.study import (
    OBJECTIVE_SETS,
    SAMPLERS,
    check_storage_url,
    finished_count,
    make_sampler,
    make_storage,
    open_study,
    parse_objectives,
    requeue,
    slot_counts,
    slot_lock,
)
from nas.task import Task, TaskKind
from nas.text import is_text_name
from nas.train import TrainConfig

# Per-trial budget by task kind. Images, measured end to end on this quiet 2-core CPU:
# `python -m nas.search --trials 100` took 18 minutes at 0.3 epochs (front up to 0.869
# accuracy; 0.827 at 0.40 ms), 9.5 at 0.15 (0.813; 0.708 at 0.40 ms); at 0.5, 17 trials
# took 12 minutes. 0.3 leaves room for a loaded machine within about 30 minutes. Text: a
# trial of 2 epochs on the 22k short texts of bench/text.py takes 5-25 s, and validation
# accuracy still rose from 2 to 4 epochs.
DEFAULT_EPOCHS: dict[TaskKind, float] = {"image": 0.3, "text": 2.0}
BASELINES = ("seed_cnn", "resnet")


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m nas.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--debug", action="store_true", help="tracebacks and Optuna's logs")
    return p.parse_args(argv)


# Random attention_cnn samples on Fashion-MNIST: median 83 MFLOPs, but the quarter over
# 200M held 72% of the compute (up to 2.2 GFLOPs: 20 minutes for 0.1 epoch here). Such
# networks are neither fast nor needed for 28×28 inputs; capping them keeps a 100-trial
# search within the hour. They are recorded as pruned with the reason, never trained.
FLOPS_PER_PIXEL = 128_000


def default_max_flops(given: float | None, task: Task) -> int | None:
    """``--max-flops`` as given (0: no limit), else the per-pixel default for images."""
    if given is not None:
        return int(given) if given > 0 else None
    if task.kind != "image":
        return None
    return FLOPS_PER_PIXEL * max(task.height * task.width, 28 * 28)


def settings_from(args: argparse.Namespace) -> Settings:
    """Validate everything before anything is written."""
    objectives = parse_objectives(args.objectives)
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
    if args.trials < 1:
        raise ValueError(f"--trials must be at least 1, got {args.trials}")
    epochs = DEFAULT_EPOCHS[task.kind] if args.epochs is None else args.epochs
    if not epochs > 0:
        raise ValueError(f"--epochs must be positive, got {epochs}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.latency_threads < 0:
        raise ValueError(f"--latency-threads must be 0 or more, got {args.latency_threads}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    space_name = Path(space).stem
    study_name = (
        args.study_name or f"{space_name}-{args.dataset.replace(':', '_').replace('/', '_')}"
    )
    storage = args.storage or f"sqlite:///studies/{study_name}.db"
    check_storage_url(storage)
    pruning.make_pruner(args.pruner or "pareto", multi_objective=len(objectives) > 1)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
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
            args.max_latency_ms, args.max_params, default_max_flops(args.max_flops, task)
        ),
        latency_device=args.latency_device or device,
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
    )


def build_study(s: Settings, worker: int = 0, n_warmup_steps: int = 0) -> optuna.Study:
    multi = len(s.objectives) > 1
    sampler = make_sampler(s.sampler, s.seed + worker, multi)
    pruner = pruning.make_pruner(s.pruner, multi, n_warmup_steps=n_warmup_steps)
    text = is_text_name(s.dataset)
    # Workers starting together on a new database would race to create its tables.
    with slot_lock(s.storage, s.study_name):
        study = open_study(
            make_storage(s.storage),
            s.study_name,
            s.objectives,
            sampler,
            pruner,
            space=s.space,
            dataset=s.dataset,
            # What a text model's vocabulary, hence its embedding, depends on: the export
            # rebuilds vocab.json from them.
            seed=s.seed if text else None,
            text_column=s.text_column if text else None,
            label_column=s.label_column if text else None,
        )
        # A resumed run seeded like the first would draw the first run's random startup
        # trials again: offset the seed by the trials already there (still reproducible).
        if study.trials:
            study.sampler = make_sampler(
                s.sampler, s.seed + worker + 7919 * len(study.trials), multi
            )
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
        # Evaluation batches of 256: 1024 maps of 28×28 attention scores took 22.8 GiB.
        eval_batch_size=256,
        # Rungs on 2,000 validation images, the end on all: scoring four rungs on the
        # whole split cost more than 0.3 epochs of training on Fashion-MNIST.
        rung_val_size=2000,
    )
    warmup = first_judged_step(len(data.train.y), train_config.batch_size)
    study = build_study(s, worker, n_warmup_steps=warmup)
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
            finished, running, waiting = slot_counts(study)
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
        run_trial(study, trial, objective)
        if on_trial is not None:
            on_trial(study)


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> None:
    """Run one trial and tell the study; failures are recorded, never raised."""
    try:  # around the heartbeat too: a stop while it starts still marks the trial
        with get_heartbeat_thread(trial._trial_id, study._storage):
            values = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt as e:
        _requeue_interrupted(study, trial, e)
        raise
    except Exception as e:  # recorded with its reason; the study goes on
        if "reason" not in trial.user_attrs:
            trial.set_user_attr("reason", f"{e.__class__.__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, values)


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial, stop: KeyboardInterrupt) -> None:
    # A Stopped names its signal; a bare KeyboardInterrupt is Python's own Ctrl-C.
    trial.set_user_attr("reason", f"interrupted ({str(stop) or 'SIGINT'}); queued again")
    requeue(study, study.tell(trial, state=TrialState.FAIL))


def _worker_main(s: Settings, worker: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _stop_on_signals()
    with contextlib.suppress(KeyboardInterrupt):  # the parent reports the interruption
        run_worker(s, worker)


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
        rows.append(
            (
                str(t.number),
                f"{t.values[0]:.4f}",
                f"{a.get('latency_ms', math.nan):.3f}",
                f"{a.get('params', 0):,}",
                f"{a.get('flops', 0) / 1e6:.1f}",
                (f"[{a['baseline']}] " if "baseline" in a else "") + a.get("summary", ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    out = {state.name.lower(): 0 for state in TrialState}
    for t in trials:
        out[t.state.name.lower()] += 1
    return out


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.debug:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        s = settings_from(args)
        study = build_study(s)
        if s.enqueue_baselines and not study.trials:
            for name in BASELINES:
                study.enqueue_trial({}, user_attrs={"baseline": name})
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
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
            procs = [ctx.Process(target=_worker_main, args=(s, w)) for w in range(s.jobs)]
            for proc in procs:
                proc.start()
            while any(proc.is_alive() for proc in procs):
                time.sleep(2)
                progress.update(study)
            if any(proc.exitcode for proc in procs):
                print("error: a worker process exited with an error", file=sys.stderr)
    except KeyboardInterrupt as e:
        _stop_workers(procs)
        progress.close()
        print(
            "\ninterrupted: the running trial is queued again; rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + getattr(e, "signum", signal.SIGINT)
    except Exception as e:
        progress.close()
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
