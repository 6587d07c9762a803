"""nas.search._pruning on real Optuna studies (in memory and SQLite): reporting and pruning in
multi-objective studies, the Pareto rule, delegation in single-objective ones."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search import (
    LATENCY_ATTR,
    ParetoPruner,
    PrunedTrialsSampler,
    make_pruner,
    promoted,
    report,
    should_prune,
)

MO: list[StudyDirection] = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]  # acc, ms


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return None if request.param == "memory" else f"sqlite:///{tmp_path / 'study.db'}"


def mo_study(
    pruner: optuna.pruners.BasePruner | None = None, storage: str | None = None
) -> optuna.Study:
    return optuna.create_study(directions=MO, pruner=pruner or ParetoPruner(), storage=storage)


def add_peer(
    study: optuna.Study,
    latency: float | None,
    curve: Sequence[float],
    state: TrialState = TrialState.COMPLETE,
    steps: Sequence[int] | None = None,
) -> None:
    """A finished trial with this latency and learning curve (step i -> curve[i])."""
    steps = range(len(curve)) if steps is None else steps
    values = [curve[-1], latency or 1.0] if state == TrialState.COMPLETE else None
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            values=values,
            intermediate_values=dict(zip(steps, curve, strict=True)),
            user_attrs={} if latency is None else {LATENCY_ATTR: latency},
        )
    )


def judge(
    study: optuna.Study,
    latency: float | None,
    curve: Sequence[float],
    steps: Sequence[int] | None = None,
) -> list[bool]:
    """Run a new trial through report/should_prune at each step; the decisions."""
    trial = study.ask()
    if latency is not None:
        trial.set_user_attr(LATENCY_ATTR, latency)
    steps = range(len(curve)) if steps is None else steps
    decisions = []
    for step, value in zip(steps, curve, strict=True):
        report(trial, step, value)
        decisions.append(should_prune(trial))
    study.tell(trial, state=TrialState.PRUNED)
    return decisions


# --- report -------------------------------------------------------------------------------


def test_report_stores_values_in_a_multi_objective_study(storage: str | None) -> None:
    study = mo_study(storage=storage)
    trial = study.ask()
    report(trial, 0, 0.5)
    report(trial, 3, 0.75)
    study.tell(trial, [0.8, 2.0])

    reloaded = (
        study
        if storage is None
        else optuna.load_study(study_name=study.study_name, storage=storage)
    )
    assert reloaded.trials[0].intermediate_values == {0: 0.5, 3: 0.75}
    assert reloaded.trials[0].values == [0.8, 2.0]


def test_report_ignores_a_repeated_step_like_optuna() -> None:
    study = mo_study()
    trial = study.ask()
    report(trial, 1, 0.5)
    with pytest.warns(UserWarning, match="already reported"):
        report(trial, 1, 0.9)
    assert study.trials[0].intermediate_values == {1: 0.5}


def test_report_converts_and_checks_like_optuna() -> None:
    study = mo_study()
    trial = study.ask()
    report(trial, 2, 1)  # an int value is float-like; numpy scalars too
    assert study.trials[0].intermediate_values == {2: 1.0}
    assert isinstance(study.trials[0].intermediate_values[2], float)
    with pytest.raises(TypeError, match="value"):
        report(trial, 3, "high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step"):
        report(trial, "three", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        report(trial, -1, 0.5)
    report(trial, 4.0, 0.5)  # type: ignore[arg-type]  # an integral float is an int
    assert 4 in study.trials[0].intermediate_values


@pytest.mark.parametrize("directions", [MO, [StudyDirection.MAXIMIZE]])
def test_report_refuses_fractional_steps(directions: list[StudyDirection]) -> None:
    # Epoch rungs 0.25, 0.5, ... would all truncate to step 0 and be dropped as repeats.
    trial = optuna.create_study(directions=directions).ask()
    with pytest.raises(TypeError, match="integer"):
        report(trial, 0.25, 0.5)  # type: ignore[arg-type]


def test_report_in_single_objective_study_is_trial_report() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    report(trial, 0, 0.4)
    with pytest.warns(UserWarning, match="already reported"):
        report(trial, 0, 0.6)
    assert study.trials[0].intermediate_values == {0: 0.4}


def test_fixed_trial_neither_reports_nor_prunes() -> None:
    trial = optuna.trial.FixedTrial({})
    report(trial, 0, 0.5)
    assert should_prune(trial) is False


# --- should_prune: delegation -----------------------------------------------------------------


class SpyPruner(optuna.pruners.BasePruner):
    """Records the FrozenTrial it is asked about; answers ``answer``."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.seen: list[FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.seen.append(trial)
        return self.answer


