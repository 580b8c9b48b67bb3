"""Text and CSV that people open in a spreadsheet or read in a terminal, safe whatever it holds.

Both sides write such files from values others chose: the gateway's audit reports (user ids, roles
and reasons from callers, names and reasons from officers), a connector's reject file (source ids
and values from an extract). Every CSV the product writes goes through `CsvWriter`:

- **one visible line per value** (`visible_text`): control characters (a newline starting a false
  row), Unicode format characters (a right-to-left override reversing what follows, zero-width
  characters) and line or paragraph separators are written ``\\u{XXXX}``, and a backslash ``\\\\``,
  so the escaping is unambiguous;
- **every cell quoted**, the header too, so a separator inside a value never splits it for a reader
  that honours quotes;
- **no formula** (`csv_cell`): a spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or
  ``@``. A reader that splits on ``;`` (the list separator of many locales), ``,``, ``|`` or a tab
  whatever the quotes starts a cell after each of them too, so a formula starter there (after any
  spaces) gets a ``'`` before it as well: ``x;=cmd|' /C calc'!A0;`` is written ``x;'=cmd|' /C calc'!A0;``.
  A double quote counts as such a separator: the same reader, honouring quotes inside what it
  split, reads ``x;"=1+1"`` as the cells ``x`` and ``=1+1``, so it is written ``x;"'=1+1"``.
  The ``'`` shows; the formula never runs.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from typing import Iterable, TextIO

_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
FORMULA_STARTERS = "=+-@"
# Where a spreadsheet may start a cell: the start of the value, or after a separator some reader
# may split on, or a double quote (which opens a quoted cell for a reader that split on one of them
# first); then any spaces (some readers trim them); then a formula starter.
_FORMULA = re.compile(r"(^|[,;|\t\"])(\s*)(?=[" + re.escape(FORMULA_STARTERS) + "])")


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        return "\\u{%04X}" % ord(char)
    return char


def visible_text(value) -> str:
    """``value`` as one line of visible text: nothing in it can start a line or reorder what follows."""
    if value is None:
        return ""
    text = str(value)
    if text.isprintable() and "\\" not in text:  # the common case, fast (isprintable is False for Cc/Cf/Z*)
        return text
    return "".join(_escape(c) for c in text)


def csv_cell(value) -> str:
    """``value`` as a CSV cell no spreadsheet runs as a formula (see the module's docstring)."""
    text = visible_text(value)
    if not any(starter in text for starter in FORMULA_STARTERS):
        return text
    return _FORMULA.sub(r"\1\2'", text)


class CsvWriter:
    """csv.writer for files people open: every cell made safe by `csv_cell`, and quoted."""

    def __init__(self, stream: TextIO):
        self._writer = csv.writer(stream, quoting=csv.QUOTE_ALL, lineterminator="\n")

    def writerow(self, cells: Iterable) -> None:
        self._writer.writerow([csv_cell(cell) for cell in cells])
