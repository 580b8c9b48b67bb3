"""Declarative mappings: a source system's rows to the canonical model, configured, not programmed.

A mapping is a YAML file::

    source: csv                     # csv (columns by name); xml and fhir come with their readers;
                                    # sql: the columns of sql.query, run on the organisation's database
    csv: {delimiter: ",", encoding: utf-8-sig}
    id: {from: CaseRef}             # the SourceRecordId: the row's id in the source system
    fields:
      Identity.FamilyName: {from: Surname, required: true}
      Identity.GivenName: {from: Forenames, split: " "}            # a repeating field: a list
      Identity.DateOfBirth: {from: DOB, date: "%d/%m/%Y"}
      Identity.Gender: {from: Sex, map: {M: male, F: female}, default: unknown}
      Carer[0].Name: {from: CarerName, name: full}                  # the first carer
      Involvement[0].Service: {value: "Children's social care"}    # a constant
      Involvement[0].CafAssessment: {from: CAF, map: {Y: true, N: false}, default: false}

Each rule takes its value ``from`` a source column, or several (``from: [House, Street]``, joined
by ``join``, a space by default, empty parts left out), or a constant ``value``; then in order:
``transform`` (declarative steps: trim, case, characters, bounded regular expressions, lookup
tables, a part of a split, and the UK identifiers ``nhs_number``, ``pupil_number``, ``postcode`` in
the forms people write them: connectors.transforms), ``name`` (``family`` or ``given`` part of a full name, "SMITH, John" or "John Smith"; ``full``
as it is), ``split`` (a separator, for a repeating field), ``map`` (source code -> model value;
an unmapped code rejects the row unless ``default`` is given), ``date`` (strptime formats, one or
a list; written as YYYY-MM-DD), ``default`` (when the value is empty; ``default_when: [{column:
Team, equals: EH, value: true}, {column: Team, in: [CP, CIN], value: false}]`` gives a default that
depends on another column, the first that applies, else ``default``), ``required``.

A mapping is plain YAML: anchors and aliases (``&name``, ``*name``) are refused, and so is nesting
deeper than MAX_DEPTH (a few hundred bytes of either could keep the loader busy for hours or
exhaust the stack). Loading checks every target against the canonical model (gateway's XSD, `connectors.model`), every
mapped value against the model's codes, and every key, and refuses what is wrong naming the file
and line; every error of the file at once (`MappingErrors`), each with a "did you mean" when
a known name is close. A row is mapped to a record and checked against the schema alone: a bad row is rejected
with its reason, the rest go on. Columns no rule reads never leave the organisation; the run's
report lists them (`Mapping.unmapped`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from connectors import model
from connectors.transforms import RowError, TransformError, compile_steps, suggestion

SOURCES = ("csv", "xml", "fhir", "sql")
# What a fhir mapping's rules can read of a Patient (documented in the README): connectors.sources
# offers each FHIR Patient to the rules under exactly these names.
FHIR_FIELDS = ("id", "nhs_number", "family", "given", "birth_date", "gender", "deceased_date",
               "address_line1", "address_line2", "address_line3", "address_city", "address_postcode",
               "phone", "email", "gp_code", "gp_name", "contact_name", "contact_relationship", "contact_phone")
RULE_KEYS = {"from", "value", "join", "transform", "name", "split", "map", "date", "default", "default_when",
             "required"}
TOP_KEYS = {"source", "csv", "xml", "sql", "id", "fields", "description"}
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


class MappingError(ValueError):
    """The mapping file cannot be used: says which file, which line and why."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


class MappingErrors(MappingError):
    """Every error of a mapping file at once (``errors``, each a MappingError with its line)."""

    def __init__(self, path: Path | str, errors: list[MappingError]):
        self.errors = sorted(errors, key=lambda e: e.line or 0)
        ValueError.__init__(self, "\n".join(str(e) for e in self.errors))
        self.path, self.line = str(path), self.errors[0].line


class _Lines(dict):
    """A YAML mapping that remembers the line (1-based) of each key."""

    lines: dict


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        result = _Lines(super().construct_mapping(node, deep=True))
        result.lines = {self.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value}
        result.line = node.start_mark.line + 1
        return result


