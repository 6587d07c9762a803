"""Storages, samplers, studies: create or resume, count trials, share one machine.

- Any Optuna storage URL works: ``sqlite:///studies/x.db`` (the default; a few local
  workers), ``postgresql://…`` (many workers on many machines) or ``journal:PATH`` (a
  journal file on a shared disk). RDB storages get a heartbeat, so a trial left RUNNING
  by a killed process is failed and re-queued with the same parameters.
- ``--trials N`` means N finished trials in the study: :func:`finished_count` counts
  COMPLETE, PRUNED and FAIL trials, except failures that were re-queued (their retry
  is the trial that counts), so nothing is counted twice.
- :func:`slot_lock` serialises "count, then ask" across workers, so N is exact even
  with many workers; :func:`measurement_lock` keeps latency measurements from running
  while another worker on this machine trains.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import optuna
import optuna.storages.journal
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas.pruning import PrunedTrialsSampler

# Heartbeats every 5 s; a RUNNING trial silent for 20 s belongs to a dead process.
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
MAX_RETRY = 2

OBJECTIVES: dict[str, Literal["minimize", "maximize"]] = {
    "accuracy": "maximize",
    "latency": "minimize",
    "params": "minimize",
    "flops": "minimize",
}
OBJECTIVE_SETS = ("accuracy,latency", "accuracy", "accuracy,params", "accuracy,flops")
SAMPLERS = ("tpe", "nsga2", "random", "gp")


class StudyError(ValueError):
    """A storage, study name or option that cannot work, with the value."""


def parse_objectives(text: str) -> tuple[str, ...]:
    if text.replace(" ", "") not in OBJECTIVE_SETS:
        raise StudyError(
            f"unknown --objectives {text!r}; choose one of {', '.join(OBJECTIVE_SETS)}"
        )
    return tuple(text.replace(" ", "").split(","))


def check_storage_url(url: str) -> None:
    """Refuse a malformed storage URL before anything is created."""
    if url.startswith("journal:"):
        if not url.removeprefix("journal:"):
            raise StudyError(f"storage {url!r}: a journal storage needs a path, journal:PATH")
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StudyError(
            f"malformed storage URL {url!r}; use sqlite:///PATH, postgresql://USER@HOST/DB "
            "or journal:PATH"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise StudyError(f"storage {url!r}: unsupported backend {backend!r}")
    if not parsed.database:
        what = "a file, sqlite:///PATH" if backend == "sqlite" else "a database name"
        raise StudyError(f"storage {url!r}: {backend} needs {what}")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage with heartbeats and retries of trials lost to dead workers."""
    check_storage_url(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            database = url.split(":///", 1)[1]
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # SQLite locks the whole file; wait for other local workers, don't fail.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs["pool_pre_ping"] = True
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=retry,
            )
        except Exception as e:  # connection refused, bad credentials, ...
            raise StudyError(f"cannot open storage {url!r}: {e.__class__.__name__}: {e}") from None


def open_existing_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at ``url`` for reading; one that does not exist is refused, not created."""
    check_storage_url(url)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
    elif url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database or ""
        if database in ("", ":memory:"):
            raise StudyError(f"storage {url!r}: an in-memory database holds no studies")
        path = Path(database)
    else:
        return make_storage(url)  # a server: connecting never creates the database
    if not path.is_file():
        raise StudyError(f"storage {url!r}: no such file {str(path)!r}")
    return make_storage(url)


def load_existing_study(url: str, name: str) -> optuna.Study:
    """Study ``name`` at ``url``; an unknown name is a ``StudyError`` listing those there."""
    storage = open_existing_storage(url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        held = f"studies there: {', '.join(sorted(names))}" if names else "it holds no studies"
        raise StudyError(f"no study {name!r} in {url}; {held}")
    return optuna.load_study(study_name=name, storage=storage)


def make_sampler(name: str, seed: int | None, multi_objective: bool) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # Spaces have conditional parameters (attention fields exist only with
            # attention): multivariate + group lets TPE model them jointly.
            tpe = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10
            )
            # TPE ranks pruned trials by study.direction, which multi-objective studies lack.
            return PrunedTrialsSampler(tpe) if multi_objective else tpe
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise StudyError(f"unknown --sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were re-queued (their retry counts instead)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def finished_count(study: optuna.Study) -> int:
    return slot_counts(study)[0]


def slot_counts(study: optuna.Study) -> tuple[int, int, int]:
    """Finished, running and waiting (queued) trials, from one read of the study.

    Counted in separate reads, a trial another worker finishes in between is in neither
    count, and one trial too many is asked for.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    finished = sum(t.state in done and t.number not in retried for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


def _lock_path(name: str) -> Path:
    # Machine-wide by default; NAS_LOCK_DIR gives a group of processes (a test session)
    # locks of their own; the folder is made if missing (else every trial would fail).
    folder = Path(os.environ.get("NAS_LOCK_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"nas-{os.getuid()}-{name}.lock"


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def slot_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """Serialise "count finished trials, then ask for a new one" among workers.

    Local storages (sqlite, journal) lock a file beside this machine's other workers;
    PostgreSQL takes a transaction-level advisory lock, which every machine sees.
    """
    if storage_url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(
            hashlib.sha256(f"nas:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    digest = hashlib.sha256(f"{storage_url}|{study_name}".encode()).hexdigest()[:16]
    with _flock(_lock_path(f"slot-{digest}"), fcntl.LOCK_EX):
        yield


@contextlib.contextmanager
def measurement_lock() -> Iterator[None]:
    """Exclusive use of this machine while measuring latency.

    Training holds :func:`training_lock` (shared); measuring waits for running trainings
    to end and, through the turnstile, stops new ones from starting meanwhile — so a
    latency is never measured while another worker's training steals the cores.
    """
    with (
        _flock(_lock_path("turnstile"), fcntl.LOCK_EX),
        _flock(_lock_path("machine"), fcntl.LOCK_EX),
    ):
        yield


@contextlib.contextmanager
def training_lock() -> Iterator[None]:
    """Shared use of this machine while training (see :func:`measurement_lock`)."""
    with _flock(_lock_path("turnstile"), fcntl.LOCK_EX):
        pass  # wait here while a measurement is queued or running
    with _flock(_lock_path("machine"), fcntl.LOCK_SH):
        yield


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    objectives: tuple[str, ...],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    space: str | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same objectives, space and dataset.

    The three are stored as study user attrs: the report and the export read them (the
    export replays a trial's params through ``space``; ``--weights`` retrains on
    ``dataset``), and a study mixing spaces or datasets could not be compared or replayed.

    ``seed``, ``text_column`` and ``label_column`` (given for text datasets) are stored and
    checked the same way: a text model's vocabulary comes from the training split the
    seed carves from those columns, and the export rebuilds ``vocab.json`` from them.
    """
    directions = [OBJECTIVES[o] for o in objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=directions,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    given = {
        "objectives": ",".join(objectives),
        "space": space,
        "dataset": dataset,
        "seed": seed,
        "text_column": text_column,
        "label_column": label_column,
    }
    for key, value in given.items():
        if value is None:
            continue
        stored = study.user_attrs.get(key)
        if isinstance(stored, list):  # objectives were stored as a list
            stored = ",".join(stored)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise StudyError(
                f"study {study_name!r} was created with --{key.replace('_', '-')} {stored}, "
                f"got {value}; use another --study-name"
            )
    return study


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its parameters (as a heartbeat retry would)."""
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)
