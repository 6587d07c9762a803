"""attention_cnn (the default space): a CNN of 2–4 stages with an attention slot in each.

Parameters (names are stable; a name always has the same choices):

- ``n_stages`` 2–4; ``stem.width``; ``stem.stride`` (1 or 2; inputs up to 64×64 only);
  ``act`` and ``norm`` for the whole network.
- per stage slot ``s0``..``s3`` (sampled only when the slot is used — conditional, so
  use ``TPESampler(multivariate=True, group=True)``): ``block``, ``width``, ``depth``,
  ``kernel``; ``attn.kind`` (none or one of the six ops) and, by kind, ``attn.heads``,
  ``attn.head_dim``, ``attn.pos``, ``attn.kernel`` (manet_conv), ``attn.pool_stride``
  (manet_pool), ``attn.reduction`` (channel); ``down`` (all but the last stage).
- ``pool`` (global pooling); ``head.layers`` 0–2 and, with layers, ``head.width``,
  ``head.act``, ``head.dropout``.

Mapping rules instead of rejection (see ``search_spaces._common``): the stem has stride
2 above 64×64 inputs; a downsample of a map under 2×2 becomes ``none``; attention that
does not fit the map or the attention memory budget is mapped by ``fit_attention``.
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


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    n_stages = trial.suggest_int("n_stages", 2, MAX_STAGES)
    activation = trial.suggest_categorical("act", ("relu", "gelu", "silu"))
    norm = trial.suggest_categorical("norm", ("batch", "group"))
    stem = StemSpec(
        trial.suggest_categorical("stem.width", (16, 24, 32)),
        stride=suggest_stem_stride(trial, task),
        norm=norm,
        activation=activation,
    )
    height, width = resolution(task, stem.stride)
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
        global_pool=trial.suggest_categorical("pool", GLOBAL_POOLS),
        head=head,
        classes=task.classes,
    )
