"""Distinguished names as other SOAP stacks write them in ds:X509IssuerName (RFC 4514, .NET's, Java's),
read into one comparable form, and an x509.Name in the same form: how an issuer-serial key reference
is matched to a registered certificate (contactgate_wire.wsse)."""

from __future__ import annotations

import re

from cryptography import x509


# The attribute types stacks write in an issuer's name (RFC 4514, .NET's and Java's), by their OIDs.
_ATTRIBUTE_TYPES = {
    "CN": "2.5.4.3", "C": "2.5.4.6", "L": "2.5.4.7", "ST": "2.5.4.8", "S": "2.5.4.8", "O": "2.5.4.10",
    "OU": "2.5.4.11", "STREET": "2.5.4.9", "DC": "0.9.2342.19200300.100.1.25", "UID": "0.9.2342.19200300.100.1.1",
    "E": "1.2.840.113549.1.9.1", "EMAIL": "1.2.840.113549.1.9.1", "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "SERIALNUMBER": "2.5.4.5", "T": "2.5.4.12", "TITLE": "2.5.4.12", "G": "2.5.4.42", "GIVENNAME": "2.5.4.42",
    "SN": "2.5.4.4", "SURNAME": "2.5.4.4", "INITIALS": "2.5.4.43", "DNQUALIFIER": "2.5.4.46",
    "POSTALCODE": "2.5.4.17", "ORGANIZATIONIDENTIFIER": "2.5.4.97",
}
_OID = re.compile(r"^(?:OID\.)?([0-2](?:\.\d{1,20}){1,30})$", re.IGNORECASE)
# DER string types a hex value (#...) may hold, and how their bytes read.
_DER_STRINGS = {12: "utf-8", 19: "latin-1", 20: "latin-1", 22: "latin-1", 26: "latin-1", 28: "utf-32-be",
                30: "utf-16-be"}


def _normalised_value(value) -> str:
    """RFC 5280 7.1 in short: compared without case, with inner white space collapsed."""
    return " ".join(value.split()).casefold() if isinstance(value, str) else "#" + bytes(value).hex()


def normalised_name(name: x509.Name) -> tuple:
    """A Name as `issuer_name` reads one: its RDNs most specific first (as a string writes them), each
    the set of (OID, normalised value)."""
    return tuple(frozenset((a.oid.dotted_string, _normalised_value(a.value)) for a in rdn)
                 for rdn in reversed(name.rdns))


def issuer_name(text: str) -> tuple | None:
    """A distinguished name as the stacks write ds:X509IssuerName -- RFC 4514 (cryptography, xmlsec),
    .NET's (a space after each comma, E=, S=), Java's (unknown types by OID with the hex of their DER),
    in any case -- as `normalised_name` gives it; None if it cannot be read (``text`` is bounded)."""
    rdns, attributes, i, n = [], [], 0, len(text)
    while i < n:
        equals = text.find("=", i)
        if equals < 0:
            return None
        kind = text[i:equals].strip()
        dotted = _OID.match(kind)
        oid = _ATTRIBUTE_TYPES.get(kind.upper()) or (dotted.group(1) if dotted else None)
        if oid is None:
            return None
        i = equals + 1
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == "#":
            end = i + 1
            while end < n and text[end] not in ",;+":
                end += 1
            value = _der_string(text[i + 1:end].strip())
            i = end
        else:
            value, i = _string_value(text, i)
        if value is None:
            return None
        attributes.append((oid, _normalised_value(value)))
        if i < n and text[i] in ",;":
            rdns.append(frozenset(attributes))
            attributes = []
        i += 1 if i < n else 0
    if not attributes:
        return None
    rdns.append(frozenset(attributes))
    return tuple(rdns)


def _string_value(text: str, i: int) -> tuple[str | None, int]:
    """A string value from ``text[i]`` to the next unescaped , ; or + (or a quoted one), with RFC
    4514's escapes (\\, and \\ with two hex digits: a UTF-8 byte) undone; and where it ended."""
    n, out = len(text), bytearray()
    if i < n and text[i] == '"':
        end = text.find('"', i + 1)
        if end < 0:
            return None, n
        value, i = text[i + 1:end], end + 1
        while i < n and text[i] == " ":
            i += 1
        return value, i
    while i < n and text[i] not in ",;+":
        if text[i] == "\\":
            pair = text[i + 1:i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(int(pair, 16))
                i += 3
                continue
            if i + 1 >= n:
                return None, n
            out.extend(text[i + 1].encode())
            i += 2
            continue
        out.extend(text[i].encode())
        i += 1
    try:
        return out.decode("utf-8"), i
    except UnicodeDecodeError:
        return None, i


def _der_string(hex_text: str) -> str | None:
    """The string a DER string type holds (Java's #hex form of a value), or None."""
    try:
        der = bytes.fromhex(hex_text)
    except ValueError:
        return None
    if len(der) < 2 or der[0] not in _DER_STRINGS:
        return None
    length, start = der[1], 2
    if length & 0x80:
        size = length & 0x7F
        if size not in (1, 2) or len(der) < 2 + size:
            return None
        length, start = int.from_bytes(der[2:2 + size], "big"), 2 + size
    if len(der) != start + length:
        return None
    try:
        return der[start:].decode(_DER_STRINGS[der[0]])
    except UnicodeDecodeError:
        return None
