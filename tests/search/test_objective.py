"""nas.search's objective on real Optuna trials and the real digits data: what a trial
records, which values it returns, and what a limit stops before training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from nas.data import Data, load_data
from nas.model import ArchSpec, build_model
from nas.search import LR_PARAM, Limits, Objective, counts, load_space
from nas.search._objective import CostLimit
from nas.search._runner import cost_limit, reference_cost
from nas.search._settings import COST_FACTOR
from nas.train import TrainConfig, count_params
from tests.conftest import write_text_corpus

NOP = optuna.pruners.NopPruner()  # pruning has its own tests (test_pruning.py)


@pytest.fixture(scope="module")
def digits() -> Data:
    return load_data("digits")


def objective(digits: Data, objectives: tuple[str, ...], **changes: Any) -> Objective:
    return Objective(
        suggest=load_space("seed_cnn").suggest,
        data=digits,
        objectives=objectives,
        train_config=TrainConfig(epochs=0.5, report_every=0.25),
        limits=changes.pop("limits", Limits()),
        seed=7,
        **changes,
    )


def run_one(study: optuna.Study, obj: Objective) -> tuple[optuna.trial.FrozenTrial, Any]:
    """One trial through the objective, told to the study as the runner tells it."""
    trial = study.ask()
    try:
        values = obj(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return study.trials[trial.number], None
    study.tell(trial, values)
    return study.trials[trial.number], values


def test_a_complete_trial_records_what_it_did_and_returns_its_values(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    study.enqueue_trial({}, user_attrs={"reason": "a failed attempt's reason"})
    t, values = run_one(study, objective(digits, ("accuracy", "latency")))
    assert t.state == TrialState.COMPLETE
    a = t.user_attrs
    assert a["reason"] is None  # a retry does not keep its failed attempt's reason
    spec = ArchSpec.from_dict(a["arch"])
    assert a["summary"] == spec.summary()
    assert a["seed"] == 7 + t.number
    assert a["params"] == count_params(build_model(spec, seed=0)) and a["flops"] > 0
    assert a["latency_ms"] > 0 and a["latency"]["median_ms"] == a["latency_ms"]
    assert 0.4 <= a["epochs_done"] <= 0.5 and a["train_seconds"] > 0
    assert a["train_status"] == "ok" and a["device"]
    accuracy, latency = values
    assert 0.0 <= accuracy <= 1.0 and latency == a["latency_ms"]


@pytest.mark.parametrize("objectives", [("accuracy",), ("accuracy", "params")])
def test_values_follow_the_objectives(digits: Data, objectives: tuple[str, ...]) -> None:
    study = optuna.create_study(directions=["maximize"] * len(objectives), pruner=NOP)
    t, values = run_one(study, objective(digits, objectives))
    if len(objectives) == 1:
        assert isinstance(values, float) and values == t.value
    else:
        assert values[1] == float(t.user_attrs["params"])


def test_over_the_latency_limit_it_is_timed_then_pruned_untrained(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    limits = Limits(max_latency_ms=1e-6)
    t, _ = run_one(study, objective(digits, ("accuracy", "latency"), limits=limits))
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["reason"].startswith("over budget, not trained: latency")
    assert "--max-latency-ms 1e-06" in t.user_attrs["reason"]
    assert t.user_attrs["latency_ms"] > 1e-6
    assert "epochs_done" not in t.user_attrs


def test_over_the_flops_limit_it_is_neither_timed_nor_trained(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    t, _ = run_one(study, objective(digits, ("accuracy", "latency"), limits=Limits(max_flops=10)))
    assert t.state == TrialState.PRUNED
    assert "flops" in t.user_attrs["reason"] and "--max-flops 10" in t.user_attrs["reason"]
    assert t.user_attrs["flops"] > 10
    assert "latency_ms" not in t.user_attrs and "epochs_done" not in t.user_attrs


def test_a_baseline_trial_builds_its_built_in_space(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    study.enqueue_trial({}, user_attrs={"baseline": "resnet"})
    t, _ = run_one(study, objective(digits, ("accuracy", "latency")))
    assert t.state == TrialState.COMPLETE
    expected = load_space("resnet").suggest(optuna.trial.FixedTrial(t.params), digits.task)
    assert ArchSpec.from_dict(t.user_attrs["arch"]) == expected


def test_progress_is_shown_as_the_trial_gets_further(digits: Data) -> None:
    """What the live status line shows, as it happens: the trial started, its latency, its
    cost estimate (a first look, then the estimate), then the rung and the end."""
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    seen: list[tuple[str, ...]] = []

    def show() -> None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        a = running[0].user_attrs
        keys = ("latency_ms", "train_estimate_s", "epochs_done")
        seen.append(tuple(k for k in keys if k in a))

    obj = objective(digits, ("accuracy", "latency"), on_progress=show)
    obj.train_config = TrainConfig(epochs=2, report_every=1)  # a rung at 8 steps, 16 in all
    t, _ = run_one(study, obj)
    assert t.state == TrialState.COMPLETE
    assert seen == [
        (),
        ("latency_ms",),
        ("latency_ms", "train_estimate_s"),
        ("latency_ms", "train_estimate_s"),
        ("latency_ms", "train_estimate_s", "epochs_done"),
        ("latency_ms", "train_estimate_s", "epochs_done"),
    ]
    assert len(t.intermediate_values) == 2


def test_a_candidate_estimated_over_the_cost_limit_is_pruned_before_its_cost(
    digits: Data,
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    obj = objective(digits, ("accuracy", "latency"))
    obj.train_config = TrainConfig(epochs=50, report_every=25)  # 500 steps
    obj.cost_limit = CostLimit(0.01, "a test's limit")
    t, _ = run_one(study, obj)
    assert t.state == TrialState.PRUNED
    reason = t.user_attrs["reason"]
    assert reason.startswith("over budget, not trained: training estimated at")
    assert "over 0.01 s (a test's limit)" in reason
    assert t.user_attrs["train_estimate_s"] > 0.01
    assert "epochs_done" not in t.user_attrs  # stopped before its first rung
    # Without a limit the estimate is recorded and the candidate trains.
    obj.cost_limit, obj.train_config = None, TrainConfig(epochs=1, report_every=0.5)
    t, _ = run_one(study, obj)
    assert t.state == TrialState.COMPLETE and t.user_attrs["train_estimate_s"] > 0


def finished(
    estimate: object, state: TrialState = TrialState.COMPLETE, reason: str | None = None
) -> optuna.trial.FrozenTrial:
    value = 0.5 if state == TrialState.COMPLETE else None
    attrs = {"train_estimate_s": estimate, "reason": reason}
    return optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)


def test_the_default_cost_limit_follows_the_study() -> None:
    assert cost_limit(30.0, []) == CostLimit(30.0, "--max-train-seconds")
    assert cost_limit(0.0, [finished(1.0)] * 5) is None  # 0: no limit
    assert cost_limit(None, [finished(1.0), finished(None)]) is None  # too few to judge by
    trials = [finished(s) for s in (1.0, 4.0, 100.0)] + [finished(2.0, TrialState.PRUNED)]
    trials += [finished("1e9"), finished(float("nan")), finished(None)]  # hostile: ignored
    trials += [finished(None, TrialState.PRUNED)]  # over a limit before training: no estimate
    refused = "over budget, not trained: training estimated at 1e6 s"  # would raise the limit
    trials += [finished(1e6, TrialState.PRUNED, reason=refused)] * 3
    limit = cost_limit(None, trials)
    assert limit is not None and limit.seconds == COST_FACTOR * 3.0
    assert "median estimated training cost of the study's 4 trials, 3.0 s" in limit.source
    # The hand design's cost is a floor: cheap trials (an MLP's second) cannot pull the
    # limit under what a sensible CNN costs; before the study has estimates, no limit.
    floor = cost_limit(None, trials, reference=CostLimit(40.0, "seed_cnn's cost"))
    assert floor is not None and floor.seconds == 40.0 and "seed_cnn's" in floor.source
    assert cost_limit(None, [], reference=CostLimit(40.0, "seed_cnn's cost")) is None
    above = cost_limit(None, trials, reference=CostLimit(5.0, "seed_cnn's cost"))
    assert (
        above is not None and above.seconds == COST_FACTOR * 3.0 and "over seed_cnn" in above.source
    )
    given = cost_limit(30.0, trials, reference=CostLimit(40.0, "seed_cnn's cost"))
    assert given == CostLimit(30.0, "--max-train-seconds")


def test_the_reference_cost_is_the_hand_designs_estimate_from_its_first_steps(
    digits: Data,
) -> None:
    obj = objective(digits, ("accuracy",))
    obj.train_config = TrainConfig(epochs=3, report_every=1)
    reference = reference_cost(obj)
    assert reference is not None and 0 < reference.seconds < 60
    assert reference.source.startswith("seed_cnn's estimated training cost here")


def test_text_searches_measure_their_costs_by_text_cnn(tmp_path: Path) -> None:
    data = load_data(f"csv:{write_text_corpus(tmp_path / 'news.csv')}", seed=0)
    text = Objective(
        suggest=load_space("manet_text").suggest,
        data=data,
        objectives=("accuracy", "latency"),
        train_config=TrainConfig.for_task("text", epochs=20, report_every=5),
        limits=Limits(),
    )
    reference = reference_cost(text)
    assert reference is not None and 0 < reference.seconds < 60
    assert reference.source.startswith("text_cnn's estimated training cost here")


def test_each_trial_searches_its_learning_rate_within_the_factor(digits: Data) -> None:
    """The searched rate is the one training uses (the same trial at two rates ends
    apart); with factor 1, or for a hand design, the recipe's."""
    accuracies = []
    for lr in (0.025, 0.4):  # TrainConfig's 0.1, a factor of 4 either way
        study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
        study.enqueue_trial({LR_PARAM: lr})
        t, values = run_one(study, objective(digits, ("accuracy", "latency"), lr_factor=4.0))
        assert t.params == {LR_PARAM: lr}
        accuracies.append(values[0])
    assert accuracies[0] != accuracies[1]
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    sampled, _ = run_one(study, objective(digits, ("accuracy", "latency"), lr_factor=4.0))
    assert 0.025 <= sampled.params[LR_PARAM] <= 0.4
    fixed, values = run_one(study, objective(digits, ("accuracy", "latency")))
    assert fixed.params == {} and values is not None
    study.enqueue_trial({}, user_attrs={"baseline": "seed_cnn"})
    baseline, _ = run_one(study, objective(digits, ("accuracy", "latency"), lr_factor=4.0))
    assert baseline.params == {}


