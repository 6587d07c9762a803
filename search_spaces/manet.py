"""manet: the MANet layout of the second seed paper.

    stem → conv blocks + convolutional self-attention (Q/K/V from k×k convs) → ↓
         → conv blocks + pooling self-attention (keys/values from an s×s pooled map) → ↓
         → global pool → fully-connected head (relu | sigmoid | tanh)

Parameters: ``stem.width``, ``stem.stride`` (inputs up to 64×64), ``block``, ``act``,
``down``; ``csa.width``, ``csa.depth``, ``csa.heads``, ``csa.head_dim``, ``csa.kernel``;
``psa.width``, ``psa.depth``,
``psa.heads``, ``psa.head_dim``, ``psa.pool_stride``; ``pool``; ``fc.layers``,
``fc.width``, ``fc.act``, ``fc.dropout``. Attention that does not fit the map or the
memory budget is mapped as in ``search_spaces._common.fit_attention``.
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


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    activation = trial.suggest_categorical("act", ("relu", "gelu"))
    block = trial.suggest_categorical("block", ("plain", "residual"))
    down = trial.suggest_categorical("down", ("max", "avg"))
    stem = StemSpec(
        trial.suggest_categorical("stem.width", (16, 32)),
        stride=suggest_stem_stride(trial, task),
        activation=activation,
    )
    height, width = resolution(task, stem.stride)

    csa = AttentionSpec(
        "manet_conv",
        heads=trial.suggest_categorical("csa.heads", (1, 2, 4)),
        head_dim=trial.suggest_categorical("csa.head_dim", (8, 16, 32)),
        kernel=trial.suggest_categorical("csa.kernel", (3, 5, 7)),
    )
    csa_down = downsample_rule(down, height, width)
    conv_stage = StageSpec(
        block,
        width=trial.suggest_categorical("csa.width", (32, 48, 64)),
        depth=trial.suggest_int("csa.depth", 1, 2),
        activation=activation,
        attention=fit_attention(csa, height, width),
        downsample=csa_down,
    )
    height, width = after_downsample(csa_down, height, width)

    psa = AttentionSpec(
        "manet_pool",
        heads=trial.suggest_categorical("psa.heads", (1, 2, 4)),
        head_dim=trial.suggest_categorical("psa.head_dim", (8, 16, 32)),
        pool_stride=trial.suggest_categorical("psa.pool_stride", (2, 4)),
    )
    pool_stage = StageSpec(
        block,
        width=trial.suggest_categorical("psa.width", (64, 96, 128)),
        depth=trial.suggest_int("psa.depth", 1, 2),
        activation=activation,
        attention=fit_attention(psa, height, width),
        downsample=downsample_rule(down, height, width),
    )

    layers = trial.suggest_int("fc.layers", 1, 2)
    head = HeadSpec(
        hidden=(trial.suggest_categorical("fc.width", (128, 256, 512)),) * layers,
        activation=trial.suggest_categorical("fc.act", ("relu", "sigmoid", "tanh")),
        dropout=trial.suggest_categorical("fc.dropout", (0.0, 0.25, 0.5)),
    )
    return ArchSpec(
        input=InputSpec(task.channels, task.height, task.width),
        stem=stem,
        stages=(conv_stage, pool_stage),
        global_pool=trial.suggest_categorical("pool", ("avg", "attention")),
        head=head,
        classes=task.classes,
    )
