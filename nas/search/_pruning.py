"""Pruning for single- and multi-objective studies, including a Pareto-aware pruner.

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` in multi-objective studies
(``NotImplementedError``, optuna issue #3450): no pruner of its own knows which of several
objectives an intermediate value belongs to. Ours does, because the search makes it
explicit: the intermediate value is validation accuracy, and latency is a property of the
architecture, measured *before* training and stored as the trial's user attr
``latency_ms``. So only the accuracy curve is uncertain while a trial trains, and
:class:`ParetoPruner` judges that curve against the trials that could dominate it: the
ones at least as fast.

Use :func:`report` and :func:`should_prune` in place of the ``Trial`` methods; they
delegate to Optuna in single-objective studies and close the gap in multi-objective ones.
:func:`make_pruner` builds a pruner by name and refuses the combinations Optuna cannot run.

One more gap: ``TPESampler`` ranks pruned trials by their last intermediate value using
``study.direction``, which raises in a multi-objective study, so the first trial sampled
after a pruned one fails. Wrap it in :class:`PrunedTrialsSampler` (NSGA-II and the random
sampler ignore pruned trials and need no wrapper).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search._optuna import stored_trial, write_intermediate

__all__ = [
    "LATENCY_ATTR",
    "PROMOTION_ETA",
    "PRUNER_NAMES",
    "ParetoPruner",
    "PrunedTrialsSampler",
    "make_pruner",
    "promoted",
    "report",
    "should_prune",
]

log = logging.getLogger(__name__)

#: User attr holding a trial's measured latency in milliseconds (set before training).
LATENCY_ATTR = "latency_ms"

#: A trial that has finished a rung's budget trains on when it is in the top 1/eta of the
#: peers that reached that rung: successive halving's cut (ASHA's default factor).
PROMOTION_ETA = 3.0

# The trials whose values judge others: finished with a curve, or still training.
_JUDGING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

#: Names :func:`make_pruner` accepts.
PRUNER_NAMES = ("pareto", "hyperband", "median", "none")


def _is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


# Trial has no public way to write an intermediate value or read back its own FrozenTrial
# in a multi-objective study (its report() raises there): both go one level down, to the
# storage API every backend implements, in nas.search._optuna.


def report(trial: optuna.trial.BaseTrial, step: int, value: float) -> None:
    """Store an intermediate value at ``step``, in any study.

    Single-objective studies (and ``FixedTrial``/``FrozenTrial``) go through
    ``trial.report``. In multi-objective studies, where that raises, the value is written
    through the storage, with Optuna's own checks and semantics: ``value`` must convert to
    float, ``step`` to a non-negative int, and a step already reported is ignored with a
    warning (the first value wins). Stored values show in ``FrozenTrial.intermediate_values``
    and hence in dashboards and learning-curve plots, and :func:`should_prune` reads them.

    Unlike ``Trial.report``, a fractional float ``step`` is refused rather than truncated:
    the trainer reports rungs in epochs (0.25, 0.5, ...), and truncation would fold them all
    into step 0, silently dropping every rung after the first; map them to integers first.

    Raises:
        TypeError: ``value`` is not float-like, or ``step`` is not int-like or is a
            fractional float.
        ValueError: ``step`` is negative.
    """
    if isinstance(step, float) and not float(step).is_integer():
        raise TypeError(
            f"The `step` argument must be an integer, got {step!r}; map epochs to integer "
            "steps (a rung index, or optimiser steps) before reporting."
        )
    if not isinstance(trial, optuna.Trial) or not _is_multi_objective(trial.study):
        trial.report(value, step)
        return

    # The same conversions and messages as Trial.report, so both paths behave alike.
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `value` argument is of type '{type(value)}' but supposed to be a float."
        ) from None
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `step` argument is of type '{type(step)}' but supposed to be an int."
        ) from None
    if step < 0:
        raise ValueError(f"`{step=}` must be non-negative.")

    # The storage is the truth (another process may share it); reading it back costs one
    # query per rung, nothing next to training a rung.
    if step in stored_trial(trial).intermediate_values:
        warnings.warn(
            f"The reported value is ignored because this `{step=}` is already reported.",
            UserWarning,
            stacklevel=2,
        )
        return
    write_intermediate(trial, step, value)


def should_prune(trial: optuna.trial.BaseTrial) -> bool:
    """Whether the study's pruner says to stop this trial now, in any study.

    Single-objective studies (and ``FixedTrial``/``FrozenTrial``) delegate to
    ``trial.should_prune()``. Multi-objective studies ask ``study.pruner`` directly with the
    trial as stored now (intermediate values and user attrs current). The pruner must be
    one that does not read ``study.direction``: :class:`ParetoPruner`, ``NopPruner`` or
    ``ThresholdPruner``; Optuna's ranking pruners (median, percentile, successive halving,
    Hyperband, Wilcoxon, and Patient around any of them) would fail there; they are
    refused with a ``ValueError`` at the first call, as :func:`make_pruner` refuses them.
    """
    # bool(): Optuna's pruners return numpy booleans, which are not ``True``/``False``.
    if not isinstance(trial, optuna.Trial) or not _is_multi_objective(trial.study):
        return bool(trial.should_prune())
    pruner = trial.study.pruner
    if isinstance(pruner, _SINGLE_OBJECTIVE_PRUNERS):
        # They would raise only once enough trials finished (MedianPruner waits for 5),
        # deep inside a search; say so at the first rung, with the way out.
        raise ValueError(_refusal(type(pruner).__name__))
    return bool(pruner.prune(trial.study, stored_trial(trial)))


def promoted(trial: optuna.Trial, eta: float = PROMOTION_ETA) -> bool:
    """Whether a trial that has just finished a rung's budget trains on to the next one.

    Asynchronous successive halving's promotion (ASHA), Pareto-aware as
    :class:`ParetoPruner` is: the trial's value at its last step is compared with those of
    the *peers* that reached that very step, and it is promoted when fewer than
    ``ceil((n + 1) / eta)`` of the ``n`` peers did better. In a multi-objective study the
    peers are the trials at least as fast (within the study's ``ParetoPruner`` band, 10×
    otherwise): the only ones that could dominate it. In a single-objective study every
    trial is a peer.

    A rung promotes nothing before ``eta`` trials (this one included, any latency) have
    reached it: ASHA's top ``floor(n / eta)`` of a rung is empty until then. Optuna's SHA
    and MOASHA's stopping rule promote the first trial instead, with nothing to judge it
    by; here that trial's 3× and 9× budgets took 27–37 % of a default search and most
    of a 4-minute one. So the first ``eta - 1`` trials to finish a rung end there. After
    that, a trial faster than every other is always promoted, and it is cheap. A NaN
    value is never promoted; a trial with no usable latency in a multi-objective study
    always is once the rung has its ``eta`` trials (it cannot be placed)."""
    frozen = stored_trial(trial)
    step = frozen.last_step
    if step is None:
        return False
    value = frozen.intermediate_values[step]
    if math.isnan(value):
        return False
    study = trial.study
    others = [
        t for t in study.get_trials(deepcopy=False, states=_JUDGING) if t.number != frozen.number
    ]
    if 1 + sum(1 for t in others if _has_value(t, step)) < eta:
        return False
    peers: Iterable[FrozenTrial]
    if _is_multi_objective(study):
        latency = _latency(frozen, LATENCY_ATTR)
        if latency is None:
            return True
        # The pruner's peers: the trials that could dominate it.
        pareto = study.pruner if isinstance(study.pruner, ParetoPruner) else ParetoPruner()
        peers = pareto._peers(study, frozen, latency)
    else:
        peers = others
    values = [p.intermediate_values[step] for p in peers if _has_value(p, step)]
    n_better = sum(1 for v in values if v > value)
    return n_better < math.ceil((len(values) + 1) / eta)


def _has_value(trial: FrozenTrial, step: int) -> bool:
    value = trial.intermediate_values.get(step)
    return value is not None and not math.isnan(value)


# Optuna's pruners that rank trials by ``study.direction``, which multi-objective studies
# lack. (ThresholdPruner and NopPruner need no direction and work in any study.)
_SINGLE_OBJECTIVE_PRUNERS = (
    optuna.pruners.PercentilePruner,  # MedianPruner is one
    optuna.pruners.SuccessiveHalvingPruner,
    optuna.pruners.HyperbandPruner,
    optuna.pruners.WilcoxonPruner,
    optuna.pruners.PatientPruner,
)


def _refusal(pruner: str) -> str:
    return (
        f"pruner {pruner} cannot prune a multi-objective study (Optuna's pruners rank one "
        "objective and have no direction to rank by there); use 'pareto' (ParetoPruner), "
        "which judges accuracy only against trials at least as fast, or 'none'"
    )


def _latency(trial: FrozenTrial, key: str) -> float | None:
    """The trial's measured latency, or None when absent or unusable.

    A value that is not a finite real number (a string from a hand-edited database, NaN
    from a failed measurement) says nothing about speed, so it is treated as unmeasured.
    """
    raw = trial.user_attrs.get(key)
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None
    latency = float(raw)
    return latency if math.isfinite(latency) else None


class ParetoPruner(optuna.pruners.BasePruner):
    """Successive halving among the trials at least as fast: Pareto dominance at a rung.

    The search maximises accuracy and minimises latency. Latency is known before training
    (user attr ``latency_ms``), so while a trial trains only its accuracy is uncertain, and
    the only trials that can end up dominating it are those **at least as fast** with
    **higher accuracy**. This pruner therefore judges a trial's latest intermediate value
    only against those trials' values at the same step:

    - a fast trial is never pruned because slow (bigger) networks learn better — they are
      not its peers, and it may be on the front by latency alone;
    - a slow trial must beat the curves of the faster ones to justify its latency.

    **The rule.** Let the trial have latency ``L`` and latest intermediate value ``v`` at
    step ``s``. Its *peers* are the other trials with ``L / peer_band <= latency_ms <= L``
    in state COMPLETE, PRUNED or RUNNING. Let ``s*`` be the latest step with
    ``n_warmup_steps <= s* <= s`` at which at least ``min_peers`` peers have a (non-NaN)
    value, and ``n`` the number of them. The trial is pruned when at least
    ``ceil((n + 1) / eta)`` of those peers have a value strictly higher than ``v`` — that
    is, when it falls outside the top ``1/eta`` of its peer group (itself included, rounded
    up in its favour), exactly the cut of successive halving, taken only among trials that
    would dominate it if the rung were the end. Larger ``eta`` prunes harder: ``eta = 1``
    never prunes, and as ``eta`` grows the cut tends to plain Pareto dominance at the rung
    (one better faster peer is enough).

    Consequences, all deliberate:

    - a trial faster than every other has no peers, so it is never pruned;
    - trials over ``peer_band`` times faster are not peers: MLPs at 0.05–0.2 ms lead
      attention CNNs at 5–9 ms after 32 steps (0.77 against 0.62–0.70) and can trail them
      at the end (0.842 against 0.848–0.854 for 3 of 8 such CNNs a search pruned:
      ``bench/pruned_to_the_end.py``), so their early curves say little of where a CNN
      ends, while among networks of a similar cost curves that are behind at 32 steps
      rarely overtake (the calibration below). A CNN must still beat the MLPs' *final*
      accuracy to reach the front; it is only not stopped for learning more slowly at first;
    - fewer than ``min_peers`` peers at every step up to ``s``: never pruned (one faster
      peer's curve alone is too thin a case), so the first trials of a study always finish;
    - a trial with no usable ``latency_ms`` (single-objective runs, a failed measurement)
      is never pruned: it cannot be placed on the latency axis;
    - a NaN value is pruned at once, at any step and whatever the peers: the loss diverged
      and the curve will not come back; no comparison is needed to see that.

    **Which trials count.** COMPLETE and PRUNED trials contribute their value at the step;
    a PRUNED trial's value at a step it reached is as real a measurement as a finished
    one's, and dropping it would leave only survivors, raising the bar at every rung (the
    cut would then compound far beyond ``1/eta``). RUNNING trials count too: with parallel
    workers they are most of the evidence at late rungs, and their reported values are
    final. FAIL trials do not: their curves may be cut short by a crash or OOM that says
    nothing about the architecture. NaN values of peers are skipped, not counted.

    **Steps peers never reached.** When fewer than ``min_peers`` peers have a value at
    ``s`` itself (rung schedules that differ, a time-limited final point), the trial's value
    at ``s`` is compared with the peers' values at ``s*``, the nearest earlier step with
    enough of them. Learning curves rise, so the trial is compared with peers that have
    trained no longer than it has: the error is on the side of keeping it. When every trial
    reports at the same steps, ``s* = s``.

    **Use.** Report at a few rungs (every quarter of the budget, say) and do not ask after
    the last one: pruning a trial that has finished training saves nothing and only drops
    it from the front. The defaults (``eta=6``, ``min_peers=2``) come from replaying the
    pruner over the learning curves of five unpruned random searches of the default
    space on Fashion-MNIST (14-42 trained trials, 0.15 and 0.3 epoch per trial, judged
    from 32 optimiser steps on, ``bench/pruning.py``): hypervolume lost was 0-0.23% for
    every setting tried from ``eta=3, min_peers=4`` (the earlier default, 5-21% saved) to
    plain dominance (``min_peers=1``, one better faster peer: 25-37% saved), so curves that
    are behind a faster trial's at 32 steps rarely overtake it; ``eta=6, min_peers=2``
    saved 20-30%. Savings grow with the study: more trials, more faster peers.

    Args:
        eta: Keep the top ``1/eta`` of the peer group at each judged step; ``>= 1``.
        min_peers: Peers needed at a step before anything is pruned there; ``>= 1``.
        peer_band: Peers are at most this many times faster; ``>= 1`` (``math.inf``: every
            faster trial).
        n_warmup_steps: No trial is pruned (except for NaN) before this step, and no peer
            value from before it is used; early rungs of one-cycle schedules rank poorly.
        latency_key: User attr holding the latency (lower is better).
        direction: Of the intermediate value: ``"maximize"`` (accuracy) or ``"minimize"``
            (a loss).
    """

    def __init__(
        self,
        eta: float = 6.0,
        min_peers: int = 2,
        n_warmup_steps: int = 0,
        *,
        peer_band: float = 10.0,
        latency_key: str = LATENCY_ATTR,
        direction: Literal["maximize", "minimize"] = "maximize",
    ) -> None:
        # Written so that NaN fails too (every comparison with NaN is false).
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 1 <= eta < math.inf:
            raise ValueError(f"ParetoPruner eta must be a finite number >= 1, got {eta!r}")
        if isinstance(min_peers, bool) or not isinstance(min_peers, int) or min_peers < 1:
            raise ValueError(f"ParetoPruner min_peers must be an int >= 1, got {min_peers!r}")
        if (
            isinstance(n_warmup_steps, bool)
            or not isinstance(n_warmup_steps, int)
            or n_warmup_steps < 0
        ):
            raise ValueError(
                f"ParetoPruner n_warmup_steps must be an int >= 0, got {n_warmup_steps!r}"
            )
        if (
            isinstance(peer_band, bool)
            or not isinstance(peer_band, int | float)
            or not peer_band >= 1
        ):
            raise ValueError(f"ParetoPruner peer_band must be a number >= 1, got {peer_band!r}")
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                f"ParetoPruner direction must be 'maximize' or 'minimize', got {direction!r}"
            )
        self.eta = float(eta)
        self.min_peers = min_peers
        self.n_warmup_steps = n_warmup_steps
        self.peer_band = float(peer_band)
        self.latency_key = latency_key
        self.direction = direction

    def __repr__(self) -> str:
        return (
            f"ParetoPruner(eta={self.eta:g}, min_peers={self.min_peers}, "
            f"n_warmup_steps={self.n_warmup_steps}, peer_band={self.peer_band:g}, "
            f"latency_key={self.latency_key!r}, "
            f"direction={self.direction!r})"
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        if step < self.n_warmup_steps:
            return False
        latency = _latency(trial, self.latency_key)
        if latency is None:
            return False

        # Peer values by step, only at steps that can be judged (warm-up done, not after s).
        by_step: dict[int, list[float]] = {}
        for peer in self._peers(study, trial, latency):
            for peer_step, peer_value in peer.intermediate_values.items():
                if self.n_warmup_steps <= peer_step <= step and not math.isnan(peer_value):
                    by_step.setdefault(peer_step, []).append(peer_value)
        judged = [s for s, values in by_step.items() if len(values) >= self.min_peers]
        if not judged:
            return False
        peer_values = by_step[max(judged)]

        if self.direction == "maximize":
            n_better = sum(1 for p in peer_values if p > value)
        else:
            n_better = sum(1 for p in peer_values if p < value)
        n_keep = math.ceil((len(peer_values) + 1) / self.eta)
        return n_better >= n_keep

    def _peers(
        self, study: optuna.Study, trial: FrozenTrial, latency: float
    ) -> Iterable[FrozenTrial]:
        for other in study.get_trials(deepcopy=False, states=_JUDGING):
            if other.number == trial.number:
                continue
            other_latency = _latency(other, self.latency_key)
            if other_latency is not None and latency / self.peer_band <= other_latency <= latency:
                yield other


def make_pruner(
    name: str, multi_objective: bool, *, n_warmup_steps: int = 0
) -> optuna.pruners.BasePruner:
    """A pruner by name: ``pareto`` (default), ``hyperband``, ``median`` or ``none``.

    ``pareto`` is :class:`ParetoPruner` in multi-objective studies. In a single-objective
    study accuracy alone decides, so restricting comparisons to faster trials would only
    make pruning weaker: ``pareto`` falls back to Hyperband there (logged), which lets one
    default serve both kinds of search. ``hyperband`` and ``median`` rank trials by
    ``study.direction``, which a multi-objective study does not have, so they are refused
    there with a ``ValueError`` rather than failing mid-search. ``n_warmup_steps``
    goes to ``pareto`` and ``median`` (Hyperband sets its own first rung).

    Raises:
        ValueError: unknown name, or an Optuna pruner asked for a multi-objective study.
    """
    if name not in PRUNER_NAMES:
        raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNER_NAMES)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if multi_objective and name != "pareto":
        raise ValueError(_refusal(repr(name)))
    if name == "pareto":
        if multi_objective:
            return ParetoPruner(n_warmup_steps=n_warmup_steps)
        log.info("pruner 'pareto' in a single-objective study: using Hyperband instead")
        return optuna.pruners.HyperbandPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_warmup_steps=n_warmup_steps)


class _IntermediateDirectionStudy:
    """A study seen through a sampler's eyes, with ``direction`` = the intermediate values'.

    Everything else is the study itself (attribute access is delegated), so the sampler
    reads the same trials, storage and directions.
    """

    def __init__(self, study: optuna.Study, direction: StudyDirection) -> None:
        self._study = study
        self._direction = direction

    @property
    def direction(self) -> StudyDirection:
        return self._direction

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class PrunedTrialsSampler(BaseSampler):
    """Let a sampler read pruned trials of a multi-objective study.

    Optuna's ``TPESampler`` learns from pruned trials too, ranking them by the step they
    reached and their last intermediate value in ``study.direction``; in a multi-objective
    study that property raises ``RuntimeError``, so once :func:`report` has given a pruned
    trial a curve, every later sample fails. This wrapper hands the sampler a view of the
    study whose ``direction`` is the direction of the intermediate values (accuracy:
    maximise), which is exactly what that ranking needs: a trial pruned later, or with a
    better curve at the same step, counts as the more promising. Everything else the
    sampler sees is the study itself. Single-objective studies pass through untouched.

    Args:
        base: The sampler to wrap (e.g. ``TPESampler(multivariate=True, group=True)``).
        direction: Of the intermediate values: ``"maximize"`` (accuracy) or ``"minimize"``.
    """

    def __init__(
        self, base: BaseSampler, direction: Literal["maximize", "minimize"] = "maximize"
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                f"PrunedTrialsSampler direction must be 'maximize' or 'minimize', got {direction!r}"
            )
        self.base = base
        self._direction = (
            StudyDirection.MAXIMIZE if direction == "maximize" else StudyDirection.MINIMIZE
        )

    def __repr__(self) -> str:
        return f"PrunedTrialsSampler({self.base!r}, direction={self._direction.name.lower()!r})"

    def _view(self, study: optuna.Study) -> optuna.Study:
        if not _is_multi_objective(study):
            return study
        # Duck-typed: samplers only read attributes of the study, never check its type.
        return cast("optuna.Study", _IntermediateDirectionStudy(study, self._direction))

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(
            self._view(study), trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(self._view(study), trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(self._view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
