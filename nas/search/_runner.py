"""Running a search: open its study, run trials in one worker or many, stop on a signal.

A worker (:func:`run_worker`) counts the study's trials and asks for one under the slot
lock, until the study holds ``s.trials`` finished ones; each trial runs with its
heartbeat and time limit and is told to the study whatever happens (:func:`run_trial`).
:func:`run_workers` runs ``s.jobs`` of them: in this process for one, else in as many
processes. A stop (Ctrl-C, SIGTERM: :class:`StopSignals`) marks the running trial and
queues it again for the next run.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from nas.data import is_text_name, load_data
from nas.model import build_model
from nas.search._locks import machine_lock_timeout, slot_lock
from nas.search._objective import OVER_BUDGET, CostLimit, Objective, first_judged_step
from nas.search._optuna import fail_stale_trials, heartbeat, record_heartbeat, stored_trial
from nas.search._pruning import make_pruner
from nas.search._results import BASELINE_ATTR
from nas.search._settings import (
    BASELINES,
    COST_FACTOR,
    COST_HISTORY,
    DEFAULT_TRIAL_TIMEOUT,
    MIN_TRIAL_TIMEOUT,
    PROMOTED_STARTING_POINTS,
    REFERENCE_DESIGNS,
    TIMEOUT_FACTOR,
    TIMEOUT_HISTORY,
    WORKER_SEED_STRIDE,
    Settings,
    comparable_settings,
    trial_train_config,
)
from nas.search._spaces import check_task, load_space
from nas.search._storage import make_sampler, make_storage, open_study, requeue, slot_counts
from nas.search._timelimit import time_limit
from nas.stored import number
from nas.train import train

log = logging.getLogger(__name__)


def build_study(s: Settings, n_warmup_steps: int = 0, *, worker: bool = True) -> optuna.Study:
    """Open (or create) the study for ``s``; queue the space's starting points and, with
    ``enqueue_baselines``, the hand designs, where the study does not hold them yet.

    ``worker``: the study will sample trials, so its sampler gets a seed no other worker
    of this study has had (``s.seed`` for the first one, so a one-worker search repeats).
    """
    multi = len(s.objectives) > 1
    pruner = make_pruner(s.pruner, multi, n_warmup_steps=n_warmup_steps)
    text = is_text_name(s.dataset)
    # Workers starting together would race to create the tables, to count the workers and
    # to enqueue trials: all three happen under the slot lock.
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
            tokenizer=s.tokenizer if text else None,
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
            held = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
            for name in BASELINES:
                if name not in held:
                    study.enqueue_trial({}, user_attrs={BASELINE_ATTR: name})
        for params in s.starting_points:
            study.enqueue_trial(params, {"starting_point": True}, skip_if_exists=True)
        return study


def run_worker(
    s: Settings,
    worker: int = 0,
    on_progress: Callable[[optuna.Study], None] | None = None,
    stops: StopSignals | None = None,
) -> None:
    """Run trials until the study holds ``s.trials`` finished ones (or time runs out).

    ``on_progress(study)``: after each trial, and whenever the running one gets further.

    ``stops``: the signal handlers this process stops by, if it set any; a stop they
    raise while a trial is asked for waits until the new trial can be marked.
    """
    stops = stops or StopSignals()
    torch.set_num_threads(s.threads)
    data = load_data(
        s.dataset,
        device=s.device,
        seed=s.seed,
        data_dir=s.data_dir,
        text_column=s.text_column,
        label_column=s.label_column,
        tokenizer=s.tokenizer if is_text_name(s.dataset) else None,
    )
    train_config = trial_train_config(
        data.task.kind, len(data.train.y), s.epochs, s.min_train_steps
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
        lr_factor=s.lr_factor,
        promotions=s.promotions,
        promote_starting_points=PROMOTED_STARTING_POINTS[data.task.kind],
        on_progress=None if on_progress is None else lambda: _show(on_progress, study),
    )
    reference = None if s.max_train_seconds is not None else reference_cost(objective)
    deadline = None if s.timeout is None else time.monotonic() + s.timeout
    objective.timeout, objective.deadline = s.timeout, deadline
    while deadline is None or time.monotonic() < deadline:
        stops.check()  # one swallowed where it was raised, during the last trial
        trial = None
        # Asked for, a trial is RUNNING before its heartbeat starts: stopped in between,
        # it would stay RUNNING with no heartbeat to go stale, and a rerun wait on it.
        with stops.held(), slot_lock(s.storage, s.study_name):
            fail_stale_trials(study)
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
                record_heartbeat(study, trial)
        if stops.received is not None:
            stopped = Stopped(stops.received)
            if trial is not None:
                _requeue_interrupted(study, trial, stopped)
            raise stopped
        if finished >= s.trials:
            return
        if trial is None:  # the last slots are running elsewhere: wait for them
            time.sleep(2)
            continue
        objective.lock_timeout = machine_lock_timeout(limit)
        objective.cost_limit = cost_limit(s.max_train_seconds, trials, reference)
        run_trial(study, trial, objective, limit)
        if on_progress is not None:
            on_progress(study)


def _show(on_progress: Callable[[optuna.Study], None], study: optuna.Study) -> None:
    """Progress is a convenience: a storage busy right now must not fail the trial (the
    next event shows it)."""
    try:
        on_progress(study)
    except Exception as e:
        log.debug("progress not shown: %s: %s", e.__class__.__name__, e)


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


def cost_limit(
    given: float | None, trials: list[FrozenTrial], reference: CostLimit | None = None
) -> CostLimit | None:
    """The training cost the next trial may have: ``--max-train-seconds`` (0: none), else
    once ``COST_HISTORY`` of the study's finished trials have an estimate (before that,
    only the trial's time limit bounds it), the larger of ``reference`` (the hand design's
    cost here, :func:`reference_cost`) and ``COST_FACTOR`` times their median. Pruned
    trials count: their estimate is of the whole budget, as a complete one's is, and early
    in a search most trials are pruned; those refused over a limit do not, or each refusal
    would raise the limit for the next.

    The floor: a space that spans cheap and costly networks (an MLP trains in a second, an
    attention CNN in a minute) would otherwise, once its cheap ones had set the median,
    refuse every CNN and keep the search at the fast end."""
    if given is not None:
        return CostLimit(given, "--max-train-seconds") if given else None
    finished = [
        t
        for t in trials
        if t.state.is_finished() and not str(t.user_attrs.get("reason")).startswith(OVER_BUDGET)
    ]
    estimates = [number(t.user_attrs.get("train_estimate_s")) for t in finished]
    seconds = [float(x) for x in estimates if x is not None and x > 0]
    if len(seconds) < COST_HISTORY:
        return None
    median = statistics.median(seconds)
    if reference is None or COST_FACTOR * median > reference.seconds:
        return CostLimit(
            COST_FACTOR * median,
            f"{COST_FACTOR:g}x the median estimated training cost of the study's "
            f"{len(seconds)} trials, {median:.1f} s"
            + (f" (over {reference.source})" if reference else "")
            + "; --max-train-seconds sets it",
        )
    return CostLimit(
        reference.seconds,
        f"{reference.source} (over {COST_FACTOR:g}x the median of the study's "
        f"{len(seconds)} trials, {median:.1f} s); --max-train-seconds sets it",
    )


class _Estimated(Exception):
    pass


def reference_cost(objective: Objective) -> CostLimit | None:
    """The training cost of the task kind's hand design (``REFERENCE_DESIGNS``) as a trial
    of this search, from its first steps on this machine (a few seconds), or None where
    it cannot train here: what a sensible CNN costs, whatever the space samples."""
    task = objective.data.task
    try:
        name = REFERENCE_DESIGNS[task.kind]
        space = load_space(name)
        check_task(space, task, name)
        spec = space.suggest(optuna.trial.FixedTrial({}), task)
        seconds: list[float] = []

        def estimate(estimated: float, final: bool) -> None:
            seconds.append(estimated)
            if final:
                raise _Estimated

        model = build_model(spec, seed=objective.seed).to(objective.device)
        with contextlib.suppress(_Estimated):
            train(
                model,
                objective.data,
                objective.train_config,
                device=objective.device,
                estimate=estimate,
            )
    except Exception as e:  # a floor is a convenience: without one the median rule holds
        log.debug("no reference cost: %s: %s", e.__class__.__name__, e)
        return None
    if not seconds:
        return None
    return CostLimit(seconds[-1], f"{name}'s estimated training cost here, {seconds[-1]:.1f} s")


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
        if not stored_trial(trial).state.is_finished():
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
        with heartbeat(study, trial), time_limit(limit):
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


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial, stop: KeyboardInterrupt) -> None:
    # A Stopped names its signal; a bare KeyboardInterrupt is Python's own Ctrl-C.
    trial.set_user_attr("reason", f"interrupted ({str(stop) or 'SIGINT'}); queued again")
    requeue(study, study.tell(trial, state=TrialState.FAIL))


# ------------------------------------------------------------------------- stopping


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the signal: the exit status is 128 + it, as shells report."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Make SIGTERM stop this process as Ctrl-C does, and either signal do it only once.

    Once installed (:meth:`install`), the first SIGINT or SIGTERM raises :class:`Stopped`,
    which marks the running trial and queues it again; later ones are ignored, so a second
    Ctrl-C or a scheduler's repeated SIGTERM cannot cut that bookkeeping short. SIGINT
    stays ignored where it was (a shell's background job). Inside :meth:`held` the stop is
    held back instead, for the block to end first.

    The signal is also kept in :attr:`received`: raised where Python swallows exceptions
    (a ``__del__`` or weakref callback running then: it prints "Exception ignored" and goes
    on), the stop would otherwise be lost, later signals being ignored. Workers check it
    between trials (:meth:`check`).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._holding = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Set the handlers (from the main thread only, as Python requires); those they
        replaced are kept for :meth:`restore`."""
        self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, self._stop)
        if self._previous[signal.SIGINT] is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._stop)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced (none if it was not called)."""
        for sig, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)
        self._previous = {}

    def _stop(self, signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self.received = signum
        if not self._holding:
            raise Stopped(signum)

    def check(self) -> None:
        """Raise the stop received, if any (held back, or swallowed where it was raised)."""
        if self.received is not None:
            raise Stopped(self.received)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold back the stop until this block has ended; :meth:`check` raises it then."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False


# -------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class WorkersFailed:
    """Worker processes that failed: the first one's error, and how many failed."""

    message: str
    count: int