def test_a_trial_drawn_again_is_pruned_untrained_naming_the_trial_it_repeats(
    digits: Data,
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    obj = objective(digits, ("accuracy", "latency"), lr_factor=4.0)
    lr = optuna.distributions.FloatDistribution(0.025, 0.4, log=True)
    for state, rate in [(TrialState.PRUNED, 0.08), (TrialState.FAIL, 0.09)]:
        study.add_trial(
            optuna.trial.create_trial(
                state=state, params={LR_PARAM: rate}, distributions={LR_PARAM: lr}
            )
        )
    study.enqueue_trial({LR_PARAM: 0.07})
    elsewhere = study.ask()  # another worker's, running
    elsewhere.suggest_float(LR_PARAM, 0.025, 0.4, log=True)
    for rate in (0.05, 0.05, 0.05, 0.06, 0.07, 0.08, 0.09):
        study.enqueue_trial({LR_PARAM: rate})
    study.enqueue_trial({LR_PARAM: 0.05}, user_attrs={"starting_point": True})
    done = [run_one(study, obj)[0] for _ in range(8)]
    # The third 0.05 names the first, not the repeat before it; a failed trial is no
    # measurement, and a starting point is tried whatever was drawn before.
    c, p = TrialState.COMPLETE, TrialState.PRUNED
    assert [t.state for t in done] == [c, p, p, c, p, p, c, c]
    assert [t.user_attrs.get("repeat_of") for t in done] == [None, 3, 3, None, 2, 0, None, None]
    assert done[4].user_attrs["reason"] == (
        "a repeat of trial 2 (running): the same parameters, not trained"
    )
    assert done[5].user_attrs["reason"].startswith("a repeat of trial 0 (pruned)")
    assert all("latency_ms" not in t.user_attrs for t in done if t.state == TrialState.PRUNED)
    # Two workers drawing one network at once: the earlier trial trains, the later is pruned.
    study.enqueue_trial({LR_PARAM: 0.11})
    study.enqueue_trial({LR_PARAM: 0.11})
    first, second = study.ask(), study.ask()
    second.suggest_float(LR_PARAM, 0.025, 0.4, log=True)  # the later one draws first
    study.tell(first, obj(first))
    with pytest.raises(optuna.TrialPruned, match=f"a repeat of trial {first.number} "):
        obj(second)
    study.tell(second, state=TrialState.PRUNED)
    assert counts(study)["repeat"] == 5
    # A space with no choices trains every trial: they are seeds of one network.
    fixed = objective(digits, ("accuracy", "latency"))
    states = {run_one(study, fixed)[0].state for _ in range(2)}
    assert states == {TrialState.COMPLETE}


def reached_every_step(study: optuna.Study, n: int) -> None:
    """``n`` trials far slower than any network, at chance at every step a trial can reach:
    each rung then has its evidence, and none of them is a peer of a network."""
    curve = dict.fromkeys(range(2000), 0.1)
    for _ in range(n):
        study.add_trial(
            optuna.trial.create_trial(
                values=[0.1, 1e9], intermediate_values=curve, user_attrs={"latency_ms": 1e9}
            )
        )


def test_a_trial_that_leads_its_rung_trains_on_from_its_weights(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    reached_every_step(study, 2)
    t, values = run_one(study, objective(digits, ("accuracy", "latency"), promotions=2))
    a = t.user_attrs
    assert a["promotions"] == 2 and a["epochs_budget"] == pytest.approx(0.5 * 3 * 3)
    assert 4.0 <= a["epochs_done"] <= 4.5  # the trainer ends each rung on a whole step
    # Two rungs inside the first budget, then one at the end of each promoted rung.
    first, second, third = sorted(t.intermediate_values)[-3:]
    assert first <= 50 and 140 <= second <= 150 and 400 <= third <= 450
    assert values[0] == t.intermediate_values[third] == t.values[0]
    assert a["rung_estimate_s"] > 0


def test_the_first_trials_at_a_rung_are_not_promoted(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    reached_every_step(study, 1)
    t, _ = run_one(study, objective(digits, ("accuracy", "latency"), promotions=2))
    assert t.state == TrialState.COMPLETE and "promotions" not in t.user_attrs


def test_a_starting_point_trains_through_every_rung_where_its_task_kind_says(
    digits: Data,
) -> None:
    # The first trial at its rung, with no peers: promoted only as a starting point where
    # the objective promotes them, and only as the runner marks one (True, not any value).
    for mark, promote, promoted in [(1, True, False), (True, False, False), (True, True, True)]:
        study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
        study.enqueue_trial({}, user_attrs={"starting_point": mark})
        obj = objective(
            digits, ("accuracy", "latency"), promotions=2, promote_starting_points=promote
        )
        t, _ = run_one(study, obj)
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs.get("promotions") == (2 if promoted else None), (mark, promote)


def test_no_promotion_starts_that_would_end_after_the_deadline(digits: Data) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    reached_every_step(study, 2)
    # A first budget of a second or two fits the 10 minutes left, even on a loaded
    # machine; a rung of 10^6 x it (days) does not.
    obj = objective(
        digits,
        ("accuracy", "latency"),
        promotions=2,
        promotion_factor=1e6,
        timeout=600.0,
        deadline=time.monotonic() + 600,
    )
    t, _ = run_one(study, obj)
    assert t.state == TrialState.COMPLETE and "promotions" not in t.user_attrs
    assert t.user_attrs["epochs_done"] <= 0.5


@pytest.mark.parametrize(
    ("timeout", "left", "reason"),
    [
        (3600.0, 0.0, "(the 0 s left of --timeout)"),  # it would end after the search
        (1e-3, 3600.0, "(1/8 of --timeout 0.001 s)"),  # it would be most of the search
    ],
)
def test_a_first_budget_over_what_the_timeout_allows_is_not_trained(
    digits: Data, timeout: float, left: float, reason: str
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=NOP)
    obj = objective(
        digits, ("accuracy", "latency"), timeout=timeout, deadline=time.monotonic() + left
    )
    t, _ = run_one(study, obj)
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["reason"].startswith("over budget, not trained: training estimated")
    assert t.user_attrs["reason"].endswith(reason)
    assert "epochs_done" not in t.user_attrs
