"""Value transforms: the declarative steps a mapping rule applies to a source value before it is
mapped (``transform:`` in a rule, one step or a list, applied in order).

Named steps: ``trim``, ``collapse_spaces`` (runs of white space to one space, trimmed), ``upper``,
``lower``, ``title``, and the UK identifiers in the forms people write them: ``nhs_number``
("943 476 5919", "943-476-5919" -> 9434765919; a wrong check digit rejects the row saying so),
``pupil_number`` (spaces, dashes and case -> A201000738201; the check letter is checked) and
``postcode`` ("ls62ab" -> "LS6 2AB"). python-stdnum checks the two numbers, as the gateway does.

Steps with a value: ``{remove: "*#"}`` (these characters), ``{replace: {pattern: REGEX, with:
TEXT}}`` (RE2 syntax, as Python's without look-arounds or back-references; ``\\1`` in ``with``
is the first group), ``{lookup: {CODE: VALUE, ...}}`` or ``{lookup: {file: FILE.csv, key: COLUMN, value: COLUMN}}`` (a value the table
does not have passes as it is: use the rule's ``map`` to refuse unknown codes), ``{part:
{separator: "/", index: 0}}`` (one part of a split; -1 is the last).

What cannot run away: a regular expression is compiled when the mapping loads (at most
MAX_PATTERN characters, its replacement tried then) and run by RE2 (google-re2), whose time grows
in proportion to the value whatever the pattern: no backtracking, so no back-references; it is
applied to values of at most MAX_REGEX_INPUT characters. A lookup file is read once, when the
mapping loads: inside the mapping's folder, at most MAX_LOOKUP_BYTES and MAX_LOOKUP_ROWS rows.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from pathlib import Path
from typing import Callable

MAX_PATTERN = 200
MAX_REGEX_INPUT = 1000
MAX_LOOKUP_BYTES = 5 * 1024 * 1024
MAX_LOOKUP_ROWS = 10_000
NAMED = ("trim", "collapse_spaces", "upper", "lower", "title", "nhs_number", "pupil_number", "postcode")
WITH_VALUE = ("remove", "replace", "lookup", "part")
# A UK postcode without its space: outward code (area, district) and inward code (sector, unit).
_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})")

Step = Callable[[str, str], str]  # (value, what: the column, for the reason) -> value


class RowError(ValueError):
    """This row cannot be sent: why (said in the reject file)."""


class TransformError(ValueError):
    """A transform in the mapping cannot be used (the mapping names the line)."""


def suggestion(word: str, choices) -> str:
    """' (did you mean 'X'?)' when one of ``choices`` is close to ``word``, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def compile_steps(spec, base: Path) -> tuple[Step, ...]:
    """The steps of a rule's ``transform`` (a step or a list of steps); TransformError if wrong."""
    return tuple(_step(item, base) for item in (spec if isinstance(spec, list) else [spec]))


def _step(item, base: Path) -> Step:
    if isinstance(item, str):
        if item not in NAMED:
            raise TransformError(f"unknown transform {item!r}{suggestion(item, NAMED + WITH_VALUE)} "
                                 f"(known: {', '.join(NAMED)}; and {', '.join(WITH_VALUE)} with a value)")
        return _NAMED_STEPS[item]
    if not isinstance(item, dict) or len(item) != 1:
        raise TransformError("a transform is a name (trim, upper, nhs_number...) or one of "
                             "{remove: ...}, {replace: ...}, {lookup: ...}, {part: ...}")
    (name, value), = item.items()
    if name not in WITH_VALUE:
        raise TransformError(f"unknown transform {name!r}{suggestion(name, NAMED + WITH_VALUE)}")
    return {"remove": _remove, "replace": _replace, "lookup": _lookup, "part": _part}[name](value, base)


# ---- named ---------------------------------------------------------------------------------------

def _identifier(text: str, what: str, *, article: str, name: str, shape: str, written_as: str, check: str, is_valid) -> str:
    """A UK identifier as written (spaces, dashes, dots, case), compacted and checked."""
    written = text.strip()
    if not written:
        return ""
    compact = re.sub(r"[\s\-./]", "", written).upper()
    if not re.fullmatch(shape, compact):
        raise RowError(f"{what}: {written!r} is not {article} {name} ({written_as})")
    if not is_valid(compact):
        raise RowError(f"{what}: {written!r} is not a valid {name} ({check}): correct it in the source system")
    return compact


def _nhs_number(text: str, what: str) -> str:
    from stdnum.gb import nhs

    return _identifier(text, what, article="an", name="NHS number", shape=r"\d{10}",
                       written_as="10 digits, spaces or dashes allowed", check="check digit", is_valid=nhs.is_valid)


def _pupil_number(text: str, what: str) -> str:
    from stdnum.gb import upn

    return _identifier(text, what, article="a", name="unique pupil number", shape=r"[A-Z][0-9]{11}[0-9A-Z]",
                       written_as="a letter, 11 digits, a digit or letter", check="check letter", is_valid=upn.is_valid)


def _postcode(text: str, what: str) -> str:
    written = text.strip()
    if not written:
        return ""
    compact = re.sub(r"\s+", "", written).upper()
    match = _POSTCODE.fullmatch(compact)
    if match is None:
        raise RowError(f"{what}: {written!r} is not a UK postcode")
    return f"{match[1]} {match[2]}"


