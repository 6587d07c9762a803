"""What the search promises on every storage it accepts, shown with real searches: a worker
killed mid-trial loses nothing, and a worker paused for a while is not declared dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from nas.search import GRACE_SECONDS, finished_count, make_storage
from tests.search.test_postgres import postgres_server

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage the search accepts (PostgreSQL is skipped where it is not installed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.getfixturevalue("postgres_url"))


# The search with a short heartbeat grace (beats every second, database waits of 5 s:
# 8 s), so that a rerun waits out a killed worker's grace in seconds, not 45. The paused
# worker's test keeps the real one: the length of the grace is what it tests.
SHORT_GRACE = """
import sys
import nas.search._storage as storage
storage.HEARTBEAT_SECONDS, storage.DB_WAIT_SECONDS = 1, 5
storage.GRACE_SECONDS = storage.DB_WAIT_SECONDS + 3 * storage.HEARTBEAT_SECONDS
from nas.search.cli import main
sys.exit(main(sys.argv[1:]))
"""
SHORT_GRACE_SECONDS = 8


def search_args(url: str, name: str, *more: str, grace: str = "real") -> list[str]:
    launch = ["-c", SHORT_GRACE] if grace == "short" else ["-m", "nas.search"]
    return [
        sys.executable,
        *launch,
        "--dataset",
        "digits",
        "--space",
        "seed_cnn",
        "--storage",
        url,
        "--study-name",
        name,
        *more,
    ]


def trial_states(url: str, name: str, with_heartbeat: bool = False) -> list[str]:
    """The study's trial states, read with plain SQL (only trials that have a heartbeat)."""
    join = "JOIN trial_heartbeats h ON h.trial_id = t.trial_id" if with_heartbeat else ""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
                    f"{join} WHERE s.study_name = :name"
                ),
                {"name": name},
            )
            return [str(state) for (state,) in rows]
    except sqlalchemy.exc.DBAPIError:  # no tables yet, or a write in progress
        return []
    finally:
        engine.dispose()


def wait_for(
    proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the search ended or stalled before {what}: {proc.returncode}")
        time.sleep(0.3)


@pytest.mark.slow  # a real search in a subprocess
def test_killed_mid_trial_then_rerun_finishes_exactly(storage_url: str, tmp_path: Path) -> None:
    # kill -9 leaves the trial RUNNING with a heartbeat that stops: the rerun waits out the
    # grace, fails it and trains it again, and ends with exactly --trials finished.
    name = f"kill-{tmp_path.name}"
    args = search_args(storage_url, name, "--trials", "2", "--epochs", "2", grace="short")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(
        proc,
        lambda: "RUNNING" in trial_states(storage_url, name, with_heartbeat=True),
        "a trial was running",
    )
    proc.kill()
    proc.wait(timeout=60)
    killed = [t.number for t in load(storage_url, name).trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1

    started = time.monotonic()
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert time.monotonic() - started < SHORT_GRACE_SECONDS + 120  # it waited on nothing else
    after = load(storage_url, name)
    assert finished_count(after) == 2
    states = [t.state for t in after.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert after.trials[killed[0]].state == TrialState.FAIL
    retries = [t for t in after.trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert len(after.trials) == 3


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(url))


OLD_GRACE_SECONDS = 20  # the grace that declared a paused worker dead
PAUSE_SECONDS = 25


def flock_holders(lock: Path, mode: str) -> set[int]:
    """Processes holding an flock on ``lock`` in ``mode`` (READ: shared, WRITE: exclusive)."""
    st = lock.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    fields = (line.split() for line in Path("/proc/locks").read_text().splitlines())
    return {int(f[4]) for f in fields if f[1:4] == ["FLOCK", "ADVISORY", mode] and f[5] == inode}


def children(pid: int) -> set[int]:
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
@pytest.mark.slow  # a real search in a subprocess
def test_a_worker_paused_longer_than_the_old_grace_is_not_declared_dead(tmp_path: Path) -> None:
    # One worker is stopped while it trains (as a worker waiting on the database, or a
    # paused process, is): its heartbeat stops. The other finishes its trial and waits for
    # the stopped one's, checking for stale trials every few seconds. A grace shorter than
    # such a pause failed the live trial, queued it again and trained it twice.
    assert GRACE_SECONDS > PAUSE_SECONDS + 5 > OLD_GRACE_SECONDS + 5
    url = f"sqlite:///{tmp_path}/p.db"
    locks = tmp_path / "locks"
    args = search_args(url, "p", "--trials", "2", "--jobs", "2", "--epochs", "3")
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NAS_LOCK_DIR": str(locks)},
    )

    def training_while_the_other_is_free() -> bool:
        # Both workers training, or one training and the other done: either way the other
        # does not wait on a lock the stopped one holds, and soon waits for its trial.
        machine = next(locks.glob("*machine.lock"), None)  # what training holds, shared
        training = flock_holders(machine, "READ") & children(proc.pid) if machine else set()
        states = sorted(trial_states(url, "p"))
        if (states, len(training)) not in ((["COMPLETE", "RUNNING"], 1), (["RUNNING"] * 2, 2)):
            return False
        paused.append(training.pop())
        return True

    paused: list[int] = []
    wait_for(proc, training_while_the_other_is_free, "a worker could be paused while training")
    os.kill(paused[0], signal.SIGSTOP)
    try:
        time.sleep(PAUSE_SECONDS)
    finally:
        os.kill(paused[0], signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = load(url, "p")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # each trained once
    assert finished_count(study) == 2
    assert not any("retry_history" in t.system_attrs for t in study.trials)
