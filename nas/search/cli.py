"""python -m nas.search: find the most accurate and fastest architectures.

    python -m nas.search --trials 100                # attention_cnn on Fashion-MNIST
    python -m nas.search --trials 100                # again: resumes, never starts over
    python -m nas.search --trials 40 --jobs 2 --storage postgresql://me@db/nas
    python -m nas.search --config studies/digits.toml --trials 5   # a study file, one flag changed

``--trials N`` is the number of finished trials the study should hold; running the same
command again continues the study. Ctrl-C, or ``kill PID`` (SIGTERM: what ``timeout``
and job schedulers send), stops after marking the running trial (it is queued again for
the next run). ``--config FILE`` reads the flags' values from a TOML file (keys: the long
flags, with ``-`` or ``_``); a flag given on the command line overrides the file.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import torch

from nas import command
from nas.data import DATASETS, TOKENIZERS, Tokenizer, is_text_name, task_for
from nas.search._objective import PROMOTION_FACTOR, TIMEOUT_SHARE, Limits
from nas.search._progress import Progress
from nas.search._pruning import make_pruner
from nas.search._results import counts, front_table, longest_share, tally
from nas.search._runner import StopSignals, build_study, run_workers
from nas.search._settings import (
    BASELINES,
    COST_FACTOR,
    COST_HISTORY,
    DEFAULT_EPOCHS,
    DEFAULT_TRIAL_TIMEOUT,
    LR_FACTOR,
    MIN_TRAIN_STEPS,
    MIN_TRIAL_TIMEOUT,
    PROMOTIONS,
    REFERENCE_DESIGNS,
    TIMEOUT_FACTOR,
    TIMEOUT_HISTORY,
    Settings,
    default_max_flops,
)
from nas.search._spaces import check_task, default_space, load_space, starting_points
from nas.search._storage import (
    OBJECTIVE_SETS,
    SAMPLERS,
    StudyError,
    check_storage_url,
    finished_count,
    parse_objectives,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; with ``--config FILE``, the file's values are the defaults, which
    the flags given override."""
    p = _parser()
    return _with_config(p, p.parse_args(argv), argv)


