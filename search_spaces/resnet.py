"""resnet: a small ResNet-style CNN as a fixed hand design (no attention).

Three stages of two residual blocks (32, 64, 128 channels), 2×2 max-pooling between
them, global average pooling and a linear classifier.
"""

from __future__ import annotations

import optuna

from nas.model import ArchSpec, HeadSpec, InputSpec, StageSpec, StemSpec, Task
from search_spaces._common import stem_stride


def spec(task: Task) -> ArchSpec:
    return ArchSpec(
        input=InputSpec(task.channels, task.height, task.width),
        stem=StemSpec(32, stride=stem_stride(task)),
        stages=(
            StageSpec("residual", 32, depth=2, downsample="max"),
            StageSpec("residual", 64, depth=2, downsample="max"),
            StageSpec("residual", 128, depth=2),
        ),
        global_pool="avg",
        head=HeadSpec(),
        classes=task.classes,
    )


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    """A space with no parameters: every trial is the hand design."""
    return spec(task)
