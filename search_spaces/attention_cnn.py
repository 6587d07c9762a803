"""attention_cnn (the default space): from an MLP on the pixels to a CNN of 4 stages with
an attention slot in each, so the front can reach both ends of the latency axis.

Parameters (names are stable; a name always has the same choices):

- ``n_stages`` 0–4; ``act`` and ``norm`` for the whole network.
- 2–4 stages: a conv stem, ``stem.width`` and ``stem.stride`` (1 or 2; inputs up to
  64×64 only).
- 0–1 stages, the fast end (at batch 1 on a CPU every layer costs tens of microseconds
  whatever its FLOPs, so the fastest networks are the shallowest): ``stem.kind`` —
  ``conv`` (as above), ``patch`` (non-overlapping ``stem.patch``-pixel patches
  projected to ``stem.patch_width`` channels) or ``none`` (the pixels themselves; with
  no stage, an MLP) — then ``flatten`` (the map goes to the head as it is) or a
  ``pool``. A 2–4-stage network asks none of these, so a study made before the fast
  end existed (2–4 stages only) replays exactly.
- per stage slot ``s0``..``s3`` (sampled only when the slot is used — conditional, so
  use ``TPESampler(multivariate=True, group=True)``): ``block``, ``width``, ``depth``,
  ``kernel``; ``attn.kind`` (none or one of the six ops) and, by kind, ``attn.heads``,
  ``attn.head_dim``, ``attn.pos``, ``attn.kernel`` (manet_conv), ``attn.pool_stride``
  (manet_pool), ``attn.reduction`` (channel); ``down`` (all but the last stage).
- ``pool`` (global pooling; on the fast end only when not ``flatten``); ``head.layers``
  0–2 and, with layers, ``head.width``, ``head.act``, ``head.dropout``.

Mapping rules instead of rejection (see ``search_spaces._common``): the stem has stride
2 above 64×64 inputs; a downsample of a map under 2×2 becomes ``none``; attention that
does not fit the map or the attention memory budget is mapped by ``fit_attention``. On
the fast end: a patch is at most the image's smaller side; ``stem.kind`` ``none`` on an
image of over ``MAX_FLATTEN`` values becomes ``patch``; a map of over ``MAX_FLATTEN``
features is pooled, not flattened (``flatten`` is not asked).
Works for any input size and channel count.
"""

from __future__ import annotations

import optuna

from nas.model import ArchSpec, AttentionSpec, HeadSpec, InputSpec, StageSpec, StemSpec, Task
from search_spaces._common import (
    after_downsample,
    downsample_rule,
    fit_attention,
    resolution,
    suggest_stem_stride,
)

ATTENTION_KINDS = (
    "none",
    "softmax",
    "sigmoid",
    "sigmoid_norm",
    "channel",
    "manet_conv",
    "manet_pool",
)
DOWNSAMPLES = ("max", "avg", "conv", "attention")
GLOBAL_POOLS = ("avg", "max", "avgmax", "attention")
# Small depths: candidates must train in seconds on a CPU (the search's
# brief training budget), and the latency objective favours them anyway.
WIDTHS = (16, 24, 32, 48, 64, 96, 128)
MAX_STAGES = 4
# The fast end (0–1 stages): patch sides that tile 28 and 32 pixels into 14–16, 7–8 or 4
# a side, and narrow projections.
PATCHES = (2, 4, 7)
PATCH_WIDTHS = (8, 16, 32, 64)
# A map flattened into the head holds at most this many features (a 128×28×28 map would
# give the head 100k inputs): a larger one is pooled.
MAX_FLATTEN = 2**14

# What a search trains first (nas.search._spaces): bench/reference.py's attention CNN, a
# conv 16 stem, plain 32 and 64 stages with max-pooling, a plain 128 stage with 2-head
# softmax attention (relative position bias) on the 7×7 map, avg+max pooling and a linear
# head. Searches ranked networks by a few epochs' accuracy and handed the retrain small,
# fast ones that gain little from a long run; this one is a mid-size network, at about
# half seed_cnn's latency on a CPU, known to pay off in one (README, "End to end").
STARTING_POINTS = (
    {
        "n_stages": 3,
        "act": "relu",
        "norm": "batch",
        "stem.width": 16,
        "stem.stride": 1,
        **{
            f"s{i}.{key}": value
            for i, width in enumerate((32, 64, 128))
            for key, value in (("block", "plain"), ("width", width), ("depth", 1), ("kernel", 3))
        },
        "s0.attn.kind": "none",
        "s0.down": "max",
        "s1.attn.kind": "none",
        "s1.down": "max",
        "s2.attn.kind": "softmax",
        "s2.attn.heads": 2,
        "s2.attn.head_dim": 32,
        "s2.attn.pos": "relbias",
        "pool": "avgmax",
        "head.layers": 0,
    },
)