def _parser() -> argparse.ArgumentParser:
    p = command.parser("nas search", __doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a study file (TOML) of these flags' values, such as studies/fashion_mnist.toml; "
        "a flag given here overrides the file",
    )
    p.add_argument(
        "--trials", type=int, default=100, help="finished trials in the study (default 100)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="stop starting trials after this many seconds; a candidate estimated to train "
        f"over 1/{1 / TIMEOUT_SHARE:.0f} of it, or past it, is not trained",
    )
    p.add_argument(
        "--space",
        help="space name or .py path (default: attention_cnn for images, manet_text for text)",
    )
    p.add_argument(
        "--dataset", default="fashion_mnist", help=f"{', '.join(DATASETS)} or imagefolder:PATH"
    )
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument(
        "--text-column", default="text", help="text datasets: column/key of the text (csv, jsonl)"
    )
    p.add_argument(
        "--label-column",
        default="label",
        help="text datasets: column/key of the label (csv, jsonl)",
    )
    p.add_argument(
        "--tokenizer",
        help=f"text datasets: {' | '.join(TOKENIZERS)} (default words: lower-cased words and "
        "punctuation; bytes: UTF-8 bytes; ngrams: fastText's words, word bigrams and "
        "character 3-5-grams); recorded with the study",
    )
    p.add_argument(
        "--epochs",
        type=float,
        help="training budget per trial in epochs (default "
        + ", ".join(f"{e:g} for {kind}s" for kind, e in DEFAULT_EPOCHS.items())
        + f", or more where that is under {MIN_TRAIN_STEPS} optimiser steps: a small dataset)",
    )
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--study-name", help="default: <space>-<dataset>")
    p.add_argument("--objectives", default="accuracy,latency", help=" | ".join(OBJECTIVE_SETS))
    p.add_argument("--max-latency-ms", type=float, help="hard latency budget (not trained if over)")
    p.add_argument("--max-params", type=int, help="hard parameter budget")
    p.add_argument(
        "--max-flops",
        type=float,
        help="hard FLOP budget per example (default for images: 100M up to 28×28 inputs, "
        "128k per input pixel above, so that a brief search stays brief; 0: none)",
    )
    p.add_argument(
        "--max-train-seconds",
        type=float,
        help="training cost a candidate may have, estimated from its first steps (over it: "
        "pruned, not trained; default: the larger of the hand design's estimate ("
        + " or ".join(f"{name} for {kind}s" for kind, name in REFERENCE_DESIGNS.items())
        + "), measured "
        f"at the start, and {COST_FACTOR:g}x the median estimate of the study's finished "
        f"trials once {COST_HISTORY} have one; 0: none)",
    )
    p.add_argument(
        "--lr-factor",
        type=float,
        default=LR_FACTOR,
        help="search each trial's learning rate within this factor of the training recipe's, "
        "either way, on a log scale (4: 0.025-0.4 for images' SGD at 0.1); the hand designs "
        f"train at the recipe's (default {LR_FACTOR:g}: every trial does)",
    )
    p.add_argument(
        "--promotions",
        type=int,
        default=PROMOTIONS,
        help="rungs after the per-trial budget: a trial that ends it in the top third of the "
        f"trials at least as fast trains on from its weights to {PROMOTION_FACTOR:g}x the "
        f"budget, and so on, this many times (default {PROMOTIONS}; 0: none)",
    )
    p.add_argument(
        "--latency-device", default=None, help="where latency is measured (default: --device)"
    )
    p.add_argument(
        "--latency-batch", type=int, default=1, help="batch size of the latency measurement"
    )
    p.add_argument(
        "--latency-threads",
        type=int,
        default=1,
        help="CPU threads of the latency measurement (default 1: what one request sees on "
        "one core, and repeatable on a shared machine; 0: all of this worker's threads)",
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument(
        "--pruner",
        default=None,
        choices=("pareto", "hyperband", "median", "none"),
        help="default: pareto (multi-objective) or hyperband (single)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per worker (default: the cores split between the workers; "
        "1 beside other busy processes, where a thread waiting for a core stalls the rest)",
    )
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument(
        "--enqueue-baselines",
        action="store_true",
        help=f"run the hand designs ({', '.join(BASELINES)}) as the first trials",
    )
    p.add_argument(
        "--no-starting-points",
        action="store_true",
        help="do not queue the space's starting points (networks a new search tries first): "
        "every trial is the sampler's",
    )
    p.add_argument(
        "--trial-timeout",
        type=float,
        help="seconds one trial may take before it is failed with that reason (default: "
        f"{DEFAULT_TRIAL_TIMEOUT:g} until the study has {TIMEOUT_HISTORY} complete trials, then "
        f"{TIMEOUT_FACTOR:g}x their median duration, at least {MIN_TRIAL_TIMEOUT:g}; 0: none)",
    )
    p.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="resume a study with other settings (epochs, limits, latency setting, seed) "
        "than it was made with; the change is recorded in the study",
    )


# ----------------------------------------------------------------------- study files


def _with_config(
    p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None
) -> argparse.Namespace:
    """``args``, or with ``--config FILE`` the command line parsed again with the file's
    values as the defaults: the flags given override them."""
    if args.config is None:
        return args
    p.set_defaults(**read_config(args.config))
    return p.parse_args(argv)


