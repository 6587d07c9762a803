"""Storages, samplers, studies: create or resume, count trials, share one machine.

What a search promises, on every storage it accepts:

- ``--trials N`` means N finished trials in the study: :func:`finished_count` counts
  COMPLETE, PRUNED and FAIL trials, except failures that were re-queued (their retry
  is the trial that counts), so nothing is counted twice. :func:`slot_lock` serialises
  "count, then ask" among all the study's workers, so N is exact with any number of them.
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
  next interval (``nas.search``'s heartbeat; Optuna's own thread would stop for good).

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

Lock waits are bounded; one over its bound raises :class:`LockTimeout`, naming the lock
(its file, or its advisory key, with the storage and study) and its holder (pid and host,
or the PostgreSQL backend and client). The slot lock's bound is ``SLOT_LOCK_TIMEOUT``: it
is held only to count trials and ask for one. The measurement and training locks wait for
the other workers' trainings on this machine, so their bound follows the trial time limit
(:func:`machine_lock_timeout`; ``MACHINE_LOCK_TIMEOUT`` for trials of up to an hour, no
bound for trials without a limit). Their files live in a folder of the user's own, mode
0700 (:func:`lock_folder`), never in the shared temporary folder, where another user
could create or hold them first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import stat
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import optuna
import optuna.storages.journal
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas.data import cache_dir
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


class StudyError(NasError):
    """A storage, study name or option that cannot work, with the value."""


class LockTimeout(StudyError):
    """A lock not obtained within its bound; the message names the lock and its holder."""


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


def _sqlite_file(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


def _search_backend(url: str) -> str:
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
    elif backend == "sqlite" and _sqlite_file(url) == ":memory:":
        problem = "an in-memory database is gone when the process ends: nothing to resume"
    else:
        return backend
    raise StudyError(f"storage {url!r}: {problem}; a search needs {SEARCH_STORAGES}")


def check_storage_url(url: str) -> None:
    """Refuse, before anything is created, a malformed storage URL, or one whose storage a
    search cannot keep its promises on (see the module docstring)."""
    _search_backend(url)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage for a search: heartbeats, and retries of trials lost to dead workers."""
    check_storage_url(url)
    return _rdb_storage(url)


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if _backend(url) == "sqlite":
        Path(_sqlite_file(url)).parent.mkdir(parents=True, exist_ok=True)
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
        database = _sqlite_file(url)
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


# ----------------------------------------------------------------------------- locks

# The slot lock is held only to count trials and ask for one: minutes is generous.
SLOT_LOCK_TIMEOUT = 300.0
# Time the measurements themselves may add to a machine lock wait.
MEASURING_SECONDS = 300.0
# A waiting lock is tried again after this long at most (sooner at first).
POLL_SECONDS = 0.5


def machine_lock_timeout(trial_limit: float | None) -> float | None:
    """The bound of a measurement or training lock wait for trials of at most
    ``trial_limit`` seconds (None: no limit, so no bound either).

    A measurement waits at the turnstile for a measurement that itself waited for the
    trainings under way, then for the trainings under way: two trial limits, plus the
    measurements. A training waits for one measurement, which is less.
    """
    return None if trial_limit is None else 2 * trial_limit + MEASURING_SECONDS


# For trials of up to an hour (nas.search's default --trial-timeout while it knows few).
MACHINE_LOCK_TIMEOUT = 2 * 3600.0 + MEASURING_SECONDS


def lock_folder() -> Path:
    """This user's folder for the machine's lock files, made (mode 0700) if missing.

    ``NAS_LOCK_DIR`` when set (processes that share it share the machine's locks: a test
    session, a benchmark per core), else ``$XDG_RUNTIME_DIR/nas``, else
    ``~/.cache/nas/locks`` (``$XDG_CACHE_HOME/nas/locks``). Not the shared temporary
    folder: there another user could create or hold the files first and stall every
    search. The folder's owner and mode are checked as each lock file is opened.
    """
    given = os.environ.get("NAS_LOCK_DIR", "")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if given:
        folder = Path(given)
    elif os.path.isabs(runtime):  # the XDG spec: a relative path is to be ignored
        folder = Path(runtime) / "nas"
    else:
        folder = cache_dir() / "locks"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    return folder


def _check_private(folder: Path, st: os.stat_result) -> None:
    """Refuse a lock folder in which another user could plant or hold the lock files."""
    if st.st_uid != os.geteuid():
        raise StudyError(
            f"lock folder {str(folder)!r} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): its owner could hold the locks and stall every search; "
            "remove it, or set NAS_LOCK_DIR to a folder of yours"
        )
    if st.st_mode & 0o022:
        raise StudyError(
            f"lock folder {str(folder)!r} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}): they could plant or hold its lock files "
            "and stall every search; chmod 700 it, or set NAS_LOCK_DIR to a folder of yours"
        )