@pytest.mark.parametrize("answer", [True, False])
def test_should_prune_asks_the_study_pruner_with_the_current_trial(
    storage: str | None, answer: bool
) -> None:
    spy = SpyPruner(answer)
    study = mo_study(spy, storage)
    trial = study.ask()
    trial.set_user_attr(LATENCY_ATTR, 3.0)
    report(trial, 0, 0.2)
    report(trial, 1, 0.3)
    assert should_prune(trial) is answer
    seen = spy.seen[-1]
    assert seen.number == trial.number
    assert seen.intermediate_values == {0: 0.2, 1: 0.3}
    assert seen.user_attrs[LATENCY_ATTR] == 3.0


def test_single_objective_delegates_to_optunas_pruner() -> None:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for curve in ([0.5, 0.6], [0.6, 0.7]):
        done = study.ask()
        for step, value in enumerate(curve):
            done.report(value, step)
        study.tell(done, curve[-1])
    trial = study.ask()
    report(trial, 0, 0.1)
    assert should_prune(trial) is True  # a plain bool, where Optuna answers np.True_
    assert trial.should_prune()
    good = study.ask()
    report(good, 0, 0.9)
    assert should_prune(good) is False


def _patient_median() -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(), patience=1)


@pytest.mark.parametrize(
    "make",
    [optuna.pruners.MedianPruner, optuna.pruners.HyperbandPruner, _patient_median],
)
def test_multi_objective_refuses_optuna_ranking_pruners_at_once(
    make: Callable[[], optuna.pruners.BasePruner],
) -> None:
    # MedianPruner alone would say "keep" until 5 trials finished, then raise mid-search.
    study = mo_study(make())
    trial = study.ask()
    report(trial, 0, 0.1)
    with pytest.raises(ValueError, match=r"multi-objective.*'pareto'"):
        should_prune(trial)


def test_multi_objective_accepts_pruners_that_need_no_direction() -> None:
    study = mo_study(optuna.pruners.ThresholdPruner(lower=0.2))
    trial = study.ask()
    report(trial, 0, 0.1)
    assert should_prune(trial) is True


# --- ParetoPruner: the rule ---------------------------------------------------------------------


def test_slow_trial_with_a_worse_curve_than_faster_peers_is_pruned(storage: str | None) -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4), storage)
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.5, 0.6, 0.7])
    assert judge(study, 10.0, [0.3]) == [True]


def test_slow_trial_that_beats_faster_peers_is_kept() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.5, 0.6, 0.7])
    assert judge(study, 10.0, [0.55, 0.65, 0.75]) == [False, False, False]


def test_fast_trial_is_not_pruned_by_slower_trials_better_curves(storage: str | None) -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4), storage)
    for latency in (5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
        add_peer(study, latency, [0.8, 0.9, 0.95])
    # Faster than every other trial: no peers, on the front by latency alone.
    assert judge(study, 1.0, [0.1, 0.2, 0.3]) == [False, False, False]
    # The same curve at a latency with enough faster, better peers is pruned at once.
    assert judge(study, 20.0, [0.1, 0.2, 0.3]) == [True, True, True]


def test_only_peers_at_least_as_fast_judge() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0):  # faster, weak
        add_peer(study, latency, [0.2])
    for latency in (6.0, 7.0, 8.0, 9.0):  # slower, strong: not peers
        add_peer(study, latency, [0.9])
    assert judge(study, 5.0, [0.3]) == [False]
    add_peer(study, 5.0, [0.9])  # as fast (equal latency) and better: a peer
    for latency in (4.5, 4.6):
        add_peer(study, latency, [0.9])
    # 7 peers, 3 better: ceil(8 / 3) = 3 -> pruned.
    assert judge(study, 5.0, [0.3]) == [True]


def test_peers_far_faster_do_not_judge() -> None:
    """An MLP's early curve is ahead of an attention CNN's and behind it at the end: trials
    over peer_band times faster are not peers."""
    study = mo_study(ParetoPruner(eta=3, min_peers=2, peer_band=10))
    for latency in (0.1, 0.15, 0.2):  # over 10x faster than 5 ms, far better at the rung
        add_peer(study, latency, [0.77])
    assert judge(study, 5.0, [0.70]) == [False]
    add_peer(study, 0.5, [0.77])  # 10x faster: inside the band
    add_peer(study, 3.0, [0.75])
    assert judge(study, 5.0, [0.70]) == [True]  # 2 peers, 2 better: ceil(3 / 3) = 1
    every = mo_study(ParetoPruner(eta=3, min_peers=2, peer_band=math.inf))
    for latency in (0.1, 0.15, 0.2):
        add_peer(every, latency, [0.77])
    assert judge(every, 5.0, [0.70]) == [True]


