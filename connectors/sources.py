"""Reading source extracts record by record, with bounded memory: each record comes with the line
it starts on (for the reject file) as a dict of named values the mapping's rules read.

- **csv**: columns by name (the header).
- **xml**: one record per ``xml.record`` element, read as it is parsed (iterparse; records already
  read are freed); a rule's ``from`` is an XPath relative to the record, or absolute (``/...``) for
  what the file says once (a school's name and URN above its pupils). Parsed with no DTD, no
  entities and no network: a DOCTYPE is refused.
- **fhir**: FHIR R4 ``Patient`` resources, as NDJSON (one a line, streamed) or a ``Bundle``
  document (its entries streamed one by one with ijson), each validated with fhir.resources and
  offered to the rules under the names in ``FHIR_FIELDS``. A line or an entry that is not JSON, or
  nested more than MAX_JSON_DEPTH levels, is a rejected row; a document nested that deep outside its
  entries is refused whole.
- **sql**: the rows of the mapping's ``sql.query``, run on the organisation's own database
  (`SqlQuery`: a SQLAlchemy URL, whose driver the organisation installs; SQLAlchemy is the client
  distribution's ``sql`` extra), streamed with a server-side cursor; columns by name, NULL as empty,
  dates as YYYY-MM-DD. The "line" of a row is its number in the result (1 the first).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lxml import etree

from connectors.mapping import FHIR_FIELDS, Mapping, MappingError

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"


class ExtractError(ValueError):
    """The extract as a whole cannot be read with this mapping (not one bad row)."""


@dataclass(frozen=True)
class SqlQuery:
    """A SQL source: the mapping's query on the database at ``url`` (a SQLAlchemy URL)."""

    url: str
    query: str

    def __str__(self) -> str:  # in reports and messages: never the password
        return f"sql:{_safe_url(self.url)}"

    @property
    def name(self) -> str:
        """The source, for its state: the database (without the password) and the query."""
        return f"sql:{_safe_url(self.url)}:{' '.join(self.query.split())}"


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: said when it is used
        return "(a database URL that cannot be read)"


def _sql_result(source: SqlQuery):
    """(engine, connection, result) of the query, streamed; ExtractError if it cannot run."""
    try:
        import sqlalchemy
    except ImportError:
        raise ExtractError("a sql source needs SQLAlchemy: pip install 'contactgate-client[sql]' and the "
                           "database's driver") from None
    try:
        engine = sqlalchemy.create_engine(source.url)
    except Exception as exc:  # an unknown dialect, a driver not installed
        raise ExtractError(f"{source}: cannot use this database URL ({exc.__class__.__name__}: {exc})") from None
    try:
        connection = engine.connect()
        result = connection.execution_options(stream_results=True, yield_per=500).execute(
            sqlalchemy.text(source.query))
    except Exception as exc:
        engine.dispose()
        raise ExtractError(f"{source}: the query could not run ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0]})") from None
    return engine, connection, result


