"""Hypothesis strategies read from schemas/contactgate.xsd, so the property tests follow the wire
format as it changes.

The reader knows the constructs the schema uses today: named simple types restricting xs:string or
xs:token (minLength, maxLength, pattern, enumeration), xs:date, xs:boolean, xs:base64Binary, named
complex types holding an xs:sequence of elements (minOccurs, maxOccurs), simple content extended
with attributes, and global elements. Anything else raises `UnknownConstruct`: teach the reader
about it rather than let the tests silently stop covering part of the schema.

Values are drawn to hit the edges the index must survive: lengths at the facets' maxima, astral and
control characters XML allows, names that Unicode normalisation lengthens or empties, whitespace the
schema collapses, and xs:dates Python cannot hold (years past 9999 or before 1, time zones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace, field

from hypothesis import strategies as st
from lxml import etree

import contactgate_schemas as schemas
from contactgate_wire.soap import CG

XS = "http://www.w3.org/2001/XMLSchema"
# Unbounded (and large) repetitions are drawn at most this many times: enough to meet every
# "one, two, many" case without making messages slow to sign and post.
MAX_REPEAT = 3
MAX_REPEAT_OF = {"ChildUpdate": 4}


class UnknownConstruct(Exception):
    """The XSD uses something this reader does not turn into a strategy yet."""


@dataclass(frozen=True)
class SimpleType:
    base: str                       # string | token | date | boolean | base64Binary | int
    min_length: int | None = None
    min_inclusive: int | None = None
    max_inclusive: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enumeration: tuple[str, ...] = ()


@dataclass(frozen=True)
class Particle:
    name: str
    type_name: str
    min_occurs: int
    max_occurs: int | None          # None: unbounded


@dataclass(frozen=True)
class Attribute:
    name: str
    type_name: str
    required: bool


@dataclass
class ComplexType:
    sequence: list[Particle] = field(default_factory=list)
    simple_content: str | None = None     # the base type of simple content
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class Schema:
    simple: dict[str, SimpleType]
    complex: dict[str, ComplexType]
    elements: dict[str, str]              # global element name -> type name

    def type_of(self, name: str) -> SimpleType | ComplexType:
        if name in self.simple:
            return self.simple[name]
        if name in self.complex:
            return self.complex[name]
        raise UnknownConstruct(f"type {name}")


BUILTINS = {f"xs:{b}": SimpleType(b) for b in ("string", "token", "date", "boolean", "base64Binary")}


def _local(qname: str) -> str:
    return qname.split(":", 1)[1] if qname.startswith("tns:") else qname


def read_schema(xsd: bytes | None = None) -> Schema:
    root = etree.fromstring(xsd or schemas.read(schemas.XSD_NAME))
    simple: dict[str, SimpleType] = dict(BUILTINS)
    complex_: dict[str, ComplexType] = {}
    elements: dict[str, str] = {}
    for node in root:
        if not isinstance(node.tag, str) or node.tag == f"{{{XS}}}annotation":
            continue
        kind = etree.QName(node).localname
        if kind == "simpleType":
            simple[node.get("name")] = _simple(node)
        elif kind == "complexType":
            complex_[node.get("name")] = _complex(node)
        elif kind == "element":
            elements[node.get("name")] = _local(node.get("type"))
        else:
            raise UnknownConstruct(f"top-level xs:{kind}")
    return Schema(simple, complex_, elements)


def _simple(node: etree._Element) -> SimpleType:
    [restriction] = [c for c in node if etree.QName(c).localname != "annotation"]
    if etree.QName(restriction).localname != "restriction":
        raise UnknownConstruct(f"simpleType {node.get('name')}: xs:{etree.QName(restriction).localname}")
    base = restriction.get("base")
    if base not in ("xs:string", "xs:token", "xs:int"):
        raise UnknownConstruct(f"simpleType {node.get('name')} restricting {base}")
    facets: dict = {"enumeration": []}
    for facet in restriction:
        name, value = etree.QName(facet).localname, facet.get("value")
        if name in ("minLength", "maxLength"):
            facets[name] = int(value)
        elif name == "pattern":
            facets["pattern"] = value
        elif name == "enumeration":
            facets["enumeration"].append(value)
        elif name in ("minInclusive", "maxInclusive") and base == "xs:int":
            facets[name] = int(value)
        else:
            raise UnknownConstruct(f"facet xs:{name}")
    return SimpleType(base=base[3:], min_length=facets.get("minLength"), max_length=facets.get("maxLength"),
                      pattern=facets.get("pattern"), enumeration=tuple(facets["enumeration"]),
                      min_inclusive=facets.get("minInclusive"), max_inclusive=facets.get("maxInclusive"))


def _occurs(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    return None if value == "unbounded" else int(value)


def _complex(node: etree._Element) -> ComplexType:
    result = ComplexType()
    for part in node:
        kind = etree.QName(part).localname
        if kind == "sequence":
            for element in part:
                if etree.QName(element).localname != "element" or element.get("type") is None:
                    raise UnknownConstruct(f"{node.get('name')}: sequence of {etree.QName(element).localname}")
                result.sequence.append(Particle(element.get("name"), _local(element.get("type")),
                                                _occurs(element.get("minOccurs"), 1),
                                                _occurs(element.get("maxOccurs"), 1)))
        elif kind == "simpleContent":
            [extension] = list(part)
            if etree.QName(extension).localname != "extension":
                raise UnknownConstruct(f"{node.get('name')}: simpleContent {etree.QName(extension).localname}")
            result.simple_content = _local(extension.get("base"))
            for attribute in extension:
                result.attributes.append(Attribute(attribute.get("name"), _local(attribute.get("type")),
                                                   attribute.get("use") == "required"))
        elif kind != "annotation":
            raise UnknownConstruct(f"{node.get('name')}: xs:{kind}")
    return result


# ---- values ----------------------------------------------------------------------------------

def _xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


# Drawing from a fixed alphabet is fast; it holds letters and the characters that make
# normalisation and storage interesting: they lengthen ("ß" -> "ss", ligatures, "㎒" -> "MHz"),
# vanish (combining marks, zero-width space, soft hyphen), are controls XML allows (C1, tab, CR,
# LF), reverse the text, or are astral.
ODD = ("ßẞﬃﬀǄ㎒\ufdfaéñøÅ'-.\u0301\u0308\u200b\u00ad\u0085\u009f\u202e"
       "\U0001d518\U0001f600\U00020000\ufffd")
WHITESPACE = " \t\n\r"
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + ODD + WHITESPACE
NON_SPACE_ALPHABET = "".join(c for c in ALPHABET if c not in WHITESPACE)
# Now and then any character XML allows, from every plane (no surrogates, no C0 controls).
ANY_XML_CHAR = st.characters(exclude_categories=("Cs",)).filter(_xml_char)


def _sized(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    """Text from ``alphabet`` with a length in [low, high]: mostly short, sometimes at the maximum
    (a short draw repeated, which is much cheaper than drawing every character)."""
    short = st.text(alphabet, min_size=low, max_size=min(high, max(low, 12)))
    at_max = st.text(alphabet, min_size=1, max_size=6).map(lambda s: (s * high)[:high])
    any_char = ANY_XML_CHAR if alphabet is ALPHABET else ANY_XML_CHAR.filter(lambda c: c not in WHITESPACE)
    wild = st.text(any_char, min_size=low, max_size=min(high, max(low, 6)))
    strategies = [short, short, short, wild] + ([at_max] if high > 0 else [])
    return st.one_of(*strategies).filter(lambda v: low <= len(v) <= high)


def _string(simple: SimpleType) -> st.SearchStrategy[str]:
    low, high = simple.min_length or 0, simple.max_length if simple.max_length is not None else 200
    return _sized(ALPHABET, low, high)


def _token(simple: SimpleType) -> st.SearchStrategy[str]:
    """xs:token facets apply to the collapsed value: draw that, then maybe pad it with whitespace
    the schema collapses away."""
    low, high = simple.min_length or 0, simple.max_length if simple.max_length is not None else 100
    value = st.one_of(_sized(NON_SPACE_ALPHABET, low, high),
                      st.lists(_sized(NON_SPACE_ALPHABET, 1, 8), min_size=2, max_size=3).map(" ".join)
                      .filter(lambda v: low <= len(v) <= high))
    return st.tuples(st.sampled_from(["", "", " ", "\n\t"]), value, st.sampled_from(["", "", " ", "\t\n "])
                     ).map("".join)


def xs_dates() -> st.SearchStrategy[str]:
    """xs:date lexical forms the schema accepts, weighted to ordinary dates, with the ones Python
    cannot hold (5+ digit and negative years) and time zones up to +/-14:00."""
    ordinary = st.integers(1990, 2030)
    any_python = st.integers(1, 9999)
    too_late = st.one_of(st.integers(10_000, 99_999), st.integers(100_000, 10**12))
    too_early = st.integers(-10**6, -1)
    year = st.one_of(ordinary, ordinary, ordinary, any_python, too_late, too_early)
    zone = st.one_of(st.just(""), st.just(""), st.just("Z"), st.sampled_from(["+14:00", "-14:00", "+00:00"]),
                     st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"),
                               st.integers(0, 13), st.integers(0, 59)))

    def form(y: int, month: int, day: int, tz: str) -> str:
        digits = f"{abs(y):04d}"
        return f"{'-' if y < 0 else ''}{digits}-{month:02d}-{day:02d}{tz}"

    return st.builds(form, year, st.integers(1, 12), st.integers(1, 28), zone)


BOOLEANS = st.sampled_from(["true", "false", "1", "0", " true", "false\n"])


# The schema's "visible text" pattern (user ids, roles, reasons): no control, format or line or
# paragraph separator character in the (collapsed, for xs:token) value.
VISIBLE_PATTERN = "[^\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}\u061c\u2066-\u2069]*"
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}


def _visible(simple: SimpleType) -> st.SearchStrategy[str]:
    """Values of the type with the characters the pattern refuses taken out (whitespace that
    xs:token collapses away stays: the pattern sees the collapsed value)."""
    import unicodedata

    keep = WHITESPACE if simple.base == "token" else ""
    low = simple.min_length or 0
    plain = replace(simple, pattern=None)
    return value_strategy(plain).map(
        lambda v: "".join(c for c in v if c in keep or unicodedata.category(c) not in _INVISIBLE)).filter(
        lambda v: len(v.split() if simple.base == "token" else v) >= (1 if low else 0))


# BehalfPhoneType (Requester/OnBehalfOf/Phone): the same in Python. Drawn without spaces (xs:token
# collapses them, and a value ending in one would be shorter than it looks) and within maxLength.
PHONE_PATTERN = r"\+?[0-9][0-9 ()\-]{4,31}"


def value_strategy(simple: SimpleType) -> st.SearchStrategy[str]:
    if simple.pattern == VISIBLE_PATTERN:
        return _visible(simple)
    if simple.pattern == PHONE_PATTERN:
        return st.from_regex(r"\+?[0-9][0-9()\-]{4,30}", fullmatch=True)
    if simple.enumeration:
        values = st.sampled_from(simple.enumeration)
        return values if simple.base == "string" else st.tuples(
            st.sampled_from(["", " "]), values, st.sampled_from(["", "\n"])).map("".join)
    if simple.pattern is not None:
        if not re.fullmatch(r"[\[\]A-Za-z0-9_{},\-]*", simple.pattern):
            raise UnknownConstruct(f"pattern {simple.pattern!r}: check it means the same in Python")
        return st.from_regex(simple.pattern, fullmatch=True)
    if simple.base == "date":
        return xs_dates()
    if simple.base == "boolean":
        return BOOLEANS
    if simple.base == "int":  # lexical variants the schema accepts: a sign, leading zeros, spaces
        low = -2**31 if simple.min_inclusive is None else simple.min_inclusive
        high = 2**31 - 1 if simple.max_inclusive is None else simple.max_inclusive
        return st.tuples(st.sampled_from(["", " "]), st.integers(low, high),
                         st.sampled_from(["{}", "+{}", "0{}"])).map(
            lambda t: t[0] + (t[2].format(t[1]) if t[1] >= 0 else str(t[1])))
    if simple.base == "base64Binary":
        return st.binary(max_size=48).map(lambda b: __import__("base64").b64encode(b).decode())
    if simple.base == "token":
        return _token(simple)
    return _string(simple)


# ---- elements --------------------------------------------------------------------------------

class ElementStrategies:
    """Strategies for schema-valid elements, by type; ``overrides`` maps an element name to a
    strategy for its text that is mixed in with the schema's (e.g. child ids that exist)."""

    def __init__(self, schema: Schema, overrides: dict[str, st.SearchStrategy[str]] | None = None):
        self.schema = schema
        self.overrides = overrides or {}
        self._made: dict[tuple[str, str], st.SearchStrategy[etree._Element]] = {}

    def text(self, name: str, type_name: str) -> st.SearchStrategy[str]:
        strategy = value_strategy(self.schema.type_of(type_name))
        if name in self.overrides:
            strategy = st.one_of(strategy, self.overrides[name], self.overrides[name])
        return strategy

    def element(self, name: str, type_name: str) -> st.SearchStrategy[etree._Element]:
        key = (name, type_name)
        if key not in self._made:  # built once: hypothesis is much faster with reused strategies
            self._made[key] = st.deferred(lambda: self._element(name, type_name))
        return self._made[key]

    def _element(self, name: str, type_name: str) -> st.SearchStrategy[etree._Element]:
        kind = self.schema.type_of(type_name)
        if isinstance(kind, SimpleType):
            return self.text(name, type_name).map(lambda text: _leaf(name, text))
        if kind.simple_content is not None:
            attributes = st.fixed_dictionaries(
                {a.name: self.text(a.name, a.type_name) for a in kind.attributes if a.required},
                optional={a.name: self.text(a.name, a.type_name) for a in kind.attributes if not a.required})
            return st.builds(lambda text, attrs: _leaf(name, text, attrs),
                             self.text(name, kind.simple_content), attributes)
        parts = []
        for particle in kind.sequence:
            cap = MAX_REPEAT_OF.get(particle.name, MAX_REPEAT)
            high = cap if particle.max_occurs is None else min(particle.max_occurs, cap)
            parts.append(st.lists(self.element(particle.name, particle.type_name),
                                  min_size=particle.min_occurs, max_size=max(high, particle.min_occurs)))
        return st.tuples(*parts).map(lambda groups: _branch(name, [e for g in groups for e in g]))

    def request(self, operation: str) -> st.SearchStrategy[etree._Element]:
        return self.element(operation, self.schema.elements[operation])


def _leaf(name: str, text: str, attributes: dict | None = None) -> etree._Element:
    element = etree.Element(f"{{{CG}}}{name}", nsmap={None: CG})
    element.text = text
    for key, value in (attributes or {}).items():
        element.set(key, value)
    return element


def _branch(name: str, children: list[etree._Element]) -> etree._Element:
    element = etree.Element(f"{{{CG}}}{name}", nsmap={None: CG})
    element.extend(children)
    return element
