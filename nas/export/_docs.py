"""What an export says about itself: ``model.py``'s docstring and ``README.md``, with the
trial's figures.

Stored numbers appear only when they are finite numbers of the right kind (else "n/a"),
stored text only through :func:`nas.stored.code_text` (and, in the README, escaped for
markdown by :func:`nas.stored.markdown_text`).
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from nas.export._codegen import folds_batchnorm
from nas.export._retrain import Retrained
from nas.model import ArchSpec
from nas.stored import code_text, figure, markdown_text
from nas.train import fingerprint


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


# The usage line where model.py has fold_batchnorm (an image network with BatchNorm).
FOLD_USAGE = "model = fold_batchnorm(model)  # inference only: latency is measured so\n"


def model_docstring(study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, weights: bool) -> str:
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
            f"{'    ' + FOLD_USAGE if folds_batchnorm(spec) else ''}"
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


def readme(
    study: optuna.Study, trial: FrozenTrial, spec: ArchSpec, retrained: Retrained | None
) -> str:
    f = _figures(trial)
    text = spec.input.is_text
    latency = (
        "n/a" if f["latency_ms"] == "n/a" else f"{f['latency_ms']} ms (IQR {f['latency_iqr_ms']})"
    )
    rows = [
        ("structure", f"`{spec.summary()}`".replace("|", "\\|")),  # not a table cell
        ("validation accuracy (search)", f["val_accuracy"]),
        ("latency (search)", latency),
        ("parameters", f["params"]),
        (f"FLOPs per {'text' if text else 'image'}", f"{f['mflops']} M"),
    ]
    if retrained is not None:
        training, measured = retrained.training, retrained.latency
        cpu = markdown_text(str(fingerprint()["cpu"]))
        rows += [
            ("test accuracy (retrained, `model.safetensors`)", f"{retrained.test_accuracy:.4f}"),
            (
                "retraining",
                f"{training.epochs_done:.2f} epochs in {training.wall_seconds / 60:.1f} min",
            ),
            (
                "latency (measured at export)",
                f"{measured.median_ms:.3f} ms (IQR {measured.iqr_ms:.3f}), batch 1, one thread, "
                f"on: {cpu}",
            ),
        ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    attrs = study.user_attrs
    vocab_note = " `vocab.json` is the vocabulary `encode` reads." if text else ""
    helper = "encode" if text else "preprocess"
    onnx_input = "the `encode`d int64 token ids" if text else "the `preprocess`ed float tensor"
    weights = retrained is not None
    needs = (
        "PyTorch, and the `safetensors` package to load `model.safetensors`"
        if weights
        else "only PyTorch"
    )
    imports = (
        "import torch\nfrom safetensors.torch import load_file\n" if weights else "import torch\n"
    )
    load = 'model.load_state_dict(load_file("model.safetensors"))\n' if weights else ""
    if weights and folds_batchnorm(spec):
        helper += ", fold_batchnorm"
        load += FOLD_USAGE
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
