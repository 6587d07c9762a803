"""nas.stored: values read back from a study become numbers and text that are safe where
they are shown (arbitrary strings from hypothesis, surrogates and controls included)."""

from __future__ import annotations

import ast
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from nas.stored import (
    CODE_TEXT_LIMIT,
    MARKDOWN_SPECIAL,
    code_text,
    figure,
    markdown_text,
    number,
    printable,
)

ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()))


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_code_text_cannot_end_a_literal_or_start_a_line(text: str) -> None:
    shown = code_text(text)
    assert shown.isprintable() and '"' not in shown and "\\" not in shown
    assert len(shown) <= CODE_TEXT_LIMIT
    (statement,) = ast.parse(f'"""{shown}"""').body  # one string, whatever the text held
    assert isinstance(statement, ast.Expr) and statement.value.value == shown  # type: ignore[attr-defined]
    if text.isprintable() and not set(text) & {'"', "\\"} and len(text) <= 40:
        assert shown == text  # ordinary text is shown as it is


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT | st.integers() | st.floats())
def test_markdown_text_is_one_line_of_escaped_text(value: object) -> None:
    shown = markdown_text(value)
    assert shown.isprintable()  # no line break: no new block
    escaped = False
    for c in shown:  # every markup character is escaped, and a backslash escapes one
        if escaped:
            assert c in MARKDOWN_SPECIAL
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            assert c not in MARKDOWN_SPECIAL, (shown, c)
    assert not escaped
    if isinstance(value, str) and value.isprintable() and not set(value) & MARKDOWN_SPECIAL:
        assert shown == value


@given(ANY_TEXT)
def test_printable_shows_controls_as_escapes(text: str) -> None:
    assert printable(text).isprintable()
    assert printable("a\nb", newlines=True) == "a\nb" and printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J") == "\\x1b[2J"


def test_only_finite_numbers_are_figures() -> None:
    assert [number(v) for v in (1, 2.5, True, "1", math.nan, math.inf, None, [1])] == [
        1,
        2.5,
        *[None] * 6,
    ]
    assert number(2.0, integer=True) is None and number(2**63) is None
    assert figure(1234, ",", integer=True) == "1,234" and figure(2.5e6, ".1f", scale=1e6) == "2.5"
    assert figure("=1+1", ".3f") == figure(math.nan, ".3f") == "n/a"
