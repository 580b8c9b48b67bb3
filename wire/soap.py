"""SOAP 1.1 plumbing shared by the gateway and the SDK: namespaces, the hardened parser, building
envelopes and faults, reading a fault's contract code.
"""

from __future__ import annotations

import base64
import hashlib
import threading

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
CG = "urn:contactgate:v1"
NSMAP = {"soap": SOAP_ENV, "wsse": WSSE, "wsu": WSU, "ds": DS, "cg": CG}

OPERATIONS = ("SubmitUpdates", "FindChild", "GetContacts", "SetShielding", "Ping")
SOAP_ACTION_PREFIX = "urn:contactgate:v1#"
SOAP_PATH = "/soap/v1"  # where the gateway answers, under its base URL

MAX_DEPTH = 64
# Namespaces in scope at an element that is validated or canonicalised (the payload, soap:Body,
# wsu:Timestamp, ds:SignedInfo). lxml copies every namespace in scope from the element's ancestors
# for C14N, at a cost that grows with their square (16,000 declarations on the Envelope: 1.9 s per
# verification). Honest stacks declare a handful.
MAX_NAMESPACES_IN_SCOPE = 64


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def hardened_parser() -> etree.XMLParser:
    """No DTDs, no entities, no network, no huge trees. Build once per process and reuse.

    A parser must not be used by two threads at once, so the gateway keeps one per thread
    (`thread_parser`).
    """
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=False, remove_pis=False,
    )
    # Belt and braces: whatever libxml2 would fetch (external subset, parameter entity), it gets
    # nothing. (With collect_ids=False libxml2 was seen opening a DOCTYPE's SYSTEM file.)
    parser.resolvers.add(_ResolveNothing())
    return parser


class _ResolveNothing(etree.Resolver):
    def resolve(self, system_url, public_id, context):
        return self.resolve_string("", context)


class UnsafeXML(ValueError):
    """The document is not well-formed, carries a DTD, or nests too deeply."""


_parsers = threading.local()


def thread_parser() -> etree.XMLParser:
    """This thread's hardened parser (built once per thread, reused for every message)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = hardened_parser()
    return parser


class ThreadXPath:
    """A compiled XPath, one per thread. lxml runs the evaluations of one XPath object one at a time
    (a lock per object), so an object shared by the serving threads would make a small message wait
    for the largest document any other thread is evaluating; lxml lets go of the GIL meanwhile, so
    with one object per thread they run side by side."""

    def __init__(self, path: str, **options):
        self._path, self._options = path, options
        self._local = threading.local()

    def __call__(self, node: etree._Element, **variables):
        xpath = getattr(self._local, "xpath", None)
        if xpath is None:
            xpath = self._local.xpath = etree.XPath(self._path, **self._options)
        return xpath(node, **variables)


def parse_untrusted(data: bytes) -> etree._Element:
    """Parse bytes from outside with the hardened parser and structural limits."""
    try:
        root = etree.fromstring(data, thread_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXML(f"not well-formed XML: {exc.msg}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXML("DOCTYPE declarations are not accepted")
    for node in root.iter(etree.Entity, etree.ProcessingInstruction):  # (lxml picks them out in C)
        if isinstance(node, etree._Entity):
            raise UnsafeXML("entity references are not accepted")
        raise UnsafeXML("processing instructions are not accepted")
    try:
        too_deep = _TOO_DEEP(root)
    except etree.XPathError:  # past libxml2's limits on what one evaluation may hold: no message is
        raise UnsafeXML("document too large to check") from None
    if too_deep:
        raise UnsafeXML(f"document nests deeper than {MAX_DEPTH} levels")
    return root


# Whether any element lies below MAX_DEPTH levels (the root element is level 1).
_TOO_DEEP = ThreadXPath("boolean(" + "/*" * (MAX_DEPTH + 1) + ")")


XML_WHITESPACE = " \t\r\n"  # (str.strip() alone would also take no-break and other Unicode spaces)


def has_stray_text(element: etree._Element) -> bool:
    """Whether ``element`` holds text of its own between its children (not only whitespace): an
    Envelope, Header or Security header holds elements only."""
    if element.text and element.text.strip(XML_WHITESPACE):
        return True
    return any(child.tail and child.tail.strip(XML_WHITESPACE) for child in element)


def too_many_namespaces(element: etree._Element) -> bool:
    return len(element.nsmap) > MAX_NAMESPACES_IN_SCOPE


def digest_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def new_envelope(payload: etree._Element) -> etree._Element:
    envelope = etree.Element(q(SOAP_ENV, "Envelope"), nsmap={"soap": SOAP_ENV})
    etree.SubElement(envelope, q(SOAP_ENV, "Header"))
    body = etree.SubElement(envelope, q(SOAP_ENV, "Body"))
    body.append(payload)
    return envelope


def fault_payload(faultcode: str, faultstring: str, code: str, request_digest: str | None,
                  request_id: str | None = None) -> etree._Element:
    fault = etree.Element(q(SOAP_ENV, "Fault"), nsmap={"soap": SOAP_ENV})
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = faultstring
    detail = etree.SubElement(fault, "detail")
    error = etree.SubElement(detail, q(CG, "Error"), nsmap={"cg": CG})
    etree.SubElement(error, q(CG, "Code")).text = code
    etree.SubElement(error, q(CG, "Message")).text = faultstring
    if request_digest:
        etree.SubElement(error, q(CG, "RequestDigest")).text = request_digest
    if request_id:
        etree.SubElement(error, q(CG, "RequestId")).text = request_id
    return fault


def to_bytes(element: etree._Element) -> bytes:
    return etree.tostring(element, xml_declaration=True, encoding="utf-8")


def fault_code(element: etree._Element) -> str | None:
    """The contract fault code of a SOAP fault answer (detail/cg:Error/cg:Code), or None. Given the
    envelope or its (verified) soap:Body."""
    body = element if element.tag == q(SOAP_ENV, "Body") else element.find(q(SOAP_ENV, "Body"))
    if body is None:
        return None
    return body.findtext(f"{q(SOAP_ENV, 'Fault')}/detail/{q(CG, 'Error')}/{q(CG, 'Code')}")
