"""Values read back from a study, made safe to show: anyone who can write its storage may
have edited them.

A stored number is shown only if it is a finite number; stored text only through the
function made for where it goes: :func:`code_text` (inside a docstring of generated
code), :func:`markdown_text` (Markdown), :func:`printable` (a terminal), :func:`shown`
(an error message).
"""

from __future__ import annotations

import math

# The longest stored text code_text shows: a CPU's or a study's name fits, a flood does not.
CODE_TEXT_LIMIT = 80


def number(value: object, integer: bool = False) -> float | int | None:
    """``value`` if it is a finite number (an int where ``integer``), else None.

    Ints beyond 64 bits are no figure a search records (and would not fit a float).
    """
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    return value if math.isfinite(value) else None


def figure(value: object, fmt: str, integer: bool = False, scale: float = 1.0) -> str:
    """A stored figure formatted with ``fmt``, or "n/a": the text is digits and signs only."""
    checked = number(value, integer)
    if checked is None:
        return "n/a"
    return format(checked if integer else checked / scale, fmt)


def shown(value: object, limit: int = 80) -> str:
    """A stored value in an error message: its repr (one line), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(value: object, newlines: bool = False) -> str:
    """Stored text for a terminal: control characters (an escape sequence, a line break
    that would fake a row) shown as ``\\x1b``-style escapes; ``newlines`` keeps ``\\n``."""
    return "".join(
        c if c.isprintable() or (newlines and c == "\n") else repr(c)[1:-1] for c in str(value)
    )


def code_text(value: object, limit: int = CODE_TEXT_LIMIT) -> str:
    """Stored text as it may appear in a docstring of generated code (or any quoted context).

    Keeps printable characters only (no line break of any kind, no control or format
    character, no surrogate), shows ``"`` as ``'`` and a backslash or anything else
    dropped as ``?``, and cuts the result to ``limit`` characters. The result holds no
    ``"`` and no backslash, so it can neither end a string literal nor start an escape,
    and no line break, so it cannot start a line of code. A non-string is ``n/a``.
    """
    if not isinstance(value, str):
        return "n/a"
    text = "".join("'" if c == '"' else c if c.isprintable() and c != "\\" else "?" for c in value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Escaped in stored Markdown text: HTML and autolinks, links and images, emphasis, code,
# headings, table cells, strikethrough, entities (CommonMark lets a backslash escape any).
MARKDOWN_SPECIAL = frozenset("\\`*_[]<>#|~&")


def markdown_text(value: object) -> str:
    """Stored text (or a stored number) as literal Markdown on one line: characters that
    are not printable (line breaks: a new block) as spaces, and the characters that
    start markup backslash-escaped, so it can open no tag, link, code span, emphasis or
    table cell."""
    text = "n/a" if value is None else str(value)
    return "".join(
        "\\" + c if c in MARKDOWN_SPECIAL else c if c.isprintable() else " " for c in text
    )
