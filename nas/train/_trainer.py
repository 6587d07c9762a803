"""The brief trainer: trains one candidate network fast; knows nothing of Optuna.

Built after the fastest small-image trainers (airbench, hlb-CIFAR10):

- the whole dataset stays resident on the training device as uint8; each epoch draws a
  permutation from an explicit generator and batches are gathered by index, augmented in
  batch on the device (:mod:`nas.train._augment`) and normalised there: no DataLoader, no
  worker processes, no per-sample Python;
- Nesterov SGD (or AdamW) with no weight decay on norm weights and biases, a one-cycle or
  warm-up + cosine learning-rate schedule, label smoothing (airbench uses 0.2; 0.1 here);
- bf16 autocast and channels_last where the hardware gains (see
  :func:`nas.train._device.resolve_precision`): on an AVX2-only CPU without AMX/AVX512-BF16
  (this project's AMD EPYC) bf16 is emulated and far slower than fp32 (the README's
  "Training briefly, measuring honestly"), so ``auto`` gives fp32 + channels_last there.

Stopping. Training ends when ``epochs`` are done, when ``max_seconds`` run out, or when the
loss becomes NaN/inf. With a time budget the schedule is *budget-aware*: its progress is
the larger of the step fraction and the time fraction, so the learning rate anneals to its
end exactly when the budget does and a model stopped by the clock is a finished model,
not one caught at a high learning rate. Hence a time stop is a normal outcome, reported as
status ``time_limit`` with a valid accuracy; ``nan`` stops at once and reports no accuracy.

Cost. ``estimate(seconds, final)`` gives the training's whole cost in seconds, from the
time of the steps past the first (which pays for allocations and kernel choices) and the
steps to go: a first look after one such step (``final`` False), then the estimate from
the median of ``ESTIMATE_STEPS`` of them (``final`` True). Like ``report`` it may raise to
stop training before the cost is spent (the search refuses a candidate far costlier than
its peers, at the first look when it is very far over); a run too short to time that many
steps gets only the first look, or none.

Pruning. ``report(epoch, val_accuracy)`` is called at every rung (each ``report_every``
epochs) and once at the end. It may raise any exception to stop training (the Optuna glue
raises ``optuna.TrialPruned``): the trainer does not catch it; the exception reaches the
caller unchanged, after the global state the trainer touched has been restored.

Determinism. On CPU the same model initialisation, data and config (without
``max_seconds``) give bit-identical weights: every random draw (permutations,
augmentations, and dropout through the global RNG, which is forked, seeded and restored)
comes from ``config.seed``. With ``max_seconds`` the number of steps depends on the clock.

Text. A split whose ``x`` holds integer token ids ``(N, L)`` (``nas.data``) goes to the
model as it is: no normalisation, augmentation, test-time mirroring or channels_last (the
model starts with an ``nn.Embedding``); precision is chosen as for images.

Global state. Nothing is left changed: the global RNG is forked and restored, and the
thread count (only touched when ``config.threads`` is given) is restored.

Threads. ``threads="auto"`` tunes the thread count to the machine's load while training
runs (see :mod:`nas.train._device`), so it is not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nas.train._augment as aug
from nas.train._config import TrainConfig, TrainConfigError
from nas.train._device import (
    ThreadTuner,
    autocast,
    resolve_memory_format,
    resolve_precision,
    thread_count,
)
from nas.train._evaluate import SplitLike, evaluate, is_tokens, prepare

Status = Literal["ok", "time_limit", "nan"]
ReportFn = Callable[[float, float], None]
EstimateFn = Callable[[float, bool], None]
ProgressFn = Callable[[float, float], None]

# Steps timed for the cost estimate, after the first: enough for a stable median, few
# enough that a refused candidate costs little.
ESTIMATE_STEPS = 4


class DataLike(Protocol):
    """What the trainer reads of a ``nas.data.Data``."""

    @property
    def train(self) -> SplitLike: ...

    @property
    def val(self) -> SplitLike: ...

    @property
    def mean(self) -> tuple[float, ...]: ...

    @property
    def std(self) -> tuple[float, ...]: ...

    @property
    def flip(self) -> bool: ...


@dataclass
class TrainResult:
    """What one training run did.

    Attributes:
        status: ``ok`` (all epochs), ``time_limit`` (stopped by ``max_seconds`` with the
            schedule annealed; the accuracy is valid), ``nan`` (loss became NaN/inf;
            training stopped at that step and ``val_accuracy`` is NaN).
        val_accuracy: accuracy on the validation split at the end (NaN if none was
            measured: status ``nan`` or an empty validation split).
        curve: ``(epoch, val_accuracy)`` at each rung and at the end, as reported.
        loss_curve: ``(epoch, mean training loss since the previous point)``.
        epochs_done: epochs trained (fractional).
        steps: optimizer steps taken.
        wall_seconds: the whole call, evaluations included.
        train_seconds: time in training steps only (excludes evaluations).
        images_per_second: training images per second of ``train_seconds``.
        precision: the precision actually used (``bf16`` or ``fp32``).
        memory_format: the memory format actually used.
        thread_steps: with ``threads="auto"``, steps run at each thread count.
        estimated_seconds: the training's cost as estimated from its first steps (see the
            module docstring); NaN if it ran too few steps to estimate.
    """

    status: Status
    val_accuracy: float
    curve: list[tuple[float, float]] = field(default_factory=list)
    loss_curve: list[tuple[float, float]] = field(default_factory=list)
    epochs_done: float = 0.0
    steps: int = 0
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    precision: str = "fp32"
    memory_format: str = "contiguous"
    thread_steps: dict[int, int] = field(default_factory=dict)
    estimated_seconds: float = math.nan


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU and this CUDA device), seed it, restore it on exit.

    Only modules that draw from the global RNG inside ``forward`` (dropout) use it; our own
    draws go through an explicit generator.
    """
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if cuda_devices:
            with torch.cuda.device(cuda_devices[0]):
                torch.cuda.manual_seed(seed)
        yield


