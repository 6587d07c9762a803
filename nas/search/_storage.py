"""Storages, samplers, studies: create or resume, count trials, queue a trial again.

What a search promises, on every storage it accepts:

- ``--trials N`` means N finished trials in the study: :func:`finished_count` counts
  COMPLETE, PRUNED and FAIL trials, except failures that were re-queued (their retry
  is the trial that counts), so nothing is counted twice. The slot lock
  (:func:`nas.search._locks.slot_lock`) serialises "count, then ask" among all the
  study's workers, so N is exact with any number of them.
- A worker killed mid-trial (``kill -9``, a crash, a lost machine) loses nothing: its
  trial stays RUNNING, its heartbeat (every ``HEARTBEAT_SECONDS``) stops, and once that
  is ``GRACE_SECONDS`` old, any worker of the study, or a rerun, fails the trial and
  queues it again with the same parameters (up to ``MAX_RETRY`` times). A rerun started
  right after the kill waits out the rest of the grace, then trains the trial again.
- A live worker is not taken for a dead one: the grace is longer than the longest wait a
  heartbeat can be in (``DB_WAIT_SECONDS``: SQLite's busy timeout) plus three intervals. A
  process paused for longer than the grace (SIGSTOP, a suspended machine) is taken for
  dead: its trial is failed and retried, and the storage refuses its late result (the
  runner drops it with a warning). A heartbeat write that fails is tried again at the
  next interval (:func:`nas.search._optuna.heartbeat`; Optuna's own thread would stop
  for good).

The storages a search accepts (:func:`check_storage_url`):

- ``sqlite:///PATH`` (the default): workers on this machine, or on machines sharing
  PATH's folder on a disk whose file locks hold between machines (SQLite needs them too;
  not every network filesystem has them) and whose clocks agree (SQLite stamps heartbeats
  with each writer's clock). The slot lock is an flock on ``PATH.lock`` beside the
  database, so every process that can open the database sees it; the file stays there.
- ``postgresql://USER@HOST/DB``: workers on any number of machines. The slot lock is an
  advisory lock in the database; heartbeats are stamped with the server's clock.

Refused for a search, with the reason: ``journal:PATH`` (Optuna's journal storage has no
heartbeat: a killed worker's trial would stay RUNNING forever, and a rerun wait on it),
``mysql…`` (no slot lock between machines here, so N would not be exact) and
``sqlite:///:memory:`` (gone with the process). Reading a study of any of them, journal
and MySQL too, works (:func:`load_existing_study`, :func:`open_existing_storage`: the
report, the export, the dashboard), since reading needs none of these promises.

The locks themselves, and their bounds, are :mod:`nas.search._locks`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import optuna
import optuna.storages.journal
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.search._pruning import PrunedTrialsSampler

# A storage write, a heartbeat's too, may wait up to DB_WAIT_SECONDS for another worker's
# transaction (SQLite's busy timeout), so a live worker's heartbeat can be that late: a
# trial is taken for a dead worker's only when its heartbeat is older than that wait and
# a few intervals more (a shorter grace failed live trials and trained them twice).
HEARTBEAT_SECONDS = 5
DB_WAIT_SECONDS = 30
GRACE_SECONDS = DB_WAIT_SECONDS + 3 * HEARTBEAT_SECONDS
MAX_RETRY = 2

OBJECTIVES: dict[str, Literal["minimize", "maximize"]] = {
    "accuracy": "maximize",
    "latency": "minimize",
    "params": "minimize",
    "flops": "minimize",
}
OBJECTIVE_SETS = ("accuracy,latency", "accuracy", "accuracy,params", "accuracy,flops")
SAMPLERS = ("tpe", "nsga2", "random", "gp")

# The storages on which a search keeps its promises (see the module docstring).
SEARCH_STORAGES = (
    "sqlite:///PATH (workers on this machine, or on machines sharing its disk) or "
    "postgresql://USER@HOST/DB (workers on any number of machines)"
)


# What a study made before a key was recorded used: its trials were searched so.
ABSENT_MEANS: dict[str, Any] = {"tokenizer": "words"}
# What the trials of a study whose settings were recorded before these were (comparable
# settings, nas.search._settings) had: latency timed with BatchNorm unfolded; text
# trained at lr 0.01 on at most 512 tokens.
SETTINGS_ABSENT_MEANS: dict[str, Any] = {
    "latency_form": "batchnorm unfolded",
    "text_lr": 0.01,
    "text_max_length": 512,
}


class StudyError(NasError):
    """A storage, study name or option that cannot work, with the value."""


def parse_objectives(text: str) -> tuple[str, ...]:
    if text.replace(" ", "") not in OBJECTIVE_SETS:
        raise StudyError(
            f"unknown --objectives {text!r}; choose one of {', '.join(OBJECTIVE_SETS)}"
        )
    return tuple(text.replace(" ", "").split(","))


def _backend(url: str) -> str:
    """The backend of a well-formed storage URL (``journal`` for ``journal:PATH``)."""
    if url.startswith("journal:"):
        if not url.removeprefix("journal:"):
            raise StudyError(f"storage {url!r}: a journal storage needs a path, journal:PATH")
        return "journal"
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
    return str(backend)


def sqlite_file(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


def search_backend(url: str) -> str:
    """The backend of ``url`` if a search keeps its promises on it, else a ``StudyError``."""
    backend = _backend(url)
    if backend == "journal":
        problem = (
            "a journal storage has no heartbeat, so the trial of a killed worker would stay "
            "RUNNING forever and a rerun would wait on it"
        )
    elif backend == "mysql":
        problem = (
            "MySQL has no lock across machines here, so --trials N would not be exact with "
            "workers on several machines"
        )
    elif backend == "sqlite" and sqlite_file(url) == ":memory:":
        problem = "an in-memory database is gone when the process ends: nothing to resume"
    else:
        return backend
    raise StudyError(f"storage {url!r}: {problem}; a search needs {SEARCH_STORAGES}")


def check_storage_url(url: str) -> None:
    """Refuse, before anything is created, a malformed storage URL, or one whose storage a
    search cannot keep its promises on (see the module docstring)."""
    search_backend(url)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage for a search: heartbeats, and retries of trials lost to dead workers."""
    check_storage_url(url)
    return _rdb_storage(url)


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if _backend(url) == "sqlite":
        Path(sqlite_file(url)).parent.mkdir(parents=True, exist_ok=True)
        # SQLite locks the whole file; wait for other workers' writes, don't fail.
        engine_kwargs["connect_args"] = {"timeout": DB_WAIT_SECONDS}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
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
    """The storage at ``url`` for reading; one that does not exist is refused, not created.

    Any Optuna storage, journal files and MySQL too: a search refuses them, but reading a
    study needs neither heartbeats nor a slot lock.
    """
    backend = _backend(url)
    if backend == "journal":
        path = Path(url.removeprefix("journal:"))
        if not path.is_file():
            raise StudyError(f"storage {url!r}: no such file {str(path)!r}")
        backend_file = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend_file)
    if backend == "sqlite":
        database = sqlite_file(url)
        if database == ":memory:":
            raise StudyError(f"storage {url!r}: an in-memory database holds no studies")
        if not Path(database).is_file():
            raise StudyError(f"storage {url!r}: no such file {database!r}")
    return _rdb_storage(url)  # a server: connecting never creates the database


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
    return slot_counts(study.get_trials(deepcopy=False))[0]