@pytest.mark.parametrize(
    ("n_better", "pruned"), [(0, False), (1, False), (2, False), (3, True), (8, True)]
)
def test_keeps_the_top_one_over_eta_of_the_peer_group(n_better: int, pruned: bool) -> None:
    # 8 peers + the trial = 9; eta 3 keeps the top ceil(9 / 3) = 3: up to 2 better is kept.
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for i in range(8):
        add_peer(study, 1.0 + i, [0.9 if i < n_better else 0.1])
    assert judge(study, 10.0, [0.5]) == [pruned]


def test_ties_do_not_count_as_better() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        add_peer(study, latency, [0.5])
    assert judge(study, 10.0, [0.5]) == [False]


def test_larger_eta_prunes_harder_and_eta_one_never_prunes() -> None:
    # 6 peers + the trial = 7; 2 peers better.
    def decide(eta: float) -> bool:
        study = mo_study(ParetoPruner(eta=eta, min_peers=4))
        for i in range(6):
            add_peer(study, 1.0 + i, [0.9 if i < 2 else 0.1])
        return judge(study, 10.0, [0.5])[0]

    assert decide(1.0) is False  # keep ceil(7 / 1) = 7
    assert decide(3.0) is False  # keep ceil(7 / 3) = 3
    assert decide(4.0) is True  # keep ceil(7 / 4) = 2
    assert decide(100.0) is True  # keep 1: Pareto dominance at the rung


def test_not_pruned_before_min_peers() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0):
        add_peer(study, latency, [0.9])
    assert judge(study, 10.0, [0.1]) == [False]
    add_peer(study, 4.0, [0.9])
    assert judge(study, 10.0, [0.1]) == [True]


def test_not_pruned_during_warm_up() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4, n_warmup_steps=2))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.9, 0.9, 0.9, 0.9])
    assert judge(study, 10.0, [0.1, 0.1, 0.1, 0.1]) == [False, False, True, True]


def test_warm_up_steps_of_peers_are_not_used_as_a_fallback() -> None:
    # Peers have only warm-up steps, the trial reports later: nothing to judge against.
    study = mo_study(ParetoPruner(eta=3, min_peers=4, n_warmup_steps=2))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.9, 0.9])
    assert judge(study, 10.0, [0.1], steps=[5]) == [False]


def test_nan_is_pruned_at_once_whatever_the_peers() -> None:
    study = mo_study(ParetoPruner(min_peers=4, n_warmup_steps=5))
    assert judge(study, 1.0, [math.nan]) == [True]  # no peers, in warm-up
    assert judge(study, None, [math.nan]) == [True]  # not even a latency


def test_trial_without_latency_is_never_pruned() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.9])
    assert judge(study, None, [0.1]) == [False]
    # An unusable latency (a string, NaN) counts as unmeasured, not as fast or slow.
    trial = study.ask()
    trial.set_user_attr(LATENCY_ATTR, "fast")
    report(trial, 0, 0.1)
    assert should_prune(trial) is False


def test_peers_without_latency_or_failed_or_nan_are_ignored() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for _ in range(4):
        add_peer(study, None, [0.9])  # unmeasured
        add_peer(study, 1.0, [0.9], TrialState.FAIL)  # cut short by a crash
        add_peer(study, 1.0, [math.nan], TrialState.PRUNED)  # diverged
    assert judge(study, 10.0, [0.1]) == [False]


def test_pruned_and_running_peers_count() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0):
        add_peer(study, latency, [0.9], TrialState.PRUNED)
    running = []
    for latency in (3.0, 4.0):
        peer = study.ask()
        peer.set_user_attr(LATENCY_ATTR, latency)
        report(peer, 0, 0.9)
        running.append(peer)
    # 2 pruned + 2 running peers, all better: keep ceil(5 / 3) = 2 -> pruned.
    assert judge(study, 10.0, [0.1]) == [True]
    for peer in running:
        study.tell(peer, [0.9, 1.0])


def test_compares_with_the_nearest_earlier_step_peers_reached() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.4, 0.8], steps=[0, 10])
    # Step 7: peers' latest earlier step is 0 (0.4): better than that is kept...
    assert judge(study, 9.0, [0.5], steps=[7]) == [False]
    # ...worse than that is pruned; step 12 compares with step 10 (0.8).
    assert judge(study, 9.0, [0.3], steps=[7]) == [True]
    assert judge(study, 9.0, [0.7], steps=[12]) == [True]
    assert judge(study, 9.0, [0.85], steps=[12]) == [False]


