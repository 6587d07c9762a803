"""Retraining for ``--weights``: the architecture trained on the full training split
(train + validation) with the search's seed, for a number of epochs or minutes, and its
test accuracy and latency."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from nas.data import Data, Split, load_data
from nas.export._dataset import check_task
from nas.export._error import ExportError
from nas.export._stored import data_options, stored_dataset
from nas.model import ArchSpec, TaskKind, build_model
from nas.train import Latency, TrainConfig, TrainResult, evaluate, measure_latency, train

# The default budget: for images DEFAULT_EPOCHS, or more to take RETRAIN_STEPS optimiser
# steps on a small training split; for text RETRAIN_STEPS whatever the corpus's size: a
# text network underfits a small corpus in 10 epochs and overfits a large one (measured:
# the README's "Text classification").
DEFAULT_EPOCHS = 10.0
RETRAIN_STEPS = 600
# A budget in minutes alone: the clock ends training (the schedule anneals with it).
UNBOUNDED_EPOCHS = 1e6
# Word dropout in a text retrain, by network: a bag of embeddings (no stage) loses a
# random half of its bag, a conv stage would lose half of every window it reads. Over the
# retrain's 600 steps, 0.5 gained the attention bag 0.4 points on the demo corpus and on
# the docstrings, and cost a conv network 1.5 on the demo corpus, where 0.2 cost it
# nothing and gained a network with attention 0.2. Not in a trial: over 2 epochs 0.5 cost
# the attention bag 0.35 points (the README's "Text classification").
RETRAIN_TOKEN_DROPOUT = 0.2
RETRAIN_BAG_TOKEN_DROPOUT = 0.5


@dataclass(frozen=True)
class Retrained:
    """A retrained network: fp32, eval mode, contiguous, on the CPU; its test accuracy
    (one plain forward pass per image, as ``model.py`` runs it), the training's record
    and its batch-1 latency measured on this machine as the search measures it."""

    model: torch.nn.Module
    test_accuracy: float
    training: TrainResult
    latency: Latency


def retrain_config(
    kind: TaskKind,
    *,
    seed: int,
    epochs: float | None,
    minutes: float | None,
    flip: bool,
    train_size: int | None = None,
    bag: bool = False,
) -> TrainConfig:
    """The recipe of a full retrain: ``epochs``, ``minutes`` of training, or both (whichever
    ends first); neither gives :data:`RETRAIN_STEPS` optimiser steps on ``train_size``
    examples for text, and :data:`DEFAULT_EPOCHS` or more to take them for images (the
    default needs ``train_size``).

    Images: batch 64, peak learning rate 0.05, flips, no translation: tuned on
    Fashion-MNIST over 2 to 14 epochs (the README's "After the search"). Text: the task's
    defaults (AdamW) and word dropout: :data:`RETRAIN_BAG_TOKEN_DROPOUT` for a ``bag`` (a
    network with no stage), else :data:`RETRAIN_TOKEN_DROPOUT`. No test-time mirroring:
    the test accuracy is what the exported ``model.py`` gives.
    """
    default = epochs is None and minutes is None
    if epochs is None:
        epochs = DEFAULT_EPOCHS if minutes is None else UNBOUNDED_EPOCHS
    full_run = (
        {"batch_size": 64, "lr": 0.05}
        if kind == "image"
        else {"token_dropout": RETRAIN_BAG_TOKEN_DROPOUT if bag else RETRAIN_TOKEN_DROPOUT}
    )
    config = TrainConfig.for_task(
        kind,
        **full_run,
        epochs=epochs,
        max_seconds=None if minutes is None else minutes * 60,
        seed=seed,
        report_every=None,
        flip=flip,
    )
    if not default:
        return config
    if train_size is None:
        raise ValueError("the default retraining budget needs the training split's size")
    if kind == "text":
        return dataclasses.replace(
            config, epochs=RETRAIN_STEPS / config.steps_per_epoch(train_size)
        )
    return config.at_least_steps(RETRAIN_STEPS, train_size)


def retrain(
    study: optuna.Study,
    spec: ArchSpec,
    seed: int,
    device: str,
    data_dir: str | None,
    *,
    epochs: float | None = None,
    minutes: float | None = None,
    dataset: str | None = None,
    show_progress: bool = False,
) -> Retrained:
    """Train ``spec`` on the study's dataset's full training split (train + val), scored on
    its test split (:func:`retrain_on`).

    ``dataset`` defaults to the study's (the export passes the one it may read).
    """
    name = dataset if dataset is not None else stored_dataset(study)
    if name is None:
        raise ExportError(f"retraining needs the dataset; study {study.study_name!r} records none")
    # A text dataset is split with the search's seed: its vocabulary is the network's.
    options = {"seed": seed, **data_options(study, spec)}
    loaded = load_data(name, device=device, data_dir=data_dir, **options)
    check_task(loaded.task, spec, name)
    return retrain_on(
        loaded, spec, seed, device, epochs=epochs, minutes=minutes, show_progress=show_progress
    )


def retrain_on(
    data: Data,
    spec: ArchSpec,
    seed: int,
    device: str,
    *,
    epochs: float | None = None,
    minutes: float | None = None,
    show_progress: bool = False,
    recipe: Mapping[str, Any] | None = None,
) -> Retrained:
    """The retraining itself: ``spec`` trained by :func:`retrain_config` on ``data``'s full
    training split (train + val) with ``seed``, scored on its test split. ``data`` with an
    empty ``val`` trains on ``train`` alone (a caller that keeps validation to choose).
    ``recipe``: :class:`~nas.train.TrainConfig` fields that replace the recipe's (a
    variant to compare, such as ``{"crop_pad": 2}``)."""
    empty = Split(data.val.x[:0], data.val.y[:0])  # a retrain has no validation
    data = dataclasses.replace(data, train=data.full_train(), val=empty)
    model = build_model(spec, seed=seed).to(device)
    config = retrain_config(
        data.task.kind,
        seed=seed,
        epochs=epochs,
        minutes=minutes,
        flip=data.flip,
        train_size=len(data.train.y),
        bag=not spec.stages,
    )
    config = dataclasses.replace(config, **(recipe or {}))
    bounded = config.epochs < UNBOUNDED_EPOCHS
    bar = _Bar(config.epochs if bounded else None, minutes) if show_progress else None
    try:
        result = train(model, data, config, device=device, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if result.status == "nan":
        raise ExportError("retraining diverged (NaN loss); try fewer --epochs or another trial")
    test = evaluate(
        model,
        data.test,
        data.mean,
        data.std,
        batch_size=config.eval_batch_size,
        memory_format=result.memory_format,  # type: ignore[arg-type]
    )
    model = model.float().eval().to(memory_format=torch.contiguous_format).cpu()
    # As the search measures a trial (nas.search's Objective): batch 1, one thread, CPU.
    latency = measure_latency(model, spec.input, batch=1, threads=1)
    return Retrained(model, test, result, latency)


class _Bar:
    """The retraining's progress: a tqdm bar on a terminal (percent of the budget, the
    epoch reached), a line per tenth elsewhere."""

    def __init__(self, epochs: float | None, minutes: float | None) -> None:
        from tqdm import tqdm

        budget = [f"{epochs:.3g} epochs"] if epochs is not None else []
        budget += [f"{minutes:.3g} min"] if minutes is not None else []
        self.what = "retraining " + " or ".join(budget)
        self.bar = tqdm(
            total=100, desc=self.what, unit="%", file=sys.stderr, disable=None, leave=False
        )
        self.shown = 0  # percent shown so far

    def __call__(self, fraction: float, epoch: float) -> None:
        percent = int(fraction * 100)
        if percent <= self.shown:
            return
        if self.bar.disable:
            if percent // 10 > self.shown // 10:
                print(f"{self.what}: {percent}%, epoch {epoch:.2f}", file=sys.stderr, flush=True)
        else:
            self.bar.update(percent - self.shown)
            self.bar.set_postfix_str(f"epoch {epoch:.2f}", refresh=False)
        self.shown = percent

    def close(self) -> None:
        self.bar.close()
