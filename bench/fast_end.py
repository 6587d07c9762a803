"""Does the fast end of the front beat a tuned MLP? Side by side, the same training budget.

Reproduce (a few minutes on a 2-core CPU, after a default search)::

    .venv/bin/python -m nas.search --trials 100 --storage sqlite:///bench/out/default.db
    .venv/bin/python bench/fast_end.py --front sqlite:///bench/out/default.db
    .venv/bin/python bench/fast_end.py --front ... --dataset digits --mlp-trials 6  # smoke

**The MLP**, tuned as Optuna's own PyTorch example tunes one: the pixels, flattened, through
1–3 hidden layers of 4–256 units each (log scale) with ReLU and one dropout (0–0.5), then
the logits, and its learning rate (SGD as the search's trials, 0.01–0.5, log scale):
``--mlp-trials`` TPE trials, seeded. Each trains as a search trial trains
(``nas.search.trial_train_config``: the same batch, schedule and augmentation) for the
budget the front's members ended at (their ``epochs_budget``: the last rung they were
promoted to, 2.7 epochs in a default search; ``--epochs`` to set it), in one run, and is
scored on the whole validation split, as the search scores a trial.

**Ours**: the front of the given default search (``--front URL``) at ``--fast-ms`` or
less (and always its fastest member), read back and validated by ``ArchSpec.from_dict``,
each at the learning rate its trial searched (``--lr-factor``).

Then the MLPs' own front and ours are each retrained, that same budget in one run, with
``--seeds`` fresh seeds (so
neither side keeps the luck of the trial that put it on its front) and every one's
latency is measured here, side by side: batch 1, one thread, as the search measures it
(``nas.train.measure_latency``), ``--repeats`` rounds over all networks in turn; the
median of the rounds and their spread ((max − min) / median) are printed. Last line
``fast_end_gain: X``: our best mean accuracy at a latency no higher than the most
accurate MLP's, minus that MLP's, in points (``nan`` when none of ours is that fast).
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass, replace

import optuna
import torch
from _common import default_trial_config, latency_ms, searched_lr

from nas.data import Data, load_data
from nas.model import ArchSpec, HeadSpec, InputSpec, StemSpec, build_model
from nas.search import StudyError, load_existing_study
from nas.stored import number
from nas.train import TrainConfig, train

MAX_EPOCHS = 1000.0  # a stored epochs_budget beyond this is no budget a search trains


@dataclass
class Candidate:
    name: str
    spec: ArchSpec
    lr: float  # the learning rate it trains with (the search's default for ours)
    accuracies: list[float]
    latencies: list[float]

    @property
    def accuracy(self) -> float:
        return statistics.mean(self.accuracies)

    @property
    def latency(self) -> float:
        return statistics.median(self.latencies)


def mlp_spec(data: Data, hidden: tuple[int, ...], dropout: float) -> ArchSpec:
    task = data.task
    return ArchSpec(
        input=InputSpec(task.channels, task.height, task.width),
        stem=StemSpec(task.channels, kind="none"),
        stages=(),
        global_pool="flatten",
        head=HeadSpec(hidden=hidden, activation="relu", dropout=dropout),
        classes=task.classes,
    )


def accuracy(spec: ArchSpec, data: Data, config: TrainConfig, seed: int) -> float:
    run = replace(config, seed=seed)
    return train(build_model(spec, seed=seed), data, run).val_accuracy


def pareto(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated by (latency ↓, accuracy ↑), fastest first."""
    out: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (c.latency, -c.accuracy)):
        if not out or c.accuracy > out[-1].accuracy:
            out.append(c)
    return out


def tune_mlps(data: Data, config: TrainConfig, trials: int, seed: int) -> list[Candidate]:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        layers = trial.suggest_int("n_layers", 1, 3)
        hidden = tuple(trial.suggest_int(f"n_units_l{i}", 4, 256, log=True) for i in range(layers))
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        lr = trial.suggest_float("lr", 0.01, 0.5, log=True)
        spec = mlp_spec(data, hidden, round(dropout, 3))
        acc = accuracy(spec, data, replace(config, lr=lr), seed + trial.number)
        lat = latency_ms(spec)
        trial.set_user_attr("arch", spec.to_dict())
        print(f"mlp trial {trial.number}: {acc:.4f} at {lat:.4f} ms  {spec.summary()} lr {lr:.3g}")
        return acc, lat

    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return [
        Candidate(
            f"mlp #{t.number}",
            ArchSpec.from_dict(t.user_attrs["arch"]),
            t.params["lr"],
            [t.values[0]],
            [t.values[1]],
        )
        for t in study.best_trials
    ]