def slot_counts(trials: list[FrozenTrial]) -> tuple[int, int, int]:
    """Finished, running and waiting (queued) trials among ``trials``: one read of the study.

    Counted in separate reads, a trial another worker finishes in between is in neither
    count, and one trial too many is asked for.
    """
    retried = retried_numbers(trials)
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    finished = sum(t.state in done and t.number not in retried for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


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
    tokenizer: str | None = None,
    settings: Mapping[str, Any] | None = None,
    allow_changed_settings: bool = False,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same objectives, space and dataset.

    The three are stored as study user attrs: the report and the export read them (the
    export replays a trial's params through ``space``; ``--weights`` retrains on
    ``dataset``), and a study mixing spaces or datasets could not be compared or replayed.

    ``seed``, ``text_column``, ``label_column`` and ``tokenizer`` (given for text datasets)
    are stored and checked the same way: a text model's vocabulary comes from the training
    split the seed carves from those columns, tokenised so, and the export rebuilds
    ``vocab.json`` from them. A study made before the tokenizer was recorded tokenised
    ``words`` (:data:`ABSENT_MEANS`).

    ``settings`` (what makes trials comparable:
    :func:`nas.search._settings.comparable_settings`) are
    recorded on first use; a run with other values is refused, or with
    ``allow_changed_settings`` recorded as a change (:func:`_check_settings`).
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
        "tokenizer": tokenizer,
    }
    made_before = "objectives" in study.user_attrs  # a new study has no attr yet
    for key, value in given.items():
        if value is None:
            continue
        recorded = study.user_attrs.get(key)
        stored = ABSENT_MEANS.get(key) if recorded is None and made_before else recorded
        if isinstance(stored, list):  # objectives were stored as a list
            stored = ",".join(stored)
        if stored is not None and stored != value:
            raise StudyError(
                f"study {study_name!r} was created with --{key.replace('_', '-')} {stored}, "
                f"got {value}; use another --study-name"
            )
        if recorded is None:
            study.set_user_attr(key, value)
    if study.metric_names is None:  # the dashboard and the optuna CLI name the values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    _check_settings(study, dict(settings or {}), allow_changed_settings)
    return study


def _check_settings(study: optuna.Study, given: dict[str, Any], allow: bool) -> None:
    """Record ``given`` in the study (user attrs) or check it against what is recorded.

    A difference is refused with both values named, unless ``allow``: then the new value
    is recorded, and the change appended to the user attr ``settings_changes`` (with the
    number of trials started before it), so a mixed front can be told apart later. A
    study that recorded its settings before some were (it lacks them) had what
    :data:`SETTINGS_ABSENT_MEANS` says.
    """
    attrs = study.user_attrs
    made_before = "epochs" in attrs  # an earlier run recorded its settings
    recorded = {**SETTINGS_ABSENT_MEANS, **attrs} if made_before else attrs
    changed = {k: v for k, v in given.items() if k in recorded and recorded[k] != v}
    for key, value in given.items():
        if key not in attrs and key not in changed:
            study.set_user_attr(key, value)
    if not changed:
        return
    if not allow:
        shown = "; ".join(f"{k} {recorded[k]!r} (this run: {v!r})" for k, v in changed.items())
        raise StudyError(
            f"study {study.study_name!r} was made with other settings: {shown}. Trials "
            "trained or measured otherwise would be compared on one front: use another "
            "--study-name, or --allow-changed-settings to mix them (recorded in the study)"
        )
    log = attrs.get("settings_changes")
    log = log if isinstance(log, list) else []
    # A queued trial (a starting point, a baseline) has not run yet: it runs with the change.
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    after = len(study.trials) - len(waiting)
    for key, value in changed.items():
        log.append({"setting": key, "was": recorded[key], "now": value, "after": after})
        study.set_user_attr(key, value)
    study.set_user_attr("settings_changes", log)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its parameters (as a heartbeat retry would)."""
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)
