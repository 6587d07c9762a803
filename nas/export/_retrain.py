"""Retraining for ``--weights``: the architecture trained on the full training split
(train + validation) with the search's seed, and its test accuracy."""

from __future__ import annotations

import dataclasses

import optuna
import torch

from nas.data import Data, Split, load_data
from nas.export._dataset import check_task
from nas.export._error import ExportError
from nas.export._stored import data_options, stored_dataset
from nas.model import ArchSpec, build_model
from nas.train import TrainConfig, evaluate, train


def retrain(
    study: optuna.Study,
    spec: ArchSpec,
    seed: int,
    epochs: float,
    device: str,
    data_dir: str | None,
    *,
    dataset: str | None = None,
) -> tuple[torch.nn.Module, float]:
    """Train ``spec`` on the full training split (train + val); its test accuracy.

    ``dataset`` defaults to the study's (the export passes the one it may read).
    """
    name = dataset if dataset is not None else stored_dataset(study)
    if name is None:
        raise ExportError(f"retraining needs the dataset; study {study.study_name!r} records none")
    # A text dataset is split with the search's seed: its vocabulary is the network's.
    options = {"seed": seed, **data_options(study)}
    loaded = load_data(name, device=device, data_dir=data_dir, **options)
    check_task(loaded.task, spec, name)
    return retrain_on(loaded, spec, seed, epochs, device)


def retrain_on(
    data: Data, spec: ArchSpec, seed: int, epochs: float, device: str
) -> tuple[torch.nn.Module, float]:
    """The retraining recipe itself: ``spec`` trained ``epochs`` on ``data``'s full
    training split (train + val) with ``seed``, scored on its test split. The model comes
    back in fp32, eval mode, contiguous, on the CPU."""
    empty = Split(data.val.x[:0], data.val.y[:0])  # a retrain has no validation
    data = dataclasses.replace(data, train=data.full_train(), val=empty)
    model = build_model(spec, seed=seed).to(device)
    config = TrainConfig.for_task(
        data.task.kind,
        epochs=epochs,
        seed=seed,
        report_every=None,
        flip=data.flip,
    )
    result = train(model, data, config, device=device)
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
    return model.float().eval().to(memory_format=torch.contiguous_format).cpu(), test
