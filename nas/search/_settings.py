"""A search's settings and their defaults: what ``python -m nas.search`` validates its
flags into (:mod:`nas.search.cli`), and what the runner (:mod:`nas.search._runner`) and the
benchmarks run on."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nas.data import MAX_LENGTH, Tokenizer, is_text_name
from nas.model import Task, TaskKind, attention_budget_bytes
from nas.search._objective import MIN_STEPS_JUDGED, Limits
from nas.search._spaces import Params
from nas.train import TrainConfig

# Per-trial budget by task kind: brief enough for a 100-trial search within the hour on a
# 2-core CPU, long enough to rank networks (times per CPU: the README's "Searching").
DEFAULT_EPOCHS: dict[TaskKind, float] = {"image": 0.3, "text": 2.0}
# ... and at least this many optimiser steps, whatever the dataset's size: 0.3 epoch of a
# small dataset is a few steps, after which every network is at chance (the README's
# "Searching"). With rungs at each quarter, every rung can then be judged by the pruner.
MIN_TRAIN_STEPS = 4 * MIN_STEPS_JUDGED
BASELINES = ("seed_cnn", "resnet")

# Promotion rungs (--promotions): a trial that ends its budget among the top third of its
# latency peers trains on to PROMOTION_FACTOR (nas.search._objective) times the budget,
# and again, so that the front's members are the ones trained longest.
PROMOTIONS = 2

# Whether a search's starting points train through every rung, peers or not (the first
# trials to reach a rung are otherwise never promoted). Images: a network's worth shows
# after a few epochs (bench/fidelity.py: Spearman 0.73 at 0.3 epoch, 0.99 at 2.7) and
# the retrain runs many. Text: the retrain is 600 steps, trials overfit past their 2
# epochs, and its starting points were measured unpromoted (README, "Text
# classification").
PROMOTED_STARTING_POINTS: dict[TaskKind, bool] = {"image": True, "text": False}

# --lr-factor's default: 1, every trial at the recipe's learning rate. Searching it (e.g. 4:
# within 4x either way, nas.search._objective.Objective.lr_factor) did not pay in a default
# search (the README's "Searching").
LR_FACTOR = 1.0

# --trial-timeout's default: generous while the study knows few trial durations, then a
# multiple of their median, so that a trial stuck for many times the usual is ended.
DEFAULT_TRIAL_TIMEOUT = 3600.0
MIN_TRIAL_TIMEOUT = 600.0
TIMEOUT_FACTOR = 10.0
TIMEOUT_HISTORY = 3

# --max-train-seconds' default: a candidate whose training is estimated (from its first
# steps) at over the larger of its task kind's reference design's estimate here and (once
# this many of the study's finished trials have one) this multiple of their median is
# recorded as pruned, not trained: one slow network must not hold the search's compute.
COST_FACTOR = 2.0
COST_HISTORY = 2
REFERENCE_DESIGNS: dict[TaskKind, str] = {"image": "seed_cnn", "text": "text_cnn"}

# Networks far over this per-pixel cost hold most of a search's compute and are neither
# fast nor needed for small inputs (measured: the README's "Searching"). Over it: recorded
# as pruned with the reason, never trained.
FLOPS_PER_PIXEL = 128_000

# Sampler seeds of successive workers on a study are this far apart (a prime), so that no
# two workers, on this machine or another, draw the same random start-up trials.
WORKER_SEED_STRIDE = 104_729


@dataclass
class Settings:
    trials: int
    timeout: float | None
    space: str
    dataset: str
    data_dir: str | None
    epochs: float
    storage: str
    study_name: str
    objectives: tuple[str, ...]
    limits: Limits
    latency_device: str
    latency_batch: int
    latency_threads: int
    sampler: str
    pruner: str
    seed: int
    jobs: int
    device: str
    enqueue_baselines: bool
    threads: int = 0
    text_column: str = "text"
    label_column: str = "label"
    tokenizer: Tokenizer = "words"  # text datasets only (nas.data._vocab)
    trial_timeout: float | None = None  # None: derived from the study (trial_time_limit)
    max_train_seconds: float | None = None  # None: derived from the study (cost_limit)
    min_train_steps: int = 0  # with the default epochs: MIN_TRAIN_STEPS (trial_train_config)
    lr_factor: float = LR_FACTOR
    promotions: int = PROMOTIONS
    allow_changed_settings: bool = False
    # The space's STARTING_POINTS for this task (nas.search._spaces.starting_points).
    starting_points: tuple[Params, ...] = ()


def default_max_flops(given: float | None, task: Task) -> int | None:
    """``--max-flops`` as given (0: no limit), else the per-pixel default for images."""
    if given is not None:
        return int(given) if given > 0 else None
    if task.kind != "image":
        return None
    return FLOPS_PER_PIXEL * max(task.height * task.width, 28 * 28)


def trial_train_config(
    kind: TaskKind, train_size: int, epochs: float, min_train_steps: int = 0
) -> TrainConfig:
    """How every trial of a search trains: the task's defaults for ``epochs``, or more to
    take ``min_train_steps`` optimiser steps on ``train_size`` examples, with rungs at each
    quarter."""
    config = TrainConfig.for_task(kind, epochs=epochs).at_least_steps(min_train_steps, train_size)
    return replace(
        config,
        report_every=config.epochs / 4,
        # Rungs on 1,000 validation images, the end on all: evaluating an image costs a
        # third of training on one, so four rungs on the whole split would cost more than
        # 0.3 epochs of training on Fashion-MNIST.
        rung_val_size=1000,
    )


def comparable_settings(s: Settings) -> dict[str, Any]:
    """The settings two trials must share for their figures to stand on one front: the
    training budget, the limits, how latency is measured, the seed (it carves the
    validation split), the attention memory budget (it decides which specs are valid) and
    the gradient clipping.
    The study records them; :func:`nas.search._storage.open_study` refuses a run with other
    ones."""
    return {
        "epochs": s.epochs,
        "max_latency_ms": s.limits.max_latency_ms,
        "max_params": s.limits.max_params,
        "max_flops": s.limits.max_flops,
        "max_train_seconds": s.max_train_seconds,
        "min_train_steps": s.min_train_steps,
        "latency_device": s.latency_device,
        "latency_batch": s.latency_batch,
        "latency_threads": s.latency_threads or s.threads,
        "seed": s.seed,
        "attention_budget_mb": attention_budget_bytes() / 2**20,
        # The training recipe's one setting that decides whether some networks learn at
        # all: a study made before it was the default holds trials trained without it.
        "grad_clip": TrainConfig().grad_clip,
        "lr_factor": s.lr_factor,
        "promotions": s.promotions,
        # Latency of the network as deployed (nas.model.fold_batchnorm).
        "latency_form": "batchnorm folded",
        **(
            {"text_lr": TrainConfig.for_task("text").lr, "text_max_length": MAX_LENGTH}
            if is_text_name(s.dataset)
            else {}
        ),
    }
