"""Rules shared by the spaces: documented mappings from any sampled combination to a
valid spec, so no space needs a rejection loop.

The map rules take a feature map's ``height, width`` or a sequence's ``length`` (a text
network's map, see ``nas.model``): ``*shape`` is either.
"""

from __future__ import annotations

import math
from dataclasses import replace

import optuna

from nas.model import AttentionSpec, Task, attention_budget_bytes, score_bytes


def stem_stride(task: Task) -> int:
    """Stride 1 up to 64×64 inputs (keep small images' detail), 2 above (halve N early)."""
    return 1 if max(task.height, task.width) <= 64 else 2


def suggest_stem_stride(trial: optuna.Trial, task: Task) -> int:
    """``stem.stride`` 1 or 2 for inputs up to 64×64; always 2 above.

    Attention and convs at full resolution cost 4× those at half: on small images the
    search decides whether the detail is worth the latency.
    """
    if stem_stride(task) == 2:
        return 2
    return int(trial.suggest_categorical("stem.stride", (1, 2)))


def resolution(task: Task, stride: int) -> tuple[int, int]:
    return math.ceil(task.height / stride), math.ceil(task.width / stride)


def downsample_rule(op: str, *shape: int) -> str:
    """A map smaller than 2×2 (a sequence shorter than 2) cannot be halved: its
    downsample becomes ``none``."""
    return op if min(shape) >= 2 else "none"


def after_downsample(op: str, *shape: int) -> tuple[int, ...]:
    return shape if op == "none" else tuple(math.ceil(s / 2) for s in shape)


def _height_width(shape: tuple[int, ...]) -> tuple[int, int]:
    # A sequence of L positions is a 1×L map to the memory arithmetic of nas.model.
    return (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])


def fit_attention(a: AttentionSpec, *shape: int) -> AttentionSpec:
    """Map a sampled attention op to a valid one on a height×width map (or a sequence
    of ``length`` positions), by these rules:

    1. ``manet_pool``: the stride is capped at the map's smaller side (the length); on a
       1×1 map or a 1-position sequence (nothing to pool) it becomes ``softmax``;
       ``relbias`` becomes ``learned`` (pooled keys have no per-position offsets).
    2. Over the attention memory budget: halve the heads until it fits; if one head is
       still too big, pool keys and values (``manet_pool``) with the smallest
       power-of-2 stride that fits.
    """
    if a.op == "channel":
        return a
    height, width = _height_width(shape)
    side = min(shape)
    if a.op == "manet_pool":
        stride = min(a.pool_stride, side)
        if stride < 2:
            a = AttentionSpec("softmax", a.heads, a.head_dim, a.position)
        else:
            a = replace(a, pool_stride=stride, position=_poolable(a.position))
    budget = attention_budget_bytes()
    while a.heads > 1 and score_bytes(a, height, width) > budget:
        a = replace(a, heads=a.heads // 2)
    if score_bytes(a, height, width) > budget:
        pooled = AttentionSpec(
            "manet_pool", a.heads, a.head_dim, _poolable(a.position), pool_stride=2
        )
        while score_bytes(pooled, height, width) > budget and pooled.pool_stride < side:
            pooled = replace(pooled, pool_stride=pooled.pool_stride * 2)
        a = replace(pooled, pool_stride=min(pooled.pool_stride, side))
    return a


def _poolable(position: str) -> str:
    return "learned" if position == "relbias" else position
