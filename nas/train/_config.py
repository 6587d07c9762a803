"""How to train one candidate: :class:`TrainConfig`, its checks and the defaults per task."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import nas.train._augment as aug
from nas.errors import NasError
from nas.model import TaskKind
from nas.train._device import MemoryFormat, Precision
from nas.train._evaluate import EVAL_BATCH_SIZE

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["onecycle", "cosine"]


class TrainConfigError(NasError):
    """A training setting out of its range (negative epochs, unknown optimizer, ...)."""


# Token embeddings train badly with SGD: a rare word's row moves only in the few steps
# that see it, while weight decay shrinks it in all the others. AdamW's per-parameter
# steps fix that (measured on the demo corpus: the README's "Text classification").
# lr 0.03 over 0.01, a trial's budget (2 epochs on the demo corpus, 8 on the docstrings),
# test accuracy over seeds 0-2, ngrams: bags of embeddings gain 0.8-1.2 points (demo:
# width 64 with avg pooling 0.857 -> 0.865, with attention pooling 0.862 -> 0.874;
# docstrings: 0.817 -> 0.825); networks with stages hold (demo: embed256 | plain64x1 k7 |
# avgmax 0.872 both ways; with a residual128 sigmoid attention stage, seeds 0-1, 0.874 ->
# 0.877).
TASK_DEFAULTS: dict[TaskKind, dict[str, Any]] = {
    "image": {},
    "text": {"optimizer": "adamw", "lr": 0.03, "weight_decay": 0.0},
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train one candidate.

    Attributes:
        epochs: passes over the training split; fractions allowed (0.5 = half an epoch).
        max_seconds: wall-clock budget for training and rung evaluations (the final
            evaluation is extra); None for none. See :mod:`nas.train._trainer`.
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
        grad_clip: max global gradient norm, or None for no clipping. At norm 1 a network
            that diverged at the search's learning rate (loss growing to ~9, accuracy at
            chance) trains like the rest, and the others do no worse (the README's
            "Training briefly", ``bench/grad_clip.py``).
        crop_pad: random translation of up to this many pixels (0 disables).
        pad_mode: ``reflect`` or ``zeros`` padding for the translation.
        flip: random horizontal flips, applied only when the dataset allows them.
        cutout: side of the cutout square (0 disables).
        token_dropout: text only: each training token becomes padding with this
            probability (word dropout, :func:`nas.train._augment.drop_tokens`).
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
            current setting; ``auto`` adapts to the machine's load (see :mod:`nas.train._device`).
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
    grad_clip: float | None = 1.0
    crop_pad: int = 0
    pad_mode: aug.PadMode = "reflect"
    flip: bool = True
    cutout: int = 0
    token_dropout: float = 0.0
    precision: Precision = "auto"
    memory_format: MemoryFormat = "auto"
    report_every: float | None = 1.0
    eval_batch_size: int = EVAL_BATCH_SIZE
    rung_val_size: int | None = None
    tta: bool = False
    lookahead: bool = False
    seed: int = 0
    threads: int | Literal["auto"] | None = None

    def steps_per_epoch(self, train_size: int) -> int:
        """Optimiser steps in an epoch of ``train_size`` examples: the trainer drops a
        ragged last batch, so that every step has full size."""
        return max(1, train_size // self.batch_size)

    def at_least_steps(self, steps: int, train_size: int) -> TrainConfig:
        """This recipe, with more epochs where it needs them to take ``steps`` optimiser
        steps on ``train_size`` examples."""
        return replace(self, epochs=max(self.epochs, steps / self.steps_per_epoch(train_size)))

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
        need(0 <= self.token_dropout < 1, "token_dropout", "in [0, 1)")
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
