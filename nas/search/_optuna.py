"""Every use of Optuna's private API in the package, here and nowhere else.

Optuna has no public way to write a trial's intermediate value in a multi-objective study,
to read a trial back from its storage, or to keep a trial's heartbeat outside
``Study.optimize``; the search needs all three. Each function below names the lines of
Optuna it mirrors (Optuna 5.0.0, the version installed: paths under
``site-packages/optuna/``), so that an upgrade is checked here, against those lines,
before anything else. Other modules call these functions and touch no private name.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial

__all__ = [
    "fail_stale_trials",
    "heartbeat",
    "record_heartbeat",
    "stored_trial",
    "write_intermediate",
]


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage: ``Study.__init__`` keeps it as ``_storage``
    (optuna/study/study.py:89), and ``Trial.__init__`` reads it from there as we do
    (optuna/trial/_trial.py:61)."""
    return study._storage


def _trial_id(trial: optuna.Trial) -> int:
    """The trial's id in its storage: ``Trial.__init__`` keeps it as ``_trial_id``
    (optuna/trial/_trial.py:59); the storage API takes it, not the trial's number."""
    return trial._trial_id


def stored_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial as stored now: state, intermediate values and user attrs current, also
    where another process changed them. ``_run_trial`` reads a trial back so after a failed
    tell (optuna/study/_optimize.py:226), through the storage ``Trial.__init__`` keeps
    (optuna/trial/_trial.py:61)."""
    return trial.storage.get_trial(_trial_id(trial))


def write_intermediate(trial: optuna.Trial, step: int, value: float) -> None:
    """Store ``value`` at ``step`` and keep the trial's own cache in step, as
    ``Trial.report`` does (optuna/trial/_trial.py:510-511), so that whatever reads the trial
    through Optuna (``Trial._get_latest_trial``, optuna/trial/_trial.py:681; sampler hooks)
    sees the value too. ``Trial.report`` itself raises in multi-objective studies."""
    trial.storage.set_trial_intermediate_value(_trial_id(trial), step, value)
    trial._cached_frozen_trial.intermediate_values[step] = value


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat went stale and run the storage's stale-trial callback
    (ours queues them again), as ``_run_trial`` does before each ``ask``
    (optuna/study/_optimize.py:191-195; the function: optuna/storages/_heartbeat.py:155-192).
    Public, but experimental: its warning says nothing to act on here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """One heartbeat of ``trial`` now, where the storage keeps them: the check of
    ``get_heartbeat_thread`` (optuna/storages/_heartbeat.py:147-152, with
    ``is_heartbeat_enabled``: :195-203) and the write of its thread (:142)."""
    storage = _storage(study)
    if is_heartbeat_enabled(storage):
        assert isinstance(storage, BaseHeartbeat)
        storage.record_heartbeat(_trial_id(trial))


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs, where the storage
    keeps them: ``_run_trial``'s ``with get_heartbeat_thread(...)``
    (optuna/study/_optimize.py:204), for a loop of our own.

    Optuna's own thread (``HeartbeatThread``, optuna/storages/_heartbeat.py:117-144) ends at
    its first failed write (:142: "database is locked", a dropped connection), after which
    the live trial goes stale and is failed; this one warns and beats again.
    """
    storage = _storage(study)
    if not is_heartbeat_enabled(storage):
        yield
        return
    assert isinstance(storage, BaseHeartbeat)
    # Enabled means an interval is set (is_heartbeat_enabled), as HeartbeatThread asserts
    # (optuna/storages/_heartbeat.py:139-140).
    interval = storage.get_heartbeat_interval()
    assert interval is not None
    trial_id = _trial_id(trial)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
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