def test_earlier_step_is_used_only_where_enough_peers_reached_it() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.4], steps=[0])
    add_peer(study, 1.5, [0.4, 0.99], steps=[0, 1])  # one peer alone at step 1
    # At step 1 one peer is not enough: step 0 (six peers at 0.4) judges instead.
    assert judge(study, 9.0, [0.5], steps=[1]) == [False]
    assert judge(study, 9.0, [0.3], steps=[1]) == [True]


def test_minimize_direction_for_a_loss_curve() -> None:
    study = mo_study(ParetoPruner(eta=3, min_peers=4, direction="minimize"))
    for latency in (1.0, 2.0, 3.0, 4.0, 5.0):
        add_peer(study, latency, [0.2])  # low loss
    assert judge(study, 10.0, [0.9]) == [True]
    assert judge(study, 10.0, [0.1]) == [False]


def test_trial_without_reports_is_not_pruned() -> None:
    study = mo_study(ParetoPruner(min_peers=1))
    add_peer(study, 1.0, [0.9])
    trial = study.ask()
    trial.set_user_attr(LATENCY_ATTR, 5.0)
    assert should_prune(trial) is False


# --- promotion --------------------------------------------------------------------------


def promote(study: optuna.Study, latency: float | None, value: float, step: int = 30) -> bool:
    """A new trial that has reached ``step`` with ``value``: is it promoted?"""
    trial = study.ask()
    if latency is not None:
        trial.set_user_attr(LATENCY_ATTR, latency)
    report(trial, step, value)
    decision = promoted(trial)
    study.tell(trial, state=TrialState.PRUNED)  # so that it judges no later trial
    return decision


def test_a_rung_promotes_nothing_before_three_trials_reached_it() -> None:
    study = mo_study()
    assert promote(study, 1.0, 0.80) is False  # alone at the rung
    assert promote(study, 1.0, 0.90) is False  # two: still nothing to rank
    assert promote(study, 1.0, 0.95) is True  # three, and the best of them
    assert promote(study, 1.0, 0.85) is False  # behind two of its three peers


def test_the_rungs_evidence_counts_slower_trials_that_reached_it_and_no_others() -> None:
    study = mo_study()
    add_peer(study, 5.0, [0.99], steps=[30])  # slower: not a peer, but it reached the rung
    add_peer(study, 0.5, [0.6, 0.99], steps=[10, 20])  # stopped before the rung
    add_peer(study, 0.5, [0.99], state=TrialState.FAIL, steps=[30])  # failed: not judged
    assert promote(study, 1.0, 0.5) is False
    add_peer(study, 5.0, [0.99], steps=[30])
    assert promote(study, 1.0, 0.5) is True  # no faster peer at the rung: it leads


@pytest.mark.parametrize(("n_better", "promoted_"), [(0, True), (1, True), (2, False)])
def test_promotes_the_top_third_of_the_peers_at_the_rung(n_better: int, promoted_: bool) -> None:
    study = mo_study()
    for i in range(3):  # 3 peers: ceil(4 / 3) = 2 may be better
        add_peer(study, 0.5, [0.9 if i < n_better else 0.7], steps=[30])
    assert promote(study, 1.0, 0.8) is promoted_


def test_promotion_peers_are_the_faster_trials_that_reached_the_same_rung() -> None:
    study = mo_study()
    add_peer(study, 2.0, [0.95], steps=[30])  # slower: it cannot dominate
    add_peer(study, 0.05, [0.95], steps=[30])  # over 10x faster: not a peer
    add_peer(study, 0.5, [0.6, 0.95], steps=[10, 20])  # faster, but not at this rung
    add_peer(study, 0.5, [0.95], state=TrialState.FAIL, steps=[30])
    assert promote(study, 1.0, 0.8) is True
    running = study.ask()  # a running peer's value at the rung counts
    running.set_user_attr(LATENCY_ATTR, 0.5)
    report(running, 30, 0.95)
    assert promote(study, 1.0, 0.8) is False


def test_single_objective_promotion_ranks_every_trial() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.7):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, intermediate_values={30: value}, user_attrs={LATENCY_ATTR: 9.0}
            )
        )
    assert promote(study, 1.0, 0.8) is False  # slower, yet a peer: only accuracy counts
    mo = mo_study()
    add_peer(mo, 9.0, [0.9], steps=[30])
    add_peer(mo, 9.0, [0.7], steps=[30])
    assert promote(mo, 1.0, 0.8) is True  # there, slower trials cannot dominate it