_Loader.add_constructor("tag:yaml.org,2002:map", lambda loader, node: loader.construct_mapping(node))


# A mapping is a few levels deep (fields -> a rule -> its map); anything far deeper is not one.
MAX_DEPTH = 16


def _refuse_aliases_and_depth(text: str, path) -> None:
    """Read the YAML's events once, before anything is built from them: an anchor or an alias
    (``&name``, ``*name``) is refused, so a small file cannot stand for billions of values, and so
    is nesting deeper than MAX_DEPTH, which building it would recurse into. The parser itself keeps
    its nesting in a list, not on the stack, so this pass is linear whatever the file holds."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise MappingError(path, line, "YAML anchors and aliases (&name, *name) are not allowed in a "
                                           "mapping: write each value out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise MappingError(path, line, f"nested more than {MAX_DEPTH} levels deep: not a mapping")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _no_duplicates(node, path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise MappingError(path, key.start_mark.line + 1, f"{key.value!r} is given twice "
                                                                      f"(first on line {seen[key.value]})")
                seen[key.value] = key.start_mark.line + 1
            _no_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicates(item, path)


@dataclass
class Rule:
    target: str
    line: int
    leaf: model.Leaf
    indexes: tuple[int, ...]
    source: str | None = None  # the column read (the first, when several are joined)
    value: object = None
    sources: tuple[str, ...] = ()  # every column read, in order (joined by ``join``)
    join: str = " "
    steps: tuple = ()  # transforms (connectors.transforms)
    default_when: tuple[tuple[str, frozenset, object], ...] = ()  # (column, values, default)
    name: str | None = None
    split: str | None = None
    map: dict | None = None
    date: tuple[str, ...] = ()
    default: object = None
    required: bool = False

    @property
    def reads(self) -> tuple[str, ...]:
        """The columns this rule reads: its value's, and those its conditional defaults look at."""
        return (*self.sources, *(column for column, _, _ in self.default_when))

    def _raw(self, row: dict[str, str]):
        if not self.sources:
            return self.value
        if len(self.sources) == 1:
            return row.get(self.source)
        return self.join.join(part.strip() for part in (row.get(c) or "" for c in self.sources) if part.strip())

    def _default(self, row: dict[str, str]):
        for column, values, default in self.default_when:
            if (row.get(column) or "").strip().casefold() in values:
                return default
        return self.default

    def apply(self, row: dict[str, str]):
        """The model value (str, bool, list of str) for ``row``; None when empty and not required."""
        raw = self._raw(row)
        if isinstance(raw, str):
            what = self.source or self.target
            for step in self.steps:
                raw = step(raw, what)
        text = raw.strip() if isinstance(raw, str) else raw
        defaulted = False
        if text in (None, ""):
            text, defaulted = self._default(row), True
        if text in (None, ""):
            if self.required:
                raise RowError(f"{self.source or self.target} is empty")
            return None
        if self.name and isinstance(text, str) and self.name != "full":
            text = _name_part(text, self.name)
        values = [text] if not self.split or not isinstance(text, str) else [p.strip() for p in text.split(self.split) if p.strip()]
        out = []
        for value in values:
            if self.map is not None and not defaulted:
                key = str(value).strip()
                if key in self.map:
                    value = self.map[key]
                elif key.casefold() in self._folded:
                    value = self._folded[key.casefold()]
                elif self._default(row) is not None:
                    value = self._default(row)
                else:
                    raise RowError(f"{self.source}: the code {key!r} is not in the mapping for {self.target}")
            if self.date and not defaulted:
                value = _parse_date(str(value), self.date, self.source or self.target)
            if self.leaf.kind == "boolean":
                value = _boolean(value, self.source or self.target)
            out.append(value)
        return out if self.leaf.repeating else out[0]

    def has_value(self, row: dict[str, str]) -> bool:
        return any(isinstance(row.get(c), str) and bool(row.get(c).strip()) for c in self.sources)

    @functools.cached_property
    def _folded(self) -> dict:  # built once per rule, not per row
        return {str(k).casefold(): v for k, v in (self.map or {}).items()}


