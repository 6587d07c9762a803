"""``python -m nas.export``: a trial's architecture as standalone PyTorch code, and weights.

    python -m nas.export --storage URL --study-name S --best --out DIR
    python -m nas.export --storage URL --study-name S --trial 12 --out DIR --weights
    python -m nas.export --storage URL --study-name S --pick "latency<=2ms" --out DIR

Writes ``model.py`` (torch and the standard library only, see :mod:`nas.codegen`),
``spec.json`` and a ``README.md`` with the trial's figures; with ``--weights`` it also
retrains the architecture on the full training split for ``--epochs``, prints the test
accuracy and writes ``model.safetensors`` and ``model.onnx`` (checked with onnxruntime
against PyTorch).

A text network also gets ``vocab.json``, which its ``model.py``'s ``encode`` reads: the
vocabulary is rebuilt from the dataset with the seed and columns the search recorded
(study user attrs ``seed``, ``text_column``, ``label_column``), and must give exactly the
embedding size and sequence length of the stored spec.

Everything read back from the study is data from a database anyone may have edited:

* The stored spec goes through ``ArchSpec`` validation only, against the attention
  budget the study recorded (``attention_budget_mb``, checked and capped; the reader's
  ``NAS_ATTENTION_BUDGET_MB`` for studies that record none). The trial's parameters are
  replayed through the study's space (``FixedTrial``) to check they still give that
  spec: a space edited since the study is caught, not exported (``--trust-stored-spec``
  overrides).
* A space name read from the study is only ever a built-in space (a trial's
  ``baseline`` too): a study whose space is a file replays only through the file the
  user names with ``--space PATH``, which must have the stored path's file name (stem).
* The dataset is read only when the export needs data: ``--weights``, a text network's
  vocabulary, or an old study without the pixels' mean and std. A stored dataset that
  names files or downloads (everything but ``digits`` and ``fashion_mnist``) is read
  only when the user names it with ``--dataset VALUE`` (equal to the stored one) or
  passes ``--trust-stored-dataset``. Without data the replay takes the task (input
  shape, classes) from a built-in dataset's constant shape, else from the stored spec.
* Stored numbers reach ``model.py`` and ``README.md`` only when they are finite numbers
  of the right kind (else "n/a"; a bad ``mean``/``std`` is refused), stored text only
  through :func:`nas.stored.code_text` (and, in the README, escaped for markdown).

Files are written to a staging folder beside ``--out`` and put in place only when
everything succeeded, so a refused export writes nothing. ``--out`` must be absent or
empty; ``--force`` replaces an earlier export there (a folder holding only the files an
export writes): the old folder is renamed aside and the staged one renamed into its
place, so no file of the previous export survives beside the new ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import torch
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from nas import command
from nas.data import Vocabulary, is_text_name
from nas.errors import NasError
from nas.export._codegen import render_code
from nas.model import ArchSpec, ArchSpecError, InputSpec, Task, attention_budget, check_budget_mb
from nas.search import SpaceError, front, load_builtin_space, load_space, space_names
from nas.stored import code_text, figure, markdown_text, number, shown

# Stored datasets the export reads without the user naming them: their files are bundled
# or in one fixed place, and nothing is downloaded. Any other names a path or a download.
LOCAL_DATASETS = ("digits", "fashion_mnist")
# What an export writes (and __pycache__, from importing its model.py in place); --force
# replaces only a folder holding nothing else.
EXPORT_FILES = frozenset(
    {"README.md", "model.py", "spec.json", "vocab.json", "model.safetensors", "model.onnx"}
    | {"__pycache__"}
)


class ExportError(NasError):
    """A request that cannot be exported, with the value that is wrong."""


# --------------------------------------------------------------------------- choosing


# --pick conditions: metric, comparison, number, unit; several joined by "," or "and".
_CONDITION = re.compile(
    r"^\s*(accuracy|latency|params|flops)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z%]*)\s*$"
)
_UNITS = {
    "accuracy": {"": 1.0, "%": 0.01},
    "latency": {"": 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3},
    "params": {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6},
    "flops": {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9},
}


def parse_pick(text: str) -> list[tuple[str, str, float]]:
    """``"latency<=2ms, params<100k"`` → [(metric, op, value in base units), ...]."""
    conditions = []
    for part in re.split(r",|\band\b", text):
        match = _CONDITION.match(part)
        if match is None:
            raise ExportError(
                f"--pick: cannot read {part.strip()!r}; write e.g. 'latency<=2ms', "
                "'params<100k', 'flops<=50M', 'accuracy>=0.9'"
            )
        metric, op, number, unit = match.groups()
        if unit not in _UNITS[metric]:
            known = ", ".join(repr(u) for u in _UNITS[metric] if u)
            raise ExportError(f"--pick: unknown unit {unit!r} for {metric}; use {known}")
        conditions.append((metric, op, float(number) * _UNITS[metric][unit]))
    return conditions


def _metric(trial: FrozenTrial, metric: str) -> float:
    if metric == "accuracy":
        return float(trial.values[0])
    key = {"latency": "latency_ms", "params": "params", "flops": "flops"}[metric]
    value = number(trial.user_attrs.get(key))
    return math.nan if value is None else value  # NaN satisfies no condition


def _holds(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound, ">": value > bound}[op]


def choose_trial(
    study: optuna.Study, trial: int | None, best: bool, pick: str | None
) -> FrozenTrial:
    """The trial to export; an unknown, unfinished or failed one is an ``ExportError``."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if trial is not None:
        if not 0 <= trial < len(trials):
            span = f"0..{len(trials) - 1}" if trials else "none"
            raise ExportError(
                f"--trial {trial} does not exist in study {study.study_name!r} (trials: {span})"
            )
        chosen = trials[trial]
        if chosen.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            reason = chosen.user_attrs.get("reason")
            raise ExportError(
                f"trial {trial} is {chosen.state.name}"
                + (f" ({reason})" if reason else "")
                + ": nothing to export; pick a COMPLETE trial"
            )
        return chosen
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trials to export")
    if best:
        return front(study)[0]
    assert pick is not None
    conditions = parse_pick(pick)
    fitting = [t for t in complete if all(_holds(_metric(t, m), o, b) for m, o, b in conditions)]
    if not fitting:
        raise ExportError(f"no complete trial of {len(complete)} satisfies --pick {pick!r}")
    return max(fitting, key=lambda t: t.values[0])


