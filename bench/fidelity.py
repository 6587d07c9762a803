"""Does the search's brief training rank networks as a real training does? Spearman per rung.

Reproduce (resumable: each network's results are appended to ``--out``,
``bench/results/fidelity.jsonl`` in the repository, as they come, and a rerun with the
same settings skips them; the long budget dominates, minutes per network on a 2-core
CPU, hours in all: commit the records, so the next session goes on). The tables count
every network measured with the same settings, those of earlier lists too (another
front, the space before it changed). Run it alone: whether a network is skipped as over
the cost cap depends on the speed measured::

    .venv/bin/python bench/fidelity.py --front sqlite:///bench/out/default.db
    .venv/bin/python bench/fidelity.py --report            # the tables from --out only
    .venv/bin/python bench/fidelity.py --dataset digits --sampled 6 --long-epochs 2  # smoke
    .venv/bin/python bench/fidelity.py --front ... --device cuda   # minutes on a GPU
    .venv/bin/python bench/fidelity.py --front ... --short-lr 0.2  # brief training at 0.2

Networks, in this order: the Pareto front of a default search (``--front URL``, study
``--study-name``; each spec is read back and validated by ``ArchSpec.from_dict``),
``--sampled`` random samples of the default space (``attention_cnn``, seeded), skipping
those over the search's default FLOPs limit as the search does, and the hand designs
(``seed_cnn``, ``resnet``). Each network is trained twice, from the same initialisation:

- **short**: exactly as a search trial (``nas.search.trial_train_config``: the default
  budget, rungs at each quarter on the fixed 1,000-image validation subset, the end on
  the whole validation split), never pruned, then promoted as the search promotes a
  trial, ``--promotions`` times, every network (``nas.search.rung_config``: trained on
  from its weights to 3× and 9× the budget, 0.9 and 2.7 epochs, each rung's end scored on
  the whole validation split); a front member at the learning rate its trial searched
  (``--lr-factor``), samples and hand designs at the recipe's;
- **long**: the export's retraining recipe (``nas.export.retrain_on``): ``--long-epochs``
  on the full training split (train + validation), scored on the test split. It does not
  depend on the short training's learning rate: a spec measured before keeps its result.

Printed: a row per network (accuracy at each rung and the end, the long test accuracy,
seconds of each training); Spearman's rank correlation of each rung's accuracy with the
long test accuracy, over all networks; per attention op (the ops a network's stages hold,
``no attention`` for none), the mean rank shift = rank by the rung − rank by the long
budget (1 = best; a positive shift: the brief training ranks that op's networks lower
than they end up, an op ranked unfairly early), over the networks holding it. A network
whose short training diverged (NaN) ranks last at that rung. A network whose brief
training is estimated (from its first steps) at over ``--max-train-seconds`` is skipped
and named: the search's cost limit refuses such networks. Last line ``spearman: X``
for the last promoted rung's end: the accuracy the front of a search shows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from _common import OverCost, cost_cap, default_trial_config, searched_lr, space_samples
from optuna.trial import FixedTrial
from scipy.stats import spearmanr

from nas.data import Data, load_data
from nas.export import ExportError, retrain_config, retrain_on
from nas.model import ArchSpec, build_model
from nas.search import BASELINES, load_builtin_space, rung_config
from nas.search._settings import PROMOTIONS
from nas.train import train

# Kept in the repository: the long trainings take hours, longer than a session.
RESULTS = Path(__file__).resolve().parent / "results" / "fidelity.jsonl"


@dataclass(frozen=True)
class Network:
    source: str
    spec: ArchSpec
    lr: float | None = None  # the brief training's learning rate; None: the recipe's

    @property
    def key(self) -> str:
        return json.dumps(self.spec.to_dict(), sort_keys=True)

    @property
    def id(self) -> tuple[str, float | None]:
        return self.key, self.lr


def record_id(row: dict[str, Any]) -> tuple[str, float | None]:
    return row["key"], row.get("lr")


def attention_ops(spec: ArchSpec) -> list[str]:
    ops = sorted({s.attention.op for s in spec.stages if s.attention is not None})
    return ops or ["no attention"]


def networks(args: argparse.Namespace, data: Data) -> list[Network]:
    """The given front, seeded samples, then the hand designs (the costliest here, so a
    partial run has a spread of networks first): one list, no repeats."""
    task = data.task
    found = []
    if args.front:
        study = optuna.load_study(study_name=args.study_name, storage=args.front)
        for t in sorted(study.best_trials, key=lambda t: t.number):
            spec = ArchSpec.from_dict(t.user_attrs["arch"])
            found.append(Network(f"front {t.number}", spec, searched_lr(t)))
    found += [Network(name, spec) for name, spec in space_samples(task, args.sampled, args.seed)]
    for name in BASELINES:
        found.append(Network(name, load_builtin_space(name).suggest(FixedTrial({}), task)))
    if args.short_lr is not None:
        found = [replace(n, lr=args.short_lr) for n in found]
    seen: set[str] = set()
    unique = []
    for n in found:
        if n.id not in seen:
            seen.add(n.id)
            unique.append(n)
    return unique


def measure(
    net: Network, data: Data, args: argparse.Namespace, long: dict[str, Any] | None
) -> dict[str, Any]:
    """Both trainings of ``net``; ``long``: a record of the same spec at another brief
    learning rate, whose long training (the recipe's, whatever the brief one's) is kept."""
    seed = args.seed  # one seed for every network: a record does not depend on the list
    config = default_trial_config(data)
    config = replace(config, seed=seed, lr=config.lr if net.lr is None else net.lr)
    model = build_model(net.spec, seed=seed)
    rungs: list[tuple[float, float]] = []
    record: dict[str, Any] = {"key": net.key, "settings": settings_key(args), "source": net.source}
    if net.lr is not None:
        record["lr"] = net.lr
    record |= {"summary": net.spec.summary(), "ops": attention_ops(net.spec)}

    try:
        short = train(
            model,
            data,
            config,
            report=lambda e, a: rungs.append((e, a)),
            device=args.device,
            estimate=cost_cap(args.max_train_seconds),
        )
    except OverCost as e:
        return record | {"skipped": e.seconds}
    seconds, done = short.wall_seconds, short.epochs_done
    promotions = args.promotions if short.status != "nan" else 0  # diverged: not promoted
    for rung in range(1, promotions + 1):
        run = rung_config(config, rung, done)
        more = train(model, data, run, device=args.device)
        seconds += more.wall_seconds
        if more.status == "nan":  # the search keeps the rung before: so does its value here
            record["diverged_at_rung"] = rung
            last = rungs[-1][1]
            ends = (done + rung_config(config, k, done).epochs for k in range(rung, 1 + promotions))
            rungs += [(end, last) for end in ends]
            break
        done += more.epochs_done
        rungs.append((done, more.val_accuracy))
    record |= {"rungs": rungs, "short_seconds": seconds}
    if long is not None:
        return record | {k: long[k] for k in ("long_test", "long_seconds")}
    started = time.perf_counter()
    try:
        test = retrain_on(data, net.spec, seed, args.device, epochs=args.long_epochs).test_accuracy
    except ExportError:  # the long training diverged: it ranks last there
        test = math.nan
    return record | {
        "long_test": test,
        "long_seconds": time.perf_counter() - started,
    }


def long_settings_key(args: argparse.Namespace) -> str:
    """What a record's long training depends on: the settings and the export's recipe."""
    c = retrain_config("image", seed=args.seed, epochs=args.long_epochs, minutes=None, flip=True)
    recipe = f"batch {c.batch_size} lr {c.lr:g} grad_clip {c.grad_clip}"
    return f"{args.dataset} seed {args.seed} long {args.long_epochs:g} {recipe}"


def settings_key(args: argparse.Namespace) -> str:
    """What a record's figures depend on (a rerun with other settings measures anew)."""
    key = f"{long_settings_key(args)} promotions {args.promotions}"
    return key if args.short_lr is None else f"{key} short lr {args.short_lr:g}"