# -------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _Subset:
    x: Tensor
    y: Tensor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Decay conv/linear weights only; norm weights, biases and scalars go undecayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    groups: list[dict[str, object]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# AdamW as one fused kernel rather than a loop of tensor ops: with a 50,000-row n-gram
# embedding a text trial trains 1.5-1.8x faster (bench/optimizer.py turns it off to
# compare). SGD's step is a sliver of an image trial's (0.1 ms of a step's several).
FUSED_ADAMW = True
_FUSED_DEVICES = ("cpu", "cuda")


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    # The kernel is there for CPU and CUDA floats (others would fail at the first step).
    fused = FUSED_ADAMW and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in model.parameters()
    )
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999), fused=fused)


def lr_factor(config: TrainConfig, progress: float) -> float:
    """Learning rate as a fraction of ``config.lr`` at ``progress`` in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    w = config.warmup
    if config.schedule == "onecycle":
        if p < w:
            return config.start_factor + (1.0 - config.start_factor) * p / w
        return 1.0 + (config.end_factor - 1.0) * (p - w) / (1.0 - w)
    if p < w:
        return p / w
    cos = 0.5 * (1.0 + math.cos(math.pi * (p - w) / (1.0 - w)))
    return config.end_factor + (1.0 - config.end_factor) * cos


class _Lookahead:
    """airbench's lookahead: a slow copy of every float tensor of the state (parameters
    and norm statistics); every ``EVERY`` steps the slow copy moves toward the live
    weights by ``1 - decay`` and the live weights are reset to it."""

    EVERY = 5

    def __init__(self, model: nn.Module) -> None:
        # state_dict tensors share storage with the module, so copy_ writes through.
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    @staticmethod
    def decay(progress: float) -> float:
        # airbench: 0.95^5 * progress^3: no pull early, a strong one near the end.
        return 0.95**5 * min(max(progress, 0.0), 1.0) ** 3

    @torch.no_grad()
    def update(self, decay: float) -> None:
        for slow, live in zip(self.slow, self.live, strict=True):
            slow.lerp_(live, 1.0 - decay)
            live.copy_(slow)


def _rung_steps(config: TrainConfig, steps_per_epoch: int, total_steps: int) -> list[int]:
    if config.report_every is None:
        return []
    rungs: set[int] = set()
    k = 1
    while True:
        s = round(k * config.report_every * steps_per_epoch)
        if s >= total_steps:
            break
        rungs.add(max(s, 1))
        k += 1
    return sorted(rungs)


def train(
    model: nn.Module,
    data: DataLike,
    config: TrainConfig | None = None,
    report: ReportFn | None = None,
    device: torch.device | str | None = None,
    estimate: EstimateFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train``, evaluating on ``data.val``.

    Args:
        model: maps normalised float (B, C, H, W) to logits; moved to ``device`` (and to
            channels_last if that is the memory format used) and trained in place. For
            text data it maps int64 token ids (B, L) to logits.
        data: uint8 splits (or token-id splits, see the module docstring) resident on a
            device, normalisation constants and the flip flag.
        config: hyperparameters; defaults to ``TrainConfig()``.
        report: ``report(epoch, val_accuracy)`` at each rung and at the end; any exception
            it raises stops training and propagates to the caller (see module docstring).
        device: where to train; default: the device of ``data.train.x``.
        estimate: ``estimate(seconds, final)`` with the whole training's estimated cost,
            a first look and then the final estimate (module docstring); it may raise to
            stop, as ``report`` may.
        progress: ``progress(fraction, epoch)`` after each step: the schedule's progress
            in [0, 1] (steps or, with ``max_seconds``, time, whichever is further) and the
            epochs done; for a progress bar.

    Returns:
        A :class:`TrainResult`; the model is left in eval mode with the final weights.
    """
    config = config or TrainConfig()
    dev = torch.device(device) if device is not None else data.train.x.device
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    precision = resolve_precision(config.precision, dev)
    memory_format = resolve_memory_format(config.memory_format, dev)
    if is_tokens(data.train.x):
        memory_format = "contiguous"  # channels_last means nothing to a sequence model
    t_start = time.perf_counter()
    with thread_count(config.threads), _seeded_global_rng(config.seed, dev):
        result = _train(
            model, data, config, report, estimate, progress, dev, precision, memory_format
        )
    result.wall_seconds = time.perf_counter() - t_start
    return result


