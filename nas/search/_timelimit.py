"""A trial's time limit: SIGALRM ends the trial, and waits for the machine do not count.

A limit by signal also ends a trial stuck in a Python loop or a lock wait (one long
native call finishes first). Time spent waiting for a lock another worker holds is not
the trial's own: :func:`uncounted` stops the clock while it waits (the lock's own bound
applies there, see :func:`nas.search._locks.machine_lock_timeout`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class TrialTimeout(Exception):
    """A trial that ran past its time limit; it is failed with this as its reason."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this block after ``seconds`` of its own time.

    Signals reach only the main thread: elsewhere (a search run from another thread)
    there is no limit.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TrialTimeout(f"over the time limit: ran longer than {seconds:g} s (--trial-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def uncounted(lock: contextlib.AbstractContextManager[object]) -> Iterator[None]:
    """Enter ``lock`` with the time limit's clock stopped, then hold it with the clock on."""
    if threading.current_thread() is not threading.main_thread():
        with lock:
            yield
        return
    with contextlib.ExitStack() as stack:
        left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            stack.enter_context(lock)
        finally:
            if left > 0:  # a limit was running: go on from where it stopped
                signal.setitimer(signal.ITIMER_REAL, left)
        yield
