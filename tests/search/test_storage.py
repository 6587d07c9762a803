"""The search's storages and locks (nas.search._storage, nas.search._locks): which storages
a search accepts, where its lock files live, and lock waits that end with the lock and its
holder named (real subprocesses)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from nas.search import (
    LockTimeout,
    StudyError,
    check_storage_url,
    load_existing_study,
    make_sampler,
    make_storage,
    measurement_lock,
    open_study,
    slot_lock,
    training_lock,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# A process that takes one of the search's locks (nas.search._locks), says so, and holds it
# until its stdin ends.
HOLD = """
import sys
from nas.search import measurement_lock, slot_lock, training_lock
kind, args = sys.argv[1], sys.argv[2:]
lock = {"slot": slot_lock, "measure": measurement_lock, "train": training_lock}[kind]
with lock(*args):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held(kind: str, *args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """Hold lock ``kind`` (``slot``, ``measure``, ``train``) in another process; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, kind, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def timeout_message(lock: contextlib.AbstractContextManager[None]) -> str:
    """The message of the ``LockTimeout`` that taking ``lock`` raises."""
    with pytest.raises(LockTimeout) as e, lock:
        pass
    return str(e.value)


# ------------------------------------------------------------------- lock folder (item 5)


def test_lock_files_live_in_a_private_folder_of_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the shared temporary folder, where another user could create or hold them first.
    monkeypatch.delenv("NAS_LOCK_DIR")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with measurement_lock():
        pass
    folder = runtime / "nas"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["machine.lock", "turnstile.lock"]

    # Without a (usable: absolute) runtime folder: under the user's cache folder.
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/run")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with training_lock():
        pass
    folder = tmp_path / "home" / ".cache" / "nas" / "locks"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["machine.lock", "turnstile.lock"]
    assert not Path("relative").exists()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_lock_folder_others_can_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    monkeypatch.setenv("NAS_LOCK_DIR", str(folder))
    with (
        pytest.raises(StudyError, match=f"lock folder '{folder}' is writable by") as e,
        measurement_lock(),
    ):
        pass
    assert f"(mode {mode:o})" in str(e.value)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_a_lock_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    monkeypatch.setenv("NAS_LOCK_DIR", str(folder))
    with (
        pytest.raises(StudyError, match=f"lock folder '{folder}' belongs to uid 65534"),
        training_lock(),
    ):
        pass


def test_a_planted_symlink_lock_file_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("NAS_LOCK_DIR", str(folder))
    target = tmp_path / "victim"
    for name in ("turnstile.lock", "machine.lock"):
        (folder / name).symlink_to(target)
    with (
        pytest.raises(StudyError, match=r"turnstile\.lock' is a symbolic link"),
        measurement_lock(),
    ):
        pass
    # The slot lock beside a database: the same.
    (tmp_path / "x.db.lock").symlink_to(target)
    with (
        pytest.raises(StudyError, match=r"x\.db\.lock' is a symbolic link"),
        slot_lock(f"sqlite:///{tmp_path}/x.db", "s"),
    ):
        pass
    assert not target.exists()


# ------------------------------------------------------------ accepted storages (item 7)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("journal:{tmp}/x.log", "no heartbeat"),
        ("mysql://me@dbhost/nas", "no lock across machines"),
        ("mysql+pymysql://me@dbhost/nas", "no lock across machines"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_a_search_refuses_storages_whose_promises_it_cannot_keep(
    tmp_path: Path, url: str, problem: str
) -> None:
    url = url.format(tmp=tmp_path)
    with pytest.raises(StudyError, match=problem) as e:
        check_storage_url(url)
    assert url in str(e.value)
    assert "sqlite:///PATH" in str(e.value) and "postgresql://" in str(e.value)
    with pytest.raises(StudyError, match=problem):
        make_storage(url)
    # The command line (one line, exit 2, nothing written): test_search's bad-input test.


def test_a_journal_study_can_still_be_read(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    study = optuna.create_study(study_name="old", storage=optuna.storages.JournalStorage(backend))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    loaded = load_existing_study(f"journal:{path}", "old")
    assert [t.params for t in loaded.trials] == [t.params for t in study.trials]


# ------------------------------------------------------------------ lock bounds (item 9)


def test_a_slot_lock_wait_ends_naming_the_lock_file_beside_the_database_and_its_holder(
    tmp_path: Path,
) -> None:
    # The holder has a lock folder of its own, as a worker on another machine sharing the
    # database's disk would: the slot lock is the file beside the database, seen by both.
    url = f"sqlite:///{tmp_path}/x.db"
    other = {**os.environ, "NAS_LOCK_DIR": str(tmp_path / "other-machine")}
    with held("slot", url, "s", env=other) as pid:
        message = timeout_message(slot_lock(url, "s", timeout=0.5))
        # For a holder on another machine, which /proc/locks does not show: its name.
        assert (tmp_path / "x.db.lock").read_text() == f"{pid}@{socket.gethostname()}\n"
    assert f"'{tmp_path}/x.db.lock'" in message and "study 's'" in message
    assert f"pid {pid}" in message
    with slot_lock(url, "s", timeout=5):  # released when its holder ended
        pass


def test_a_measurement_waits_for_trainings_within_its_bound() -> None:
    with held("train") as pid:
        message = timeout_message(measurement_lock(timeout=0.5))
    assert "measurement lock" in message and "machine.lock" in message
    assert f"pid {pid}" in message
    with measurement_lock(timeout=5):
        pass


def test_a_training_waits_for_a_measurement_within_its_bound() -> None:
    with held("measure") as pid:
        message = timeout_message(training_lock(timeout=0.5))
    assert "training lock" in message and "turnstile.lock" in message
    assert f"pid {pid}" in message


def test_a_new_study_names_its_values_and_a_resume_keeps_them(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path}/m.db")

    def opened() -> optuna.Study:
        sampler = make_sampler("random", 0, multi_objective=True)
        pruner = optuna.pruners.NopPruner()
        return open_study(storage, "m", ("accuracy", "latency"), sampler, pruner)

    assert opened().metric_names == ["accuracy", "latency"]
    assert optuna.load_study(study_name="m", storage=storage).metric_names == [
        "accuracy",
        "latency",
    ]
    assert opened().metric_names == ["accuracy", "latency"]
