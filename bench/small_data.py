"""The default search on a small image dataset: does every trial get enough steps to learn?

Reproduce (a few minutes on a 2-core CPU)::

    .venv/bin/python bench/small_data.py              # the default search, then --epochs 0.3

Builds an ImageFolder under ``bench/out/small_data/`` (not committed): 150 training and
50 test images per class of Fashion-MNIST's 10 (the first of each class in each official
split), written as RGB 32×32 PNGs, each tinted by a random colour (seeded) so the three
channels differ. Then runs the real command, ``python -m nas.search --dataset
imagefolder:PATH --trials 20`` (every other setting the default, seed 0, a new SQLite
study under ``bench/out/``), and once more with ``--epochs 0.3``, the per-trial budget
that was the default before it had a floor in optimiser steps (0.3 epoch of 1,350
training images is 3 steps). Prints, for each: trials complete and pruned, the epochs
each trial trained, the best validation accuracy and the wall time; chance is 0.1. Last
line ``best_accuracy: X`` for the default search.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna

from nas.data import load_data

OUT = Path(__file__).resolve().parent / "out"
PER_CLASS = {"train": 150, "test": 50}


def build_folder(root: Path, seed: int = 0) -> Path:
    """The ImageFolder, written once (a rerun reuses it)."""
    from PIL import Image

    if (root / "test").is_dir():
        return root
    data = load_data("fashion_mnist", device="cpu")
    pools = {"train": data.full_train(), "test": data.test}
    rng = np.random.default_rng(seed)
    for split, pool in pools.items():
        x = pool.x.numpy()[:, 0]  # (N, 28, 28) uint8
        y = pool.y.numpy()
        for label in range(10):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(y == label)[: PER_CLASS[split]]):
                tint = rng.uniform(0.4, 1.0, size=3)
                rgb = (x[i][..., None] * tint).astype(np.uint8)
                Image.fromarray(rgb, "RGB").resize((32, 32)).save(folder / f"{k:03d}.png")
    return root


def search(folder: Path, name: str, extra: list[str]) -> tuple[optuna.Study, float]:
    url = f"sqlite:///{OUT / 'small_data.db'}"
    study_name = f"small-{name}"
    with contextlib.suppress(KeyError):  # a new study each run
        optuna.delete_study(study_name=study_name, storage=url)
    command = [sys.executable, "-m", "nas.search", "--dataset", f"imagefolder:{folder}"]
    command += ["--trials", "20", "--storage", url, "--study-name", study_name, *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return optuna.load_study(study_name=study_name, storage=url), wall


def describe(name: str, study: optuna.Study, wall: float) -> float:
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max((t.values[0] for t in complete), default=float("nan"))
    budget = {
        float(t.user_attrs["epochs_budget"])
        for t in study.trials
        if "epochs_budget" in t.user_attrs
    }
    print(
        f"{name:<14} complete {states.count(optuna.trial.TrialState.COMPLETE):>2}, "
        f"pruned {states.count(optuna.trial.TrialState.PRUNED):>2}, "
        f"epochs per trial {', '.join(f'{b:.3g}' for b in sorted(budget))}, "
        f"best val accuracy {best:.4f}, wall {wall:.0f} s"
    )
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=OUT / "small_data")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    folder = build_folder(args.folder)
    print(f"ImageFolder {folder}: {PER_CLASS} images per class, 10 classes, RGB 32x32")
    default = describe("default", *search(folder, "default", []))
    describe("--epochs 0.3", *search(folder, "epochs0.3", ["--epochs", "0.3"]))
    print(f"best_accuracy: {default:.4f}")


if __name__ == "__main__":
    main()