def _open_lock_file(path: Path, mode: int, private: bool) -> int:
    """Open (create) a lock file, never through a symbolic link: one planted there would
    make this process create or lock a file of someone else's choosing. ``private``: the
    file is in :func:`lock_folder`, whose owner and mode are checked on the same open
    folder the file is opened in."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if private:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _check_private(path.parent, os.fstat(folder))
                fd = os.open(path.name, flags, mode, dir_fd=folder)
            finally:
                os.close(folder)
        else:
            fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StudyError(
                f"lock file {str(path)!r} is a symbolic link, which is not followed; remove it"
            ) from None
        raise StudyError(f"cannot open lock file {str(path)!r}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StudyError(f"lock file {str(path)!r} is not a regular file; remove it")
    return fd


def _me() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait(take: Callable[[], bool], deadline: float | None, timed_out: Callable[[], str]) -> None:
    """Try ``take`` until it succeeds, a little longer apart each time; past ``deadline``
    raise :class:`LockTimeout` with the message ``timed_out`` gives. Never blocks in the
    kernel, so that the wait can end."""
    pause = 0.01
    while not take():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise LockTimeout(timed_out())
        time.sleep(pause if left is None else min(pause, left))
        pause = min(2 * pause, POLL_SECONDS)


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _flock_holder(fd: int) -> str:
    """Who holds the flock on ``fd``: this machine's holders, from /proc/locks; else the
    ``pid@host`` an exclusive holder wrote in the file (one on a machine sharing the disk)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:  # not Linux
        lines = []
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's line has "->" second.
    fields = [line.split() for line in lines]
    pids = sorted(
        {int(f[4]) for f in fields if len(f) > 5 and f[1] == "FLOCK" and f[5] == inode}
        - {os.getpid()}
    )
    if pids:
        named = ", ".join(map(str, pids))
        return f"pid{'s' if len(pids) > 1 else ''} {named} on this machine ({socket.gethostname()})"
    written = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    if written:  # whoever can write the file could have written anything: quoted
        return f"{written!r} (pid@host, as its holder wrote in the file)"
    return "a process on another machine (it wrote no name)"


@contextlib.contextmanager
def _file_lock(
    path: Path,
    what: str,
    deadline: float | None,
    timeout: float | None,
    *,
    shared: bool = False,
    private: bool = True,
    mode: int = 0o600,
) -> Iterator[None]:
    """An flock on ``path`` (``shared`` or exclusive), waited for until ``deadline``."""
    fd = _open_lock_file(path, mode, private)
    try:
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        _wait(
            lambda: _try_flock(fd, operation),
            deadline,
            lambda: (
                f"gave up waiting for {what} after {timeout:g} s: lock file "
                f"{str(path.absolute())!r} is held by {_flock_holder(fd)}"
            ),
        )
        if not shared:  # for whoever waits in vain: shared holders are many, not written
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{_me()}\n".encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _shown(url: str) -> str:
    """``url`` for a message: without its password."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def slot_lock(
    storage_url: str, study_name: str, timeout: float | None = SLOT_LOCK_TIMEOUT
) -> Iterator[None]:
    """Serialise "count finished trials, then ask for a new one" among all the workers of
    the study, on every machine: an flock on ``PATH.lock`` beside a SQLite database (every
    process that can open the database sees it), a PostgreSQL advisory lock.

    A wait longer than ``timeout`` seconds (None: no bound) raises :class:`LockTimeout`.
    """
    backend = _search_backend(storage_url)
    deadline = _deadline(timeout)
    what = f"the slot lock of study {study_name!r} in {_shown(storage_url)}"
    if backend == "postgresql":
        with _advisory_lock(storage_url, study_name, what, deadline, timeout):
            yield
        return
    database = Path(_sqlite_file(storage_url))
    database.parent.mkdir(parents=True, exist_ok=True)
    # Made as the database was: whoever may write the database may take its lock.
    mode = stat.S_IMODE(database.stat().st_mode) & 0o666 if database.exists() else 0o666
    lock = database.with_name(database.name + ".lock")
    with _file_lock(lock, what, deadline, timeout, private=False, mode=mode):
        yield


@contextlib.contextmanager
def _advisory_lock(
    url: str, study_name: str, what: str, deadline: float | None, timeout: float | None
) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(
        hashlib.sha256(f"nas:{study_name}".encode()).digest()[:8], "big", signed=True
    )
    engine = sqlalchemy.create_engine(
        url,
        poolclass=sqlalchemy.pool.NullPool,
        # A session lock needs no transaction; an idle open one may be ended by the server.
        isolation_level="AUTOCOMMIT",
        # Named so that a worker that waits in vain can name this one (63 bytes at most).
        connect_args={"application_name": f"nas {_me()}"[:63]},
    )
    try:
        with engine.connect() as conn:
            take = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
            _wait(
                lambda: bool(conn.execute(take, {"k": key}).scalar()),
                deadline,
                lambda: (
                    f"gave up waiting for {what} after {timeout:g} s: advisory lock "
                    f"{key} is held by {_advisory_holder(conn, key)}"
                ),
            )
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def _advisory_holder(conn: Any, key: int) -> str:
    """The backend that holds advisory lock ``key``, its client and application name."""
    import sqlalchemy

    # pg_locks shows a bigint key's high half as classid, its low half as objid.
    unsigned = key % 2**64
    query = sqlalchemy.text(
        "SELECT l.pid, a.client_addr, a.application_name FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
    )
    try:
        row = conn.execute(query, {"hi": unsigned >> 32, "lo": unsigned % 2**32}).first()
    except sqlalchemy.exc.DBAPIError as e:
        return f"an unknown backend ({e.__class__.__name__} reading pg_locks)"
    if row is None:
        return "an unknown backend (it let go just now)"
    pid, client, application = row
    named = f"backend pid {pid}"
    named += f", client {client}" if client else ""
    # Any client may name itself anything: quoted.
    return named + (f", application {application!r}" if application else "")


@contextlib.contextmanager
def measurement_lock(timeout: float | None = MACHINE_LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive use of this machine while measuring latency.

    Training holds :func:`training_lock` (shared); measuring waits for running trainings
    to end and, through the turnstile, stops new ones from starting meanwhile — so a
    latency is never measured while another worker's training steals the cores. A wait
    longer than ``timeout`` seconds (None: no bound; see :func:`machine_lock_timeout`)
    raises :class:`LockTimeout`.
    """
    deadline = _deadline(timeout)
    folder = lock_folder()
    what = "the measurement lock of this machine"
    with (
        _file_lock(folder / "turnstile.lock", what, deadline, timeout),
        _file_lock(folder / "machine.lock", what, deadline, timeout),
    ):
        yield


