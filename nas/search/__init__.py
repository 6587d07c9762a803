"""The search: spaces that sample an ArchSpec, the objective that trains and measures one
trial, the pruner, the study's storage and locks, the settings and the runner that runs a
search's workers, and the results (front, hypervolume). Optuna's private API is used in
:mod:`nas.search._optuna` only. The command line is :mod:`nas.search.cli`
(``python -m nas.search``)."""

from nas.search._locks import LockTimeout, measurement_lock, slot_lock, training_lock
from nas.search._notes import spec_markdown
from nas.search._objective import (
    LR_PARAM,
    MIN_STEPS_JUDGED,
    STEPS_PER_EPOCH,
    Limits,
    Objective,
    first_judged_step,
    rung_config,
)
from nas.search._pruning import (
    LATENCY_ATTR,
    ParetoPruner,
    PrunedTrialsSampler,
    make_pruner,
    promoted,
    report,
    should_prune,
)
from nas.search._results import (
    counts,
    front,
    front_table,
    hypervolume,
    longest_share,
    pareto,
    tally,
)
from nas.search._runner import build_study, run_trial, run_worker
from nas.search._settings import (
    BASELINES,
    DEFAULT_EPOCHS,
    Settings,
    default_max_flops,
    trial_train_config,
)
from nas.search._spaces import (
    SpaceError,
    Suggest,
    check_task,
    default_space,
    example_task,
    load_builtin_space,
    load_space,
    space_names,
    starting_points,
)
from nas.search._storage import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    OBJECTIVES,
    StudyError,
    check_storage_url,
    finished_count,
    load_existing_study,
    make_sampler,
    make_storage,
    open_existing_storage,
    open_study,
)

__all__ = [
    "BASELINES",
    "DEFAULT_EPOCHS",
    "GRACE_SECONDS",
    "HEARTBEAT_SECONDS",
    "LATENCY_ATTR",
    "LR_PARAM",
    "MIN_STEPS_JUDGED",
    "OBJECTIVES",
    "STEPS_PER_EPOCH",
    "Limits",
    "LockTimeout",
    "Objective",
    "ParetoPruner",
    "PrunedTrialsSampler",
    "Settings",
    "SpaceError",
    "StudyError",
    "Suggest",
    "build_study",
    "check_storage_url",
    "check_task",
    "counts",
    "default_max_flops",
    "default_space",
    "example_task",
    "finished_count",
    "first_judged_step",
    "front",
    "front_table",
    "hypervolume",
    "load_builtin_space",
    "load_existing_study",
    "load_space",
    "longest_share",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "measurement_lock",
    "open_existing_storage",
    "open_study",
    "pareto",
    "promoted",
    "report",
    "run_trial",
    "run_worker",
    "rung_config",
    "should_prune",
    "slot_lock",
    "space_names",
    "spec_markdown",
    "starting_points",
    "tally",
    "training_lock",
    "trial_train_config",
]
