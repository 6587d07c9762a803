"""The Optuna glue: trial → spec → measure → constraints → brief training → values.

Latency, FLOPs and parameters are properties of the architecture, so they are
measured before training: a candidate over a hard budget is recorded with the reason
and never trained. Everything a trial did is stored on it as user attributes (the
spec as JSON, seed, latency median and spread, FLOPs, params, device fingerprint,
library versions, epochs done, images/s, and why it failed or was pruned).
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import nas.search._pruning as pruning
from nas.data import Data
from nas.model import ArchSpec, build_model
from nas.search._locks import MACHINE_LOCK_TIMEOUT, measurement_lock, training_lock
from nas.search._notes import write_note
from nas.search._results import BASELINE_ATTR, REPEAT_OF, is_repeat
from nas.search._spaces import Suggest, load_builtin_space
from nas.search._timelimit import uncounted
from nas.train import (
    TrainConfig,
    TrainResult,
    count_flops,
    count_params,
    fingerprint,
    measure_latency,
    train,
)

# Learning-curve steps are hundredths of an epoch: Optuna wants integer steps and the
# rungs of a brief training are fractions of an epoch.
STEPS_PER_EPOCH = 100

# A trial is judged by the pruner only after this many optimiser steps: before that,
# validation accuracy says little about where a network ends (rank correlations with the
# end's: the README's "Pareto-aware pruning", from bench/pruning.py).
MIN_STEPS_JUDGED = 32


def first_judged_step(train_size: int, batch_size: int) -> int:
    """The learning-curve step (``STEPS_PER_EPOCH`` per epoch) from which pruning may
    judge a trial: the one after ``MIN_STEPS_JUDGED`` optimiser steps."""
    return math.ceil(MIN_STEPS_JUDGED * batch_size * STEPS_PER_EPOCH / max(train_size, 1))


# A promoted trial trains on to this many times its budget at each promotion (the
# settings' PROMOTIONS says how many times): 0.3 → 0.9 → 2.7 epochs for images.
PROMOTION_FACTOR = 3.0


def rung_config(
    first: TrainConfig, rung: int, done: float, factor: float = PROMOTION_FACTOR
) -> TrainConfig:
    """How a trial promoted to ``rung`` (1, 2, …) trains on from its weights, having
    trained ``done`` epochs of ``first`` (its first rung's training): to ``factor**rung``
    times the first budget in all. A warm restart, as in SGDR: the schedule warms up again
    and anneals to the new budget, so each rung ends on an annealed model; a fresh data
    order, and no rungs inside (its end is the judged point)."""
    budget = first.epochs * factor**rung
    return replace(first, epochs=budget - done, seed=first.seed + rung, report_every=None)


# A candidate estimated from its first timed step at over this multiple of the cost limit
# is refused there; otherwise the estimate from four steps decides.
FIRST_LOOK_MARGIN = 2.0

# Under --timeout, a first budget estimated over this share of it is not trained: a
# search then trains at least 1/TIMEOUT_SHARE candidates (a 4-minute text search's first
# trial trained for 3 of them, before any cost limit existed to refuse it).
TIMEOUT_SHARE = 1 / 8

# How the reason of a candidate refused over a limit starts (the cost limit reads it: such
# trials' estimates stay out of its median).
OVER_BUDGET = "over budget, not trained:"

# The states of the trials a repeat may name (``repeated``).
REPEATED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

# The parameter under which a trial's learning rate is searched (``Objective.lr_factor``).
LR_PARAM = "train.lr"


class TrialFailed(Exception):
    """A trial that cannot give values (NaN loss, out of memory); the reason is stored."""


@dataclass(frozen=True)
class CostLimit:
    """Seconds of training a candidate may cost, and where that figure comes from."""

    seconds: float
    source: str


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    max_params: int | None = None
    max_flops: int | None = None


@dataclass
class Objective:
    """Callable objective for ``study.optimize``-style loops.

    Baseline trials (enqueued hand designs) carry the user attr ``baseline`` with the
    name of their space; every other trial samples ``suggest``.
    """

    suggest: Suggest
    data: Data
    objectives: tuple[str, ...]
    train_config: TrainConfig
    limits: Limits
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_threads: int = 1
    seed: int = 0
    device: str = "cpu"
    # The bound of a wait for this machine's locks; the runner sets it from the trial's
    # time limit (nas.search._locks.machine_lock_timeout).
    lock_timeout: float | None = MACHINE_LOCK_TIMEOUT
    # The training cost a candidate may have, estimated from its first steps; the runner
    # sets it for each trial (nas.search._runner.cost_limit).
    cost_limit: CostLimit | None = None
    # Each trial's learning rate is searched in [lr / lr_factor, lr × lr_factor] (log scale)
    # around the recipe's: one rate for all favours the networks it suits (the README's
    # "Searching"). 1: every trial trains at the recipe's. The hand designs always do:
    # they are the reference.
    lr_factor: float = 1.0
    # Rungs after the budget: a trial that ends its training among the best of its peers
    # (nas.search._pruning.promoted) trains on from its weights, to ``promotion_factor``
    # times its budget, up to ``promotions`` times; the runner sets it from the search.
    promotions: int = 0
    promotion_factor: float = PROMOTION_FACTOR
    # Whether a starting point (user attr ``starting_point``, set where the runner queues
    # the space's ``STARTING_POINTS``) trains through every rung, peers or not; the runner
    # sets it by task kind (nas.search._settings.PROMOTED_STARTING_POINTS).
    promote_starting_points: bool = False
    # --timeout, in seconds and as a time.monotonic() to end by: a first budget estimated
    # over TIMEOUT_SHARE of it, or to end after it, is not trained; no promotion that would
    # end after it starts, nor any trial; None: no time limit. The runner sets both.
    timeout: float | None = None
    deadline: float | None = None
    # Called when the running trial gets further (latency measured, cost estimated, each
    # rung), so that progress shows it; the runner sets it.
    on_progress: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._fingerprint = fingerprint()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        try:
            return self._run(trial)
        except optuna.TrialPruned as e:
            trial.set_user_attr("reason", str(e))
            raise
        except torch.OutOfMemoryError as e:
            self._free()
            reason = f"out of memory: {str(e).splitlines()[0]}"
            trial.set_user_attr("reason", reason)
            raise TrialFailed(reason) from None
        except Exception as e:
            trial.set_user_attr("reason", f"{e.__class__.__name__}: {e}")
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if trial.user_attrs.get("reason") is not None:
            # A retry carries its failed attempt's user attrs: the old reason would outlive
            # an attempt that succeeds. (Optuna cannot delete a user attr: null it.)
            trial.set_user_attr("reason", None)
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        # A stored name: only a built-in space, never a file it might point at.
        suggest = load_builtin_space(str(baseline)).suggest if baseline else self.suggest
        spec = suggest(trial, self.data.task)
        lr = self.train_config.lr
        if self.lr_factor > 1 and not baseline:
            lr = trial.suggest_float(LR_PARAM, lr / self.lr_factor, lr * self.lr_factor, log=True)
        seed = self.seed + trial.number
        trial.set_user_attr("arch", spec.to_dict())
        trial.set_user_attr("summary", spec.summary())
        if not baseline and not _starting_point(trial):
            _refuse_a_repeat(trial)
        _note(trial, spec)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", self._fingerprint)
        self._progress()

        model = build_model(spec, seed=seed)
        # The spec's input says what the model takes: float images or int64 token ids.
        shape = spec.input
        params = count_params(model)
        flops = count_flops(model, shape)
        trial.set_user_attr("params", params)
        trial.set_user_attr("flops", flops)
        # Over a params or FLOPs limit: refused before taking the machine to time it.
        self._check_limits(None, params, flops)
        with uncounted(measurement_lock(self.lock_timeout)):
            latency = measure_latency(
                model,
                shape,
                batch=self.latency_batch,
                device=self.latency_device,
                threads=self.latency_threads,
            )
        trial.set_user_attr("latency_ms", latency.median_ms)
        trial.set_user_attr("latency_iqr_ms", latency.iqr_ms)
        trial.set_user_attr("latency", latency.to_dict())
        _note(trial, spec)
        self._progress()
        self._check_limits(latency.median_ms, params, flops)

        config = first = replace(self.train_config, seed=seed, lr=lr)
        trial.set_user_attr("epochs_budget", config.epochs)
        done = 0.0  # epochs trained at the rungs before this one

        def report(epoch: float, accuracy: float) -> None:
            trial.set_user_attr("epochs_done", done + epoch)
            pruning.report(trial, round((done + epoch) * STEPS_PER_EPOCH), accuracy)
            self._progress()
            # The last report comes after training: pruning then would save nothing and
            # only drop a finished candidate from the front.
            # (The trainer ends on a whole step, a little short of config.epochs; the
            # last rung comes a whole report interval earlier.)
            final = epoch > config.epochs - (config.report_every or config.epochs) / 2
            if done == 0 and not final and pruning.should_prune(trial):
                raise optuna.TrialPruned(f"pruned at epoch {epoch:.2f}: accuracy {accuracy:.4f}")

        def estimate(seconds: float, final: bool) -> None:
            trial.set_user_attr("train_estimate_s", seconds)
            self._progress()
            limits = [] if self.cost_limit is None else [self.cost_limit]
            for limit in [*limits, *self._timeout_limits()]:
                # At the first look (one step timed) only a candidate far over is refused:
                # the steps before the final estimate are what a refusal costs, and a very
                # slow network's take half a minute.
                if seconds > limit.seconds * (1.0 if final else FIRST_LOOK_MARGIN):
                    raise optuna.TrialPruned(
                        f"{OVER_BUDGET} training estimated at {seconds:.4g} s from "
                        f"its first steps, over {limit.seconds:.4g} s ({limit.source})"
                    )

        model.to(self.device)
        seconds, images, rung = 0.0, 0.0, 0
        kept: tuple[TrainResult, float, dict[str, torch.Tensor]] | None = None
        while True:
            with uncounted(training_lock(self.lock_timeout)):
                result = train(
                    model,
                    self.data,
                    config,
                    report=report,
                    device=self.device,
                    estimate=estimate if rung == 0 else None,
                )
            done += result.epochs_done
            seconds += result.train_seconds
            images += result.images_per_second * result.train_seconds
            if result.status == "nan" or not math.isfinite(result.val_accuracy):
                if kept is not None:  # diverged after a promotion: the last rung's model
                    result, done, state = kept
                    model.load_state_dict(state)
                    trial.set_user_attr("diverged_at_rung", rung + 1)
                break
            config = rung_config(first, rung + 1, done, self.promotion_factor)
            cost = config.epochs * seconds / max(done, 1e-9)  # the next rung's, estimated
            if not self._promote(trial, rung, cost):
                break
            kept = (result, done, {k: v.clone() for k, v in model.state_dict().items()})
            rung += 1
            trial.set_user_attr("promotions", rung)
            trial.set_user_attr("epochs_budget", done + config.epochs)
            # For the progress line's time to go (train_estimate_s stays the first rung's:
            # the cost limit compares trials by it).
            trial.set_user_attr("rung_estimate_s", cost)
            trial.set_user_attr("rung_started", time.time())
            self._progress()
        trial.set_user_attr("epochs_done", done)
        trial.set_user_attr("images_per_second", images / seconds if seconds > 0 else 0.0)
        trial.set_user_attr("train_seconds", seconds)
        trial.set_user_attr("train_status", result.status)
        if result.status == "nan" or not math.isfinite(result.val_accuracy):
            raise TrialFailed(f"loss became NaN/inf after {done:.2f} epochs")
        values: dict[str, float] = {
            "accuracy": result.val_accuracy,
            "latency": latency.median_ms,
            "params": float(params),
            "flops": float(flops),
        }
        out = tuple(values[o] for o in self.objectives)
        return out[0] if len(out) == 1 else out

    def _timeout_limits(self) -> list[CostLimit]:
        """What --timeout allows a first budget: ``TIMEOUT_SHARE`` of it, and no more than
        is left of it. Until two trials have finished no cost limit bounds a trial, and one
        trial must not be most of a search."""
        limits = []
        if self.timeout is not None:
            limits.append(
                CostLimit(
                    self.timeout * TIMEOUT_SHARE,
                    f"1/{1 / TIMEOUT_SHARE:.0f} of --timeout {self.timeout:g} s",
                )
            )
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.0)
            limits.append(CostLimit(left, f"the {left:.0f} s left of --timeout"))
        return limits

    def _promote(self, trial: optuna.Trial, rung: int, seconds: float) -> bool:
        """Whether the trial, done with ``rung``'s budget, trains on to the next (the
        promotion rule, :func:`nas.search._pruning.promoted`, or a promoted starting point),
        which is estimated to cost ``seconds`` more: not past the last rung, nor past the
        search's deadline."""
        if rung >= self.promotions:
            return False
        if self.deadline is not None and time.monotonic() + seconds > self.deadline:
            return False
        if self.promote_starting_points and _starting_point(trial):
            return True
        return pruning.promoted(trial)

    def _check_limits(self, latency_ms: float | None, params: int, flops: int) -> None:
        over: list[tuple[str, Any, Any]] = []
        max_latency = self.limits.max_latency_ms
        if max_latency is not None and latency_ms is not None and latency_ms > max_latency:
            over.append(
                (
                    "latency",
                    f"{latency_ms:.3f} ms",
                    f"--max-latency-ms {self.limits.max_latency_ms}",
                )
            )
        if self.limits.max_params is not None and params > self.limits.max_params:
            over.append(("params", params, f"--max-params {self.limits.max_params}"))
        if self.limits.max_flops is not None and flops > self.limits.max_flops:
            over.append(("flops", flops, f"--max-flops {self.limits.max_flops}"))
        if over:
            text = "; ".join(f"{name} {value} over {limit}" for name, value, limit in over)
            raise optuna.TrialPruned(f"{OVER_BUDGET} {text}")

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _free(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _starting_point(trial: optuna.Trial) -> bool:
    """Whether the runner queued ``trial`` as a starting point: a stored mark counts only
    as ``True`` (it gives a trial more rungs and spares it the repeat check)."""
    return trial.user_attrs.get("starting_point") is True


def repeated(trial: optuna.Trial) -> FrozenTrial | None:
    """The study's earliest trial before ``trial`` sampled with its parameters that trained
    (complete or pruned) or is training now, if any; baselines and repeats aside. Only an
    earlier one: two workers drawing the same network at once must not prune each other.
    A space with no choices is left alone: its trials are seeds of one network."""
    if not trial.params:
        return None
    for t in trial.study.get_trials(deepcopy=False, states=REPEATED_STATES):
        if (
            t.number < trial.number
            and t.params == trial.params
            and not t.user_attrs.get(BASELINE_ATTR)
            and not is_repeat(t)
        ):
            return t
    return None


def _refuse_a_repeat(trial: optuna.Trial) -> None:
    """Prune a trial the sampler drew again: a second training would cost what the first
    did and tell only its seed's noise (TPE redraws the fast end's few small networks
    often: the README's "Searching"). Pruned, it tells the sampler the draw gained
    nothing, which TPE counts against it."""
    earlier = repeated(trial)
    if earlier is not None:
        trial.set_user_attr(REPEAT_OF, earlier.number)
        raise optuna.TrialPruned(
            f"a repeat of trial {earlier.number} ({earlier.state.name.lower()}): "
            "the same parameters, not trained"
        )


def _note(trial: optuna.Trial, spec: ArchSpec) -> None:
    """The spec as a table on the trial's optuna-dashboard page, live during the search."""
    try:
        write_note(trial, spec)
    except Exception as e:  # a note is a convenience: it never fails a trial
        warnings.warn(f"no dashboard note: {e.__class__.__name__}: {e}", stacklevel=2)