@contextlib.contextmanager
def training_lock(timeout: float | None = MACHINE_LOCK_TIMEOUT) -> Iterator[None]:
    """Shared use of this machine while training (see :func:`measurement_lock`)."""
    deadline = _deadline(timeout)
    folder = lock_folder()
    what = "the training lock of this machine"
    with _file_lock(folder / "turnstile.lock", what, deadline, timeout):
        pass  # wait here while a measurement is queued or running
    with _file_lock(folder / "machine.lock", what, deadline, timeout, shared=True):
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
    settings: Mapping[str, Any] | None = None,
    allow_changed_settings: bool = False,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same objectives, space and dataset.

    The three are stored as study user attrs: the report and the export read them (the
    export replays a trial's params through ``space``; ``--weights`` retrains on
    ``dataset``), and a study mixing spaces or datasets could not be compared or replayed.

    ``seed``, ``text_column`` and ``label_column`` (given for text datasets) are stored and
    checked the same way: a text model's vocabulary comes from the training split the
    seed carves from those columns, and the export rebuilds ``vocab.json`` from them.

    ``settings`` (what makes trials comparable: ``nas.search.comparable_settings``) are
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
    _check_settings(study, dict(settings or {}), allow_changed_settings)
    return study


def _check_settings(study: optuna.Study, given: dict[str, Any], allow: bool) -> None:
    """Record ``given`` in the study (user attrs) or check it against what is recorded.

    A difference is refused with both values named, unless ``allow``: then the new value
    is recorded, and the change appended to the user attr ``settings_changes`` (with the
    number of trials before it), so a mixed front can be told apart later.
    """
    attrs = study.user_attrs
    changed = {k: v for k, v in given.items() if k in attrs and attrs[k] != v}
    for key, value in given.items():
        if key not in attrs:
            study.set_user_attr(key, value)
    if not changed:
        return
    if not allow:
        shown = "; ".join(f"{k} {attrs[k]!r} (this run: {v!r})" for k, v in changed.items())
        raise StudyError(
            f"study {study.study_name!r} was made with other settings: {shown}. Trials "
            "trained or measured otherwise would be compared on one front: use another "
            "--study-name, or --allow-changed-settings to mix them (recorded in the study)"
        )
    log = attrs.get("settings_changes")
    log = log if isinstance(log, list) else []
    for key, value in changed.items():
        log.append({"setting": key, "was": attrs[key], "now": value, "after": len(study.trials)})
        study.set_user_attr(key, value)
    study.set_user_attr("settings_changes", log)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its parameters (as a heartbeat retry would)."""
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)