# --------------------------------------------------------------------------- checking


def stored_budget(study: optuna.Study) -> float | None:
    """The attention budget (MiB) the study was searched with; None if it records none."""
    raw = study.user_attrs.get("attention_budget_mb")
    if raw is None:
        return None
    try:
        return check_budget_mb(raw)
    except ArchSpecError as e:
        raise ExportError(
            f"study {study.study_name!r}'s attention budget is refused: {e}"
        ) from None


def stored_spec(trial: FrozenTrial) -> ArchSpec:
    """The trial's spec, through ``ArchSpec`` validation only (never evaluated)."""
    if "arch" not in trial.user_attrs:
        raise ExportError(f"trial {trial.number} has no stored spec (user attr 'arch')")
    try:
        return ArchSpec.from_dict(trial.user_attrs["arch"])
    except ArchSpecError as e:
        raise ExportError(f"trial {trial.number}'s stored spec is refused: {e}") from None


def stored_seed(value: object, what: str) -> int:
    """A stored seed: an integer the samplers and numpy take, else an ``ExportError``."""
    seed = number(value, integer=True)
    if seed is None or not 0 <= seed < 2**32:
        raise ExportError(f"{what} must be an integer in [0, 2**32), got {shown(value)}")
    return int(seed)


def stored_dataset(study: optuna.Study) -> str | None:
    """The dataset the study names (None: an older study records none); only a string."""
    dataset = study.user_attrs.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise ExportError(f"study attr dataset must be a string, got {shown(dataset)}")
    return dataset


