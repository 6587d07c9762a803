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

The stored spec is data from a database anyone may have edited: it goes through
``ArchSpec`` validation only, and the trial's parameters are replayed through the
study's space (``FixedTrial``) to check they still give that spec — a space edited since
the study is caught, not exported (``--trust-stored-spec`` overrides). Files are
written to a temporary folder and moved into ``--out`` only when everything succeeded,
so a refused export writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from nas.codegen import render_code
from nas.spec import ArchSpec, ArchSpecError
from nas.text import Vocabulary, is_text_name


class ExportError(ValueError):
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
    return float(trial.user_attrs.get(key, math.nan))


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
        from nas.search import front  # the search's own notion of the front

        return front(study)[0]
    assert pick is not None
    conditions = parse_pick(pick)
    fitting = [t for t in complete if all(_holds(_metric(t, m), o, b) for m, o, b in conditions)]
    if not fitting:
        raise ExportError(f"no complete trial of {len(complete)} satisfies --pick {pick!r}")
    return max(fitting, key=lambda t: t.values[0])


# --------------------------------------------------------------------------- checking


def stored_spec(trial: FrozenTrial) -> ArchSpec:
    """The trial's spec, through ``ArchSpec`` validation only (never evaluated)."""
    if "arch" not in trial.user_attrs:
        raise ExportError(f"trial {trial.number} has no stored spec (user attr 'arch')")
    try:
        return ArchSpec.from_dict(trial.user_attrs["arch"])
    except ArchSpecError as e:
        raise ExportError(f"trial {trial.number}'s stored spec is refused: {e}") from None


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
    if not is_text_name(attrs.get("dataset", "")):
        return {}
    return {
        "seed": int(attrs.get("seed", 0)),
        "text_column": str(attrs.get("text_column", "text")),
        "label_column": str(attrs.get("label_column", "label")),
    }


