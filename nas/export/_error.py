"""The export's one error, in a module of its own so that every part of the export (and
its command line) can raise it without importing another part."""

from __future__ import annotations

from nas.errors import NasError


class ExportError(NasError):
    """A request that cannot be exported, with the value that is wrong."""
