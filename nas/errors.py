"""The base of every error a user can cause: a value that cannot work, named in the message.

Each stage has its own subclass (``TaskError``, ``ArchSpecError``, ``DataError``,
``AugmentError``, ``TrainConfigError``, ``SpaceError``, ``StudyError``, ``ExportError``);
a command prints a ``NasError`` as one line and exits 2. It is a ``ValueError``, as the
stage errors were, so code that caught those still does.
"""

from __future__ import annotations


class NasError(ValueError):
    """A user-facing error; the message names the problem and the value."""