POLL_PROGRESS_SECONDS = 2.0


def run_workers(
    s: Settings,
    study: optuna.Study,
    on_progress: Callable[[optuna.Study], None],
    stops: StopSignals,
) -> WorkersFailed | None:
    """Run ``s.jobs`` workers until the study is done: one in this process (``on_progress``
    after each trial and at each step of the running one), else as many processes
    (``on_progress`` every few seconds, on ``study``). Returns None when all ended well.

    A stop (``KeyboardInterrupt``) stops the worker processes too, each marking and
    re-queueing its trial, then goes on up.
    """
    if s.jobs == 1:
        run_worker(s, 0, on_progress=on_progress, stops=stops)
        return None
    ctx = multiprocessing.get_context("spawn")
    errors: multiprocessing.SimpleQueue[str] = ctx.SimpleQueue()
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=_worker_main, args=(s, w, errors)) for w in range(s.jobs)
    ]
    try:
        for proc in procs:
            proc.start()
        while any(proc.is_alive() for proc in procs):
            time.sleep(POLL_PROGRESS_SECONDS)
            on_progress(study)
            stops.check()  # one swallowed where it was raised
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    failed = [(w, p.exitcode) for w, p in enumerate(procs) if p.exitcode]
    if not failed:
        return None
    first = errors.get() if not errors.empty() else None
    worker, code = failed[0]
    died = f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"
    return WorkersFailed(first or f"worker {worker}: exited with {died}", len(failed))


def _worker_main(s: Settings, worker: int, errors: multiprocessing.SimpleQueue[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stops = StopSignals()
    stops.install()
    try:
        run_worker(s, worker, stops=stops)
    except KeyboardInterrupt:  # the parent reports the interruption
        pass
    except Exception as e:  # the parent prints the first worker's error and exits 1
        errors.put(f"worker {worker}: {e.__class__.__name__}: {e}")
        sys.exit(1)


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
