"""Reading source extracts row by row, with bounded memory: each row comes with the line it
started on (for the reject file) as a dict of the source's columns."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

from connectors.mapping import Mapping, MappingError


class ExtractError(ValueError):
    """The extract as a whole cannot be read with this mapping (not one bad row)."""


def columns(path: Path, mapping: Mapping) -> list[str]:
    """The extract's columns (its header)."""
    with open(path, newline="", encoding=mapping.csv_options.get("encoding", "utf-8-sig")) as stream:
        return next(csv.reader(stream, delimiter=mapping.csv_options.get("delimiter", ",")), [])


class Position:
    """How far into the extract reading has got, in bytes (for rows/s and an ETA)."""

    def __init__(self):
        self.raw = None
        self.total = 0

    @property
    def bytes(self) -> int:
        try:
            return self.raw.tell() if self.raw is not None and not self.raw.closed else self.total
        except (OSError, ValueError):
            return self.total


def rows(path: Path, mapping: Mapping, position: Position | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) for each row of a CSV extract; the header must hold every column the mapping reads."""
    if mapping.source != "csv":
        raise MappingError(mapping.path, None, f"a {mapping.source} mapping cannot read a CSV extract")
    encoding = mapping.csv_options.get("encoding", "utf-8-sig")
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ExtractError(f"{path}: cannot be read ({exc.strerror})") from None
    if position is not None:
        position.raw, position.total = raw, Path(path).stat().st_size
    with raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as stream:
        reader = csv.DictReader(stream, delimiter=mapping.csv_options.get("delimiter", ","))
        try:
            header = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ExtractError(f"{path}: not a {encoding} CSV file ({exc})") from None
        missing = mapping.missing(header)
        if missing:
            raise ExtractError(f"{path}: the mapping {mapping.path} reads columns the extract does not have: "
                               f"{', '.join(missing)}")
        line = reader.line_num + 1
        try:
            for row in reader:
                yield line, row
                line = reader.line_num + 1
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ExtractError(f"{path}:{line}: cannot be read ({exc})") from None
