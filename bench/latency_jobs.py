"""Latency repeatability with two workers on one machine.

    .venv/bin/python bench/latency_jobs.py            # ~8 minutes on a 2-core CPU

Runs ``python -m nas.search --space seed_cnn`` on Fashion-MNIST with ``--jobs 1``, then
with ``--jobs 2``: every trial is the same architecture, so every latency measured should
be the same. Measurements take the machine exclusively (``nas.search.measurement_lock``)
while the other worker's training holds it shared, so a latency is never measured while
the other worker trains. The one-worker run is the reference: what is left of the spread
there is the machine's own noise. Prints each trial's median and IQR, the spread of the
medians (max/min − 1) of each run and, last, the two-worker run's as
``latency_spread: X``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

from nas.search import make_storage

ROOT = Path(__file__).resolve().parents[1]


def run(jobs: int, trials: int, epochs: float) -> list[float]:
    """Latency medians (ms) of a ``--jobs`` search whose trials are all ``seed_cnn``."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/latency.db"
        cmd = [sys.executable, "-m", "nas.search", "--space", "seed_cnn", "--jobs", str(jobs)]
        cmd += ["--trials", str(trials), "--epochs", str(epochs), "--storage", url]
        cmd += ["--study-name", "latency", "--pruner", "none"]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        study = optuna.load_study(study_name="latency", storage=make_storage(url))
    print(f"--jobs {jobs}\ntrial  latency ms  IQR ms")
    medians = []
    for t in study.trials:
        median, iqr = t.user_attrs["latency_ms"], t.user_attrs["latency_iqr_ms"]
        medians.append(median)
        print(f"{t.number:5d}  {median:10.3f}  {iqr:6.3f}")
    spread = max(medians) / min(medians) - 1
    print(f"median of medians {statistics.median(medians):.3f} ms, spread {spread:.3f}\n")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=0.2)
    args = parser.parse_args()
    one = run(1, args.trials, args.epochs)
    two = run(2, args.trials, args.epochs)
    print(f"one worker: spread {max(one) / min(one) - 1:.3f}")
    print(f"latency_spread: {max(two) / min(two) - 1:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
