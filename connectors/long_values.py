"""A JSON byte stream with every string longer than a limit cut out before a parser sees it.

A streaming JSON parser (ijson, over yajl) hands on one value at a time, but it holds a whole
string token in memory before it can: one entry of a FHIR Bundle holding a 1 GB string would be
read whole. `CutLongStrings` wraps the file the parser reads and, as the bytes pass, replaces the
content of any string (a value or a key) longer than ``limit`` bytes by ``MARKER`` (a string no
FHIR resource holds: it begins with a NUL character, which FHIR strings may not contain), and any
number longer than that (the parser holds a number token whole too: a decimal of a billion digits)
by the string ``"MARKER"``, so the parser never holds more than ``limit`` bytes of one token plus a
read buffer, and the reader
above can reject the entry that held it by name (`holds_a_cut_value`). Everything else passes
unchanged.

It follows JSON's string syntax only: a string opens and closes at a ``"`` not escaped by a
backslash; outside strings, a number is a run of the bytes ``-+.eE0-9``. Bytes it holds back while deciding are at most ``limit`` plus one read (64 KiB). It
reads at C speed (a few operations per 64 KiB read): a streamed 1 GB extract does not wait on it.
"""

from __future__ import annotations

import io
import re

MARKER_TEXT = "\x00contactgate: a value longer than the limit, not read"
MARKER = b"\\u0000contactgate: a value longer than the limit, not read"  # as JSON text
READ_SIZE = 64 * 1024
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
NUMBER_BYTES = b"-+.eE0123456789"


def holds_a_cut_value(value) -> bool:
    """Whether a parsed string (value or key) is one `CutLongStrings` cut."""
    return isinstance(value, str) and value.startswith("\x00contactgate: a value longer")


class CutLongStrings(io.RawIOBase):
    """``raw`` (a binary file) with each JSON string longer than ``limit`` bytes replaced by MARKER."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit = raw, limit
        self.in_string = False
        self.escaped = False  # the last byte read was a backslash inside a string
        self.held: list[bytes] = []  # the open string's content so far (while not longer than limit)
        self.held_length = 0
        self.cutting = False  # the open string is longer than limit: its content is dropped
        self.out = bytearray()
        self.cut = 0  # strings and numbers cut so far
        self.in_number = False  # a number ended the last chunk: it may go on in the next
        self.number: list[bytes] = []  # its bytes so far (while not longer than limit)
        self.number_length = 0
        self.number_cutting = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.out:
            chunk = self.raw.read(min(READ_SIZE, self.limit))
            if not chunk:
                if self.in_number:
                    self._end_number()
                if self.held:  # an unterminated string at the end: the parser says so
                    self.out += b"".join(self.held)
                    self.held, self.held_length = [], 0
                break
            self._filter(chunk)
        n = min(len(buffer), len(self.out))
        buffer[:n] = self.out[:n]
        del self.out[:n]
        return n

    def _content(self, piece: bytes) -> None:
        """Bytes inside the open string."""
        if self.cutting or not piece:
            return
        self.held.append(piece)
        self.held_length += len(piece)
        if self.held_length > self.limit:
            self.held, self.held_length, self.cutting = [], 0, True
            self.cut += 1

    def _number(self, piece: bytes) -> None:
        """Bytes of a number that may go on in the next chunk."""
        self.in_number = True
        if self.number_cutting or not piece:
            return
        self.number.append(piece)
        self.number_length += len(piece)
        if self.number_length > self.limit:
            self.number, self.number_length, self.number_cutting = [], 0, True
            self.cut += 1

    def _end_number(self) -> None:
        self.out += b'"' + MARKER + b'"' if self.number_cutting else b"".join(self.number)
        self.number, self.number_length, self.number_cutting, self.in_number = [], 0, False, False

    def _outside(self, piece: bytes, ends_chunk: bool) -> None:
        """Bytes outside strings: passed on, but for a number at the end of the chunk, held back
        until it ends (a number inside one chunk is shorter than the limit). lstrip / rstrip: C
        speed, and linear."""
        at = 0
        if self.in_number:
            at = len(piece) - len(piece.lstrip(NUMBER_BYTES))
            self._number(piece[:at])
            if at == len(piece) and ends_chunk:
                return  # the number goes on
            self._end_number()
        if ends_chunk:
            end = len(piece.rstrip(NUMBER_BYTES))
            if end < len(piece) and end >= at:
                self.out += piece[at:end]
                self._number(piece[end:])
                return
        self.out += piece[at:]

    def _filter(self, chunk: bytes) -> None:
        """Pass ``chunk`` on, holding back the open string's content. Only the quotes that open and
        close strings matter, and a string inside one chunk is shorter than the limit (a chunk is
        smaller), so each chunk is judged by its first and last quote and the parity of their number,
        on a copy in which every escape (backslash and the byte after it) is masked: C speed."""
        masked = chunk
        if self.escaped:  # the chunk starts with the byte a backslash escaped
            masked, self.escaped = b"_" + chunk[1:], False
        if b"\\" in masked:
            masked = _ESCAPE.sub(b"__", masked)
            if masked.endswith(b"\\"):  # escapes the first byte of the next chunk
                masked, self.escaped = masked[:-1] + b"_", True
        at = 0
        if self.in_string:
            close = masked.find(b'"')
            if close < 0:
                self._content(chunk)
                return
            self._content(chunk[:close])
            self.out += MARKER if self.cutting else b"".join(self.held)
            self.out += b'"'
            self.held, self.held_length, self.cutting, self.in_string = [], 0, False, False
            at = close + 1
        if masked.count(b'"', at) % 2 == 0:
            self._outside(chunk[at:], True)
            return
        opened = masked.rfind(b'"')  # the last quote opens a string the chunk does not close
        self._outside(chunk[at:opened + 1], False)
        self.in_string = True
        self._content(chunk[opened + 1:])
