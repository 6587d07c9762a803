"""python -m nas.search end to end: resume, faults, bad input, a real SQLite storage."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import nas.search._runner
from nas.data import load_data
from nas.search import (
    Limits,
    Objective,
    finished_count,
    load_space,
    make_pruner,
    make_storage,
    measurement_lock,
    run_trial,
    run_worker,
    training_lock,
)
from nas.search._runner import Stopped, StopSignals
from nas.search._settings import MIN_TRAIN_STEPS
from nas.search.cli import parse_args, settings_from
from nas.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def search(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.search", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout,
    )


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(url))


@pytest.mark.slow  # a real search in a subprocess
def test_search_completes_prints_front_and_resumes(tmp_path: Path) -> None:
    # digits keeps this fast; the README shows the same on Fashion-MNIST.
    url = f"sqlite:///{tmp_path}/X.db"
    common = (
        "--epochs",
        "0.5",
        "--dataset",
        "digits",
        "--storage",
        url,
        "--study-name",
        "s",
        "--seed",
        "0",
    )
    first = search("--trials", "4", *common)
    assert first.returncode == 0, first.stderr
    assert "Pareto front (accuracy, latency)" in first.stdout
    assert "python -m nas.export" in first.stdout
    # Not on a terminal: progress as plain lines, no bar redrawn with carriage returns.
    assert "4/4 trials (" in first.stderr and "\r" not in first.stderr, first.stderr
    study = load(url, "s")
    assert finished_count(study) == 4
    numbers = {t.number for t in study.trials}
    second = search("--trials", "6", *common)
    assert second.returncode == 0, second.stderr
    study = load(url, "s")
    assert finished_count(study) == 6
    assert len(study.trials) == 6 and numbers < {t.number for t in study.trials}
    for t in study.trials:
        a = t.user_attrs
        for key in ("arch", "seed", "flops", "params", "device"):
            assert key in a, (t.number, key)
        assert "torch" in a["device"]
        if not str(a.get("reason")).startswith("over budget"):  # else never timed
            assert "latency_ms" in a and "latency_iqr_ms" in a, t.number


@pytest.mark.slow  # a real search in a subprocess
def test_the_default_budget_on_a_small_dataset_trains_enough_steps_to_learn(
    tmp_path: Path,
) -> None:
    # digits: 0.3 epoch of its ~1,300 training images would be 3 optimiser steps, and every
    # network would end at chance (0.1). The default trains MIN_TRAIN_STEPS at least.
    # (Without promotions: they multiply the budget, tested in test_objective.py.)
    url = f"sqlite:///{tmp_path}/d.db"
    args = ("--dataset", "digits", "--space", "seed_cnn", "--promotions", "0")
    done = search(*args, "--trials", "1", "--storage", url)
    assert done.returncode == 0, done.stderr
    (t,) = load(url, "seed_cnn-digits").trials
    data = load_data("digits")
    steps_per_epoch = len(data.train.y) // TrainConfig().batch_size
    assert t.user_attrs["epochs_budget"] == MIN_TRAIN_STEPS / steps_per_epoch > 1
    assert round(t.user_attrs["epochs_done"] * steps_per_epoch) == MIN_TRAIN_STEPS
    assert t.values[0] > 0.5  # far above chance
    # Given, --epochs is the budget exactly, and the study records which rule it ran by.
    assert load(url, "seed_cnn-digits").user_attrs["min_train_steps"] == MIN_TRAIN_STEPS
    args = ["--space", "seed_cnn", "--epochs", "0.5", "--dataset", "digits"]
    assert settings_from(parse_args(args)).min_train_steps == 0


@pytest.mark.slow  # a real search in a subprocess
def test_two_workers_reach_exactly_n_trials(tmp_path: Path) -> None:
    # One fixed design: both workers finish their trials almost together, which is when a
    # count taken in two reads of the study missed a trial and asked for one too many.
    url = f"sqlite:///{tmp_path}/j.db"
    args = ("--dataset", "digits", "--epochs", "0.5", "--space", "seed_cnn", "--jobs", "2")
    done = search("--trials", "12", "--storage", url, "--study-name", "j", *args)
    assert done.returncode == 0, done.stderr
    study = load(url, "j")
    assert len(study.trials) == finished_count(study) == 12


def start_and_stop_mid_trial(
    tmp_path: Path, name: str, sig: int, jobs: int = 1, whole_group: bool = True
) -> tuple[list[str], int, int]:
    """Start a search of ``jobs + 2`` trials, send ``sig`` once a trial is complete and
    every worker is running one: to its whole process group (as Ctrl-C in a terminal), or
    only to the search itself (as ``kill PID``). Returns the search's arguments, exit
    status and process id (also its process group's id)."""
    url = f"sqlite:///{tmp_path}/{name}.db"
    args = [
        "--trials",
        str(jobs + 2),
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--storage",
        url,
        "--study-name",
        name,
        "--space",
        "seed_cnn",
        "--jobs",
        str(jobs),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.search", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # A shell ignores SIGINT in the jobs it runs in the background, and the search
        # would inherit that (Python installs no Ctrl-C handler then): restore it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    db = tmp_path / f"{name}.db"
    deadline = time.monotonic() + 300
    while True:
        time.sleep(0.5)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"the search ended or stalled before it could be stopped: {proc.returncode}"
            )
        if not db.exists():
            continue
        try:
            with sqlite3.connect(db, timeout=30) as con:
                states = [s for (s,) in con.execute("SELECT state FROM trials")]
        except sqlite3.OperationalError:
            continue
        # With two trials to go after the first, a poll that a loaded machine delays by
        # a whole trial still stops the search mid-trial, not after its end.
        if states.count("COMPLETE") >= 1 and states.count("RUNNING") == jobs:
            break
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    return args, proc.wait(timeout=120), proc.pid


# kill -9 then a rerun, on every accepted storage: tests/search/test_faults.py.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.slow  # a real search in a subprocess
def test_stopped_mid_trial_then_rerun_finishes_without_loss(tmp_path: Path, sig: int) -> None:
    name = "k"
    args, code, _ = start_and_stop_mid_trial(tmp_path, name, sig)
    url = args[args.index("--storage") + 1]
    before = load(url, name)
    done_before = {t.number: t.values for t in before.trials if t.state == TrialState.COMPLETE}
    assert done_before
    assert code == 128 + sig  # stopped cleanly: the running trial is marked, queued again
    assert [t.state for t in before.trials].count(TrialState.WAITING) == 1

    rerun = search(*args)
    assert rerun.returncode == 0, rerun.stderr
    after = load(url, name)
    assert finished_count(after) == 3
    for number, values in done_before.items():  # nothing lost
        assert after.trials[number].values == values
    stopped = [t for t in after.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1  # the stopped trial is marked failed ...
    retries = [t for t in after.trials if t.system_attrs.get("failed_trial") == stopped[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE  # ... and rerun once
    assert len(after.trials) == 4


@pytest.mark.slow  # a real search in a subprocess
def test_kill_pid_stops_every_worker_and_queues_their_trials(tmp_path: Path) -> None:
    # `kill PID` reaches the parent only: it must stop its workers too, not orphan them.
    name = "w"
    args, code, pid = start_and_stop_mid_trial(
        tmp_path, name, signal.SIGTERM, jobs=2, whole_group=False
    )
    assert code == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30  # multiprocessing's resource tracker exits last
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("processes of the stopped search are still running")
    url = args[args.index("--storage") + 1]
    before = load(url, name)
    states = [t.state for t in before.trials]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.WAITING) == states.count(TrialState.FAIL) >= 1
    done_before = {t.number: t.values for t in before.trials if t.state == TrialState.COMPLETE}

    rerun = search(*args)
    assert rerun.returncode == 0, rerun.stderr
    after = load(url, name)
    assert finished_count(after) == 4
    assert not {TrialState.RUNNING, TrialState.WAITING} & {t.state for t in after.trials}
    assert len(after.trials) == 4 + states.count(TrialState.FAIL)  # retries, no surplus
    for number, values in done_before.items():
        assert after.trials[number].values == values


def test_a_stop_swallowed_where_it_was_raised_still_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raised while a __del__ runs, a Stopped is printed and dropped by Python, and the
    # signals after it are ignored: the worker must still stop before its next trial.
    url = f"sqlite:///{tmp_path}/a.db"
    common = ["--dataset", "digits", "--epochs", "0.1", "--storage", url, "--study-name", "a"]
    s = settings_from(parse_args(["--trials", "2", *common]))

    class StopsWhenCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here: its Stopped ends __del__, unseen

    def trial_then_stop(*args: Any, **kwargs: Any) -> None:
        run_trial(*args, **kwargs)
        StopsWhenCollected()

    swallowed: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    monkeypatch.setattr(nas.search._runner, "run_trial", trial_then_stop)
    stops = StopSignals()
    stops.install()
    try:
        with pytest.raises(Stopped):
            run_worker(s, stops=stops)
    finally:
        stops.restore()
    assert swallowed == [Stopped]
    assert [t.state for t in load(url, "a").trials] == [TrialState.COMPLETE]


def test_a_stop_while_asking_marks_the_new_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Asked for, a trial is RUNNING before its heartbeat starts. A stop arriving then
    # must still mark it and queue it again: left RUNNING with no heartbeat to go stale,
    # it would never be failed, and a rerun would wait on it forever.
    url = f"sqlite:///{tmp_path}/a.db"
    common = ["--dataset", "digits", "--epochs", "0.1", "--storage", url, "--study-name", "a"]
    s = settings_from(parse_args(["--trials", "2", *common]))
    ask = optuna.Study.ask

    def ask_then_stop(self: optuna.Study) -> optuna.Trial:
        trial = ask(self)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler runs here
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_stop)
    stops = StopSignals()
    stops.install()
    try:
        with pytest.raises(Stopped):
            run_worker(s, stops=stops)
    finally:
        stops.restore()
    trials = load(url, "a").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["reason"] == "interrupted (SIGTERM); queued again"
    monkeypatch.undo()
    run_worker(s)  # the rerun finishes without waiting on anything
    after = load(url, "a")
    assert finished_count(after) == 2
    retry = next(t for t in after.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["reason"] is None  # the failed attempt's reason is not kept


def test_locks_make_a_missing_lock_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Else every trial fails on opening its lock file.
    folder = tmp_path / "not" / "there"
    monkeypatch.setenv("NAS_LOCK_DIR", str(folder))
    with measurement_lock():
        pass
    with training_lock():
        pass
    assert folder.is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--space", "nope"), "unknown space 'nope'"),
        (("--dataset", "imagenet"), "imagenet"),
        (("--objectives", "speed"), "unknown --objectives 'speed'"),
        (("--storage", "notaurl"), "malformed storage URL 'notaurl'"),
        (("--threads", "0"), "--threads must be at least 1, got 0"),
        (("--storage", "postgresql://"), "storage"),
        # Storages whose promises a search cannot keep (tests/search/test_storage.py).
        (("--storage", "journal:x.log"), "no heartbeat"),
        (("--storage", "mysql://me@dbhost/nas"), "no lock across machines"),
        (("--storage", "mysql+pymysql://me@dbhost/nas"), "no lock across machines"),
        (("--storage", "sqlite:///:memory:"), "in-memory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    env_cwd = tmp_path
    result = subprocess.run(
        [sys.executable, "-m", "nas.search", "--trials", "1", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=env_cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def raising_suggest(trial: optuna.Trial, task):  # type: ignore[no-untyped-def]
    raise RuntimeError("space exploded")


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_data("digits")


def make_objective(digits, suggest, **changes) -> Objective:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=1, report_every=0.5, **changes.pop("train", {}))
    return Objective(
        suggest=suggest,
        data=digits,
        objectives=("accuracy", "latency"),
        train_config=config,
        limits=changes.pop("limits", Limits()),
    )


def test_failures_are_recorded_with_reasons_and_the_study_goes_on(digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A file, not :memory: — the heartbeat thread opens its own connection.
    storage = make_storage(f"sqlite:///{tmp_path}/f.db")
    study = optuna.create_study(
        storage=storage, directions=["maximize", "minimize"], pruner=make_pruner("pareto", True)
    )
    seed_cnn = load_space("seed_cnn").suggest
    cases = [
        (make_objective(digits, raising_suggest), TrialState.FAIL, "RuntimeError: space exploded"),
        (make_objective(digits, seed_cnn, train={"lr": 1e12}), TrialState.FAIL, "NaN"),
        (
            make_objective(digits, seed_cnn, limits=Limits(max_params=1000)),
            TrialState.PRUNED,
            "over budget, not trained: params",
        ),
        (make_objective(digits, seed_cnn), TrialState.COMPLETE, None),
    ]
    for objective, state, reason in cases:
        run_trial(study, study.ask(), objective)
        t = study.trials[-1]
        assert t.state == state, (t.state, t.user_attrs.get("reason"))
        if reason:
            assert reason in t.user_attrs["reason"]
    over = study.trials[2]
    assert "epochs_done" not in over.user_attrs  # never trained
    assert "latency_ms" not in over.user_attrs  # nor timed: params are known before
    assert finished_count(study) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--latency-batch", "0"), "--latency-batch must be at least 1, got 0"),
        (("--max-latency-ms", "-1"), "--max-latency-ms must be a finite number above 0, got -1"),
        (("--max-params", "-5"), "--max-params must be a finite number above 0, got -5"),
        (("--max-flops", "-1"), "--max-flops must be a finite number above 0 (or 0: no limit)"),
        (
            ("--max-train-seconds", "nan"),
            "--max-train-seconds must be a finite number above 0 (or 0: no limit)",
        ),
        (("--lr-factor", "0.5"), "--lr-factor must be a finite number of at least 1, got 0.5"),
        (("--lr-factor", "nan"), "--lr-factor must be a finite number of at least 1, got nan"),
        (("--promotions", "-1"), "--promotions must be 0 or more, got -1"),
        (("--epochs", "inf"), "--epochs must be a finite number above 0, got inf"),
        (("--epochs", "nan"), "--epochs must be a finite number above 0, got nan"),
        (("--timeout", "0"), "--timeout must be a finite number above 0, got 0"),
        (("--trial-timeout", "-1"), "--trial-timeout must be a finite number above 0 (or 0"),
        (("--seed", "-1"), "--seed must be between 0 and 2**32 - 1, got -1"),
        (("--latency-device", "gpu"), "--latency-device: unknown device 'gpu'"),
        (("--latency-device", "meta"), "--latency-device: unsupported device 'meta'"),
        (("--study-name", " "), "--study-name must not be empty"),
        (("--tokenizer", "ngrams"), "--tokenizer applies to text datasets only; 'digits' is"),
        (("--tokenizer", "chars"), "unknown --tokenizer 'chars'; choose one of words, bytes"),
    ],
)
def test_flags_that_cannot_work_are_refused_before_anything_is_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    from nas.search.cli import main

    monkeypatch.chdir(tmp_path)  # the default storage would be made here
    assert main(["--trials", "1", "--dataset", "digits", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
    assert list(tmp_path.iterdir()) == []


def test_a_resume_with_other_settings_is_refused_or_recorded(tmp_path: Path) -> None:
    from nas.search import StudyError, build_study

    url = f"sqlite:///{tmp_path}/r.db"
    common = ["--dataset", "digits", "--storage", url, "--study-name", "r"]
    first = build_study(settings_from(parse_args([*common, "--epochs", "0.5"])), worker=False)
    attrs = first.user_attrs
    assert (attrs["epochs"], attrs["latency_batch"], attrs["seed"]) == (0.5, 1, 0)
    assert attrs["attention_budget_mb"] == 16.0 and attrs["max_params"] is None
    other = [*common, "--epochs", "0.3", "--latency-batch", "8"]
    with pytest.raises(StudyError, match=r"epochs 0\.5 \(this run: 0\.3\); latency_batch 1 "):
        build_study(settings_from(parse_args(other)), worker=False)
    assert load(url, "r").user_attrs["epochs"] == 0.5  # nothing changed
    mixed = build_study(
        settings_from(parse_args([*other, "--allow-changed-settings"])), worker=False
    )
    assert mixed.user_attrs["epochs"] == 0.3
    assert mixed.user_attrs["settings_changes"] == [
        {"setting": "epochs", "was": 0.5, "now": 0.3, "after": 0},
        {"setting": "latency_batch", "was": 1, "now": 8, "after": 0},
    ]


def test_a_study_recorded_before_a_setting_existed_had_its_old_value(tmp_path: Path) -> None:
    from nas.search import StudyError, build_study

    url = f"sqlite:///{tmp_path}/old.db"
    common = ["--dataset", "digits", "--storage", url, "--study-name", "old"]
    made = build_study(settings_from(parse_args(common)), worker=False)
    assert made.user_attrs["latency_form"] == "batchnorm folded"
    # As a study made before latency was timed with BatchNorm folded: no such attr.
    db = sqlite3.connect(f"{tmp_path}/old.db")
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'latency_form'")
    db.close()
    with pytest.raises(StudyError, match=r"latency_form 'batchnorm unfolded' \(this run: 'bat"):
        build_study(settings_from(parse_args(common)), worker=False)
    assert "latency_form" not in load(url, "old").user_attrs  # nothing recorded
    allowed = parse_args([*common, "--allow-changed-settings"])
    mixed = build_study(settings_from(allowed), worker=False)
    change = {"setting": "latency_form", "was": "batchnorm unfolded", "now": "batchnorm folded"}
    assert mixed.user_attrs["settings_changes"] == [change | {"after": 0}]
    assert mixed.user_attrs["latency_form"] == "batchnorm folded"


def test_workers_on_one_study_draw_different_trials_and_enqueue_baselines_once(
    tmp_path: Path,
) -> None:
    # Two workers (on two machines, each its worker 0) starting a new study together.
    from nas.model import Task
    from nas.search import build_study

    url = f"sqlite:///{tmp_path}/w.db"
    args = ["--dataset", "digits", "--storage", url, "--study-name", "w"]
    s = settings_from(parse_args(args))
    s.enqueue_baselines = True
    first, second = build_study(s), build_study(s)
    waiting = [t for t in first.get_trials() if t.state == TrialState.WAITING]
    baselines = [t.user_attrs["baseline"] for t in waiting if "baseline" in t.user_attrs]
    assert sorted(baselines) == ["resnet", "seed_cnn"]
    # The space's starting point, queued once, after the baselines.
    points = load_space("attention_cnn").STARTING_POINTS
    queued = waiting[len(baselines) :]
    assert [t.system_attrs["fixed_params"] for t in queued] == list(points)
    assert list(s.starting_points) == list(points)
    assert all(t.user_attrs == {"starting_point": True} for t in queued)
    assert settings_from(parse_args([*args, "--no-starting-points"])).starting_points == ()
    for _ in waiting:  # take the queued trials out of the way
        first.tell(first.ask(), state=TrialState.FAIL)
    suggest = load_space("attention_cnn").suggest
    task = Task("digits", "image", 1, 8, 8, 10)
    a, b = first.ask(), second.ask()
    assert suggest(a, task) != suggest(b, task) and a.params != b.params
    assert first.user_attrs["workers_started"] == 2


def test_an_enqueued_baseline_names_only_a_built_in_space(digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A baseline attr read from the study is a stored string: a path in it is never run.
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\ndef suggest(trial, task): pass\n")
    storage = make_storage(f"sqlite:///{tmp_path}/b.db")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    study.enqueue_trial({}, user_attrs={"baseline": str(evil)})
    run_trial(study, study.ask(), make_objective(digits, load_space("seed_cnn").suggest))
    t = study.trials[0]
    assert t.state == TrialState.FAIL and "built-in" in t.user_attrs["reason"]
    assert not marker.exists()


def test_a_trial_over_its_time_limit_is_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    space = tmp_path / "slow_first.py"
    space.write_text(
        "import time\n"
        "from search_spaces import seed_cnn\n"
        "def suggest(trial, task):\n"
        "    if trial.number == 0:\n"
        "        time.sleep(600)  # a trial that hangs\n"
        "    return seed_cnn.suggest(trial, task)\n"
    )
    url = f"sqlite:///{tmp_path}/t.db"
    args = ["--trials", "2", "--dataset", "digits", "--epochs", "0.2", "--space", str(space)]
    args += ["--storage", url, "--study-name", "t", "--trial-timeout", "10"]
    started = time.monotonic()
    run_worker(settings_from(parse_args(args)))
    assert time.monotonic() - started < 60
    trials = load(url, "t").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], [
        t.user_attrs.get("reason") for t in trials
    ]
    assert "ran longer than 10 s (--trial-timeout)" in trials[0].user_attrs["reason"]


def test_the_default_trial_time_limit_follows_the_study() -> None:
    import datetime

    from nas.search._runner import trial_time_limit
    from nas.search._settings import DEFAULT_TRIAL_TIMEOUT, MIN_TRIAL_TIMEOUT

    def done(seconds: float) -> optuna.trial.FrozenTrial:
        trial = optuna.trial.create_trial(values=[0.5, 1.0], state=TrialState.COMPLETE)
        trial.datetime_start = datetime.datetime(2026, 1, 1)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=seconds)
        return trial

    assert trial_time_limit(5, []) == 5 and trial_time_limit(0, []) is None
    assert trial_time_limit(None, []) == DEFAULT_TRIAL_TIMEOUT
    assert trial_time_limit(None, [done(10)] * 3) == MIN_TRIAL_TIMEOUT
    assert trial_time_limit(None, [done(100), done(200), done(900)]) == 2000


@pytest.mark.slow  # a real search in a subprocess
def test_workers_that_fail_make_the_search_fail_with_their_error(tmp_path: Path) -> None:
    # The parent checks the dataset's name; each worker loads its files, and finds none.
    url = f"sqlite:///{tmp_path}/e.db"
    done = search(
        "--trials", "2", "--jobs", "2", "--dataset", "fashion_mnist", "--data-dir",
        str(tmp_path), "--storage", url, "--study-name", "e",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error: worker " in done.stderr and "fashion_mnist: files not found" in done.stderr


def test_waiting_for_the_machine_does_not_count_against_the_time_limit(tmp_path: Path) -> None:
    # Another worker trains for longer than this trial's limit: measuring waits for it,
    # and that wait is not the trial's own time.
    hold = "import sys\nfrom nas.search import training_lock\nwith training_lock():\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + "    print(1, flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert holder.stdout.readline() == "1\n"
    threading.Timer(15, holder.stdin.close).start()
    url = f"sqlite:///{tmp_path}/u.db"
    args = ["--trials", "1", "--dataset", "digits", "--epochs", "0.2", "--space", "seed_cnn"]
    args += ["--storage", url, "--study-name", "u", "--trial-timeout", "10"]
    started = time.monotonic()
    run_worker(settings_from(parse_args(args)))
    holder.wait(timeout=60)
    holder.stdout.close()
    assert time.monotonic() - started > 15
    [trial] = load(url, "u").trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("reason")


def test_a_failed_heartbeat_write_does_not_stop_the_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Optuna's heartbeat thread ends at its first failed write ("database is locked"):
    # the live trial would then go stale and be failed under its worker.
    from nas.search import HEARTBEAT_SECONDS
    from nas.search._optuna import heartbeat

    storage = make_storage(f"sqlite:///{tmp_path}/h.db")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    trial = study.ask()
    real = storage.record_heartbeat  # type: ignore[attr-defined]
    calls: list[int] = []

    def flaky(trial_id: int) -> None:
        calls.append(trial_id)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        real(trial_id)

    monkeypatch.setattr(storage, "record_heartbeat", flaky)
    with pytest.warns(UserWarning, match="database is locked"), heartbeat(study, trial):
        time.sleep(HEARTBEAT_SECONDS + 1)
    assert len(calls) == 2


def test_the_result_of_a_trial_failed_as_stale_meanwhile_is_dropped(tmp_path: Path) -> None:
    # A worker paused past the grace finds its trial failed (and queued again) by another.
    storage = make_storage(f"sqlite:///{tmp_path}/d.db")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    other = optuna.load_study(study_name=study.study_name, storage=storage)

    def failed_by_another_worker(trial: optuna.Trial) -> tuple[float, float]:
        other.tell(trial.number, state=TrialState.FAIL)
        return 0.5, 1.0

    with pytest.warns(UserWarning, match="trial 0 was failed as stale while it ran"):
        run_trial(study, study.ask(), failed_by_another_worker)  # type: ignore[arg-type]
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_the_front_table_shows_stored_values_as_text_on_one_line() -> None:
    from nas.search import front_table

    study = optuna.create_study(directions=["maximize", "minimize"])
    attrs = {
        "latency_ms": "=1+1",
        "params": float("nan"),
        "flops": [1],
        "baseline": 7,
        "summary": "stem16\n99  0.9999  fake row\x1b[2J",
    }
    study.add_trial(
        optuna.trial.create_trial(values=[0.5, 1.0], user_attrs=attrs, state=TrialState.COMPLETE)
    )
    table = front_table(study)
    lines = table.splitlines()
    assert len(lines) == 2, table
    assert lines[1].split()[:5] == ["0", "0.5000", "n/a", "n/a", "n/a"]
    assert "[7] stem16\\n99" in lines[1] and "\\x1b[2J" in lines[1] and "\x1b" not in table


# ------------------------------------------------------------------------ study files

STUDIES = ROOT / "studies"


def test_the_default_study_file_is_the_default_search() -> None:
    # studies/fashion_mnist.toml writes the defaults out: it runs what no flag runs.
    written = settings_from(parse_args(["--config", str(STUDIES / "fashion_mnist.toml")]))
    assert written == settings_from(parse_args([]))


def test_a_study_file_runs_and_the_flags_given_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.search.cli import main

    monkeypatch.chdir(tmp_path)
    config = str(STUDIES / "digits.toml")
    url = f"sqlite:///{tmp_path}/c.db"
    args = parse_args(["--trials", "1", "--config", config])  # --config anywhere
    assert (args.dataset, args.epochs, args.trials, args.seed) == ("digits", 0.5, 1, 0)
    assert main(["--config", config, "--trials", "1", "--epochs", "0.1", "--storage", url]) == 0
    assert "1/1 trials (" in capsys.readouterr().err
    study = load(url, "attention_cnn-digits")  # the file's study name
    assert finished_count(study) == 1
    assert (study.user_attrs["dataset"], study.user_attrs["epochs"]) == ("digits", 0.1)
    assert not (tmp_path / "studies").exists()  # the file's storage was overridden


def test_a_study_file_takes_flags_with_dashes_or_underscores(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('study_name = "u"\nmax-flops = 0\nenqueue_baselines = true\nepochs = 1\n')
    args = parse_args(["--config", str(path)])
    assert (args.study_name, args.enqueue_baselines, args.max_flops, args.epochs) == (
        "u",
        True,
        0.0,
        1.0,
    )
    assert type(args.epochs) is float  # as --epochs 1 gives it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trails = 3\n", "unknown key 'trails' (= 3)"),
        ("debug = true\n", "unknown key 'debug' (= True)"),
        ('trials = "many"\n', "trials = 'many' is not an integer"),
        ("trials = 2.5\n", "trials = 2.5 is not an integer"),
        ("epochs = true\n", "epochs = True is not a number"),
        ("enqueue-baselines = 1\n", "enqueue-baselines = 1 is not true or false"),
        ("seed = [1]\n", "seed = [1] is not an integer"),
        ('sampler = "bogus"\n', "sampler = 'bogus' is not one of tpe, nsga2, random, gp"),
        ('study-name = "a"\nstudy_name = "b"\n', "study-name is given twice"),
        ("trials = \n", "is not valid TOML"),
    ],
)
def test_a_bad_study_file_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    from nas.search.cli import main

    monkeypatch.chdir(tmp_path)  # the default storage would be made here
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["--config", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: study file {str(path)!r}") and message in err, err
    assert err.strip().count("\n") == 0, err
    assert list(tmp_path.iterdir()) == [path]


def test_a_missing_study_file_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.search.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--config", "nope.toml"]) == 2
    err = capsys.readouterr().err
    assert err == "error: study file 'nope.toml': No such file or directory\n", err
    assert list(tmp_path.iterdir()) == []
