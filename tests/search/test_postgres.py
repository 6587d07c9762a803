"""A real PostgreSQL server on loopback: 3 worker processes on one study, and the slot
lock's bound naming its holder. ``postgres_server`` also serves tests/search/test_faults.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from nas.search import finished_count, make_storage, slot_lock
from tests.search.test_storage import held, timeout_message

ROOT = Path(__file__).resolve().parents[2]
BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    # The server refuses to run as root; CI runs as root, so step down to 'postgres'.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A new PostgreSQL server on a free loopback port, for the block; yields its URL."""
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    bindir = BIN[-1]
    tmp = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data, port = tmp / "data", _free_port()
    subprocess.run(
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(data), "-U", "nas", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        _as_postgres(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
                str(tmp),
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if (
                subprocess.run(
                    _as_postgres([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]),
                    capture_output=True,
                ).returncode
                == 0
            ):
                break
            time.sleep(0.2)
        subprocess.run(
            _as_postgres(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "nas", "nas"]
            ),
            check=True,
        )
        yield f"postgresql://nas@127.0.0.1:{port}/nas"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.mark.slow  # a real search in a subprocess
def test_three_workers_reach_exactly_n_trials(postgres_url: str) -> None:
    trials = 7
    cmd = [
        sys.executable,
        "-m",
        "nas.search",
        "--trials",
        str(trials),
        "--dataset",
        "digits",
        "--epochs",
        "0.5",
        "--storage",
        postgres_url,
        "--study-name",
        "pg",
        "--space",
        "attention_cnn",
        "--sampler",
        "random",
    ]
    # One seed for all: each worker's sampler gets a seed no other worker had (nas.search).
    workers = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="pg", storage=make_storage(postgres_url))
    assert finished_count(study) == trials
    assert len(study.trials) == trials  # no surplus trial was created
    assert len({t.number for t in study.trials}) == trials
    assert all(t.state.is_finished() for t in study.trials)


def test_a_slot_lock_wait_ends_naming_the_advisory_lock_and_its_holder(postgres_url: str) -> None:
    with held("slot", postgres_url, "pg-held") as pid:
        message = timeout_message(slot_lock(postgres_url, "pg-held", timeout=0.5))
    assert "advisory lock" in message and "study 'pg-held'" in message
    assert "backend pid" in message and f"{pid}@" in message  # the holder's connection names it
    with slot_lock(postgres_url, "pg-held", timeout=5):  # released when its holder ended
        pass