def our_fast_end(
    url: str, study_name: str, fast_ms: float, lr: float
) -> tuple[list[Candidate], float | None]:
    """The front at ``fast_ms`` or less (at least its fastest), each at the learning rate
    its trial searched, or ``lr`` where the search kept the recipe's; and the most epochs
    any of them trained (None: a study from before ``epochs_budget`` was recorded)."""
    try:
        study = load_existing_study(url, study_name)
    except StudyError as e:  # an unknown name lists the studies there
        raise SystemExit(f"error: {e}") from None
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    if not front:
        raise SystemExit(f"study {study_name!r} has no complete trial")
    chosen = [t for t in front if t.values[1] <= fast_ms] or front[:1]
    budgets = [number(t.user_attrs.get("epochs_budget")) for t in chosen]
    trained = max((b for b in budgets if b is not None and 0 < b <= MAX_EPOCHS), default=None)
    cands = [
        Candidate(
            f"ours #{t.number}",
            ArchSpec.from_dict(t.user_attrs["arch"]),
            searched_lr(t) or lr,
            [t.values[0]],
            [t.values[1]],
        )
        for t in chosen
    ]
    return cands, trained


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--front", required=True, help="storage URL of a default search")
    p.add_argument("--study-name", default="attention_cnn-fashion_mnist")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--mlp-trials", type=int, default=30)
    p.add_argument("--epochs", type=float, help="every network's budget (default: the front's)")
    p.add_argument("--fast-ms", type=float, default=0.1, help="our front's fast end: up to this")
    p.add_argument("--seeds", type=int, default=3, help="fresh seeds for each final network")
    p.add_argument("--repeats", type=int, default=5, help="latency rounds over all networks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="training threads")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(args.threads)
    data = load_data(args.dataset, device="cpu", seed=args.seed)
    trial_config = default_trial_config(data)
    ours, trained = our_fast_end(args.front, args.study_name, args.fast_ms, trial_config.lr)
    epochs = args.epochs or trained or trial_config.epochs
    config = replace(trial_config, epochs=epochs, report_every=None)  # no rungs: not pruned
    steps = math.ceil(config.epochs * len(data.train.y) / config.batch_size)
    print(
        f"training budget, every network: {config.epochs:.3g} epochs = {steps} steps of "
        f"{config.batch_size} ({data.task.name}, {len(data.train.y)} training images)"
    )
    mlps = pareto(tune_mlps(data, config, args.mlp_trials, args.seed))
    final = mlps + ours
    for c in final:
        run = replace(config, lr=c.lr)
        c.accuracies = [accuracy(c.spec, data, run, 1000 + s) for s in range(args.seeds)]
        c.latencies = []
    for _ in range(args.repeats):  # rounds, so a slow moment of the machine hits all alike
        for c in final:
            c.latencies.append(latency_ms(c.spec))

    print(f"\n{'network':<10} {'accuracy':>16} {'latency ms':>11} {'spread':>7}  structure")
    for c in sorted(final, key=lambda c: c.latency):
        sd = statistics.stdev(c.accuracies) if len(c.accuracies) > 1 else 0.0
        spread = (max(c.latencies) - min(c.latencies)) / c.latency
        print(
            f"{c.name:<10} {c.accuracy:.4f} ± {sd:.4f} {c.latency:>11.4f} {spread:>6.1%}  "
            f"{c.spec.summary()} lr {c.lr:.3g}"
        )
    best_mlp = max(mlps, key=lambda c: c.accuracy)
    at_most = [c for c in ours if c.latency <= best_mlp.latency]
    gain = (max(c.accuracy for c in at_most) - best_mlp.accuracy) * 100 if at_most else math.nan
    fastest = min(ours, key=lambda c: c.latency)
    print(
        f"\nmost accurate MLP: {best_mlp.name} {best_mlp.accuracy:.4f} at "
        f"{best_mlp.latency:.4f} ms; ours at that latency or less: {len(at_most)}; our "
        f"fastest: {fastest.name} {fastest.accuracy:.4f} at {fastest.latency:.4f} ms"
    )
    print(f"fast_end_gain: {gain:+.2f}")


if __name__ == "__main__":
    main()
