"""python -m nas.search end to end: resume, faults, bad input, a real SQLite storage."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.data import load_data
from nas.objective import Limits, Objective
from nas.pruning import make_pruner
from nas.search import Stopped, _stop_on_signals, parse_args, run_trial, run_worker, settings_from
from nas.space import load_space
from nas.study import finished_count, make_storage, measurement_lock, training_lock
from nas.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


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
        for key in ("arch", "seed", "latency_ms", "latency_iqr_ms", "flops", "params", "device"):
            assert key in a, (t.number, key)
        assert "torch" in a["device"]


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


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "Ctrl-C", "SIGTERM"]
)
def test_stopped_mid_trial_then_rerun_finishes_without_loss(tmp_path: Path, sig: int) -> None:
    name = "k"
    args, code, _ = start_and_stop_mid_trial(tmp_path, name, sig)
    url = args[args.index("--storage") + 1]
    before = load(url, name)
    done_before = {t.number: t.values for t in before.trials if t.state == TrialState.COMPLETE}
    assert done_before
    if sig != signal.SIGKILL:
        assert code == 128 + sig  # stopped cleanly: the running trial is marked, queued again
        assert [t.state for t in before.trials].count(TrialState.WAITING) == 1
    else:
        assert any(t.state == TrialState.RUNNING for t in before.trials)

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
    previous = _stop_on_signals()
    try:
        with pytest.raises(Stopped):
            run_worker(s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    trials = load(url, "a").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["reason"] == "interrupted (SIGTERM); queued again"
    monkeypatch.undo()
    run_worker(s)  # the rerun finishes without waiting on anything
    assert finished_count(load(url, "a")) == 2


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
    assert message in result.stderr
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
    assert finished_count(study) == 4
