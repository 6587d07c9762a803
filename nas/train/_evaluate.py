"""Evaluating a network: batched logits and top-1 accuracy on a split of uint8 images (or
token ids), in eval and inference mode, at the precision and memory format asked for."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

import nas.train._augment as aug
from nas.train._device import (
    MemoryFormat,
    Precision,
    autocast,
    model_device,
    resolve_memory_format,
    resolve_precision,
)

# Evaluation batches: 1024 maps of 28×28 attention scores need tens of GiB.
EVAL_BATCH_SIZE = 256


class SplitLike(Protocol):
    """What the trainer reads of a ``nas.data.Split``: uint8 images (or int64 token ids)
    and int64 labels."""

    @property
    def x(self) -> Tensor: ...

    @property
    def y(self) -> Tensor: ...


def is_tokens(x: Tensor) -> bool:
    """Whether ``x`` is a batch of token ids ``(N, L)`` rather than uint8 images."""
    return x.dim() == 2 and x.dtype in (torch.int64, torch.int32)


def prepare(x: Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool) -> Tensor:
    """A batch as the model takes it: images normalised (channels_last if asked), token ids
    as they are."""
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
    device = model_device(model)
    prec = resolve_precision(precision, device)
    tokens = is_tokens(x)
    tta = tta and not tokens
    channels_last = resolve_memory_format(memory_format, device) == "channels_last" and not tokens
    was_training = model.training
    model.eval()
    try:
        outs = []
        with torch.inference_mode(), autocast(device, prec):
            for i in range(0, x.shape[0], batch_size):
                xb = prepare(x[i : i + batch_size].to(device), mean, std, channels_last)
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