def _sql_value(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _sql_rows(source: SqlQuery, mapping: Mapping, position, offered):
    if mapping.source != "sql":
        raise ExtractError(f"the mapping {mapping.path} is a {mapping.source} mapping: a query needs source: sql")
    engine, connection, result = _sql_result(source)
    try:
        header = list(result.keys())
        if offered:
            yield 0, header
            return
        missing = mapping.missing(header)
        if missing:
            raise ExtractError(f"{source}: the mapping {mapping.path} reads columns the query does not give: "
                               f"{', '.join(missing)}")
        for number, row in enumerate(result, start=1):
            yield number, {name: _sql_value(value) for name, value in zip(header, row)}
    finally:
        result.close()
        connection.close()
        engine.dispose()


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


def _open(path: Path, position: Position | None):
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ExtractError(f"{path}: cannot be read ({exc.strerror})") from None
    if position is not None:
        position.raw, position.total = raw, Path(path).stat().st_size
    return raw


def columns(path: Path, mapping: Mapping) -> list[str]:
    """The names the extract offers (a CSV header; an XML record's leaf paths; the FHIR fields a
    Patient carries), from its start: what is not mapped is listed, and never sent."""
    if isinstance(path, SqlQuery):
        for _, header in _sql_rows(path, mapping, None, True):
            return header
        return []
    if mapping.source == "csv":
        with open(path, newline="", encoding=mapping.csv_options.get("encoding", "utf-8-sig")) as stream:
            return next(csv.reader(stream, delimiter=mapping.csv_options.get("delimiter", ",")), [])
    for _, record in rows(path, mapping, offered=True):
        return record
    return []


def rows(path: Path, mapping: Mapping, position: Position | None = None, *,
         offered: bool = False) -> Iterator[tuple[int, dict[str, str] | list[str]]]:
    """(line, record) for each record; the extract must offer every column the mapping reads."""
    if isinstance(path, SqlQuery):
        yield from _sql_rows(path, mapping, position, offered)
        return
    if mapping.source == "sql":
        raise ExtractError(f"{path}: the mapping {mapping.path} is a sql mapping: it reads its query (push --sql), "
                           f"not a file")
    reader = {"csv": _csv_rows, "xml": _xml_rows, "fhir": _fhir_rows}[mapping.source]
    yield from reader(Path(path), mapping, position, offered)


def _csv_rows(path: Path, mapping: Mapping, position, offered):
    encoding = mapping.csv_options.get("encoding", "utf-8-sig")
    raw = _open(path, position)
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


def _local(tag) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _leaf_paths(element, prefix: str = "") -> list[str]:
    out = []
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = prefix + _local(child.tag)
        out.extend(_leaf_paths(child, name + "/") if len(child) else [name])
    return out


def _xml_rows(path: Path, mapping: Mapping, position, offered):
    namespaces = mapping.xml_options.get("namespaces", {})
    record = mapping.xml_options["record"].split(":")[-1]
    paths = {column: etree.XPath(f"string({column})", namespaces=namespaces)
             for r in (mapping.id_rule, *mapping.rules) for column in r.reads}
    raw = _open(path, position)
    with raw:
        events = etree.iterparse(raw, events=("end",), tag=f"{{*}}{record}", resolve_entities=False,
                                 no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
                                 remove_comments=True, remove_pis=True)
        try:
            for _, element in events:
                if element.getroottree().docinfo.doctype:
                    raise ExtractError(f"{path}: a DOCTYPE is refused (no DTDs, no entities)")
                if offered:
                    yield element.sourceline, _leaf_paths(element)
                    return
                yield element.sourceline, {source: str(xpath(element)) for source, xpath in paths.items()}
                element.clear()
                while element.getprevious() is not None:
                    del element.getparent()[0]
        except etree.XMLSyntaxError as exc:
            raise ExtractError(f"{path}:{exc.lineno}: not well-formed XML ({exc.msg})") from None


# A FHIR Patient is a dozen levels deep at most (an extension in an extension in a CodeableConcept...);
# a Bundle's entry and resource add three. JSON nested deeper is refused before anything reads it.
MAX_JSON_DEPTH = 64


# A first line longer than this is not one resource of NDJSON but a document on one line (a Bundle
# written without line breaks): it is streamed, not read whole to find out.
MAX_FIRST_LINE = 1024 * 1024


class _TooDeep(ValueError):
    def __init__(self):
        super().__init__(f"JSON nested more than {MAX_JSON_DEPTH} levels deep: not a FHIR resource")


@dataclass(frozen=True)
class _Unreadable:
    """A line of NDJSON that is not a resource: the reason it is rejected."""

    reason: str


def _json(text: str):
    """``text`` parsed as JSON, refused (_TooDeep) if nested more than MAX_JSON_DEPTH levels. json's
    parser recurses once per level and stops at the interpreter's recursion limit (about a thousand
    levels) with a RecursionError: that is the same refusal, caught here. What it parses is then
    measured without recursion."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _TooDeep() from None
    # nested no deeper than the text has brackets (those in strings only add to the count): the walk
    # is needed only when there are more
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise _TooDeep()
    return value


def _deeper_than(value, limit: int) -> bool:
    """Whether ``value``'s objects and arrays nest more than ``limit`` levels (an explicit stack)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _fhir_rows(path: Path, mapping: Mapping, position, offered):
    from fhir.resources.R4B.patient import Patient
    from pydantic import ValidationError

    for line, resource in _fhir_resources(path, position):
        if isinstance(resource, _Unreadable):
            if offered:
                yield line, []
                return
            yield line, {"__invalid__": resource.reason}
            continue
        if offered:
            yield line, [name for name, value in _patient_fields(resource).items() if value]
            return
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue  # a Bundle may carry other resources; only Patients are records here
        try:
            patient = Patient.model_validate(resource)
        except ValidationError as exc:
            yield line, {"__invalid__": f"not a valid FHIR Patient: {exc.errors()[0].get('msg', 'invalid')} at "
                                        f"{'.'.join(str(p) for p in exc.errors()[0].get('loc', ()))}"}
            continue
        yield line, _patient_fields(Dumped(patient))


def _fhir_resources(path: Path, position):
    """(line or entry number, resource) from NDJSON (a resource a line, streamed; a Bundle on a line
    gives its entries) or from one JSON document (a Bundle's entries, streamed one by one, or a
    single resource)."""
    raw = _open(path, position)
    with raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig")
        first = text.readline(MAX_FIRST_LINE + 1)
        try:
            if len(first) > MAX_FIRST_LINE:  # no resource is that long: a Bundle on one line
                raise ValueError("a long first line")
            _json(first)
            streamed = True  # the first line is a whole resource: NDJSON
        except _TooDeep:
            streamed = True  # a whole line, only too deep: NDJSON, and that line is rejected
        except ValueError:
            streamed = False
        if not streamed:
            text.detach()
            raw.seek(0)
            if raw.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte order mark, as utf-8-sig reads it
                raw.seek(0)
            yield from _document_resources(path, raw)
            return
        number = 1
        line = first
        while line:
            if len(line) > MAX_FIRST_LINE:  # no resource is that long: rejected, the rest of it skipped
                while line and not line.endswith("\n"):
                    line = text.readline(MAX_FIRST_LINE + 1)
                yield number, _Unreadable(f"a line longer than {MAX_FIRST_LINE:,} characters: no resource is")
            elif line.strip():
                try:
                    resource = _json(line)
                except _TooDeep as exc:
                    yield number, _Unreadable(str(exc))
                except ValueError as exc:
                    yield number, _Unreadable(f"not JSON ({exc})")
                else:
                    yield from _entries(resource, number)
            number += 1
            line = text.readline(MAX_FIRST_LINE + 1)


def _document_resources(path: Path, raw):
    """A JSON document's resources, read as it is parsed (ijson): each item of the top level's
    ``entry`` array is built alone, handed on and forgotten, so memory holds one entry, not the
    Bundle. An entry nested more than MAX_JSON_DEPTH levels, or larger than MAX_FIRST_LINE (no
    resource is: the NDJSON line limit), is a rejected row naming the entry (it is not built, and a
    string in it longer than that is never held: `long_values.CutLongStrings`); anything else nested
    that deep, or a document whose own fields outside its entries are that large, is refused whole,
    as is an entry nested more than MAX_FIRST_LINE levels (the parser keeps a byte a level).
    A document with no entries is one resource (built whole: a single resource is small)."""
    import ijson

    from connectors.long_values import CutLongStrings, holds_a_cut_value

    top_builder = ijson.ObjectBuilder()
    entry_builder = None
    depth = 0  # of the value being read, the document's own object being 1
    number = 0
    too_deep = False
    in_entries = False
    top_key = None  # the last key of the document's own object
    size = top_size = 0  # bytes (about: a string's length, and a few for each event) of the entry, the rest
    too_large = False
    full_url = entry_key = None  # the entry's fullUrl, to name it in a reject
    try:
        # basic_parse: no path with each event (a path is as long as the nesting is deep: building one
        # per event would make a deeply nested entry quadratic)
        for event, value in ijson.basic_parse(CutLongStrings(raw, MAX_FIRST_LINE), use_float=True):
            if event in ("start_map", "start_array"):
                depth += 1
            if in_entries and depth >= 3:  # inside one entry (the entry's own object is at depth 3)
                if depth > MAX_JSON_DEPTH + 3:  # the document, entry and resource add three
                    too_deep = True
                    if depth > MAX_FIRST_LINE:  # the parser keeps a byte a level: memory would grow with it
                        raise ExtractError(f"{path}: a Bundle entry nested more than {MAX_FIRST_LINE:,} levels "
                                           f"deep: no FHIR document is (refused whole)")
                size += len(value) + 4 if isinstance(value, str) else 8
                if size > MAX_FIRST_LINE or holds_a_cut_value(value):
                    too_large = True
                if depth == 3 and event == "map_key":
                    entry_key = value
                elif depth == 3 and entry_key == "fullUrl" and event == "string" and not too_large:
                    full_url = value[:200]
                if not too_deep and not too_large:
                    entry_builder.event(event, value)
                if event in ("end_map", "end_array"):
                    depth -= 1
                if depth == 2:  # the entry is complete
                    number += 1
                    if too_deep:
                        yield number, _Unreadable(str(_TooDeep()))
                    elif too_large:
                        yield number, _Unreadable(
                            f"Bundle entry {number}" + (f" ({full_url})" if full_url else "")
                            + f" is larger than {MAX_FIRST_LINE:,} bytes: no resource is (not read)")
                    else:
                        entry = entry_builder.value
                        yield number, entry.get("resource") if isinstance(entry, dict) else None
                    entry_builder, too_deep, too_large = ijson.ObjectBuilder(), False, False
                    size, full_url, entry_key = 0, None, None
                continue
            if event in ("end_map", "end_array"):
                depth -= 1
            if depth == 1 and event == "map_key":
                top_key = value
            if event == "start_array" and depth == 2 and top_key == "entry" and not in_entries:
                in_entries, entry_builder = True, ijson.ObjectBuilder()
                continue
            if in_entries and event == "end_array" and depth == 1:
                in_entries = False
                continue
            if in_entries and depth == 2:  # an entry that is not an object
                number += 1
                yield number, None
                continue
            if depth > MAX_JSON_DEPTH:
                raise ExtractError(f"{path}: {_TooDeep()} (outside a Bundle's entries: refused whole)")
            top_size += len(value) + 4 if isinstance(value, str) else 8
            if top_size > MAX_FIRST_LINE or holds_a_cut_value(value):
                raise ExtractError(f"{path}: larger than {MAX_FIRST_LINE:,} bytes outside a Bundle's entries: "
                                   f"no resource is (refused whole)")
            top_builder.event(event, value)
    except ijson.JSONError as exc:
        raise ExtractError(f"{path}: neither NDJSON nor a JSON document ({exc})") from None
    if number == 0:
        document = top_builder.value if hasattr(top_builder, "value") else None
        if isinstance(document, dict) and document.get("resourceType") != "Bundle":
            yield 1, document


def _entries(resource, number: int):
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
        for index, entry in enumerate(resource.get("entry") or []):
            yield number + index, (entry or {}).get("resource") if isinstance(entry, dict) else None
    else:
        yield number, resource


class Dumped:
    """A validated FHIR model read as its ``model_dump(mode="json", exclude_none=True)`` reads, without
    dumping it whole (dumping a Patient takes longer than validating it): ``get(key, default)``
    gives what the dump's dict would, a field absent, None or an empty list being the default, a
    nested model read the same way, a list item by item, a str as it is and a date or time as
    pydantic's JSON writes it. tests/connectors/test_fhir_streaming.py compares the fields read
    both ways."""

    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model

    def get(self, key, default=None):
        if key not in type(self.model).model_fields:
            return default
        value = getattr(self.model, key)
        if value is None or (isinstance(value, list) and not value):
            return default
        return _dumped(value)


def _dumped(value):
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_dumped(item) for item in value]
    if hasattr(type(value), "model_fields"):  # a pydantic model: an element of the resource
        return Dumped(value)
    from pydantic_core import to_jsonable_python  # a date, a time, a number: as the dump writes it

    return to_jsonable_python(value)


