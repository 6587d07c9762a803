"""The data an export reads: whether it may read the study's dataset, the text vocabulary
rebuilt from it, and the check that the dataset still fits the network.

A stored dataset that names files or a download is read only when the user names it
(``--dataset``) or trusts the study (``--trust-stored-dataset``).
"""

from __future__ import annotations

import optuna

from nas.data import Vocabulary, is_text_name, load_data
from nas.export._error import ExportError
from nas.export._stored import data_options, stored_dataset
from nas.model import ArchSpec, InputSpec, Task
from nas.stored import shown

# Stored datasets the export reads without the user naming them: their files are bundled
# or in one fixed place, and nothing is downloaded. Any other names a path or a download.
LOCAL_DATASETS = ("digits", "fashion_mnist")


def dataset_to_read(study: optuna.Study, why: str, *, named: bool, trusted: bool) -> str:
    """The stored dataset, if the export may read it for ``why``: a local built-in, or one
    the user ``named`` (``--dataset``, equal to the stored one) or ``trusted``."""
    dataset = stored_dataset(study)
    if dataset is None:
        raise ExportError(
            f"{why} needs the dataset, but study {study.study_name!r} does not record one"
        )
    if named or dataset in LOCAL_DATASETS or trusted:
        return dataset  # a given --dataset was checked against it in export()
    raise ExportError(
        f"{why} reads the study's dataset {shown(dataset)}, which names files or a download: "
        f"name it yourself with --dataset VALUE (the value the search was given), or pass "
        "--trust-stored-dataset"
    )


def vocabulary(
    study: optuna.Study, spec: ArchSpec, dataset: str, data_dir: str | None
) -> Vocabulary:
    """The text network's vocabulary, rebuilt as the search built it, checked against the spec."""
    if not is_text_name(dataset):
        raise ExportError(
            f"the spec is a text network but study {study.study_name!r} does not record a "
            f"text dataset (dataset {shown(dataset)}), so there is no vocabulary to export"
        )
    data = load_data(dataset, data_dir=data_dir, **data_options(study, spec))
    vocab = data.vocab
    assert vocab is not None  # a text dataset always has one
    if (vocab.size, vocab.length) != (spec.input.vocab_size, spec.input.width):
        raise ExportError(
            f"the vocabulary rebuilt from {dataset} has {vocab.size} ids and length "
            f"{vocab.length}, but the network embeds {spec.input.vocab_size} ids of length "
            f"{spec.input.width}: the dataset changed since the study"
        )
    check_task(data.task, spec, dataset)
    return vocab


def check_task(task: Task, spec: ArchSpec, dataset: str) -> None:
    """The dataset must give the input and classes of the network trained on it."""
    if InputSpec.for_task(task) != spec.input or task.classes != spec.classes:
        raise ExportError(
            f"{dataset} gives inputs {InputSpec.for_task(task).shape} and {task.classes} classes, "
            f"but the network takes {spec.input.shape} and has {spec.classes}: the dataset "
            "changed since the study"
        )