def _train(
    model: nn.Module,
    data: DataLike,
    config: TrainConfig,
    report: ReportFn | None,
    estimate: EstimateFn | None,
    progress: ProgressFn | None,
    dev: torch.device,
    precision: Literal["bf16", "fp32"],
    memory_format: Literal["channels_last", "contiguous"],
) -> TrainResult:
    text = is_tokens(data.train.x)
    channels_last = memory_format == "channels_last"
    model.to(device=dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    augment_cfg = aug.AugmentConfig(
        config.crop_pad, config.pad_mode, config.flip and data.flip, config.cutout
    )
    use_tta = config.tta and data.flip and not text

    # Pad the whole training set once (airbench): per batch only a crop remains. Token ids
    # get word dropout only (crop_pad, flip and cutout apply to images only).
    if text:
        x_train = data.train.x.to(dev)
    else:
        x_train = aug.pad(data.train.x.to(dev), config.crop_pad, config.pad_mode)
    y_train = data.train.y.to(dev)
    n = int(y_train.shape[0])
    if n == 0:
        raise TrainConfigError("the training split is empty")
    batch = min(config.batch_size, n)
    steps_per_epoch = config.steps_per_epoch(n)  # n // batch: no ragged last batch
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    rungs = set(_rung_steps(config, steps_per_epoch, total_steps))
    most = torch.get_num_threads()
    tuner = (
        ThreadTuner(most) if config.threads == "auto" and dev.type == "cpu" and most > 1 else None
    )
    lookahead = _Lookahead(model) if config.lookahead else None
    generator = torch.Generator(device=dev).manual_seed(config.seed)
    optimizer = _make_optimizer(model, config)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for p in model.parameters() if p.requires_grad]
    # NaN checks read a device scalar; on CPU that is free, on CUDA it syncs, so there
    # the running sum (which stays non-finite once any term is) is read every few steps.
    check_every = 1 if dev.type == "cpu" else 8

    rung_val: SplitLike = data.val
    if config.rung_val_size is not None and config.rung_val_size < len(data.val.y):
        fixed = torch.Generator().manual_seed(0)  # not config.seed: one subset for all runs
        pick = torch.randperm(len(data.val.y), generator=fixed)[: config.rung_val_size]
        pick = pick.sort().values.to(data.val.y.device)
        rung_val = _Subset(data.val.x[pick], data.val.y[pick])

    def val_accuracy(split: SplitLike = data.val) -> float:
        return evaluate(
            model,
            split,
            data.mean,
            data.std,
            batch_size=config.eval_batch_size,
            tta=use_tta,
            precision=precision,
            memory_format=memory_format,
        )

    result = TrainResult(
        status="ok", val_accuracy=math.nan, precision=precision, memory_format=memory_format
    )
    loss_sum = torch.zeros((), device=dev)
    loss_mark, loss_mark_step = 0.0, 0
    train_seconds = 0.0
    timed: list[float] = []  # the steps of the cost estimate
    step = 0
    perm = torch.empty(0, dtype=torch.long, device=dev)
    t_budget = time.perf_counter()  # the budget covers training and rungs, not setup

    def point(step: int) -> float:
        return step / steps_per_epoch

    def schedule_done(step: int) -> float:
        """The schedule's progress: steps, or time under a budget, whichever is further."""
        done = step / total_steps
        if config.max_seconds is not None:
            done = max(done, (time.perf_counter() - t_budget) / config.max_seconds)
        return done

    def close_segment() -> bool:
        """Record the mean loss since the last point; False if it is not finite."""
        nonlocal loss_mark, loss_mark_step
        total = float(loss_sum.item())
        if not math.isfinite(total):
            return False
        if step > loss_mark_step:
            result.loss_curve.append((point(step), (total - loss_mark) / (step - loss_mark_step)))
        loss_mark, loss_mark_step = total, step
        return True

    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        done = schedule_done(step)
        if config.max_seconds is not None and done >= 1.0:
            result.status = "time_limit"
            break
        factor = lr_factor(config, done)
        for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = base * factor

        i = step % steps_per_epoch
        if i == 0:
            perm = torch.randperm(n, generator=generator, device=dev)
        idx = perm[i * batch : (i + 1) * batch]
        if text:
            xb = aug.drop_tokens(x_train[idx], config.token_dropout, generator)
        else:
            xb = aug.augment_padded(x_train[idx], augment_cfg, generator)
            xb = prepare(xb, data.mean, data.std, channels_last)
        yb = y_train[idx]

        with autocast(dev, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        loss_sum += loss.detach()
        step += 1
        if lookahead is not None and step % _Lookahead.EVERY == 0:
            lookahead.update(_Lookahead.decay(done))
        if progress is not None:
            progress(min(schedule_done(step), 1.0), point(step))
        step_seconds = time.perf_counter() - t0
        train_seconds += step_seconds
        if 1 < step <= ESTIMATE_STEPS + 1 and step < total_steps:
            timed.append(step_seconds)
            if len(timed) in (1, ESTIMATE_STEPS):
                median = sorted(timed)[len(timed) // 2]
                whole = train_seconds + median * (total_steps - step)
                result.estimated_seconds = min(whole, config.max_seconds or math.inf)
                if estimate is not None:
                    estimate(result.estimated_seconds, len(timed) == ESTIMATE_STEPS)
        if tuner is not None:
            threads_now = tuner.current
            result.thread_steps[threads_now] = result.thread_steps.get(threads_now, 0) + 1
            tuner.record(step_seconds)

        if (step % check_every == 0 or step == total_steps) and not math.isfinite(
            float(loss_sum.item())
        ):
            result.status = "nan"
            break
        if step in rungs and step < total_steps:  # the last is scored on the whole split
            if not close_segment():
                result.status = "nan"
                break
            acc = val_accuracy(rung_val)
            model.train()
            if not math.isnan(acc):
                result.curve.append((point(step), acc))
                if report is not None:
                    report(point(step), acc)

    if lookahead is not None and result.status != "nan":
        lookahead.update(1.0)  # end on the slow weights
    if result.status != "nan" and not close_segment():
        result.status = "nan"
    result.steps = step
    result.epochs_done = point(step)
    result.train_seconds = train_seconds
    result.images_per_second = step * batch / train_seconds if train_seconds > 0 else 0.0
    if result.status != "nan":
        result.val_accuracy = val_accuracy()
        if not math.isnan(result.val_accuracy) and (
            not result.curve or result.curve[-1][0] != result.epochs_done
        ):
            result.curve.append((result.epochs_done, result.val_accuracy))
            if report is not None:
                report(result.epochs_done, result.val_accuracy)
    model.eval()
    return result
