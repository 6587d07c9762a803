"""A search's progress while it runs: a bar on a terminal, one line per change elsewhere."""

from __future__ import annotations

import math
import sys
import time

import optuna
from optuna.trial import TrialState

from nas.search._results import counts, front
from nas.search._storage import finished_count


class Progress:
    """Trials done of total, pruned/failed counts, best accuracy, front size, ETA.

    On a terminal a tqdm bar; otherwise (a log file, ``nohup``, CI) one line per change,
    since a bar redrawn every few seconds fills a log with carriage returns.
    """

    def __init__(self, study: optuna.Study, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, unit="trial", dynamic_ncols=True, file=sys.stderr, disable=None
        )
        self.total = total
        self.last = ""
        self.started = time.monotonic()
        self.first = finished_count(study)
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        c = counts(study)
        done = min(finished_count(study), self.total)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = max((t.values[0] for t in complete), default=math.nan)
        size = len(front(study)) if complete else 0
        if not self.bar.disable:
            self.bar.n = done
            self.bar.set_postfix(
                pruned=c["pruned"], failed=c["fail"], best=f"{best:.4f}", front=size, refresh=False
            )
            self.bar.refresh()
            return
        line = (
            f"{done}/{self.total} trials ({c['pruned']} pruned, {c['fail']} failed), "
            f"best accuracy {best:.4f}, front {size}"
        )
        if line == self.last:
            return
        self.last = line
        elapsed = time.monotonic() - self.started
        if done > self.first:
            left = elapsed / (done - self.first) * (self.total - done)
            line += f", {_clock(elapsed)} elapsed, about {_clock(left)} left"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
