"""Printing to a terminal without letting user text take it over.

Scenario names, descriptions, site and pool names, file paths and the values quoted in error
messages all come from users, and two things in such text must not reach a terminal as-is:

- **rich markup**: `description: "GPUs [/] cloud"` is a closing tag with nothing to close (a
  MarkupError that, after `compare`, lost a finished simulation); `[red]` would restyle the
  rest of the line and `:warning:` would become an emoji;
- **control characters**: an ANSI escape in a name can recolour, move the cursor, clear the
  screen or retitle the window; a carriage return overwrites what was printed before it.

`console()` returns a `SafeConsole`, which never interprets markup or emoji codes in strings
(whatever a caller asks) and shows control characters escaped, as Python writes them (ESC is
the four characters `\\x1b`; newlines and tabs stay). deploysim's own styling is therefore
never markup: it is `styled(text, style)` (a `Text` with the same escaping) or `style=`.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls, zero-width and bidirectional overrides
# (which reorder what a reader sees).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """Control characters as Python escapes: '\\x1b[31mred' -> '\\\\x1b[31mred'."""
    return _CONTROL.sub(_escape_one, str(text))


def styled(text: Any, style: str = "") -> Text:
    """A piece of text, shown literally (control characters escaped), in a style."""
    return Text(escape_control(str(text)), style=style)


class SafeConsole(Console):
    """A rich Console that prints every string literally: no markup, no emoji, escaped controls.

    Strings reach the terminal through `render_str` (print, table cells, titles), so that is
    where the rule is kept; `Text` objects are built with `styled`.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.update(markup=False, emoji=False)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(escape_control(text), **kwargs)


def console(*, stderr: bool = False, width: int | None = None) -> SafeConsole:
    """The console every deploysim command prints through."""
    return SafeConsole(stderr=stderr, width=width)
