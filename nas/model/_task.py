"""What a network is asked to solve: input shape, number of classes, kind.

Spaces and the builder read a :class:`Task`; nothing else guesses shapes.

An image task's input is ``channels × height × width`` pixels. A text task's input is a
sequence of ``length`` token ids below ``vocab_size``; its image fields are all 1 (there is
no image), so code that multiplies them out still gets a sensible number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nas.errors import NasError

TaskKind = Literal["image", "text"]


class TaskError(NasError):
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
        length: tokens per example (text; 0 for images). Sequences are padded or
            truncated to it.
        vocab_size: number of token ids (text; 0 for images), counting the padding id 0
            and the out-of-vocabulary id 1, so an ``nn.Embedding(vocab_size, d)`` covers
            every id a loader produces.
        class_names: the name of each class index, when the dataset has names (text
            labels are arbitrary strings; reports and exports show them); empty otherwise.
    """

    name: str
    kind: TaskKind
    channels: int
    height: int
    width: int
    classes: int
    # Defaulted and after ``classes``: existing code builds image tasks positionally with
    # six arguments.
    length: int = 0
    vocab_size: int = 0
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("image", "text"):
            raise TaskError(f"task.kind must be 'image' or 'text', got {self.kind!r}")
        for field in ("channels", "height", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise TaskError(f"task.{field} must be a positive integer, got {value!r}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise TaskError(f"task.classes must be an integer >= 2, got {self.classes!r}")
        for field in ("length", "vocab_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TaskError(f"task.{field} must be an integer, got {value!r}")
        if self.kind == "text":
            # A text task has no image: the image fields are fixed at 1 so that nothing
            # mistakes a text task for a 1×1 picture with meaningful channels.
            for field in ("channels", "height", "width"):
                if getattr(self, field) != 1:
                    raise TaskError(
                        f"task.{field} must be 1 for a text task, got {getattr(self, field)!r}"
                    )
            if self.length < 1:
                raise TaskError(f"task.length must be >= 1 for a text task, got {self.length}")
            if self.vocab_size < 3:
                # PAD and OOV take ids 0 and 1: fewer than 3 ids is a vocabulary of no words.
                raise TaskError(
                    f"task.vocab_size must be >= 3 for a text task (ids 0 and 1 are padding "
                    f"and out-of-vocabulary), got {self.vocab_size}"
                )
        else:
            for field in ("length", "vocab_size"):
                if getattr(self, field) != 0:
                    raise TaskError(
                        f"task.{field} applies to text tasks only; an image task has 0, "
                        f"got {getattr(self, field)!r}"
                    )
        if not isinstance(self.class_names, tuple) or not all(
            isinstance(n, str) for n in self.class_names
        ):
            raise TaskError(
                f"task.class_names must be a tuple of strings, got {self.class_names!r}"
            )
        if self.class_names and len(self.class_names) != self.classes:
            raise TaskError(
                f"task.class_names has {len(self.class_names)} names for {self.classes} classes"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise TaskError(f"task.class_names repeats a name: {self.class_names!r}")


# The default task's shape, for tools that describe a space without loading data.
FASHION_MNIST = Task("fashion_mnist", "image", channels=1, height=28, width=28, classes=10)
