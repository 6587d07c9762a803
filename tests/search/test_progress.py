"""The search's progress off a terminal: one line per change of the counts, and a status
line per change of what the running trials do (latency, epoch, last rung, time to go)."""

from __future__ import annotations

import time

import optuna
import pytest

from nas.search._optuna import write_intermediate
from nas.search._progress import Progress, running_phrases


def running_status(study: optuna.Study) -> list[str]:
    """The status line's phrases, one per running trial."""
    return [what + to_go for what, to_go in running_phrases(study.get_trials(deepcopy=False))]


def running_study() -> tuple[optuna.Study, optuna.Trial]:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    trial.set_user_attr("epochs_budget", 0.3)
    return study, trial


def test_a_running_trial_says_what_it_does() -> None:
    study, trial = running_study()
    assert running_status(study) == ["trial 0, measuring"]
    trial.set_user_attr("latency_ms", 1.8412)
    trial.set_user_attr("train_estimate_s", 3590.0)
    assert running_status(study)[0].startswith("trial 0, 1.84 ms, about 59:")
    trial.set_user_attr("epochs_done", 0.15)
    write_intermediate(trial, 15, 0.78125)
    status = running_status(study)[0]
    assert status.startswith("trial 0, 1.84 ms, epoch 0.15 of 0.30, rung accuracy 0.7812, about")
    assert status.endswith(" to go")


def test_a_promoted_trial_shows_its_rungs_budget_and_time_to_go() -> None:
    study, trial = running_study()
    trial.set_user_attr("latency_ms", 0.5)
    trial.set_user_attr("train_estimate_s", 0.2)  # the first rung's, over
    trial.set_user_attr("epochs_done", 0.3)
    trial.set_user_attr("epochs_budget", 0.9)
    trial.set_user_attr("rung_estimate_s", 590.0)
    trial.set_user_attr("rung_started", time.time())
    status = running_status(study)[0]
    assert status.startswith("trial 0, 0.500 ms, epoch 0.30 of 0.90, about 9:")
    trial.set_user_attr("rung_started", "yesterday")  # unusable: the first rung's estimate
    assert running_status(study)[0].endswith("about 0:00 to go")


def test_hostile_stored_values_are_left_out() -> None:
    study, trial = running_study()
    trial.set_user_attr("epochs_budget", "0.3\x1b[2J")
    trial.set_user_attr("latency_ms", "1\r\n99 trials done")
    trial.set_user_attr("epochs_done", float("nan"))
    trial.set_user_attr("train_estimate_s", [1])
    assert running_status(study) == ["trial 0, measuring"]


def test_off_a_terminal_each_change_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    study, trial = running_study()
    progress = Progress(study, 10)
    progress.update(study)  # nothing changed: nothing printed again
    trial.set_user_attr("latency_ms", 2.0)
    progress.update(study)
    study.tell(trial, (0.5, 2.0))
    progress.update(study)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("0/10 trials (0 pruned, 0 failed), best accuracy nan, front 0")
    assert lines[1:3] == ["trial 0, measuring", "trial 0, 2.00 ms"]
    assert lines[3].startswith("1/10 trials (0 pruned, 0 failed), best accuracy 0.5000, front 1")
    assert len(lines) == 4 and "\r" not in "".join(lines)


def test_the_time_left_is_at_most_what_remains_of_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    progress = Progress(study, 1_000_000, timeout=60.0)
    study.tell(study.ask(), (0.5, 2.0))
    progress.update(study)
    progress.close()
    line = capsys.readouterr().err.splitlines()[-1]
    # A million trials at this pace would take hours; the timeout ends the search sooner.
    assert line.startswith("1/1000000 trials") and "elapsed, about " in line, line
    left = line.split("about ")[1].split(" left")[0]
    assert left.count(":") == 1 and left <= "1:00", left