def suggest_attention(
    trial: optuna.Trial, prefix: str, height: int, width: int
) -> AttentionSpec | None:
    kind = trial.suggest_categorical(f"{prefix}.attn.kind", ATTENTION_KINDS)
    if kind == "none":
        return None
    if kind == "channel":
        return AttentionSpec(
            "channel", reduction=trial.suggest_categorical(f"{prefix}.attn.reduction", (4, 8, 16))
        )
    heads = trial.suggest_categorical(f"{prefix}.attn.heads", (1, 2, 4))
    head_dim = trial.suggest_categorical(f"{prefix}.attn.head_dim", (8, 16, 32))
    position = trial.suggest_categorical(f"{prefix}.attn.pos", ("none", "learned", "relbias"))
    kernel = pool_stride = 1
    if kind == "manet_conv":
        kernel = trial.suggest_categorical(f"{prefix}.attn.kernel", (3, 5))
    if kind == "manet_pool":
        pool_stride = trial.suggest_categorical(f"{prefix}.attn.pool_stride", (2, 4))
    spec = AttentionSpec(kind, heads, head_dim, position, kernel=kernel, pool_stride=pool_stride)
    return fit_attention(spec, height, width)


def suggest_conv_stem(trial: optuna.Trial, task: Task, norm: str, activation: str) -> StemSpec:
    return StemSpec(
        trial.suggest_categorical("stem.width", (16, 24, 32)),
        stride=suggest_stem_stride(trial, task),
        norm=norm,
        activation=activation,
    )


def suggest_fast_stem(trial: optuna.Trial, task: Task, norm: str, activation: str) -> StemSpec:
    """The stem of a 0–1-stage network: a conv, patches, or none (the pixels)."""
    kind = trial.suggest_categorical("stem.kind", ("conv", "patch", "none"))
    if kind == "none" and task.channels * task.height * task.width > MAX_FLATTEN:
        kind = "patch"  # too many pixels to read one by one: cut them into patches
    if kind == "conv":
        return suggest_conv_stem(trial, task, norm, activation)
    if kind == "none":
        return StemSpec(task.channels, kind="none")
    # A patch as large as the image at most (a tiny input gets one patch).
    side = min(trial.suggest_categorical("stem.patch", PATCHES), task.height, task.width)
    if side < 2:  # a 1-pixel-wide input has no patches to cut: read it as it is
        return StemSpec(task.channels, kind="none")
    width = trial.suggest_categorical("stem.patch_width", PATCH_WIDTHS)
    return StemSpec(width, side, side, norm, activation, kind="patch")


def stem_map(task: Task, stem: StemSpec) -> tuple[int, int]:
    """The (height, width) the stem gives: patches drop a partial one at each edge."""
    if stem.kind == "patch":
        return task.height // stem.stride, task.width // stem.stride
    return resolution(task, stem.stride)


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    n_stages = trial.suggest_int("n_stages", 0, MAX_STAGES)
    activation = trial.suggest_categorical("act", ("relu", "gelu", "silu"))
    norm = trial.suggest_categorical("norm", ("batch", "group"))
    fast = n_stages <= 1
    make_stem = suggest_fast_stem if fast else suggest_conv_stem
    stem = make_stem(trial, task, norm, activation)
    height, width = stem_map(task, stem)
    stages = []
    for i in range(n_stages):
        p = f"s{i}"
        block = trial.suggest_categorical(f"{p}.block", ("plain", "residual", "separable"))
        stage_width = trial.suggest_categorical(f"{p}.width", WIDTHS)
        depth = trial.suggest_int(f"{p}.depth", 1, 2)
        kernel = trial.suggest_categorical(f"{p}.kernel", (3, 5))
        attention = suggest_attention(trial, p, height, width)
        down = "none"
        if i < n_stages - 1:
            down = downsample_rule(
                trial.suggest_categorical(f"{p}.down", DOWNSAMPLES), height, width
            )
        stages.append(
            StageSpec(block, stage_width, depth, kernel, activation, norm, attention, down)
        )
        height, width = after_downsample(down, height, width)
    # Pixels with no stage have nothing to pool: they go to the head as they are.
    nothing_to_pool = stem.kind == "none" and not stages
    channels = stages[-1].width if stages else stem.width
    flatten = (
        fast
        and channels * height * width <= MAX_FLATTEN
        and (nothing_to_pool or trial.suggest_categorical("flatten", (True, False)))
    )
    global_pool = "flatten" if flatten else trial.suggest_categorical("pool", GLOBAL_POOLS)
    layers = trial.suggest_int("head.layers", 0, 2)
    head = HeadSpec()
    if layers:
        head = HeadSpec(
            hidden=(trial.suggest_categorical("head.width", (64, 128, 256, 512)),) * layers,
            activation=trial.suggest_categorical(
                "head.act", ("relu", "gelu", "silu", "sigmoid", "tanh")
            ),
            dropout=trial.suggest_categorical("head.dropout", (0.0, 0.1, 0.25, 0.5)),
        )
    return ArchSpec(
        input=InputSpec(task.channels, task.height, task.width),
        stem=stem,
        stages=tuple(stages),
        global_pool=global_pool,
        head=head,
        classes=task.classes,
    )
