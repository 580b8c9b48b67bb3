"""The signed load file: an organisation's whole caseload, mapped on its own machine, for a first
(or full re-) load on the gateway host (`contactgate load-prepare` writes it at the organisation,
`contactgate load` applies it at the gateway).

Line 1 is the header, one JSON object; every further line is one batch: a JSON string holding a
``cg:SubmitUpdates`` element (the request element of a push's SubmitUpdates, records mapped exactly
as `contactgate push` maps them). The header names the organisation, the time it was made, the
signer's certificate and the SHA-256 of every batch line, and is signed with the organisation's
private key (the certificate registered to it): an operator who holds the file can load it, or
not, but can change, add, drop or reorder no batch without the signature failing.

The signature covers ``signed_bytes(header)``: the header's fields but ``signature``, as JSON with
sorted keys and no spaces. RSA keys sign with PKCS#1 v1.5 and ECDSA keys with ECDSA, both SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

FORMAT = "contactgate-load/1"
MAX_HEADER_BYTES = 8 * 1024 * 1024  # 64 bytes a batch: 100,000 batches of a 100-million-record file
MAX_BATCH_LINE_BYTES = 64 * 1024 * 1024  # one batch's line (a record is 1-3 KB; a batch at most 5,000)
MAX_RECORDS_PER_BATCH = 5000
HEADER_FIELDS = ("format", "organisation", "created", "certificate", "batches", "records", "signature")


class LoadFileError(Exception):
    """The file is not a well-formed load file (said to the operator as is: it holds no record)."""


def batch_digest(line: bytes) -> str:
    """The SHA-256 (hex) of one batch line as stored, without its line end."""
    return hashlib.sha256(line).hexdigest()


def signed_bytes(header: dict) -> bytes:
    return json.dumps({k: v for k, v in header.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(header: dict, private_key) -> str:
    """The base64 signature of ``header`` by ``private_key`` (RSA or EC)."""
    data = signed_bytes(header)
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        raw = private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        raise LoadFileError("the organisation's key must be RSA or EC")
    return base64.b64encode(raw).decode("ascii")


def signature_holds(header: dict, certificate: x509.Certificate) -> bool:
    """Whether the header's signature is the certificate's key's over ``signed_bytes(header)``."""
    try:
        raw = base64.b64decode(str(header.get("signature") or ""), validate=True)
    except ValueError:
        return False
    key = certificate.public_key()
    data = signed_bytes(header)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def read_header(line: bytes) -> dict:
    """The header line parsed and its shape checked (not its signature: the gateway does that)."""
    if len(line) > MAX_HEADER_BYTES:
        raise LoadFileError(f"the header is longer than {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise LoadFileError("the first line is not a JSON header: not a load file") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LoadFileError(f"not a load file (the header's format is not {FORMAT})")
    if set(header) != set(HEADER_FIELDS):
        raise LoadFileError(f"the header must have exactly the fields {', '.join(HEADER_FIELDS)}")
    batches = header["batches"]
    if (not isinstance(batches, list) or not all(isinstance(d, str) and len(d) == 64 for d in batches)
            or not isinstance(header["records"], int) or not all(
                isinstance(header[k], str) for k in ("organisation", "created", "certificate", "signature"))):
        raise LoadFileError("the header's fields do not have the load file's types")
    return header


def batch_line(payload_xml: bytes) -> bytes:
    """One batch as a line of the file: its XML as a JSON string (no line end inside)."""
    return json.dumps(payload_xml.decode("utf-8"), ensure_ascii=False).encode("utf-8")


def batch_xml(line: bytes) -> bytes:
    """The XML of one batch line (its digest already checked against the signed header)."""
    try:
        text = json.loads(line)
    except (ValueError, RecursionError):
        raise LoadFileError("a batch line is not a JSON string") from None
    if not isinstance(text, str):
        raise LoadFileError("a batch line is not a JSON string")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no XML can hold it
        raise LoadFileError("a batch line holds text that is not Unicode (a lone surrogate)") from None