def _first(items, wanted=None):
    for item in items or []:
        if wanted is None or wanted(item):
            return item
    return None


def _patient_fields(p: dict) -> dict[str, str]:
    """A Patient as the flat fields a mapping reads (FHIR_FIELDS)."""
    name = _first(p.get("name"), lambda n: n.get("use") == "official") or _first(p.get("name")) or {}
    address = _first(p.get("address"), lambda a: a.get("use") == "home") or _first(p.get("address")) or {}
    lines = address.get("line") or []
    telecom = p.get("telecom") or []
    gp = _first(p.get("generalPractitioner")) or {}
    contact = _first(p.get("contact")) or {}
    contact_name = contact.get("name") or {}
    relationship = _first(contact.get("relationship")) or {}
    return {
        "id": p.get("id", ""),
        "nhs_number": (_first(p.get("identifier"), lambda i: i.get("system") == NHS_NUMBER_SYSTEM) or {}).get("value", ""),
        "family": name.get("family", ""),
        "given": " ".join(given for given in name.get("given") or [] if given is not None),  # null: _given says why
        "birth_date": p.get("birthDate", ""),
        "gender": p.get("gender", ""),
        "deceased_date": (p.get("deceasedDateTime") or "")[:10],
        "address_line1": lines[0] if len(lines) > 0 else "",
        "address_line2": lines[1] if len(lines) > 1 else "",
        "address_line3": lines[2] if len(lines) > 2 else "",
        "address_city": address.get("city", ""),
        "address_postcode": address.get("postalCode", ""),
        "phone": (_first(telecom, lambda t: t.get("system") == "phone") or {}).get("value", ""),
        "email": (_first(telecom, lambda t: t.get("system") == "email") or {}).get("value", ""),
        "gp_code": ((gp.get("identifier") or {}) if (gp.get("identifier") or {}).get("system") == ODS_SYSTEM
                    else {}).get("value", ""),
        "gp_name": gp.get("display", ""),
        "contact_name": contact_name.get("text") or " ".join(
            [*(given for given in contact_name.get("given") or [] if given is not None),
             contact_name.get("family", "")]).strip(),
        "contact_relationship": (_first(relationship.get("coding")) or {}).get("code", "") or relationship.get("text", ""),
        "contact_phone": (_first(contact.get("telecom"), lambda t: t.get("system") == "phone") or {}).get("value", ""),
    }


def check_mapping_reads(mapping: Mapping) -> None:
    """A fhir mapping may read only FHIR_FIELDS (else it would never find a value)."""
    if mapping.source == "fhir":
        unknown = sorted(mapping.columns - set(FHIR_FIELDS))
        if unknown:
            raise MappingError(mapping.path, None, f"a fhir mapping reads {', '.join(FHIR_FIELDS)}; not "
                                                   f"{', '.join(unknown)}")