def dataset_to_read(study: optuna.Study, args: argparse.Namespace, why: str) -> str:
    """The stored dataset, if the export may read it for ``why``: a local built-in, or one
    the user named (``--dataset``, equal to the stored one) or trusted."""
    dataset = stored_dataset(study)
    if dataset is None:
        raise ExportError(
            f"{why} needs the dataset, but study {study.study_name!r} does not record one"
        )
    if args.dataset is not None or dataset in LOCAL_DATASETS or args.trust_stored_dataset:
        return dataset  # a given --dataset was checked against it in export()
    raise ExportError(
        f"{why} reads the study's dataset {shown(dataset)}, which names files or a download: "
        f"name it yourself with --dataset VALUE (the value the search was given), or pass "
        "--trust-stored-dataset"
    )


def _differences(a: Any, b: Any, path: str = "spec") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: stored {a!r}, replayed {b!r}"]


def data_options(study: optuna.Study) -> dict[str, Any]:
    """How the search loaded its dataset, as keyword arguments of ``load_data``/``task_for``.

    Text: the seed and columns it recorded (a text task's vocabulary depends on them).
    Images: none (their task does not depend on the seed).
    """
    attrs = study.user_attrs
    if not is_text_name(stored_dataset(study) or ""):
        return {}
    seed = stored_seed(attrs.get("seed", 0), "study attr seed")
    columns = {key: attrs.get(key, default) for key, default in _COLUMNS.items()}
    for key, column in columns.items():
        if not isinstance(column, str):
            raise ExportError(f"study attr {key} must be a string, got {shown(column)}")
    return {"seed": seed, **columns}


_COLUMNS = {"text_column": "text", "label_column": "label"}


def replay_task(dataset: str | None, spec: ArchSpec) -> Task:
    """The task to replay a trial on, without reading any data.

    A built-in image dataset has a constant shape (nothing is read), so an edited input
    or class count is caught by the replay; any other takes the validated spec's own.
    """
    from nas.data import DATASETS, task_for

    if dataset in DATASETS:
        return task_for(dataset)
    inp = spec.input
    if inp.is_text:
        return Task(
            "the stored spec's input", "text", 1, 1, 1, spec.classes, inp.width, inp.vocab_size
        )
    return Task(
        "the stored spec's input", "image", inp.channels, inp.height, inp.width, spec.classes
    )


def replay_space(study: optuna.Study, trial: FrozenTrial, user_space: str | None) -> ModuleType:
    """The space to replay ``trial`` through. A stored name is only ever a built-in space;
    a file is imported only when the user names it (``user_space``, from ``--space``)."""
    if "baseline" in trial.user_attrs:
        try:
            return load_builtin_space(trial.user_attrs["baseline"])
        except SpaceError as e:
            raise ExportError(f"trial {trial.number}'s baseline is refused: {e}") from None
    stored = study.user_attrs.get("space")
    if stored is None:
        raise ExportError(
            f"study {study.study_name!r} does not record its space (made by an older nas), "
            "so its trials cannot be replayed; pass --trust-stored-spec"
        )
    if not isinstance(stored, str):
        raise ExportError(f"study attr space must be a string, got {shown(stored)}")
    if user_space is not None:
        # The search stores --space as given (a path relative to where it ran): the file
        # names must agree; the replay then checks the file still gives the stored spec.
        if Path(user_space).stem != Path(stored).stem:
            raise ExportError(
                f"--space {user_space!r} is not the study's space {shown(stored)} "
                "(their file names differ)"
            )
        return load_space(user_space)
    if stored in space_names():
        return load_builtin_space(stored)
    raise ExportError(
        f"study {study.study_name!r}'s space {shown(stored)} is not a built-in space "
        f"({', '.join(space_names())}); a file named by a study is never imported: pass "
        "--space PATH (the space file the search used) to replay through it, or "
        "--trust-stored-spec"
    )