def _name_part(full: str, part: str) -> str:
    """"SMITH, John Paul" or "John Paul Smith": the family name, or the given names."""
    if "," in full:
        family, _, given = full.partition(",")
    else:
        words = full.split()
        family, given = (words[-1], " ".join(words[:-1])) if len(words) > 1 else (full, "")
    return (family if part == "family" else given).strip()


# What XML 1.0 cannot carry, and lxml refuses: C0 controls but tab, LF and CR; lone surrogates; U+FFFE, U+FFFF
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _not_xml(value) -> str | None:
    """What in ``value`` (a rule's: str, bool or list of str) XML cannot carry, or None."""
    for text in (value if isinstance(value, list) else (value,)):
        found = _NOT_XML.search(text) if isinstance(text, str) else None
        if found:
            code = ord(found.group())
            kind = ("a control character" if code < 0x20 else "an unpaired surrogate" if 0xD800 <= code <= 0xDFFF
                    else "a non-character")
            return f"{kind} (U+{code:04X}) at character {found.start() + 1}: XML cannot carry it"
    return None


def _checked(rule: "Rule", value):
    problem = _not_xml(value)
    if problem:
        raise RowError(f"{rule.source} ({rule.target}): {problem}" if rule.source else f"{rule.target}: {problem}")
    return value


_CACHED_DATE_TEXT = 40  # a longer text is parsed without being kept: the cache stays small however long a cell


def _parse_date(text: str, formats: tuple[str, ...], what: str) -> str:
    stripped = text.strip()
    parse = _date_iso if len(stripped) <= _CACHED_DATE_TEXT else _date_iso.__wrapped__
    iso = parse(stripped, formats)
    if iso is None:
        raise RowError(f"{what}: {text!r} is not a date in the form {' or '.join(formats)}")
    return iso


@functools.lru_cache(maxsize=8192)  # an extract's dates repeat (birthdays, allocation days): strptime once each
def _date_iso(text: str, formats: tuple[str, ...]) -> str | None:
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _boolean(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"{what}: {value!r} is not yes or no")


@dataclass
class Mapping:
    path: Path
    source: str
    id_rule: Rule
    rules: list[Rule]
    csv_options: dict = field(default_factory=dict)
    xml_options: dict = field(default_factory=dict)  # record (element name), namespaces (prefix -> URI)
    sql_options: dict = field(default_factory=dict)  # query (its columns are what the rules read)

    @property
    def columns(self) -> set[str]:
        """The source columns the rules read (every other column stays behind); for XML, the
        record's paths without namespace prefixes."""
        read = {column for r in (self.id_rule, *self.rules) for column in r.reads}
        if self.source == "xml":
            read = {re.sub(r"[A-Za-z_][\w.-]*:(?=[A-Za-z_])", "", path) for path in read}
        return read

    @functools.cached_property
    def _groups(self) -> dict[str, list[Rule]]:  # built once per mapping, not per row
        groups: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.indexes:
                groups.setdefault(rule.target.rsplit(".", 1)[0], []).append(rule)
        return groups

    def unmapped(self, columns) -> list[str]:
        return [c for c in columns if c not in self.columns]

    def missing(self, columns) -> list[str]:  # (CSV: XML paths and FHIR fields may be absent in a record)
        """Columns the rules read that the extract does not have."""
        return sorted(self.columns - set(columns))

    def record(self, row: dict[str, str]) -> dict:
        """The ChildUpdate (zeep-style dict) for ``row``; RowError if it cannot be sent."""
        if "__invalid__" in row:  # the reader could not make a record of it (e.g. an invalid FHIR Patient)
            raise RowError(row["__invalid__"])
        record: dict = {"SourceRecordId": _checked(self.id_rule, self.id_rule.apply(row))}
        # A repeating group (Carer[0]) is sent only if the row has something of its own for it: a
        # row with no carer gets no carer made of defaults. A group of constants only is always sent.
        drop = {group for group, rules in self._groups.items()
                if any(r.source for r in rules) and not any(r.has_value(row) for r in rules if r.source)}
        for rule in self.rules:
            if rule.indexes and rule.target.rsplit(".", 1)[0] in drop:
                continue
            value = _checked(rule, rule.apply(row))  # a control character: this row rejected, saying so
            if value is None or value == []:
                continue
            _put(record, rule.target, rule.indexes, value)
        for name in ("Carer", "Involvement"):  # Carer[0] and Carer[2] mapped, the row has no second: close the gap
            if name in record:
                record[name] = [item for item in record[name] if item]
        problem = model.schema_problem(record)
        if problem:
            raise RowError(problem)
        return record