def read_config(path: str) -> dict[str, Any]:
    """A study file's values by ``argparse`` dest, each checked as its flag would be: an
    unknown key, a key given twice or a value of the wrong type is a ``StudyError`` naming
    the file, the key and the value."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise StudyError(f"study file {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"study file {path!r} is not valid TOML: {e}") from None
    flags = _search_flags()
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in table.items():
        flag = key.replace("_", "-")
        action = flags.get(flag)
        if action is None:
            raise StudyError(
                f"study file {path!r}: unknown key {key!r} (= {value!r}); a key is a long "
                "flag of nas search --help without its dashes (not config, debug or "
                "verbosity), such as trials, dataset or max-flops"
            )
        if flag in given:
            raise StudyError(
                f"study file {path!r}: {flag} is given twice, as {given[flag]!r} and {key!r}"
            )
        given[flag] = key
        values[action.dest] = _config_value(path, key, value, action)
    return values


class _FlagRecorder(argparse.ArgumentParser):
    """A parser that keeps the options it is given by long flag (without ``--``)."""

    def __init__(self) -> None:
        super().__init__(add_help=False)
        self.flags: dict[str, argparse.Action] = {}

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.update({o[2:]: action for o in action.option_strings if o.startswith("--")})
        return action


def _search_flags() -> dict[str, argparse.Action]:
    """The search's own flags, which a study file may set: not --config (a file names no
    other), nor --debug and --verbosity (they act before the file is read)."""
    recorder = _FlagRecorder()
    add_arguments(recorder)
    recorder.flags.pop("config")
    return recorder.flags


def _config_value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` as its flag's parser would have it, else a ``StudyError``."""
    if action.nargs == 0:  # a switch: --enqueue-baselines, --allow-changed-settings
        ok, kind = isinstance(value, bool), "true or false"
    elif action.type is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise StudyError(f"study file {path!r}: {key} = {value!r} is not {kind}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise StudyError(f"study file {path!r}: {key} = {value!r} is not one of {choices}")
    return value


def _check_number(flag: str, value: float | None, *, zero: str = "") -> None:
    """Refuse a flag's number that cannot work: NaN, infinite, or not positive (``zero``:
    what 0 means where it is allowed)."""
    if value is None or (zero and value == 0):
        return
    if not (math.isfinite(value) and value > 0):
        allowed = f" (or 0: {zero})" if zero else ""
        raise StudyError(f"{flag} must be a finite number above 0{allowed}, got {value:g}")


def settings_from(args: argparse.Namespace) -> Settings:
    """Validate everything before anything is written: a flag that cannot work is a
    ``NasError`` (exit 2), naming the flag and the value."""
    objectives = parse_objectives(args.objectives)
    if args.trials < 1:
        raise StudyError(f"--trials must be at least 1, got {args.trials}")
    _check_number("--epochs", args.epochs)
    _check_number("--timeout", args.timeout)
    _check_number("--trial-timeout", args.trial_timeout, zero="no limit")
    _check_number("--max-latency-ms", args.max_latency_ms)
    _check_number("--max-params", args.max_params)
    _check_number("--max-flops", args.max_flops, zero="no limit")
    _check_number("--max-train-seconds", args.max_train_seconds, zero="no limit")
    if not (math.isfinite(args.lr_factor) and args.lr_factor >= 1):
        raise StudyError(
            f"--lr-factor must be a finite number of at least 1, got {args.lr_factor:g}"
        )
    if args.promotions < 0:
        raise StudyError(f"--promotions must be 0 or more, got {args.promotions}")
    if args.latency_batch < 1:
        raise StudyError(f"--latency-batch must be at least 1, got {args.latency_batch}")
    if args.jobs < 1:
        raise StudyError(f"--jobs must be at least 1, got {args.jobs}")
    if args.latency_threads < 0:
        raise StudyError(f"--latency-threads must be 0 or more, got {args.latency_threads}")
    if args.threads is not None and args.threads < 1:
        raise StudyError(f"--threads must be at least 1, got {args.threads}")
    if not 0 <= args.seed < 2**32:  # numpy's and Optuna's samplers take no other seed
        raise StudyError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.study_name is not None and not args.study_name.strip():
        raise StudyError(f"--study-name must not be empty, got {args.study_name!r}")
    tokenizer = _tokenizer(args.tokenizer)
    module = load_space(args.space) if args.space else None  # a typo fails before any reading
    text = is_text_name(args.dataset)
    task = task_for(
        args.dataset,
        data_dir=args.data_dir,
        seed=args.seed,  # a text task's vocabulary comes from the seed's training split
        text_column=args.text_column,
        label_column=args.label_column,
        tokenizer=tokenizer if text else None,
    )
    if args.tokenizer is not None and not text:  # after task_for: an unknown name first
        raise StudyError(
            f"--tokenizer applies to text datasets only; {args.dataset!r} is an image "
            f"dataset, got --tokenizer {args.tokenizer}"
        )
    space = args.space or default_space(task)
    module = module or load_space(space)
    check_task(module, task, space)
    if args.enqueue_baselines and task.kind != "image":
        raise StudyError(
            f"--enqueue-baselines: the hand designs ({', '.join(BASELINES)}) are image "
            f"networks; {args.dataset!r} is a {task.kind} dataset"
        )
    epochs = DEFAULT_EPOCHS[task.kind] if args.epochs is None else args.epochs
    device = _device(args.device, "--device")
    latency_device = _device(args.latency_device or device, "--latency-device")
    space_name = Path(space).stem
    study_name = (
        args.study_name or f"{space_name}-{args.dataset.replace(':', '_').replace('/', '_')}"
    )
    storage = args.storage or f"sqlite:///studies/{study_name}.db"
    check_storage_url(storage)
    try:
        make_pruner(args.pruner or "pareto", multi_objective=len(objectives) > 1)
    except ValueError as e:  # the library's refusal, a user error here
        raise StudyError(str(e)) from None
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    points = () if args.no_starting_points else tuple(starting_points(module, task, space))
    return Settings(
        trials=args.trials,
        timeout=args.timeout,
        space=space,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=epochs,
        storage=storage,
        study_name=study_name,
        objectives=objectives,
        limits=Limits(
            args.max_latency_ms,
            None if args.max_params is None else int(args.max_params),
            default_max_flops(args.max_flops, task),
        ),
        latency_device=latency_device,
        latency_batch=args.latency_batch,
        latency_threads=args.latency_threads,
        sampler=args.sampler,
        pruner=args.pruner or "pareto",
        seed=args.seed,
        jobs=args.jobs,
        device=device,
        enqueue_baselines=args.enqueue_baselines,
        starting_points=points,
        threads=threads,
        text_column=args.text_column,
        label_column=args.label_column,
        tokenizer=tokenizer,
        trial_timeout=args.trial_timeout,
        max_train_seconds=args.max_train_seconds,
        lr_factor=args.lr_factor,
        promotions=args.promotions,
        min_train_steps=MIN_TRAIN_STEPS if args.epochs is None else 0,
        allow_changed_settings=args.allow_changed_settings,
    )


def _tokenizer(given: str | None) -> Tokenizer:
    """``--tokenizer`` checked against TOKENIZERS (default ``words``). Not argparse's
    choices: a bad value is one line, as every other value the search refuses."""
    if given is None:
        return "words"
    for name in TOKENIZERS:
        if given == name:
            return name
    raise StudyError(f"unknown --tokenizer {given!r}; choose one of {', '.join(TOKENIZERS)}")


def _device(name: str, flag: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` → the device to use; one that is not there
    or cannot be named is refused."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StudyError(f"{flag}: unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise StudyError(f"{flag}: unsupported device {name!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StudyError(f"{flag} {name}: no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise StudyError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA devices")
    return name


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    study = build_study(s, worker=False)
    print(
        f"study {s.study_name!r} in {s.storage}: {finished_count(study)} of {s.trials} "
        f"trials finished; {s.jobs} worker(s), {s.threads} thread(s) each, device {s.device}",
        file=sys.stderr,
    )
    bounds = {
        "latency ms": s.limits.max_latency_ms,
        "params": s.limits.max_params,
        "FLOPs": s.limits.max_flops,
    }
    if any(v is not None for v in bounds.values()):
        shown = ", ".join(
            f"{k} <= {v:g}" if k == "latency ms" else f"{k} <= {v:,.0f}"
            for k, v in bounds.items()
            if v is not None
        )
        print(f"limits (over them: pruned, not trained): {shown}", file=sys.stderr)
    progress = Progress(study, s.trials, s.timeout)
    stops = StopSignals()
    # Signal handlers can only be set from the main thread (main() may run in another).
    if threading.current_thread() is threading.main_thread():
        stops.install()
    try:
        failed = run_workers(s, study, progress.update, stops)
        if failed is not None:
            progress.close()
            print(f"error: {failed.message}", file=sys.stderr)
            if failed.count > 1:
                print(f"({failed.count} of {s.jobs} workers failed)", file=sys.stderr)
            return 1
    except KeyboardInterrupt as e:
        progress.close()
        print(
            "\ninterrupted: the running trial is queued again; rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + getattr(e, "signum", signal.SIGINT)
    except BaseException:
        progress.close()
        raise
    finally:
        stops.restore()
    progress.update(study)
    progress.close()
    print(f"\n{finished_count(study)} trials finished ({tally(counts(study))})")
    longest = longest_share(study)
    if longest is not None:
        number, seconds, share = longest
        print(f"longest trial: {number}, {seconds:.1f} s, {share:.1%} of all trials' time")
    title = "Pareto front" if len(s.objectives) > 1 else "Best trial"
    print(f"\n{title} ({', '.join(s.objectives)}):\n{front_table(study)}")
    print(f"\nstudy: {s.study_name}  storage: {s.storage}")
    print("next:")
    print(f"  python -m nas.report    --storage {s.storage} --study-name {s.study_name}")
    print(f"  python -m nas.dashboard --storage {s.storage}")
    print(f"  python -m nas.export    --storage {s.storage} --study-name {s.study_name} --best")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    first = p.parse_args(argv)
    # The study file is read inside command.run, so an error in it is one line and exit 2.
    return command.run(lambda args: run(_with_config(p, args, argv)), first)
