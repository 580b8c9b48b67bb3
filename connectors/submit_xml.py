"""A SubmitUpdates envelope built straight from the schema's types, without zeep's object layer.

zeep builds a request by turning each record into its value objects and rendering them, checking
each element as it goes: for a batch of 1,000 children that is ~25,000 objects, about half of a
push's time. `submit_updates_envelope` builds the very same envelope with lxml from the
ChildUpdate tree `connectors.model` reads from the packaged XSD (the schema's order, its required
elements, its repeating ones): the same elements, prefixes (``soap-env``, ``ns0``) and text as
zeep's, so the same bytes once signed (tests/connectors/test_submit_xml.py compares both).

It only builds what it can build exactly as zeep would: every record a ``dict`` of the schema's
fields, texts and dates as ``str``, yes/no as ``bool``, a repeating field as a ``list`` (or one
value), every required field present, 1 to 1,000 records. Anything else (a ``datetime.date``, an
unknown or missing field, a value of another kind) returns None: the caller then builds it with
zeep, which renders it, or refuses it with its own error, as before.
"""

from __future__ import annotations

import functools

from lxml import etree

from connectors import model

CG = model.CG
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MAX_RECORDS = 1000  # SubmitUpdatesType: ChildUpdate maxOccurs


class _Plan:
    """One complex type of the tree: its fields in the schema's order, with their tags."""

    __slots__ = ("names", "fields")

    def __init__(self, node: model.Node):
        # (name, tag, repeating, required, boolean (leaves) or None, the child's plan (groups) or None)
        self.fields = tuple((child.name, f"{{{CG}}}{child.name}", child.repeating, child.required,
                             (child.leaf.kind == "boolean") if child.leaf is not None else None,
                             _Plan(child) if child.leaf is None else None) for child in node.children)
        self.names = frozenset(child.name for child in node.children)


@functools.lru_cache(maxsize=1)
def _plan() -> _Plan:
    return _Plan(model.tree())


class _NotExact(Exception):
    """The records hold something this builder does not render exactly as zeep does."""


def _fill(parent: etree._Element, plan: _Plan, value) -> None:
    if type(value) is not dict or not plan.names.issuperset(value):
        raise _NotExact
    sub = etree.SubElement
    for name, tag, repeating, required, boolean, inner in plan.fields:
        given = value.get(name)
        if given is None:
            if required:
                raise _NotExact
            continue
        if type(given) is list:
            if not repeating or (required and not given):
                raise _NotExact
            items = given
        else:
            items = (given,)
        for item in items:
            if inner is not None:
                _fill(sub(parent, tag), inner, item)
            elif boolean:
                if type(item) is not bool:
                    raise _NotExact
                sub(parent, tag).text = "true" if item else "false"
            else:
                if type(item) is not str:
                    raise _NotExact
                sub(parent, tag).text = item


def submit_updates_envelope(records) -> etree._Element | None:
    """The unsigned SubmitUpdates envelope zeep would build for ``ChildUpdate=records``, or None when
    the records hold anything it does not build exactly as zeep (the caller then uses zeep)."""
    if type(records) is not list or not 1 <= len(records) <= MAX_RECORDS:
        return None
    plan = _plan()
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap-env": SOAP_ENV})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    operation = etree.SubElement(body, f"{{{CG}}}SubmitUpdates", nsmap={"ns0": CG})
    tag = f"{{{CG}}}ChildUpdate"
    try:
        for record in records:
            _fill(etree.SubElement(operation, tag), plan, record)
    except (_NotExact, ValueError):  # ValueError: text lxml refuses (a control character); zeep says so
        return None
    return envelope