_NAMED_STEPS: dict[str, Step] = {
    "trim": lambda text, what: text.strip(),
    "collapse_spaces": lambda text, what: " ".join(text.split()),
    "upper": lambda text, what: text.upper(),
    "lower": lambda text, what: text.lower(),
    "title": lambda text, what: text.title(),
    "nhs_number": _nhs_number,
    "pupil_number": _pupil_number,
    "postcode": _postcode,
}


# ---- with a value --------------------------------------------------------------------------------

def _remove(value, base: Path) -> Step:
    if not isinstance(value, str) or not value:
        raise TransformError("remove takes the characters to remove, e.g. {remove: \"*#-\"}")
    table = {ord(c): None for c in value}
    return lambda text, what: text.translate(table)


def _re2_options():
    import re2

    options = re2.Options()
    options.log_errors = False  # a pattern refused is said once, in the mapping's error
    return options


def _replace(value, base: Path) -> Step:
    import re2  # google-re2: linear time in the value, whatever the pattern (no backtracking)

    if not isinstance(value, dict) or set(value) != {"pattern", "with"}:
        raise TransformError("replace takes {pattern: REGEX, with: TEXT}")
    pattern, replacement = str(value["pattern"]), str(value["with"] if value["with"] is not None else "")
    if len(pattern) > MAX_PATTERN:
        raise TransformError(f"the pattern is longer than {MAX_PATTERN} characters")
    if re.search(r"\\[1-9]|\(\?P=|\\g<|\(\?\(", pattern):
        raise TransformError(f"{pattern!r} has a back-reference, which a regular expression here cannot have")
    try:
        compiled = re2.compile(pattern, _re2_options())
        # the replacement tried once now (on the pattern or nothing matching ""): a group it names
        # that the pattern does not have is refused when the mapping loads, not on the first row
        re2.compile(f"(?:{pattern})|", _re2_options()).search("").expand(replacement)
    except re2.error as exc:
        raise TransformError(f"{pattern!r} is not a regular expression this tool runs "
                             f"({exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc})") from None
    except (IndexError, ValueError) as exc:
        raise TransformError(f"with refers to a group the pattern does not have ({replacement!r}: {exc})") from None

    def replace(text: str, what: str) -> str:
        if len(text) > MAX_REGEX_INPUT:
            raise RowError(f"{what}: longer than {MAX_REGEX_INPUT} characters: too long for a replace")
        try:
            return compiled.sub(replacement, text)
        except (re2.error, IndexError, ValueError) as exc:
            raise RowError(f"{what}: the replace could not be applied ({exc})") from None
    return replace


def _lookup(value, base: Path) -> Step:
    if not isinstance(value, dict) or not value:
        raise TransformError("lookup takes {CODE: VALUE, ...} or {file: FILE.csv, key: COLUMN, value: COLUMN}")
    if "file" in value:
        if set(value) != {"file", "key", "value"}:
            raise TransformError("a lookup file needs {file: FILE.csv, key: COLUMN, value: COLUMN}")
        table = _read_table(base, str(value["file"]), str(value["key"]), str(value["value"]))
    else:
        table = {str(k): "" if v is None else str(v) for k, v in value.items()}
    folded = {k.strip().casefold(): v for k, v in table.items()}

    def lookup(text: str, what: str) -> str:
        key = text.strip()
        if key in table:
            return table[key]
        return folded.get(key.casefold(), text)
    return lookup


def _read_table(base: Path, name: str, key: str, value: str) -> dict[str, str]:
    folder = base.resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        raise TransformError(f"lookup file {name!r}: give a file inside the mapping's folder ({folder})")
    try:
        size = path.stat().st_size
        if size > MAX_LOOKUP_BYTES:
            raise TransformError(f"lookup file {name}: larger than {MAX_LOOKUP_BYTES // (1024 * 1024)} MB")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise TransformError(f"lookup file {name}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TransformError(f"lookup file {name}: not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    for wanted in (key, value):
        if wanted not in header:
            raise TransformError(f"lookup file {name}: no column {wanted!r}{suggestion(wanted, header)} "
                                 f"(it has {', '.join(header)})")
    table: dict[str, str] = {}
    try:
        for number, row in enumerate(reader, start=1):
            if number > MAX_LOOKUP_ROWS:
                raise TransformError(f"lookup file {name}: more than {MAX_LOOKUP_ROWS:,} rows")
            table[(row.get(key) or "").strip()] = (row.get(value) or "").strip()
    except csv.Error as exc:
        raise TransformError(f"lookup file {name}: line {reader.line_num}: {exc}") from None
    return table


def _part(value, base: Path) -> Step:
    if not isinstance(value, dict) or set(value) != {"separator", "index"} or not isinstance(
            value["index"], int) or not str(value["separator"]):
        raise TransformError("part takes {separator: TEXT, index: N} (0 the first, -1 the last)")
    separator, index = str(value["separator"]), value["index"]

    def part(text: str, what: str) -> str:
        parts = [p.strip() for p in text.split(separator)]
        return parts[index] if -len(parts) <= index < len(parts) else ""
    return part
