"""The canonical model a connector maps onto, read from the gateway's own schema (the XSD's
``ChildUpdateType``), so that a mapping is checked against exactly what the gateway accepts.

``fields()`` lists every leaf a mapping may target, by path: ``Identity.FamilyName``,
``Identity.GivenName`` (repeating: a list of values), ``Carer[0].Name`` (the first carer),
``Involvement[1].Start``. ``record_element`` builds a record's XML in the schema's order, so one
record can be validated alone before it is sent (a bad row is rejected, not the whole batch).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources

from lxml import etree

XS = "http://www.w3.org/2001/XMLSchema"
CG = "urn:contactgate:v1"
XSD_NAME = "contactgate.xsd"
ROOT_TYPE = "ChildUpdateType"
MAX_REPEATS = 20  # Carer[19], Involvement[19]: more in one source row is not a row, it is a report


@dataclass(frozen=True)
class Leaf:
    path: str  # Identity.FamilyName (no index)
    kind: str  # "text", "date", "boolean"
    repeating: bool  # the leaf itself repeats (GivenName): a list of values
    enumeration: tuple[str, ...] = ()
    required: bool = False  # minOccurs 1 within its parent


@dataclass
class Node:
    name: str
    repeating: bool = False
    required: bool = False
    children: list["Node"] = field(default_factory=list)
    leaf: Leaf | None = None


def schema_bytes() -> bytes:
    return resources.files("contactgate_schemas").joinpath(XSD_NAME).read_bytes()


@functools.lru_cache(maxsize=1)
def tree() -> Node:
    """The ChildUpdate element as a tree of nodes, in the schema's order."""
    xsd = etree.fromstring(schema_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))
    complex_types = {t.get("name"): t for t in xsd.iter(f"{{{XS}}}complexType") if t.get("name")}
    simple_types = {t.get("name"): t for t in xsd.iter(f"{{{XS}}}simpleType") if t.get("name")}

    def kind_of(type_name: str) -> tuple[str, tuple[str, ...]]:
        local = type_name.split(":")[-1]
        if local == "date":
            return "date", ()
        if local == "boolean":
            return "boolean", ()
        simple = simple_types.get(local)
        if simple is not None:
            values = tuple(e.get("value") for e in simple.iter(f"{{{XS}}}enumeration"))
            base = simple.find(f"{{{XS}}}restriction")
            if not values and base is not None and base.get("base", "").split(":")[0] == "tns":
                return kind_of(base.get("base"))
            return "text", values
        return "text", ()

    def build(type_name: str, prefix: str) -> list[Node]:
        nodes = []
        for element in complex_types[type_name].iter(f"{{{XS}}}element"):
            name, type_ = element.get("name"), element.get("type", "")
            repeating = element.get("maxOccurs", "1") != "1"
            required = element.get("minOccurs", "1") != "0"
            path = f"{prefix}{name}"
            local = type_.split(":")[-1]
            node = Node(name, repeating, required)
            if local in complex_types:
                node.children = build(local, f"{path}.")
            else:
                kind, values = kind_of(type_)
                node.leaf = Leaf(path, kind, repeating, values, required)
            nodes.append(node)
        return nodes

    return Node("ChildUpdate", children=build(ROOT_TYPE, ""))


def _walk(node: Node, prefix: str = ""):
    for child in node.children:
        if child.leaf is not None:
            yield child.leaf
        else:
            yield from _walk(child, f"{prefix}{child.name}.")


@functools.lru_cache(maxsize=1)
def leaves() -> dict[str, Leaf]:
    """Every leaf by its path without indexes."""
    return {leaf.path: leaf for leaf in _walk(tree())}


_INDEX = re.compile(r"\[(\d+)\]")


def resolve(target: str) -> tuple[Leaf, tuple[int, ...]] | None:
    """The leaf a target path names and the indexes it gives its repeating parents; None when the
    model has no such field (or an index is given where nothing repeats, or missing where it must)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\[\d+\])?(\.[A-Za-z][A-Za-z0-9]*(\[\d+\])?)*", target or ""):
        return None
    plain = _INDEX.sub("", target)
    leaf = leaves().get(plain)
    if leaf is None:
        return None
    node, indexes = tree(), []
    for part in target.split("."):
        name, _, rest = part.partition("[")
        node = next(c for c in node.children if c.name == name)
        if node.repeating and node.leaf is None:
            if not rest:
                return None  # Carer.Name: which carer?
            index = int(rest.rstrip("]"))
            if index >= MAX_REPEATS:
                return None
            indexes.append(index)
        elif rest:
            return None  # Identity[0].FamilyName: Identity does not repeat
    return leaf, tuple(indexes)


def record_element(record: dict) -> etree._Element:
    """``record`` (a zeep-style dict: {"Identity": {...}, "Carer": [{...}], ...}) as a cg:ChildUpdate
    element in the schema's order, for validation."""
    sub = etree.SubElement

    def fill(parent: etree._Element, plan, value) -> None:
        for name, tag, is_leaf, inner in plan:
            if name not in value:
                continue
            items = value[name]
            for item in (items if isinstance(items, list) else [items]):
                element = sub(parent, tag)
                if is_leaf:
                    element.text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                else:
                    fill(element, inner, item)

    root = etree.Element(f"{{{CG}}}ChildUpdate")
    fill(root, _element_plan(), record)
    return root


@functools.lru_cache(maxsize=1)
def _element_plan() -> tuple:
    """The tree as (name, tag, leaf or not, the children's plan) in the schema's order: built once."""
    def plan(node: Node) -> tuple:
        return tuple((child.name, f"{{{CG}}}{child.name}", child.leaf is not None,
                      plan(child) if child.leaf is None else None) for child in node.children)

    return plan(tree())


@functools.lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.fromstring(schema_bytes(), etree.XMLParser(resolve_entities=False,
                                                                            no_network=True)))


_SUBMIT_UPDATES = f"{{{CG}}}SubmitUpdates"


def schema_problem(record: dict) -> str | None:
    """What the gateway's schema says is wrong with ``record`` sent alone in a SubmitUpdates, or None."""
    message = etree.Element(_SUBMIT_UPDATES)
    try:
        message.append(record_element(record))
    except ValueError as exc:  # a text lxml refuses (a control character): connectors.mapping names it first
        return f"a value XML cannot carry: {exc}"
    schema = _schema()
    if schema.validate(message):
        return None
    error = schema.error_log.last_error
    text = re.sub(r"\{urn:contactgate:v1\}", "", error.message) if error is not None else "not valid"
    return text
