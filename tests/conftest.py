"""Suite-wide settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
