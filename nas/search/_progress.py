"""A search's progress while it runs: a bar on a terminal, one line per change elsewhere;
and what the running trials are doing (latency, epoch, last rung, time to go), a second
line on a terminal, a status line per change elsewhere.
"""

from __future__ import annotations

import datetime
import math
import sys
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.search._results import front
from nas.search._storage import finished_count, slot_counts
from nas.stored import figure, number


class Progress:
    """Trials done of total, pruned/failed counts, best accuracy, front size, ETA.

    On a terminal a tqdm bar; otherwise (a log file, ``nohup``, CI) one line per change,
    since a bar redrawn every few seconds fills a log with carriage returns.
    """

    def __init__(self, study: optuna.Study, total: int, timeout: float | None = None) -> None:
        """``timeout``: the seconds after which the search starts no trial (``--timeout``);
        the time left shown is then at most what remains of it."""
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, unit="trial", dynamic_ncols=True, file=sys.stderr, disable=None
        )
        self.status = tqdm(bar_format="{desc}", position=1, file=sys.stderr, disable=None)
        self.total = total
        self.timeout = timeout
        self.last = ""
        self.last_status = ""
        self.front_of: tuple[int, int] = (0, 0)  # (complete trials, front size) last seen
        self.started = time.monotonic()
        self.first = finished_count(study)
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)  # one read of the storage per update
        self._update_counts(study, trials)
        phrases = running_phrases(trials)
        status = "; ".join(what + to_go for what, to_go in phrases)
        if not self.status.disable:
            self.status.set_description_str(status)
            return
        # Off a terminal, a line when a trial gets further, not at each tick of its clock.
        what = "; ".join(what for what, _ in phrases)
        if what and what != self.last_status:
            print(status, file=sys.stderr, flush=True)
        self.last_status = what

    def _update_counts(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        states = [t.state for t in trials]
        pruned, failed = states.count(TrialState.PRUNED), states.count(TrialState.FAIL)
        done = min(slot_counts(trials)[0], self.total)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max((t.values[0] for t in complete), default=math.nan)
        if self.front_of[0] != len(complete):  # the front changes only with a new trial
            self.front_of = (len(complete), len(front(study)) if complete else 0)
        size = self.front_of[1]
        if not self.bar.disable:
            self.bar.n = done
            self.bar.set_postfix(
                pruned=pruned, failed=failed, best=f"{best:.4f}", front=size, refresh=False
            )
            self.bar.refresh()
            return
        line = (
            f"{done}/{self.total} trials ({pruned} pruned, {failed} failed), "
            f"best accuracy {best:.4f}, front {size}"
        )
        if line == self.last:
            return
        self.last = line
        elapsed = time.monotonic() - self.started
        if done > self.first:
            left = elapsed / (done - self.first) * (self.total - done)
            if self.timeout is not None:  # then the running trials finish: "about"
                left = min(left, max(self.timeout - elapsed, 0.0))
            line += f", {_clock(elapsed)} elapsed, about {_clock(left)} left"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.status.close()
        self.bar.close()


def running_phrases(trials: list[FrozenTrial]) -> list[tuple[str, str]]:
    """One phrase per running trial, as (what it did, its time to go): its latency, the
    epoch its training reached of the study's budget, its last rung's accuracy, and the
    time its training is estimated to take still (training only: rungs are extra). Stored
    values are shown only when they are finite numbers."""
    now = datetime.datetime.now()
    return [_phrase(t, now) for t in trials if t.state == TrialState.RUNNING]


def _phrase(t: FrozenTrial, now: datetime.datetime) -> tuple[str, str]:
    a = t.user_attrs
    budget = number(a.get("epochs_budget"))
    parts = [f"trial {t.number}"]
    latency = number(a.get("latency_ms"))
    if latency is not None:  # the fast end is tens of microseconds: three decimals there
        parts.append(f"{latency:.2f} ms" if latency >= 1 else f"{latency:.3f} ms")
    done = number(a.get("epochs_done"))
    if done is not None:
        parts.append(f"epoch {done:.2f}" + (f" of {budget:.2f}" if budget is not None else ""))
    if t.intermediate_values:
        last = t.intermediate_values[max(t.intermediate_values)]
        parts.append(f"rung accuracy {figure(last, '.4f')}")
    # A promoted trial's time to go is its rung's, from the rung's start.
    estimate, started = number(a.get("rung_estimate_s")), number(a.get("rung_started"))
    if estimate is None or started is None:
        estimate = number(a.get("train_estimate_s"))
        started = None if t.datetime_start is None else t.datetime_start.timestamp()
    if estimate is not None and started is not None:
        left = estimate - (now.timestamp() - started)
        return ", ".join(parts), f", about {_clock(max(left, 0.0))} to go"
    if len(parts) == 1:
        parts.append("measuring")
    return ", ".join(parts), ""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
