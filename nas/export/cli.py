"""``python -m nas.export``: a trial's architecture as standalone PyTorch code, and weights.

    python -m nas.export --storage URL --study-name S --best --out DIR
    python -m nas.export --storage URL --study-name S --trial 12 --out DIR --weights
    python -m nas.export --storage URL --study-name S --pick "latency<=2ms" --out DIR

Writes ``model.py`` (torch and the standard library only, see :mod:`nas.export._codegen`),
``spec.json`` and a ``README.md`` with the trial's figures; with ``--weights`` it also
retrains the architecture on the full training split for ``--epochs`` or ``--minutes``
(both: whichever ends first; the schedule anneals as a time budget runs out, see
:mod:`nas.train`), with progress shown, prints the test accuracy and the latency measured
here, and writes them to the README beside ``model.safetensors`` and ``model.onnx``
(checked with onnxruntime against PyTorch).

A text network also gets ``vocab.json``, which its ``model.py``'s ``encode`` reads: the
vocabulary is rebuilt from the dataset with the seed, columns and tokenizer the search
recorded (study user attrs ``seed``, ``text_column``, ``label_column``, ``tokenizer``: one
of the tokenizers' names, ``words`` where a study records none), and must give exactly
the embedding size and sequence length of the stored spec.

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
import math

from nas import command
from nas.export._error import ExportError
from nas.export._retrain import DEFAULT_EPOCHS, RETRAIN_STEPS
from nas.export._write import export


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
    parser.add_argument(
        "--epochs",
        type=float,
        help=f"retraining epochs (default: {RETRAIN_STEPS} optimiser steps for text; for "
        f"images {DEFAULT_EPOCHS:g}, or more to take as many; unbounded with --minutes)",
    )
    parser.add_argument("--minutes", type=float, help="retraining time budget in minutes")
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
    for flag in ("epochs", "minutes"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ExportError(f"--{flag} must be a finite number above 0, got {value:g}")
    export(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("export", __doc__, add_arguments, run, argv)
