"""Writing the export folder: ``model.py``, ``spec.json``, ``vocab.json`` for text, with
weights ``model.safetensors`` and ``model.onnx`` (checked with onnxruntime against
PyTorch), and ``README.md``; :func:`export` puts the parts together.

Files are written to a staging folder beside ``--out`` and put in place only when
everything succeeded, so a refused export writes nothing. ``--out`` must be absent or
empty; ``--force`` replaces an earlier export there (a folder holding only the files an
export writes): the old folder is renamed aside and the staged one renamed into its
place, so no file of the previous export survives beside the new ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import optuna
import torch

from nas.data import load_data
from nas.export._codegen import render_code
from nas.export._dataset import dataset_to_read, vocabulary
from nas.export._docs import model_docstring, readme
from nas.export._error import ExportError
from nas.export._pick import choose_trial
from nas.export._replay import check_replay, replay_task
from nas.export._retrain import retrain
from nas.export._stored import (
    checked_normalisation,
    stored_budget,
    stored_dataset,
    stored_normalisation,
    stored_seed,
    stored_spec,
)
from nas.model import ArchSpec, attention_budget
from nas.search import load_existing_study
from nas.stored import shown
from nas.train import make_input

# What an export writes (and __pycache__, from importing its model.py in place); --force
# replaces only a folder holding nothing else.
EXPORT_FILES = frozenset(
    {"README.md", "model.py", "spec.json", "vocab.json", "model.safetensors", "model.onnx"}
    | {"__pycache__"}
)


def write_onnx(model: torch.nn.Module, spec: ArchSpec, path: Path) -> float:
    """``model.onnx`` with a dynamic batch; the largest difference from PyTorch's output."""
    import onnxruntime

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
    """Export the trial ``args`` chooses to ``args.out``; the folder written.

    ``args`` holds the command line's options, by the names :mod:`nas.export.cli` gives
    them (``storage``, ``study_name``, ``trial``/``best``/``pick``, ``out``, ``force``,
    ``weights``, ``epochs``, ``minutes``, ``device``, ``data_dir``, ``dataset``,
    ``trust_stored_dataset``, ``space``, ``trust_stored_spec``).
    """
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
    source = None
    if needs:
        named, trusted = args.dataset is not None, args.trust_stored_dataset
        source = dataset_to_read(study, needs[0], named=named, trusted=trusted)
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
            spec, docstring=model_docstring(study, trial, spec, args.weights), mean=mean, std=std
        )
        (staging / "model.py").write_text(code, encoding="utf-8")
        (staging / "spec.json").write_text(spec.to_json(indent=2) + "\n")
        if vocab is not None:
            vocab.save(staging / "vocab.json")
        retrained = None
        if args.weights:
            from safetensors.torch import save_file

            device = args.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            retrained = retrain(
                study,
                spec,
                seed,
                device,
                args.data_dir,
                epochs=args.epochs,
                minutes=args.minutes,
                dataset=source,
                show_progress=True,
            )
            model, training = retrained.model, retrained.training
            print(
                f"trial {trial.number} retrained {training.epochs_done:.2f} epochs in "
                f"{training.wall_seconds / 60:.1f} min: test accuracy "
                f"{retrained.test_accuracy:.4f}, latency {retrained.latency.median_ms:.3f} ms "
                "(batch 1, one thread, this machine)"
            )
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"))
            diff = write_onnx(model, spec, staging / "model.onnx")
            print(f"model.onnx matches PyTorch (max difference {diff:.2g})")
        (staging / "README.md").write_text(readme(study, trial, spec, retrained), encoding="utf-8")
        _check_out(out, args.force)  # again: the retraining took a while
        _install(staging, out, Path(tmp) / "previous")
    print(f"exported trial {trial.number} ({spec.summary()}) to {out}/")
    for name in sorted(p.name for p in out.iterdir()):
        print(f"  {name}")
    return out