@functools.lru_cache(maxsize=None)  # a mapping's few targets: split once, not per row
def _steps(target: str) -> tuple[tuple[tuple[str, str], ...], str]:
    parts = target.split(".")
    return tuple((name, rest) for name, _, rest in (part.partition("[") for part in parts[:-1])), parts[-1]


def _put(record: dict, target: str, indexes: tuple[int, ...], value) -> None:
    steps, last = _steps(target)
    node, index_iter = record, iter(indexes)
    for name, rest in steps:
        if rest:
            items = node.setdefault(name, [])
            i = next(index_iter)
            while len(items) <= i:
                items.append({})
            node = items[i]
        else:
            node = node.setdefault(name, {})
    node[last] = value


def load(path: Path | str) -> Mapping:
    """Read and check a mapping file: MappingError naming the file and line if it cannot be read at
    all, MappingErrors listing every error with its line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(path, None, f"cannot be read ({exc})") from None
    try:
        _refuse_aliases_and_depth(text, path)
        _no_duplicates(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(path, mark.line + 1 if mark else None,
                           f"not YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, _Lines):
        raise MappingError(path, None, "must be a YAML mapping with source, id and fields")
    errors: list[MappingError] = []

    def fail(line, message: str) -> None:
        errors.append(MappingError(path, line, message))

    for key in data:
        if key not in TOP_KEYS:
            fail(data.lines[key], f"unknown key {key!r}{suggestion(key, TOP_KEYS)} (known: {', '.join(sorted(TOP_KEYS))})")
    source = data.get("source")
    if source not in SOURCES:
        fail(data.lines.get("source", data.line), f"source must be one of {', '.join(SOURCES)}, not {source!r}"
                                                  f"{suggestion(source, SOURCES)}")
    csv_options = data.get("csv") or {}
    if not isinstance(csv_options, dict) or set(csv_options) - {"delimiter", "encoding"}:
        fail(data.lines.get("csv"), "csv takes delimiter and encoding")
        csv_options = {}

    def rule_or_none(target: str, spec, line: int) -> Rule | None:
        try:
            return _rule(path, target, spec, line)
        except MappingErrors as exc:
            errors.extend(exc.errors)
        except MappingError as exc:
            errors.append(exc)
        return None

    id_rule = None
    if "id" not in data:
        fail(data.line, "no id: which column is the row's id in the source system?")
    else:
        id_rule = rule_or_none("SourceRecordId", data["id"], data.lines["id"])
        if id_rule is not None:
            id_rule.required = True
    fields = data.get("fields")
    rules: list[Rule] = []
    if not isinstance(fields, _Lines) or not fields:
        fail(data.lines.get("fields", data.line), "fields must map model fields to rules")
    else:
        rules = [r for r in (rule_or_none(str(target), spec, fields.lines[target]) for target, spec in fields.items())
                 if r is not None]
    read_by = [r for r in (id_rule, *rules) if r is not None]
    xml_options = data.get("xml") or {}
    if source == "xml":
        if not isinstance(xml_options, dict) or set(xml_options) - {"record", "namespaces"} or not isinstance(
                xml_options.get("record"), str) or not isinstance(xml_options.get("namespaces", {}), dict):
            fail(data.lines.get("xml", data.line), "xml takes record (the element of one record) and namespaces "
                                                   "(prefix: URI)")
            xml_options = {"record": "", "namespaces": {}}
        from lxml import etree

        for rule in read_by:
            for column in rule.reads:
                try:
                    etree.XPath(f"string({column})", namespaces=xml_options.get("namespaces", {}))
                except etree.XPathError as exc:
                    fail(rule.line, f"{rule.target}: {column!r} is not a path ({exc})")
    elif "xml" in data:
        fail(data.lines["xml"], f"xml options on a {source} mapping")
    sql_options = data.get("sql") or {}
    if source == "sql":
        if not isinstance(sql_options, dict) or set(sql_options) != {"query"} or not isinstance(
                sql_options.get("query"), str) or not sql_options["query"].strip():
            fail(data.lines.get("sql", data.line), "sql takes query (a SELECT; its columns are what the rules read)")
            sql_options = {"query": ""}
    elif "sql" in data:
        fail(data.lines["sql"], f"sql options on a {source} mapping")
    if source == "fhir":
        for rule in read_by:
            for column in rule.reads:
                if column not in FHIR_FIELDS:
                    fail(rule.line, f"{rule.target}: a FHIR Patient offers {', '.join(FHIR_FIELDS)}; not "
                                    f"{column!r}{suggestion(column, FHIR_FIELDS)}")
    targets = {r.target for r in rules}
    for rule in rules:  # a repeating group needs its required fields mapped (else every row is refused)
        if rule.indexes:
            group = rule.target.rsplit(".", 1)[0]
            for leaf in model.leaves().values():
                prefix = re.sub(r"\[\d+\]", "", group) + "."
                if (leaf.required and leaf.path.startswith(prefix) and leaf.path.count(".") == prefix.count(".")
                        and f"{group}.{leaf.path[len(prefix):]}" not in targets):
                    fail(rule.line, f"{group} needs {leaf.path[len(prefix):]} mapped too (the model requires it)")
                    targets.add(f"{group}.{leaf.path[len(prefix):]}")  # said once per group
    if errors:
        raise MappingErrors(path, errors)
    return Mapping(path, source, id_rule, rules, dict(csv_options), dict(xml_options), dict(sql_options))


def _target_suggestion(target: str) -> str:
    indexes = re.findall(r"\[(\d+)\]", target)
    shown = {}
    for leaf in model.leaves():
        node, parts = model.tree(), []
        for name in leaf.split("."):
            node = next(c for c in node.children if c.name == name)
            parts.append(name + ("[0]" if node.repeating and node.leaf is None else ""))
        shown[".".join(parts)] = leaf
    plain = re.sub(r"\[\d+\]", "[0]", target)
    hint = suggestion(plain, shown)
    if indexes and hint:
        hint = hint.replace("[0]", f"[{indexes[0]}]", 1)
    return hint


def _rule(path: Path, target: str, spec, line: int) -> Rule:
    errors: list[MappingError] = []

    def fail(at, message: str) -> None:
        errors.append(MappingError(path, at, message))

    resolved = model.resolve(target) if target != "SourceRecordId" else (model.leaves()["SourceRecordId"], ())
    if resolved is None:
        known = re.sub(r"\[\d+\]", "", target)
        why = ("give which one, e.g. " + target.replace(".", "[0].", 1) if known in model.leaves() else
               "the canonical model has no such field (`contactgate mapping fields` lists them; case notes and "
               "the like have nowhere to go, by design)")
        raise MappingError(path, line, f"unknown target {target!r}{_target_suggestion(target)}: {why}")
    leaf, indexes = resolved
    if isinstance(spec, str):
        spec = {"from": spec}
    if not isinstance(spec, dict):
        raise MappingError(path, line, f"{target}: a rule is a mapping like {{from: COLUMN}} or {{value: TEXT}}")
    lines = getattr(spec, "lines", {})
    for key in spec:
        if key not in RULE_KEYS:
            fail(lines.get(key, line), f"{target}: unknown rule key {key!r}{suggestion(key, RULE_KEYS)} "
                                       f"(known: {', '.join(sorted(RULE_KEYS))})")
    if ("from" in spec) == ("value" in spec):
        fail(line, f"{target}: give either from (a column, or a list of columns) or value (a constant)")
    read = spec.get("from")
    columns = tuple(str(c) for c in read) if isinstance(read, list) else (() if read is None else (str(read),))
    if isinstance(read, list) and not columns:
        fail(lines.get("from", line), f"{target}: from lists no column")
    rule = Rule(target, line, leaf, indexes, source=columns[0] if columns else None, value=spec.get("value"),
                sources=columns, join=str(spec.get("join", " ")), name=spec.get("name"), split=spec.get("split"),
                map=spec.get("map"), default=spec.get("default"), required=bool(spec.get("required", False)))
    if "join" in spec and len(columns) < 2:
        fail(lines.get("join", line), f"{target}: join is for several columns (from: [A, B])")
    if "transform" in spec:
        try:
            rule.steps = compile_steps(spec["transform"], path.parent)
        except TransformError as exc:
            fail(lines.get("transform", line), f"{target}: {exc}")
    if rule.name not in (None, "family", "given", "full"):
        fail(lines.get("name", line), f"{target}: name is family, given or full")
    if rule.split is not None and not leaf.repeating:
        fail(lines.get("split", line), f"{target}: split makes a list, and {leaf.path} holds one value "
                                       f"(transform: {{part: ...}} takes one part)")
    if rule.map is not None:
        if not isinstance(rule.map, dict) or not rule.map:
            fail(lines.get("map", line), f"{target}: map is source code -> model value")
        else:
            for code, value in rule.map.items():
                _collect(errors, _check_model_value, path, getattr(rule.map, "lines", {}).get(code, line), leaf,
                         value, target)
    if rule.default is not None:
        _collect(errors, _check_model_value, path, lines.get("default", line), leaf, rule.default, target)
    when = spec.get("default_when")
    if when is not None:
        conditions = []
        for condition in (when if isinstance(when, list) else [when]):
            at = getattr(condition, "line", lines.get("default_when", line))
            if (not isinstance(condition, dict) or "column" not in condition or "value" not in condition
                    or len({"equals", "in"} & set(condition)) != 1 or set(condition) - {"column", "equals", "in", "value"}):
                fail(at, f"{target}: default_when takes [{{column: C, equals: X, value: V}}, {{column: C, in: [X, Y], "
                         f"value: V}}]")
                continue
            values = condition["in"] if "in" in condition else [condition["equals"]]
            values = values if isinstance(values, list) else [values]
            _collect(errors, _check_model_value, path, at, leaf, condition["value"], target)
            conditions.append((str(condition["column"]), frozenset(str(v).strip().casefold() for v in values),
                               condition["value"]))
        rule.default_when = tuple(conditions)
    if rule.value is not None and rule.map is None and not spec.get("date"):
        _collect(errors, _check_model_value, path, lines.get("value", line), leaf, rule.value, target)
    dates = spec.get("date")
    if dates is not None:
        if leaf.kind != "date":
            fail(lines.get("date", line), f"{target} is not a date")
        else:
            rule.date = tuple(dates) if isinstance(dates, list) else (str(dates),)
            for fmt in rule.date:
                if not re.search(r"%[dYmbByj]", fmt):
                    fail(lines.get("date", line), f"{target}: {fmt!r} is not a strptime format")
    if errors:
        raise MappingErrors(path, errors)
    return rule


def _collect(errors: list, check, *args) -> None:
    try:
        check(*args)
    except MappingError as exc:
        errors.append(exc)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _check_model_value(path, line, leaf: model.Leaf, value, target: str) -> None:
    if leaf.enumeration and value not in leaf.enumeration:
        raise MappingError(path, line, f"{target}: {value!r} is not one of the model's values "
                                       f"({', '.join(leaf.enumeration)})")
    if leaf.kind == "boolean" and not isinstance(value, bool):
        raise MappingError(path, line, f"{target}: {value!r} must be true or false")
    if leaf.kind == "date" and isinstance(value, (dt.date, str)):
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            raise MappingError(path, line, f"{target}: {value!r} must be a date YYYY-MM-DD") from None
