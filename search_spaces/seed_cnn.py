"""seed_cnn: the first seed paper's example network, as a fixed hand design.

Two 3×3 convolutions of 64 channels with ReLU, a 2×2 max-pool, a 512-unit
fully-connected layer and the classifier. The paper's code flattened a hard-coded
size; here the flattened width follows the input (64·⌈H/2⌉·⌈W/2⌉), so it fits any task.
"""

from __future__ import annotations

import optuna

from nas.model import ArchSpec, HeadSpec, InputSpec, StageSpec, StemSpec, Task


def spec(task: Task) -> ArchSpec:
    return ArchSpec(
        input=InputSpec(task.channels, task.height, task.width),
        stem=StemSpec(64, kernel=3, stride=1, norm="none", activation="relu"),
        stages=(StageSpec("plain", 64, depth=1, kernel=3, norm="none", downsample="max"),),
        global_pool="flatten",
        head=HeadSpec(hidden=(512,), activation="relu"),
        classes=task.classes,
    )


def suggest(trial: optuna.Trial, task: Task) -> ArchSpec:
    """A space with no parameters: every trial is the hand design."""
    return spec(task)