def load_records(path: Path, settings: str) -> dict[tuple[str, float | None], dict[str, Any]]:
    if not path.exists():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("settings") == settings:
            # Keyed by the spec as this nas writes it: a record from an older schema
            # version still matches its network.
            row["key"] = Network(row["source"], ArchSpec.from_json(row["key"])).key
            records[record_id(row)] = row
    return records


def ranks(values: Sequence[float]) -> list[float]:
    """1 = highest; NaN counts as lowest; ties share their mean rank."""
    clean = [-math.inf if math.isnan(v) else v for v in values]
    order = sorted(range(len(clean)), key=lambda i: -clean[i])
    out = [0.0] * len(clean)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and clean[order[j + 1]] == clean[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def report(rows: list[dict[str, Any]]) -> float:
    points = [e for e, _ in max((r["rungs"] for r in rows), key=len)]  # a NaN stops short
    names = [f"{e:.3g} ep" for e in points]
    print(
        f"{'source':<10} {'short s':>8} {'long s':>8} "
        + " ".join(f"{n:>8}" for n in names)
        + f" {'long test':>9}  structure"
    )
    for r in rows:
        accs = " ".join(f"{a:>8.4f}" for _, a in r["rungs"]).ljust(9 * len(names) - 1)
        print(
            f"{r['source']:<10} {r['short_seconds']:>8.1f} {r['long_seconds']:>8.1f} {accs} "
            f"{r['long_test']:>9.4f}  {r['summary']}"
        )
    long = [r["long_test"] for r in rows]
    long_rank = ranks(long)
    print(f"\n{len(rows)} networks; Spearman of each rung's accuracy with the long test accuracy:")
    rho: list[float] = []
    for k, name in enumerate(names):
        at = [r["rungs"][k][1] if k < len(r["rungs"]) else math.nan for r in rows]
        rho.append(float(spearmanr(ranks(at), long_rank).statistic))
        cost = sum(r["short_seconds"] for r in rows) * points[k] / points[-1]
        print(f"  {name:>8}: {rho[-1]:.3f}   (short training to here: {cost:.0f} s in all)")
    print(f"  long budget: {sum(r['long_seconds'] for r in rows):.0f} s in all")

    ops = sorted({op for r in rows for op in r["ops"]})
    print(
        "\nmean rank shift per attention op (rank by the rung − rank by the long budget; "
        "> 0: ranked too low early):"
    )
    print(f"{'op':<14} {'n':>3} " + " ".join(f"{n:>8}" for n in names))
    for op in ops:
        held = [i for i, r in enumerate(rows) if op in r["ops"]]
        shifts = []
        for k in range(len(names)):
            at = ranks([r["rungs"][k][1] if k < len(r["rungs"]) else math.nan for r in rows])
            shifts.append(sum(at[i] - long_rank[i] for i in held) / len(held))
        print(f"{op:<14} {len(held):>3} " + " ".join(f"{s:>+8.1f}" for s in shifts))
    return rho[-1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--front", help="storage URL of a default search whose front to include")
    p.add_argument("--study-name", default="attention_cnn-fashion_mnist")
    p.add_argument("--sampled", type=int, default=20, help="random samples of the space")
    p.add_argument("--long-epochs", type=float, default=5.0)
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=120.0,
        help="skip a network whose brief training is estimated over this: the search's "
        "cost limit refuses such networks, and their long training would take hours",
    )
    p.add_argument(
        "--short-lr",
        type=float,
        help="train every network's brief training at this learning rate (a record set of "
        "its own; the long results are shared): does another rate rank better?",
    )
    p.add_argument(
        "--promotions",
        type=int,
        default=PROMOTIONS,
        help="rungs after the brief training, as the search's (0: the brief training only)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the data goes there too)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true", help="only print what --out holds")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(args.threads)
    settings = settings_key(args)
    records = load_records(args.out, settings)
    # Long results to reuse: these settings' and, for another brief rate, the default's.
    longs = list(records.values())
    if args.short_lr is not None:
        longs += load_records(args.out, long_settings_key(args)).values()
    if not args.report:
        data = load_data(args.dataset, device=args.device, seed=args.seed)
        nets = networks(args, data)
        print(f"{len(nets)} networks, {len(records)} measured before ({settings})", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for i, net in enumerate(nets):
            if net.id in records:
                continue
            same_spec = (r for r in longs if r["key"] == net.key and "long_test" in r)
            row = measure(net, data, args, next(same_spec, None))
            records[net.id] = row
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if "skipped" in row:
                print(f"[{i + 1}/{len(nets)}] {net.source}: skipped, {row['skipped']:.0f} s")
                continue
            end = row["rungs"][-1][1] if row["rungs"] else math.nan
            print(
                f"[{i + 1}/{len(nets)}] {net.source}: end {end:.4f}, "
                f"long {row['long_test']:.4f} ({row['short_seconds']:.0f} s + "
                f"{row['long_seconds']:.0f} s)",
                flush=True,
            )
        earlier = len(records) - len({n.id for n in nets})
        if earlier:
            print(f"with {earlier} networks measured with these settings from earlier lists")
    rows = list(records.values())
    for r in rows:
        if "skipped" in r:
            print(f"skipped {r['source']}: brief training estimated at {r['skipped']:.0f} s")
    rows = [r for r in rows if "skipped" not in r]
    if len(rows) < 3:
        raise SystemExit(f"{len(rows)} networks measured: too few to rank")
    rho = report(rows)
    print(f"spearman: {rho:.3f}")


if __name__ == "__main__":
    main()
