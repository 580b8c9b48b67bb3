"""Step 2: size limit, hardened parse, no XML Encryption, SOAP 1.1 envelope shape, operation named by
SOAPAction."""

from __future__ import annotations

from contactgate_wire.faults import MalformedMessage, TooLarge
from gateway.pipeline.context import Exchange, Services
from contactgate_wire.soap import (CG, MAX_NAMESPACES_IN_SCOPE, OPERATIONS, SOAP_ACTION_PREFIX, SOAP_ENV, WSSE, UnsafeXML,
                                   has_stray_text, parse_untrusted, q, too_many_namespaces)

XENC = "http://www.w3.org/2001/04/xmlenc#"
XML_ENCRYPTION_REFUSED = "XML Encryption is not used: the channel is already encrypted by mutual TLS; sign only."

_ASCII_COMPATIBLE = frozenset({"UTF-8", "UTF8", "US-ASCII", "ASCII"})


def refuse_xml_encryption(raw: bytes, envelope) -> None:
    """An xenc:EncryptedData or xenc:EncryptedKey anywhere (WCF encrypts the Body and the Signature
    even with ProtectionLevel.Sign) is refused by name, before anything else is said of the message's
    shape. (The elements' names are looked for in the bytes first -- a name cannot be escaped, and
    every signed message holds the namespace, in its SHA-256 DigestMethod -- so most are not walked;
    a document in another encoding than UTF-8 or ASCII, UTF-16 or UCS-4 say, is always walked.)"""
    ascii_compatible = (envelope.getroottree().docinfo.encoding or "").upper() in _ASCII_COMPATIBLE
    if ascii_compatible and b"EncryptedData" not in raw and b"EncryptedKey" not in raw:
        return
    found = next(envelope.iter(q(XENC, "EncryptedData"), q(XENC, "EncryptedKey")), None)
    if found is not None:
        raise MalformedMessage(f"XML Encryption used ({found.tag.rsplit('}', 1)[-1]}): refused, sign only",
                               public_message=XML_ENCRYPTION_REFUSED)


def parse_message(exchange: Exchange, services: Services) -> None:
    if exchange.size > services.settings.max_message_bytes:
        raise TooLarge(f"{exchange.size} bytes exceeds {services.settings.max_message_bytes}")
    try:
        envelope = parse_untrusted(exchange.raw)
    except UnsafeXML as exc:
        raise MalformedMessage(str(exc)) from None
    refuse_xml_encryption(exchange.raw, envelope)
    if envelope.tag != q(SOAP_ENV, "Envelope"):
        raise MalformedMessage("the document is not a SOAP 1.1 Envelope")
    parts = [child for child in envelope if isinstance(child.tag, str)]
    if [p.tag for p in parts] != [q(SOAP_ENV, "Header"), q(SOAP_ENV, "Body")]:
        raise MalformedMessage("the Envelope must hold exactly a Header and a Body")
    header, body = parts
    if has_stray_text(envelope) or has_stray_text(header):
        raise MalformedMessage("the Envelope and its Header must hold elements only, not text")
    for block in header:
        if isinstance(block.tag, str) and block.tag != q(WSSE, "Security"):
            raise MalformedMessage(f"unsupported header block {block.tag}")
    payloads = [child for child in body if isinstance(child.tag, str)]
    if len(payloads) != 1:
        raise MalformedMessage("the Body must hold exactly one request element")
    payload = payloads[0]
    operation = payload.tag[len(CG) + 2:] if payload.tag.startswith(f"{{{CG}}}") else None
    if operation not in OPERATIONS:
        raise MalformedMessage("the Body does not hold a ContactGate request")
    if too_many_namespaces(payload):  # before the schema validates it (see MAX_NAMESPACES_IN_SCOPE)
        raise MalformedMessage(f"more than {MAX_NAMESPACES_IN_SCOPE} namespaces are declared in scope of the "
                               "request element")
    action = (exchange.soap_action or "").strip().strip('"')
    if action and action != SOAP_ACTION_PREFIX + operation:
        raise MalformedMessage("SOAPAction does not match the request element")
    exchange.envelope = envelope
    exchange.operation = operation
