"""Suite-wide settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def single_thread() -> Iterator[None]:
    """Run in-process torch work on one thread.

    The suite's models are small, and on a 2-core machine that other processes also load,
    two OpenMP threads wait on each other at every barrier: building and running 30
    random attention_cnn models took 132 s with two threads and 8 s with one, measured
    side by side under load.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class StudyRef:
    """A finished study in a real SQLite storage."""

    storage: str
    name: str


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory: pytest.TempPathFactory) -> StudyRef:
    """A real search, shared by the report, dashboard and export tests (read-only: copy it
    to change it). Eight trials on digits: the two hand designs, then attention_cnn samples."""
    folder = tmp_path_factory.mktemp("digits_study")
    ref = StudyRef(f"sqlite:///{folder}/digits.db", "digits")
    args = ["--trials", "8", "--epochs", "2", "--dataset", "digits", "--seed", "0"]
    args += ["--enqueue-baselines", "--storage", ref.storage, "--study-name", ref.name]
    done = subprocess.run(
        [sys.executable, "-m", "nas.search", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return ref
