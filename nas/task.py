"""What a network is asked to solve: input shape, number of classes, kind.

Spaces and the builder read a :class:`Task`; nothing else guesses shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskKind = Literal["image", "text"]


class TaskError(ValueError):
    """A task description that cannot be right (a zero size, one class, ...)."""


@dataclass(frozen=True)
class Task:
    """A classification task.

    Attributes:
        name: dataset name as the user gave it (``fashion_mnist``, ``digits``...).
        kind: ``image`` (C×H×W input) or ``text`` (a sequence of tokens).
        channels: input channels (images).
        height: input height (images).
        width: input width (images).
        classes: number of classes.
    """

    name: str
    kind: TaskKind
    channels: int
    height: int
    width: int
    classes: int

    def __post_init__(self) -> None:
        if self.kind not in ("image", "text"):
            raise TaskError(f"task.kind must be 'image' or 'text', got {self.kind!r}")
        for field in ("channels", "height", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise TaskError(f"task.{field} must be a positive integer, got {value!r}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise TaskError(f"task.classes must be an integer >= 2, got {self.classes!r}")


# The default task's shape, for tools that describe a space without loading data.
FASHION_MNIST = Task("fashion_mnist", "image", channels=1, height=28, width=28, classes=10)
