"""The locks a search takes: the slot lock of a study, and this machine's measurement and
training locks.

:func:`slot_lock` serialises "count finished trials, then ask for one" among all the
workers of a study, on every machine (so ``--trials N`` is exact): an flock on
``PATH.lock`` beside a SQLite database, every process that can open the database sees it
(the file stays there); an advisory lock in a PostgreSQL database. The storages it takes
are those a search accepts (:func:`nas.search._storage.check_storage_url`).
:func:`measurement_lock` and :func:`training_lock` keep a latency from being measured
while another worker on this machine trains.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nas.data import cache_dir
from nas.search._storage import StudyError, search_backend, sqlite_file


class LockTimeout(StudyError):
    """A lock not obtained within its bound; the message names the lock and its holder."""


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


# For trials of up to an hour (--trial-timeout's default while the study knows few trial
# durations: nas.search._settings.DEFAULT_TRIAL_TIMEOUT).
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
    backend = search_backend(storage_url)
    deadline = _deadline(timeout)
    what = f"the slot lock of study {study_name!r} in {_shown(storage_url)}"
    if backend == "postgresql":
        with _advisory_lock(storage_url, study_name, what, deadline, timeout):
            yield
        return
    database = Path(sqlite_file(storage_url))
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