def check_replay(
    study: optuna.Study,
    trial: FrozenTrial,
    spec: ArchSpec,
    task: Task,
    user_space: str | None = None,
) -> None:
    """Replay the trial's params through its space; a different spec is an ``ExportError``."""
    module = replay_space(study, trial, user_space)
    name = module.__name__.removeprefix("search_spaces.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial warns about unused params
            replayed = module.suggest(FixedTrial(trial.params), task)
    except Exception as e:
        raise ExportError(
            f"trial {trial.number}'s params no longer replay through space {name!r} "
            f"({e.__class__.__name__}: {e}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        ) from None
    diffs = _differences(spec.to_dict(), replayed.to_dict())
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise ExportError(
            f"trial {trial.number}'s params replayed through space {name!r} give another "
            f"network than the stored spec ({shown}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        )


# --------------------------------------------------------------------------- writing


def checked_normalisation(
    mean: object, std: object, channels: int, source: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels scaled to [0, 1]: ``channels`` finite numbers
    each, means in [0, 1], stds in [1e-6, 1] (model.py writes 6 decimals and divides)."""

    def numbers(values: object, low: float) -> tuple[float, ...] | None:
        if not isinstance(values, list | tuple) or len(values) != channels:
            return None
        got = [number(v) for v in values]
        if any(v is None or not low <= v <= 1 for v in got):
            return None
        return tuple(float(v) for v in got if v is not None)

    m, s = numbers(mean, 0.0), numbers(std, 1e-6)
    if m is None or s is None:
        raise ExportError(
            f"{source} mean and std are refused: each must be {channels} finite numbers (one "
            f"per input channel), means in [0, 1] and stds in [1e-6, 1]; got mean "
            f"{shown(mean)}, std {shown(std)}"
        )
    return m, s


def stored_normalisation(
    study: optuna.Study, spec: ArchSpec
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The training pixels' mean and std the search stored, checked; None if absent."""
    attrs = study.user_attrs
    if "mean" not in attrs and "std" not in attrs:
        return None
    return checked_normalisation(
        attrs.get("mean"), attrs.get("std"), spec.input.channels, f"study {study.study_name!r}'s"
    )


def vocabulary(
    study: optuna.Study, spec: ArchSpec, dataset: str, data_dir: str | None
) -> Vocabulary:
    """The text network's vocabulary, rebuilt as the search built it, checked against the spec."""
    from nas.data import load_data

    if not is_text_name(dataset):
        raise ExportError(
            f"the spec is a text network but study {study.study_name!r} does not record a "
            f"text dataset (dataset {shown(dataset)}), so there is no vocabulary to export"
        )
    data = load_data(dataset, data_dir=data_dir, **data_options(study))
    vocab = data.vocab
    assert vocab is not None  # a text dataset always has one
    if (vocab.size, vocab.length) != (spec.input.vocab_size, spec.input.width):
        raise ExportError(
            f"the vocabulary rebuilt from {dataset} has {vocab.size} ids and length "
            f"{vocab.length}, but the network embeds {spec.input.vocab_size} ids of length "
            f"{spec.input.width}: the dataset changed since the study"
        )
    _check_task(data.task, spec, dataset)
    return vocab


def _check_task(task: Task, spec: ArchSpec, dataset: str) -> None:
    """The dataset must give the input and classes of the network trained on it."""
    if InputSpec.for_task(task) != spec.input or task.classes != spec.classes:
        raise ExportError(
            f"{dataset} gives inputs {InputSpec.for_task(task).shape} and {task.classes} classes, "
            f"but the network takes {spec.input.shape} and has {spec.classes}: the dataset "
            "changed since the study"
        )


def _figures(trial: FrozenTrial) -> dict[str, str]:
    """The trial's stored figures as text: formatted validated numbers, "n/a", code_text."""
    a = trial.user_attrs
    latency = a.get("latency")
    device = a.get("device")
    return {
        "val_accuracy": figure(trial.values[0] if trial.values else None, ".4f"),
        "latency_ms": figure(a.get("latency_ms"), ".3f"),
        "latency_iqr_ms": figure(a.get("latency_iqr_ms"), ".3f"),
        "batch": figure(latency.get("batch") if isinstance(latency, dict) else None, "d", True),
        "params": figure(a.get("params"), ",", True),
        "mflops": figure(a.get("flops"), ".1f", scale=1e6),
        "epochs": figure(a.get("epochs_done"), ".2f"),
        "cpu": code_text(device.get("cpu") if isinstance(device, dict) else None),
    }


def _usage(spec: ArchSpec) -> str:
    """The line that runs the exported model, for the docstring and the README."""
    if spec.input.is_text:
        return "logits = model(encode(texts))  # texts: a list of strings; vocab.json beside"
    return (
        "logits = model(preprocess(images))  # images: uint8 "
        f"(B, {spec.input.channels}, {spec.input.height}, {spec.input.width})"
    )


def _docstring(study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, weights: bool) -> str:
    """model.py's docstring: constant text, formatted figures and code_text only."""
    f = _figures(trial)
    latency = "n/a" if f["latency_ms"] == "n/a" else f"{f['latency_ms']} ms"
    per = "text" if spec.input.is_text else "image"
    head = (
        f"Trial {trial.number} of study '{code_text(study.study_name)}', exported by "
        "nas.export.\n\n"
        f"Validation accuracy {f['val_accuracy']} after {f['epochs']} epochs of search "
        f"training.\nLatency {latency} at batch {f['batch']} on: {f['cpu']}\n"
        f"{f['params']} parameters, {f['mflops']} MFLOPs per {per}.\n\n"
    )
    if weights:
        return head + (
            "Needs PyTorch, and the safetensors package to load the weights written beside\n"
            "this file (model.safetensors):\n\n"
            "    from safetensors.torch import load_file\n"
            "    model = Net().eval()\n"
            '    model.load_state_dict(load_file("model.safetensors"))\n'
            f"    {_usage(spec)}"
        )
    return head + (
        "Needs only PyTorch. No weights were exported: Net() is the untrained architecture.\n"
        "Train it, or export again with --weights for model.safetensors (retrained on the\n"
        "full training split; loading it needs the safetensors package):\n\n"
        f"    python -m nas.export --storage URL --study-name NAME --trial {trial.number} "
        "--weights --out DIR\n\n"
        "    model = Net().eval()\n"
        f"    {_usage(spec)}"
    )


def _readme(study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, test: float | None) -> str:
    f = _figures(trial)
    text = spec.input.is_text
    latency = (
        "n/a" if f["latency_ms"] == "n/a" else f"{f['latency_ms']} ms (IQR {f['latency_iqr_ms']})"
    )
    rows = [
        ("structure", f"`{spec.summary()}`".replace("|", "\\|")),  # not a table cell
        ("validation accuracy (search)", f["val_accuracy"]),
        ("latency", latency),
        ("parameters", f["params"]),
        (f"FLOPs per {'text' if text else 'image'}", f"{f['mflops']} M"),
    ]
    if test is not None:
        rows.append(("test accuracy (retrained, `model.safetensors`)", f"{test:.4f}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    attrs = study.user_attrs
    vocab_note = " `vocab.json` is the vocabulary `encode` reads." if text else ""
    helper = "encode" if text else "preprocess"
    onnx_input = "the `encode`d int64 token ids" if text else "the `preprocess`ed float tensor"
    weights = test is not None
    needs = (
        "PyTorch, and the `safetensors` package to load `model.safetensors`"
        if weights
        else "only PyTorch"
    )
    imports = (
        "import torch\nfrom safetensors.torch import load_file\n" if weights else "import torch\n"
    )
    load = 'model.load_state_dict(load_file("model.safetensors"))\n' if weights else ""
    if weights:
        after = f"`model.onnx` takes {onnx_input}, batch dynamic."
    else:
        after = (
            "No weights were exported: `Net()` is the untrained architecture. Train it with "
            "your own loop, or export again with weights:\n\n"
            f"    python -m nas.export --storage URL --study-name NAME --trial {trial.number} "
            "--weights --epochs E --out DIR\n\n"
            "writes `model.safetensors` (load it with "
            '`model.load_state_dict(load_file("model.safetensors"))`, `load_file` from '
            f"`safetensors.torch`) and `model.onnx`, which takes {onnx_input}, batch dynamic."
        )
    return f"""# Trial {trial.number} of study {markdown_text(study.study_name)}

Exported by `nas.export` from a search of space {markdown_text(attrs.get("space"))} on
{markdown_text(attrs.get("dataset"))}. `model.py` needs {needs}; `spec.json` is the
architecture as data.{vocab_note}

| | |
|---|---|
{table}

```python
{imports}
from model import Net, {helper}

model = Net().eval()
{load}with torch.inference_mode():
    {_usage(spec)}
```

{after}
"""


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
    from nas.data import Split, load_data
    from nas.model import build_model
    from nas.train import TrainConfig, evaluate, train

    name = dataset if dataset is not None else stored_dataset(study)
    if name is None:
        raise ExportError(f"retraining needs the dataset; study {study.study_name!r} records none")
    # A text dataset is split with the search's seed: its vocabulary is the network's.
    options = {"seed": seed, **data_options(study)}
    loaded = load_data(name, device=device, data_dir=data_dir, **options)
    _check_task(loaded.task, spec, name)
    empty = Split(loaded.val.x[:0], loaded.val.y[:0])  # a retrain has no validation
    data = dataclasses.replace(loaded, train=loaded.full_train(), val=empty)
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


def write_onnx(model: torch.nn.Module, spec: ArchSpec, path: Path) -> float:
    """``model.onnx`` with a dynamic batch; the largest difference from PyTorch's output."""
    import onnxruntime

    from nas.train import make_input

    x = make_input(spec.input, 2)  # float images or int64 token ids, as the spec says
    name = "token_ids" if spec.input.is_text else "images"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=[name],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
            dynamo=True,
            external_data=False,  # one file, weights inside
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = make_input(spec.input, 3)
    with torch.inference_mode():
        expected = model(probe).numpy()
    got = session.run(None, {name: probe.numpy()})[0]
    diff = float(abs(got - expected).max())
    if not diff <= 1e-3 * max(1.0, float(abs(expected).max())):
        raise ExportError(f"model.onnx disagrees with PyTorch: max difference {diff:.3g}")
    return diff


def _check_out(out: Path, force: bool) -> None:
    """``--out`` must be absent or empty, or with ``--force`` an earlier export's folder."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"--out {out} exists and is not a folder")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not force:
        raise ExportError(
            f"--out {out} is not empty ({', '.join(present)}); pass --force to replace an "
            "earlier export there, or choose another folder"
        )
    others = [name for name in present if name not in EXPORT_FILES]
    if others:
        raise ExportError(
            f"--out {out} holds files an export does not write ({', '.join(others)}); "
            "--force replaces only an earlier export's folder: choose another --out"
        )


def _install(staging: Path, out: Path, aside: Path) -> None:
    """Put the staged folder at ``out``; an earlier export there is renamed to ``aside``."""
    if out.exists():
        out.rename(aside)
    try:
        staging.rename(out)
    except OSError:
        if aside.exists():
            aside.rename(out)  # the earlier export back as it was
        raise


def export(args: argparse.Namespace) -> Path:
    from nas.search import load_existing_study

    study = load_existing_study(args.storage, args.study_name)
    budget = stored_budget(study)
    # Specs (the stored one, the replayed one) are judged by the study's own budget.
    with attention_budget(budget) if budget is not None else contextlib.nullcontext():
        return _export(args, study)


def _export(args: argparse.Namespace, study: optuna.Study) -> Path:
    trial = choose_trial(study, args.trial, args.best, args.pick)
    spec = stored_spec(trial)
    dataset = stored_dataset(study)
    if args.dataset is not None and args.dataset != dataset:
        raise ExportError(f"--dataset {args.dataset!r} is not the study's dataset {shown(dataset)}")
    # Absolute: the staging folder goes beside it, even for "--out .".
    out = Path(os.path.abspath(args.out))
    _check_out(out, args.force)
    text = spec.input.is_text
    normalisation = None if text else stored_normalisation(study, spec)
    # Data is read only for these; each needs the user's say-so for a stored path.
    needs = [
        why
        for why, needed in (
            ("--weights", args.weights),
            ("a text network's vocabulary", text),
            ("the pixels' mean and std (the study records none)", not text and not normalisation),
        )
        if needed
    ]
    source = dataset_to_read(study, args, needs[0]) if needs else None
    if not args.trust_stored_spec:
        check_replay(study, trial, spec, replay_task(dataset, spec), args.space)
    vocab = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if text:
        assert source is not None
        vocab = vocabulary(study, spec, source, args.data_dir)
    elif normalisation is not None:
        mean, std = normalisation
    else:
        from nas.data import load_data

        assert source is not None
        data = load_data(source, data_dir=args.data_dir)
        mean, std = checked_normalisation(data.mean, data.std, spec.input.channels, source)
    seed = 0
    if args.weights:
        seed = stored_seed(trial.user_attrs.get("seed", 0), f"trial {trial.number}'s seed")

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp) / "export"
        staging.mkdir()
        code = render_code(
            spec, docstring=_docstring(study, trial, spec, args.weights), mean=mean, std=std
        )
        (staging / "model.py").write_text(code, encoding="utf-8")
        (staging / "spec.json").write_text(spec.to_json(indent=2) + "\n")
        if vocab is not None:
            vocab.save(staging / "vocab.json")
        test = None
        if args.weights:
            from safetensors.torch import save_file

            device = args.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model, test = retrain(
                study, spec, seed, args.epochs, device, args.data_dir, dataset=source
            )
            print(
                f"trial {trial.number} retrained {args.epochs:g} epochs: test accuracy {test:.4f}"
            )
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"))
            diff = write_onnx(model, spec, staging / "model.onnx")
            print(f"model.onnx matches PyTorch (max difference {diff:.2g})")
        (staging / "README.md").write_text(_readme(study, trial, spec, test), encoding="utf-8")
        _check_out(out, args.force)  # again: the retraining took a while
        _install(staging, out, Path(tmp) / "previous")
    print(f"exported trial {trial.number} ({spec.summary()}) to {out}/")
    for name in sorted(p.name for p in out.iterdir()):
        print(f"  {name}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True, help="the study's storage URL")
    parser.add_argument("--study-name", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="a trial number")
    which.add_argument("--best", action="store_true", help="the most accurate on the front")
    which.add_argument(
        "--pick", help="the most accurate satisfying e.g. 'latency<=2ms, params<100k'"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="folder to write; it must not exist or be empty (see --force)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export in --out (a folder holding only export files): "
        "the new files are staged, then swapped in by renaming, so none of the old remain",
    )
    parser.add_argument(
        "--weights", action="store_true", help="retrain; write safetensors and ONNX"
    )
    parser.add_argument("--epochs", type=float, default=10.0, help="retraining epochs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument(
        "--dataset",
        help="the study's dataset, as the search was given it: lets the export read a "
        "dataset that names files or a download (needed with --weights or for text)",
    )
    parser.add_argument(
        "--trust-stored-dataset",
        action="store_true",
        help="read whatever dataset the study names (files, downloads) without --dataset",
    )
    parser.add_argument(
        "--space",
        help="the .py space file the search used, when the study's space is a file "
        "(a file named by the study is never imported); its file name must match",
    )
    parser.add_argument(
        "--trust-stored-spec",
        action="store_true",
        help="export the stored spec even if the space no longer replays to it",
    )


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.epochs) and args.epochs > 0):
        raise ExportError(f"--epochs must be a finite number above 0, got {args.epochs:g}")
    export(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("export", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