def test_nan_is_never_promoted_and_no_latency_always_is() -> None:
    study = mo_study()
    for _ in range(2):
        add_peer(study, 0.5, [0.95], steps=[30])
    assert promote(study, 1.0, math.nan) is False
    assert promote(study, None, 0.5) is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eta": 0.5},
        {"eta": math.nan},
        {"eta": math.inf},
        {"min_peers": 0},
        {"min_peers": 2.5},
        {"n_warmup_steps": -1},
        {"peer_band": 0.5},
        {"peer_band": math.nan},
        {"direction": "up"},
    ],
)
def test_pareto_pruner_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ParetoPruner"):
        ParetoPruner(**kwargs)  # type: ignore[arg-type]


# --- end to end: optimize with pruning in a multi-objective study ------------------------------


def final_accuracy(w: int) -> float:
    """Width w: accuracy rises with w, but odd widths learn badly (30 points lower)."""
    return 0.5 + w / 100 - (0.3 if w % 2 else 0.0)


def objective(trial: optuna.Trial) -> tuple[float, float]:
    w = trial.suggest_int("w", 1, 40)
    latency = w / 10  # ms
    trial.set_user_attr(LATENCY_ATTR, latency)
    for step in range(4):
        report(trial, step, final_accuracy(w) * (step + 1) / 4)
        # No pruning after the last rung: it would save nothing and lose the trial.
        if step < 3 and should_prune(trial):
            raise optuna.TrialPruned()
    return final_accuracy(w), latency


def test_optimize_with_tpe_and_pareto_pruning(storage: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=8, multivariate=True, group=True)
    study = optuna.create_study(
        directions=MO,
        sampler=PrunedTrialsSampler(tpe),
        pruner=ParetoPruner(eta=3, min_peers=3),
        storage=storage,
    )
    # SQLite commits every write (about 7 ms each here): fewer trials keep the test fast.
    n_trials = 30 if storage is None else 16
    study.optimize(objective, n_trials=n_trials)

    if storage is not None:
        study = optuna.load_study(study_name=study.study_name, storage=storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    assert len(pruned) + len(complete) == n_trials
    for t in study.trials:
        assert t.intermediate_values, t  # every curve was recorded, pruned or not
    for t in pruned:
        w = t.params["w"]
        assert t.values is None and max(t.intermediate_values) < 3
        # Only bad learners are pruned, and only ones a complete faster trial dominates:
        # pruning never removed a point of the front.
        assert w % 2 == 1
        assert any(c.values[1] <= w / 10 and c.values[0] > final_accuracy(w) for c in complete), w


def test_wrapped_sampler_passes_single_objective_through() -> None:
    base = optuna.samplers.RandomSampler(seed=0)
    sampler = PrunedTrialsSampler(base)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(study.trials) == 3
    assert "RandomSampler" in repr(sampler)
    with pytest.raises(ValueError, match="direction"):
        PrunedTrialsSampler(base, direction="up")  # type: ignore[arg-type]


# --- make_pruner --------------------------------------------------------------------------------


def test_make_pruner_builds_by_name() -> None:
    assert isinstance(make_pruner("pareto", True), ParetoPruner)
    assert isinstance(make_pruner("pareto", False), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("hyperband", False), optuna.pruners.HyperbandPruner)
    median = make_pruner("median", False, n_warmup_steps=2)
    assert isinstance(median, optuna.pruners.MedianPruner)
    pareto = make_pruner("pareto", True, n_warmup_steps=2)
    assert isinstance(pareto, ParetoPruner) and pareto.n_warmup_steps == 2
    for multi in (True, False):
        assert isinstance(make_pruner("none", multi), optuna.pruners.NopPruner)


@pytest.mark.parametrize("name", ["hyperband", "median"])
def test_make_pruner_refuses_optuna_pruners_in_multi_objective_studies(name: str) -> None:
    with pytest.raises(ValueError, match=r"multi-objective.*'pareto'"):
        make_pruner(name, True)


def test_make_pruner_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown pruner 'asha'.*pareto, hyperband"):
        make_pruner("asha", True)


def test_first_judged_step_is_after_32_optimiser_steps() -> None:
    from nas.search import MIN_STEPS_JUDGED, STEPS_PER_EPOCH, first_judged_step

    # Fashion-MNIST's 54,000 training images in batches of 128: 32 steps = 0.076 epoch.
    assert first_judged_step(54_000, 128) == 8
    step = first_judged_step(21_905, 128)  # the text demo corpus: 0.187 epoch
    assert step == 19
    assert (step - 1) / STEPS_PER_EPOCH * 21_905 / 128 < MIN_STEPS_JUDGED
    assert step / STEPS_PER_EPOCH * 21_905 / 128 >= MIN_STEPS_JUDGED