def check_replay(
    study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, data_dir: str | None = None
) -> None:
    """Replay the trial's params through its space; a different spec is an ``ExportError``."""
    from nas.data import task_for
    from nas.space import load_space

    space = trial.user_attrs.get("baseline") or study.user_attrs.get("space")
    dataset = study.user_attrs.get("dataset")
    if space is None or dataset is None:
        raise ExportError(
            f"study {study.study_name!r} does not record its space and dataset (made by an "
            "older nas), so its trials cannot be replayed; pass --trust-stored-spec"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial warns about unused params
            task = task_for(dataset, data_dir=data_dir, **data_options(study))
            replayed = load_space(space).suggest(FixedTrial(trial.params), task)
    except Exception as e:
        raise ExportError(
            f"trial {trial.number}'s params no longer replay through space {space!r} "
            f"({e.__class__.__name__}: {e}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        ) from None
    diffs = _differences(spec.to_dict(), replayed.to_dict())
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise ExportError(
            f"trial {trial.number}'s params replayed through space {space!r} give another "
            f"network than the stored spec ({shown}): the space changed since the study; "
            "pass --trust-stored-spec to export the stored spec anyway"
        )


# --------------------------------------------------------------------------- writing


def _normalisation(study: optuna.Study, data_dir: str | None) -> tuple[tuple[float, ...], ...]:
    """The training pixels' mean and std: stored by the search, else from the dataset."""
    attrs = study.user_attrs
    if "mean" in attrs and "std" in attrs:
        return tuple(float(v) for v in attrs["mean"]), tuple(float(v) for v in attrs["std"])
    from nas.data import load_data

    data = load_data(attrs["dataset"], data_dir=data_dir)
    return data.mean, data.std


def vocabulary(study: optuna.Study, spec: ArchSpec, data_dir: str | None) -> Vocabulary:
    """The text network's vocabulary, rebuilt as the search built it, checked against the spec."""
    from nas.data import load_data

    dataset = study.user_attrs.get("dataset")
    if dataset is None or not is_text_name(dataset):
        raise ExportError(
            f"the spec is a text network but study {study.study_name!r} does not record a "
            f"text dataset (dataset {dataset!r}), so there is no vocabulary to export"
        )
    vocab = load_data(dataset, data_dir=data_dir, **data_options(study)).vocab
    assert vocab is not None  # a text dataset always has one
    if (vocab.size, vocab.length) != (spec.input.vocab_size, spec.input.width):
        raise ExportError(
            f"the vocabulary rebuilt from {dataset} has {vocab.size} ids and length "
            f"{vocab.length}, but the network embeds {spec.input.vocab_size} ids of length "
            f"{spec.input.width}: the dataset changed since the study"
        )
    return vocab


def _figures(trial: FrozenTrial) -> dict[str, Any]:
    a = trial.user_attrs
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "val_accuracy": trial.values[0] if trial.values else None,
        "latency_ms": a.get("latency_ms"),
        "latency_iqr_ms": a.get("latency_iqr_ms"),
        "latency_setting": a.get("latency"),
        "params": a.get("params"),
        "flops": a.get("flops"),
        "epochs_trained": a.get("epochs_done"),
        "device": (a.get("device") or {}).get("cpu"),
    }


def _usage(spec: ArchSpec) -> str:
    """The line that runs the exported model, for the docstring and the README."""
    if spec.input.is_text:
        return "logits = model(encode(texts))  # texts: a list of strings; vocab.json beside"
    return (
        "logits = model(preprocess(images))  # images: uint8 "
        f"(B, {spec.input.channels}, {spec.input.height}, {spec.input.width})"
    )


def _docstring(study: optuna.Study, trial: FrozenTrial, spec: ArchSpec) -> str:
    f = _figures(trial)
    acc = f"{f['val_accuracy']:.4f}" if f["val_accuracy"] is not None else "n/a"
    lat = f"{f['latency_ms']:.3f} ms" if f["latency_ms"] is not None else "n/a"
    return (
        f"Trial {trial.number} of study {study.study_name!r}, exported by nas.export.\n\n"
        f"Validation accuracy {acc} after {f['epochs_trained']} epochs of search training; "
        f"latency {lat}\n"
        f"(batch {((f['latency_setting'] or {}).get('batch', '?'))}, {f['device']}); "
        f"{f['params']:,} parameters, {f['flops'] / 1e6:.1f} MFLOPs per "
        f"{'text' if spec.input.is_text else 'image'}.\n\n"
        "Needs only PyTorch. Load the weights written beside this file:\n\n"
        "    from safetensors.torch import load_file\n"
        "    model = Net().eval()\n"
        '    model.load_state_dict(load_file("model.safetensors"))\n'
        f"    {_usage(spec)}"
    )


def _readme(study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, test: float | None) -> str:
    f = _figures(trial)
    text = spec.input.is_text
    rows = [
        ("structure", f"`{spec.summary()}`".replace("|", "\\|")),  # not a table cell
        (
            "validation accuracy (search)",
            f"{f['val_accuracy']:.4f}" if f["val_accuracy"] else "n/a",
        ),
        (
            "latency",
            f"{f['latency_ms']:.3f} ms (IQR {f['latency_iqr_ms']:.3f})"
            if f["latency_ms"]
            else "n/a",
        ),
        ("parameters", f"{f['params']:,}"),
        (f"FLOPs per {'text' if text else 'image'}", f"{f['flops'] / 1e6:.1f} M"),
    ]
    if test is not None:
        rows.append(("test accuracy (retrained, `model.safetensors`)", f"{test:.4f}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    dataset = study.user_attrs.get("dataset", "?")
    vocab_note = " `vocab.json` is the vocabulary `encode` reads." if text else ""
    helper = "encode" if text else "preprocess"
    onnx_input = "the `encode`d int64 token ids" if text else "the `preprocess`ed float tensor"
    return f"""# Trial {trial.number} of `{study.study_name}`

Exported by `nas.export` from a search of space `{study.user_attrs.get("space", "?")}` on
`{dataset}`. `model.py` needs only PyTorch; `spec.json` is the architecture as data.{vocab_note}

| | |
|---|---|
{table}

```python
import torch
from safetensors.torch import load_file

from model import Net, {helper}

model = Net().eval()
model.load_state_dict(load_file("model.safetensors"))  # written with --weights
with torch.inference_mode():
    {_usage(spec)}
```

Without weights, `Net()` is the untrained architecture: train it with your own loop, or
again with `python -m nas.export ... --trial {trial.number} --weights --epochs E`.
`model.onnx` (with `--weights`) takes {onnx_input}, batch dynamic.
"""


def retrain(
    study: optuna.Study, spec: ArchSpec, seed: int, epochs: float, device: str, data_dir: str | None
) -> tuple[torch.nn.Module, float]:
    """Train ``spec`` on the full training split (train + val); its test accuracy."""
    from nas.builder import build_model
    from nas.data import Split, load_data
    from nas.train import TrainConfig, evaluate, train

    # A text dataset is split with the search's seed: its vocabulary is the network's.
    options = {"seed": seed, **data_options(study)}
    loaded = load_data(study.user_attrs["dataset"], device=device, data_dir=data_dir, **options)
    empty = Split(loaded.val.x[:0], loaded.val.y[:0])  # a retrain has no validation
    data = dataclasses.replace(loaded, train=loaded.full_train(), val=empty)
    model = build_model(spec, seed=seed).to(device)
    config = TrainConfig.for_task(
        data.task.kind, epochs=epochs, seed=seed, report_every=None, flip=data.flip
    )
    result = train(model, data, config, device=device)
    if result.status == "nan":
        raise ExportError("retraining diverged (NaN loss); try fewer --epochs or another trial")
    test = evaluate(
        model,
        data.test,
        data.mean,
        data.std,
        memory_format=result.memory_format,  # type: ignore[arg-type]
    )
    return model.float().eval().to(memory_format=torch.contiguous_format).cpu(), test


def write_onnx(model: torch.nn.Module, spec: ArchSpec, path: Path) -> float:
    """``model.onnx`` with a dynamic batch; the largest difference from PyTorch's output."""
    import onnxruntime

    from nas.measure import make_input

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


def export(args: argparse.Namespace) -> Path:
    from nas.study import load_existing_study

    study = load_existing_study(args.storage, args.study_name)
    trial = choose_trial(study, args.trial, args.best, args.pick)
    spec = stored_spec(trial)
    if not args.trust_stored_spec:
        check_replay(study, trial, spec, args.data_dir)
    vocab = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if spec.input.is_text:
        vocab = vocabulary(study, spec, args.data_dir)
    else:
        mean, std = _normalisation(study, args.data_dir)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp)
        (staging / "model.py").write_text(
            render_code(spec, docstring=_docstring(study, trial, spec), mean=mean, std=std)
        )
        (staging / "spec.json").write_text(spec.to_json(indent=2) + "\n")
        if vocab is not None:
            vocab.save(staging / "vocab.json")
        test = None
        if args.weights:
            from safetensors.torch import save_file

            seed = int(trial.user_attrs.get("seed", 0))
            device = args.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model, test = retrain(study, spec, seed, args.epochs, device, args.data_dir)
            print(
                f"trial {trial.number} retrained {args.epochs:g} epochs: test accuracy {test:.4f}"
            )
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"))
            diff = write_onnx(model, spec, staging / "model.onnx")
            print(f"model.onnx matches PyTorch (max difference {diff:.2g})")
        (staging / "README.md").write_text(_readme(study, trial, spec, test))
        out.mkdir(exist_ok=True)
        for item in staging.iterdir():
            shutil.move(str(item), out / item.name)
    print(f"exported trial {trial.number} ({spec.summary()}) to {out}/")
    for name in sorted(p.name for p in out.iterdir()):
        print(f"  {name}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nas.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--storage", required=True, help="the study's storage URL")
    parser.add_argument("--study-name", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="a trial number")
    which.add_argument("--best", action="store_true", help="the most accurate on the front")
    which.add_argument(
        "--pick", help="the most accurate satisfying e.g. 'latency<=2ms, params<100k'"
    )
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument(
        "--weights", action="store_true", help="retrain; write safetensors and ONNX"
    )
    parser.add_argument("--epochs", type=float, default=10.0, help="retraining epochs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument(
        "--trust-stored-spec",
        action="store_true",
        help="export the stored spec even if the space no longer replays to it",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.debug:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if not args.epochs > 0:
            raise ExportError(f"--epochs must be positive, got {args.epochs}")
        export(args)
    except (ExportError, ArchSpecError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
