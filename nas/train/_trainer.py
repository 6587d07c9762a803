"""The brief trainer: trains one candidate network fast; knows nothing of Optuna.

Built after the fastest small-image trainers (airbench, hlb-CIFAR10):

- the whole dataset stays resident on the training device as uint8; each epoch draws a
  permutation from an explicit generator and batches are gathered by index, augmented in
  batch on the device (:mod:`nas.augment`) and normalised there: no DataLoader, no worker
  processes, no per-sample Python;
- Nesterov SGD (or AdamW) with no weight decay on norm weights and biases, a one-cycle or
  warm-up + cosine learning-rate schedule, label smoothing (airbench uses 0.2; 0.1 here);
- bf16 autocast and channels_last where the hardware gains (see :func:`resolve_precision`):
  on an AVX2-only CPU without AMX/AVX512-BF16 (this project's AMD EPYC) bf16 is emulated and
  ~8x slower than fp32, so ``auto`` gives fp32 + channels_last there.

Stopping. Training ends when ``epochs`` are done, when ``max_seconds`` run out, or when the
loss becomes NaN/inf. With a time budget the schedule is *budget-aware*: its progress is
the larger of the step fraction and the time fraction, so the learning rate anneals to its
end exactly when the budget does and a model stopped by the clock is a finished model,
not one caught at a high learning rate. Hence a time stop is a normal outcome, reported as
status ``time_limit`` with a valid accuracy; ``nan`` stops at once and reports no accuracy.

Pruning. ``report(epoch, val_accuracy)`` is called at every rung (each ``report_every``
epochs) and once at the end. It may raise any exception to stop training (the Optuna glue
raises ``optuna.TrialPruned``): the trainer does not catch it; the exception reaches the
caller unchanged, after the global state the trainer touched has been restored.

Determinism. On CPU the same model initialisation, data and config (without
``max_seconds``) give bit-identical weights: every random draw (permutations,
augmentations, and dropout through the global RNG, which is forked, seeded and restored)
comes from ``config.seed``. With ``max_seconds`` the number of steps depends on the clock.

Text. A split whose ``x`` holds integer token ids ``(N, L)`` (``nas.text``) goes to the
model as it is: no normalisation, augmentation, test-time mirroring or channels_last (the
model starts with an ``nn.Embedding``); precision is chosen as for images.

Global state. Nothing is left changed: the global RNG is forked and restored, and the
thread count (only touched when ``config.threads`` is given) is restored.

Threads. ``threads="auto"`` (CPU only) times steps at one thread and at all of them, keeps
the faster, and re-checks every 10-160 s. On a shared machine whose cores other processes
also load, one thread can be several times faster than two (each OpenMP barrier waits for
a descheduled peer: 171 vs 49 images/s measured here), and the load changes during a run.
Results then depend on the thread counts chosen, so ``auto`` is not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import NasError
from nas.model import TaskKind
from nas.train import _augment as aug

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["onecycle", "cosine"]
Precision = Literal["auto", "bf16", "fp32"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
Status = Literal["ok", "time_limit", "nan"]
ReportFn = Callable[[float, float], None]

# Evaluation batches: 1024 maps of 28×28 attention scores need tens of GiB.
EVAL_BATCH_SIZE = 256


class TrainConfigError(NasError):
    """A training setting out of its range (negative epochs, unknown optimizer, ...)."""


# Token embeddings train badly with SGD: a rare word's row moves only in the few steps
# that see it, while weight decay shrinks it in all the others. AdamW's per-parameter
# steps fix that (measured on the demo corpus: the README's "Text classification").
TASK_DEFAULTS: dict[TaskKind, dict[str, Any]] = {
    "image": {},
    "text": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.0},
}


class SplitLike(Protocol):
    """What the trainer reads of a ``nas.data.Split``: uint8 images (or int64 token ids)
    and int64 labels."""

    @property
    def x(self) -> Tensor: ...

    @property
    def y(self) -> Tensor: ...


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


@dataclass(frozen=True)
class TrainConfig:
    """How to train one candidate.

    Attributes:
        epochs: passes over the training split; fractions allowed (0.5 = half an epoch).
        max_seconds: wall-clock budget for training and rung evaluations (the final
            evaluation is extra); None for none. See the module docstring.
        batch_size: examples per step.
        optimizer: ``sgd`` (Nesterov momentum) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW uses it as beta1).
        weight_decay: applied to weights with 2+ dimensions only (conv and linear), never
            to norm weights or biases: decaying those only hurts short runs.
        schedule: ``onecycle`` (linear up from ``lr * start_factor``, linear down to
            ``lr * end_factor``, as in airbench) or ``cosine`` (linear warm-up from 0, then
            cosine to ``lr * end_factor``).
        warmup: fraction of training spent warming up.
        start_factor: onecycle's starting fraction of ``lr``.
        end_factor: final fraction of ``lr`` for both schedules.
        label_smoothing: cross-entropy label smoothing.
        grad_clip: max global gradient norm, or None for no clipping.
        crop_pad: random translation of up to this many pixels (0 disables).
        pad_mode: ``reflect`` or ``zeros`` padding for the translation.
        flip: random horizontal flips, applied only when the dataset allows them.
        cutout: side of the cutout square (0 disables).
        precision: ``auto`` (bf16 where the device gains, else fp32), ``bf16``, ``fp32``.
        memory_format: ``auto``, ``channels_last`` or ``contiguous``.
        report_every: epochs between rungs (evaluate + report); None evaluates at the end only.
        eval_batch_size: batch size for evaluation.
        rung_val_size: score the rungs before the last on this many validation examples
            (one fixed random subset, the same for every run, so rungs compare like with
            like); None uses all. The end of training always scores the whole split. In a
            brief search run, evaluating every rung on the whole split can cost more than
            the training itself.
        tta: average logits with the mirrored image at evaluation (only if flips allowed).
        lookahead: airbench's lookahead: every 5 steps the weights (and norm statistics)
            move to a slow average that pulls harder as training ends, a cheap stand-in
            for weight averaging that smooths the last, noisy steps of a short run.
        seed: seeds every random draw of training.
        threads: torch intra-op threads during training (restored after); None leaves the
            current setting; ``auto`` adapts to the machine's load (see module docstring).
    """

    # Defaults measured on Fashion-MNIST with small BN CNNs over short runs (1-5 epochs),
    # the regime of a search: batch 128 / lr 0.1 / smoothing 0.1 / no translation beat
    # airbench's batch 1024-style settings and translate-2 there (83.3% vs 77.2% val after
    # 2 epochs of 10k images); translation pays off only in longer runs.
    epochs: float = 8.0
    max_seconds: float | None = None
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "onecycle"
    warmup: float = 0.2
    start_factor: float = 0.1
    end_factor: float = 0.0
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    crop_pad: int = 0
    pad_mode: aug.PadMode = "reflect"
    flip: bool = True
    cutout: int = 0
    precision: Precision = "auto"
    memory_format: MemoryFormat = "auto"
    report_every: float | None = 1.0
    eval_batch_size: int = EVAL_BATCH_SIZE
    rung_val_size: int | None = None
    tta: bool = False
    lookahead: bool = False
    seed: int = 0
    threads: int | Literal["auto"] | None = None

    @classmethod
    def for_task(cls, kind: TaskKind, **fields: Any) -> TrainConfig:
        """The defaults for a task kind (:data:`TASK_DEFAULTS`), then ``fields``."""
        return cls(**{**TASK_DEFAULTS[kind], **fields})

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise TrainConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        need(self.epochs > 0 and math.isfinite(self.epochs), "epochs", "a positive number")
        need(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "None or > 0")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", ">= 1")
        need(self.optimizer in ("sgd", "adamw"), "optimizer", "'sgd' or 'adamw'")
        need(self.lr > 0, "lr", "> 0")
        need(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(self.schedule in ("onecycle", "cosine"), "schedule", "'onecycle' or 'cosine'")
        need(0 <= self.warmup < 1, "warmup", "in [0, 1)")
        need(0 <= self.start_factor <= 1, "start_factor", "in [0, 1]")
        need(0 <= self.end_factor <= 1, "end_factor", "in [0, 1]")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "None or > 0")
        need(self.precision in ("auto", "bf16", "fp32"), "precision", "'auto', 'bf16' or 'fp32'")
        need(
            self.memory_format in ("auto", "channels_last", "contiguous"),
            "memory_format",
            "'auto', 'channels_last' or 'contiguous'",
        )
        need(self.report_every is None or self.report_every > 0, "report_every", "None or > 0")
        need(self.eval_batch_size >= 1, "eval_batch_size", ">= 1")
        need(self.rung_val_size is None or self.rung_val_size >= 1, "rung_val_size", ">= 1 or None")
        need(
            self.threads is None
            or self.threads == "auto"
            or (isinstance(self.threads, int) and self.threads >= 1),
            "threads",
            "None, 'auto' or >= 1",
        )
        # Validates crop_pad, pad_mode and cutout with their own messages.
        aug.AugmentConfig(self.crop_pad, self.pad_mode, self.flip, self.cutout)


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


# ----------------------------------------------------------------------- hardware choices


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:  # not Linux: no flags, so no claims about bf16 speed
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and autocast is a loss: on an AVX2-only AMD EPYC we
    measured bf16 autocast training a small CNN ~10x *slower* than fp32.
    """
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: Precision, device: torch.device) -> Literal["bf16", "fp32"]:
    """``auto`` → bf16 on CUDA that supports it and on CPUs with native bf16, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def resolve_memory_format(
    memory_format: MemoryFormat, device: torch.device
) -> Literal["channels_last", "contiguous"]:
    """``auto`` → channels_last on CUDA and CPU (cuDNN and oneDNN convolutions prefer NHWC;
    ~1.45x for a small fp32 CNN on this project's CPU), contiguous elsewhere."""
    if memory_format != "auto":
        return memory_format
    return "channels_last" if device.type in ("cuda", "cpu") else "contiguous"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def _threads(n: int | Literal["auto"] | None) -> Iterator[None]:
    """Set the thread count for the block (``auto``: the tuner changes it) and restore it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    if n != "auto":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ThreadTuner:
    """Picks the faster of 1 thread and ``most`` threads from timed steps, and re-checks.

    A probe runs ``PROBE`` steps at a candidate count (the first, which may rebuild oneDNN
    primitives for the new count, is not timed) and takes the median. After probing both,
    the faster one runs for a period, then the other is probed again against the
    incumbent's recent median, so a change in the machine's load is followed. A probe that
    loses doubles the period (up to ``MAX_PERIOD``): on a busy machine a two-thread step
    can take 3x a one-thread step, and frequent losing probes would eat the budget.
    """

    PROBE = 3
    PERIOD = 10.0
    MAX_PERIOD = 160.0

    def __init__(self, most: int) -> None:
        self.candidates = [most, 1]
        self.median: dict[int, float] = {}
        self.current = most
        self.probing: int | None = most
        self.times: list[float] = []
        self.recent: list[float] = []
        self.period = self.PERIOD
        self.since = time.perf_counter()
        torch.set_num_threads(most)

    def _switch(self, n: int) -> None:
        self.current = n
        torch.set_num_threads(n)

    def record(self, seconds: float) -> None:
        """Record one step's time; may change the thread count for the next step."""
        if self.probing is not None:
            self.times.append(seconds)
            if len(self.times) <= self.PROBE:
                return
            timed = sorted(self.times[1:])
            self.median[self.probing] = timed[len(timed) // 2]
            self.times = []
            missing = [c for c in self.candidates if c not in self.median]
            if missing:
                self.probing = missing[0]
                self._switch(missing[0])
                return
            best = min(self.median, key=self.median.__getitem__)
            if len(self.median) == 2 and best != self.probing:
                self.period = min(self.period * 2, self.MAX_PERIOD)  # the probe lost
            else:
                self.period = self.PERIOD
            self.probing = None
            self._switch(best)
            self.recent, self.since = [], time.perf_counter()
            return
        self.recent.append(seconds)
        if time.perf_counter() - self.since >= self.period and len(self.recent) >= 3:
            recent = sorted(self.recent[-self.PROBE * 2 :])
            self.median = {self.current: recent[len(recent) // 2]}
            other = next(c for c in self.candidates if c != self.current)
            self.probing = other
            self._switch(other)


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


# ------------------------------------------------------------------------------ evaluation


def is_tokens(x: Tensor) -> bool:
    """Whether ``x`` is a batch of token ids ``(N, L)`` rather than uint8 images."""
    return x.dim() == 2 and x.dtype in (torch.int64, torch.int32)


def _prepare(x: Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool) -> Tensor:
    if is_tokens(x):
        return x  # ids index the model's embedding: nothing to scale
    x = aug.normalize(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def predict_logits(
    model: nn.Module,
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    tta: bool = False,
    precision: Precision = "fp32",
    memory_format: MemoryFormat = "contiguous",
) -> Tensor:
    """Float32 logits for uint8 images ``x`` (or token ids), batched, in eval mode and
    inference mode.

    ``tta`` averages with the logits of the mirrored images (never for token ids). The
    model's train/eval mode is restored afterwards.
    """
    device = _model_device(model)
    prec = resolve_precision(precision, device)
    tokens = is_tokens(x)
    tta = tta and not tokens
    channels_last = resolve_memory_format(memory_format, device) == "channels_last" and not tokens
    was_training = model.training
    model.eval()
    try:
        outs = []
        with torch.inference_mode(), _autocast(device, prec):
            for i in range(0, x.shape[0], batch_size):
                xb = _prepare(x[i : i + batch_size].to(device), mean, std, channels_last)
                logits = model(xb).float()
                if tta:
                    logits = 0.5 * (logits + model(xb.flip(-1)).float())
                outs.append(logits)
        if not outs:
            return torch.empty(0, 0, device=device)
        return torch.cat(outs)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    split: SplitLike,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    tta: bool = False,
    precision: Precision = "fp32",
    memory_format: MemoryFormat = "contiguous",
) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (NaN for an empty split).

    Args:
        model: maps normalised float (B, C, H, W) (or token ids (B, L)) to (B, classes)
            logits.
        split: uint8 images (or token ids) ``x`` and int64 labels ``y``.
        mean, std: per-channel normalisation on the 0..1 scale (``Data.mean``/``Data.std``).
        batch_size: evaluation batch size.
        tta: also evaluate the mirrored images and average logits (only where flips are
            label-preserving).
        precision, memory_format: as in :class:`TrainConfig`.
    """
    n = int(split.y.shape[0])
    if n == 0:
        return math.nan
    logits = predict_logits(
        model,
        split.x,
        mean,
        std,
        batch_size=batch_size,
        tta=tta,
        precision=precision,
        memory_format=memory_format,
    )
    correct = (logits.argmax(1) == split.y.to(logits.device)).sum()
    return int(correct.item()) / n


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


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


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
    with _threads(config.threads), _seeded_global_rng(config.seed, dev):
        result = _train(model, data, config, report, dev, precision, memory_format)
    result.wall_seconds = time.perf_counter() - t_start
    return result


def _train(
    model: nn.Module,
    data: DataLike,
    config: TrainConfig,
    report: ReportFn | None,
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
    # are never augmented (crop_pad, flip and cutout apply to images only).
    if text:
        x_train = data.train.x.to(dev)
    else:
        x_train = aug.pad(data.train.x.to(dev), config.crop_pad, config.pad_mode)
    y_train = data.train.y.to(dev)
    n = int(y_train.shape[0])
    if n == 0:
        raise TrainConfigError("the training split is empty")
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: every step has full size
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    rungs = set(_rung_steps(config, steps_per_epoch, total_steps))
    most = torch.get_num_threads()
    tuner = (
        _ThreadTuner(most) if config.threads == "auto" and dev.type == "cpu" and most > 1 else None
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
    step = 0
    perm = torch.empty(0, dtype=torch.long, device=dev)
    t_budget = time.perf_counter()  # the budget covers training and rungs, not setup

    def point(step: int) -> float:
        return step / steps_per_epoch

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
        progress = step / total_steps
        if config.max_seconds is not None:
            progress = max(progress, (t0 - t_budget) / config.max_seconds)
            if progress >= 1.0:
                result.status = "time_limit"
                break
        factor = lr_factor(config, progress)
        for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = base * factor

        i = step % steps_per_epoch
        if i == 0:
            perm = torch.randperm(n, generator=generator, device=dev)
        idx = perm[i * batch : (i + 1) * batch]
        if text:
            xb = x_train[idx]
        else:
            xb = aug.augment_padded(x_train[idx], augment_cfg, generator)
            xb = _prepare(xb, data.mean, data.std, channels_last)
        yb = y_train[idx]

        with _autocast(dev, precision):
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
            lookahead.update(_Lookahead.decay(progress))
        step_seconds = time.perf_counter() - t0
        train_seconds += step_seconds
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
