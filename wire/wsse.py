"""WS-Security 1.1 (X.509 token profile) for SOAP 1.1: sign with python-xmlsec's template API (the
same message shape zeep's BinarySignature and Signature produce); verify the one admitted shape with
lxml's C14N and cryptography (`verify`, held to signxml's verifier by tests/wire/test_wsse_signxml.py).

Verification trusts nothing the message says about itself: the signature must sit in
``soap:Header/wsse:Security``, reference exactly the envelope's ``soap:Body`` and the Security
header's ``wsu:Timestamp`` by ``wsu:Id``, with exclusive C14N and SHA-256; ids must be unique in the
whole document; and the caller receives only the canonicalised elements the verifier returns as
signed. Whether the signing certificate is trustworthy is the caller's decision
(`extract_signer_certificate` hands it over before `verify`).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import uuid
from dataclasses import dataclass

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from contactgate_wire.certificates import UNUSABLE_CERTIFICATE
from contactgate_wire.faults import MessageExpired, SignatureInvalid
from contactgate_wire.names import issuer_name, normalised_name
from contactgate_wire.soap import (DS, MAX_NAMESPACES_IN_SCOPE, SOAP_ENV, WSSE, WSU, ThreadXPath, has_stray_text, q,
                                   thread_parser, too_many_namespaces)

X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED_SIGNATURE = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
# A reference's transforms: exclusive C14N, optionally after enveloped-signature (node-soap's
# default). The Signature is a child of wsse:Security, outside the Body and beside the Timestamp,
# so removing it from either changes nothing.
ACCEPTED_TRANSFORMS = frozenset({(EXC_C14N,), (ENVELOPED_SIGNATURE, EXC_C14N)})
# The values of each kind of id attribute in the document — wsu:Id, Id, ID, id and xml:id — found in
# C by name tests (a test of every attribute's name by function, or one union of the five, costs
# several times more on a message made of attributes).
_ID_VALUES = tuple(ThreadXPath(f"//@{name}", namespaces={"wsu": WSU}, smart_strings=False)
                   for name in ("wsu:Id", "Id", "ID", "id", "xml:id"))

def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> dt.datetime:
    if not text:
        raise ValueError("empty time")
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("time without a zone")
    return moment.astimezone(dt.timezone.utc)


class EnvelopeSigner:
    """Signs SOAP envelopes with one key, loaded once (key loading costs ~40 ms; signing ~0.3 ms).

    ``binary_token=True`` puts the certificate in a BinarySecurityToken referenced from the
    SecurityTokenReference (zeep's BinarySignature); ``False`` puts it in X509Data (zeep's Signature).
    """

    def __init__(self, key_pem: bytes | None, cert_pem: bytes, *, binary_token: bool = True, sign_signed_info=None):
        # The key alone: each signature's context takes a copy of it, and a copy holding the
        # certificate costs ~30 µs more. KeyInfo (not signed) gets the certificate from _x509_data.
        self.certificate = x509.load_pem_x509_certificate(cert_pem)
        is_rsa = isinstance(self.certificate.public_key(), rsa.RSAPublicKey)
        self._method = xmlsec.Transform.RSA_SHA256 if is_rsa else xmlsec.Transform.ECDSA_SHA256
        self._binary = binary_token
        self._sign_signed_info = sign_signed_info
        if sign_signed_info is not None:  # the key is elsewhere (a hardware security module): no xmlsec key
            if not binary_token:
                raise ValueError("a key held elsewhere signs with a BinarySecurityToken only")
            self._key = None
            self._certificate_text = base64.b64encode(self.certificate.public_bytes(Encoding.DER)).decode()
            return
        self._key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
        self._x509_data = self._filled_x509_data(key_pem, cert_pem)
        self._certificate_text = self._x509_data.findtext(q(DS, "X509Certificate"))

    @classmethod
    def with_key_elsewhere(cls, cert_pem: bytes, sign_signed_info) -> "EnvelopeSigner":
        """A signer whose private key it never holds (a PKCS#11 token): ``sign_signed_info(bytes)``
        returns the SignatureValue over the exclusive C14N of SignedInfo (RSA PKCS#1 v1.5 with SHA-256,
        or ECDSA-SHA256 as r || s, after the certificate's key). The message is the one xmlsec makes
        (`_sign_here` fills the same template), so no verifier sees a difference."""
        return cls(None, cert_pem, sign_signed_info=sign_signed_info)

    def _filled_x509_data(self, key_pem: bytes, cert_pem: bytes) -> etree._Element:
        """ds:X509Data (issuer, serial and certificate) as xmlsec writes it, made once."""
        key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
        key.load_cert_from_memory(cert_pem, xmlsec.KeyFormat.PEM)
        holder = etree.Element(q(SOAP_ENV, "Envelope"))
        signature = xmlsec.template.create(holder, xmlsec.Transform.EXCL_C14N, self._method)
        holder.append(signature)
        x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
        xmlsec.template.x509_data_add_issuer_serial(x509_data)
        xmlsec.template.x509_data_add_certificate(x509_data)
        xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256, uri="")
        context = xmlsec.SignatureContext()
        context.key = key
        context.sign(signature)
        return etree.fromstring(etree.tostring(x509_data))  # (nodes xmlsec made are found once re-parsed)

    def sign(self, envelope: etree._Element, *, created: dt.datetime | None = None,
             lifetime_s: int = 300) -> etree._Element:
        """Add a wsu:Timestamp to the Security header and sign Body + Timestamp, in place."""
        timestamp = add_timestamp(envelope, created=created, lifetime_s=lifetime_s)
        security = timestamp.getparent()
        signature = xmlsec.template.create(envelope, xmlsec.Transform.EXCL_C14N, self._method)
        key_info = xmlsec.template.ensure_key_info(signature)
        security.insert(0, signature)
        context = xmlsec.SignatureContext()
        if self._key is not None:
            context.key = self._key
        for target in (envelope.find(q(SOAP_ENV, "Body")), timestamp):
            reference = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256,
                                                      uri="#" + _ensure_id(target))
            xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N)
            context.register_id(target, "Id", WSU)  # xmlsec does not know wsu:Id by itself
        if self._sign_signed_info is None:
            context.sign(signature)
        else:
            self._sign_here(signature, envelope.find(q(SOAP_ENV, "Body")), timestamp)
        # KeyInfo is not signed: it takes its WS-Security shape now.
        token_reference = etree.SubElement(key_info, q(WSSE, "SecurityTokenReference"))
        if not self._binary:
            token_reference.append(copy.deepcopy(self._x509_data))
            return envelope
        token = etree.Element(q(WSSE, "BinarySecurityToken"), {"ValueType": X509V3, "EncodingType": BASE64})
        token.text = self._certificate_text
        etree.SubElement(token_reference, q(WSSE, "Reference"), {"ValueType": X509V3, "URI": "#" + _ensure_id(token)})
        security.insert(1, token)
        return envelope


    def _sign_here(self, signature: etree._Element, body: etree._Element, timestamp: etree._Element) -> None:
        """What xmlsec's sign does to the template, with the SignatureValue from ``sign_signed_info``:
        each Reference's digest (SHA-256 of its target's exclusive C14N), then the signature over the
        exclusive C14N of SignedInfo."""
        signed_info = signature.find(q(DS, "SignedInfo"))
        targets = {"#" + _element_id(body): body, "#" + _element_id(timestamp): timestamp}
        for reference in signed_info.findall(q(DS, "Reference")):
            target_c14n = etree.tostring(targets[reference.get("URI")], method="c14n", exclusive=True,
                                         with_comments=False)
            reference.find(q(DS, "DigestValue")).text = base64.b64encode(hashlib.sha256(target_c14n).digest()).decode()
        signed_info_c14n = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
        signature.find(q(DS, "SignatureValue")).text = base64.b64encode(self._sign_signed_info(signed_info_c14n)).decode()


def _ensure_id(element: etree._Element) -> str:
    """The element's wsu:Id, given a fresh one if it has none."""
    element_id = element.get(q(WSU, "Id"))
    if not element_id:
        element_id = f"id-{uuid.uuid4()}"
        element.set(q(WSU, "Id"), element_id)
    return element_id


def security_header(envelope: etree._Element) -> etree._Element:
    header = envelope.find(q(SOAP_ENV, "Header"))
    if header is None:
        header = etree.Element(q(SOAP_ENV, "Header"))
        envelope.insert(0, header)
    security = header.find(q(WSSE, "Security"))
    if security is None:
        security = etree.SubElement(header, q(WSSE, "Security"), nsmap={"wsse": WSSE})
    return security


def add_timestamp(envelope: etree._Element, *, created: dt.datetime | None = None,
                  lifetime_s: int = 300) -> etree._Element:
    security = security_header(envelope)
    created = created or dt.datetime.now(dt.timezone.utc)
    timestamp = etree.SubElement(security, q(WSU, "Timestamp"), nsmap={"wsu": WSU})
    timestamp.set(q(WSU, "Id"), f"TS-{uuid.uuid4().hex}")
    etree.SubElement(timestamp, q(WSU, "Created")).text = format_time(created)
    etree.SubElement(timestamp, q(WSU, "Expires")).text = format_time(
        created + dt.timedelta(seconds=lifetime_s))
    return timestamp


@dataclass
class VerifiedMessage:
    """What the verifier vouches for: only these elements may be used after verification."""

    body: etree._Element           # the signed soap:Body, re-parsed from its canonical form
    timestamp: etree._Element      # the signed wsu:Timestamp, likewise
    signer: x509.Certificate
    signature_id: str              # SHA-256 of the canonical SignedInfo: names the message for replay

    @property
    def payload(self) -> etree._Element | None:
        children = [c for c in self.body if isinstance(c.tag, str)]
        return children[0] if len(children) == 1 else None


def _refused(public: str, detail: str | None = None) -> SignatureInvalid:
    """A SignatureInvalid whose public message says what is wrong with the caller's own security
    header (and nothing else); ``detail`` (for the audit) defaults to the same text."""
    return SignatureInvalid(detail or public, public_message=public)


def _the_one(elements: list, public: str) -> etree._Element:
    if len(elements) != 1:
        raise _refused(public, f"{public} (found {len(elements)})")
    return elements[0]


def _element_id(element: etree._Element) -> str | None:
    return element.get(q(WSU, "Id"))


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def check_unique_ids(envelope: etree._Element) -> None:
    seen: set[str] = set()
    for id_values in _ID_VALUES:
        try:
            values = id_values(envelope)
        except etree.XPathError:  # past libxml2's limits on what one evaluation may hold
            raise _refused("The message holds too many attributes to check.") from None
        for value in values:
            if value in seen:
                raise _refused("An Id value appears more than once in the message; every Id must be unique.",
                               f"duplicate id {value!r}")
            seen.add(value)


_TIMESTAMP_MISSING = "wsse:Security must hold exactly one wsu:Timestamp, signed with soap:Body."


def _structure(envelope: etree._Element, problems: list[str] | None = None):
    """(wsse:Security, ds:Signature, wsu:Timestamp, soap:Body), each the one where it must be. With
    ``problems``, a missing Timestamp is noted there (and None returned for it) so that the other
    mismatches of the signature profile can be named with it."""
    header = envelope.find(q(SOAP_ENV, "Header"))
    if header is None:
        raise _refused("The message has no soap:Header with a wsse:Security header.")
    security = _the_one(header.findall(q(WSSE, "Security")),
                        "soap:Header must hold exactly one wsse:Security header.")
    signature = _the_one(list(envelope.iter(q(DS, "Signature"))),
                         "The message must hold exactly one ds:Signature, in wsse:Security.")
    if signature.getparent() is not security:
        raise _refused("ds:Signature must be a child of wsse:Security.")
    timestamps = list(envelope.iter(q(WSU, "Timestamp")))
    if problems is not None and not timestamps:
        problems.append(_TIMESTAMP_MISSING)
        timestamp = None
    else:
        timestamp = _the_one(timestamps, _TIMESTAMP_MISSING)
        if timestamp.getparent() is not security:
            raise _refused("wsu:Timestamp must be a child of wsse:Security.")
    body = _the_one(envelope.findall(q(SOAP_ENV, "Body")), "The envelope must hold exactly one soap:Body.")
    if len(list(envelope.iter(q(SOAP_ENV, "Body")))) != 1:
        raise _refused("The message must hold exactly one soap:Body.")
    if has_stray_text(envelope) or has_stray_text(header) or has_stray_text(security):
        raise _refused("soap:Envelope, soap:Header and wsse:Security must hold elements only, not text.")
    return security, signature, timestamp, body


def profile_problems(envelope: etree._Element) -> tuple["KeyReference | None", list[str]]:
    """Every mismatch with the signature profile that can be seen without the key -- the key
    reference, the Timestamp, SignedInfo's canonicalisation and signature method, each reference's
    target, transforms and digest method -- each said with what to set (`profile_refusal` words them
    as one refusal), and the key reference (None if it is one of the problems).

    Nothing is verified here and nothing of the message is trusted: a message with problems is
    refused before any of it is used. A structure too odd to look further (no Security header, no
    or several signatures, ...) is refused at once, as `verify` would."""
    problems: list[str] = []
    security, signature, timestamp, body = _structure(envelope, problems)
    try:
        reference = _key_reference(security, signature)
    except SignatureInvalid as refusal:
        reference = None
        problems.append(_Problem(refusal.public_message, str(refusal)))
    for problem in _signed_info_problems(signature, body, timestamp):
        if problem not in problems:
            problems.append(problem)
    return reference, problems


def profile_refusal(problems: list[str]) -> SignatureInvalid:
    """One refusal naming every problem (`profile_problems`): a single one in its own words."""
    details = "; ".join(getattr(problem, "detail", problem) for problem in problems)
    if len(problems) == 1:
        return _refused(str(problems[0]), details)
    listed = " ".join(f"({n}) {problem}" for n, problem in enumerate(problems, 1))
    return _refused(f"The signature does not follow the profile in {len(problems)} ways: {listed}",
                    f"{len(problems)} profile mismatches: {details}")


class _Problem(str):
    """A profile mismatch: its public words (the string), and for the audit what was sent (``detail``)."""

    detail: str

    def __new__(cls, public: str, detail: str):
        problem = super().__new__(cls, public)
        problem.detail = detail if len(detail) <= 300 else detail[:300] + "..."  # (what was sent: any size)
        return problem


SUBJECT_KEY_IDENTIFIER = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0"
                          "#X509SubjectKeyIdentifier")
THUMBPRINT_SHA1 = "http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#ThumbprintSHA1"
_KEY_IDENTIFIER_KINDS = {SUBJECT_KEY_IDENTIFIER: "subject key identifier", THUMBPRINT_SHA1: "thumbprint"}
# Every way ds:KeyInfo may name the signing certificate, said once for every refusal of one.
ACCEPTED_KEY_REFERENCES = (
    "Accepted: a wsse:SecurityTokenReference holding a wsse:Reference URI=\"#id\" to an X.509 v3 "
    "wsse:BinarySecurityToken in wsse:Security, or ds:X509Data with the ds:X509Certificate, or ds:X509Data "
    "with ds:X509IssuerSerial, or a base64 wsse:KeyIdentifier of ValueType ...#X509SubjectKeyIdentifier or "
    "...#ThumbprintSHA1 (WSS 1.1); or ds:X509Data (either way) directly in ds:KeyInfo. A reference "
    "that does not carry the certificate must name one registered to your organisation (the TLS client "
    "certificate's).")
_KEY_INFO_SHAPE = ("ds:KeyInfo must hold one wsse:SecurityTokenReference or one ds:X509Data naming the signing "
                   "certificate. " + ACCEPTED_KEY_REFERENCES)
# A reference is read before anything is verified and before any rate limit: bounded. An issuer's
# distinguished name is parsed in pure Python (1 MB: 9 s); a SHA-1 thumbprint is 20 bytes, a Subject
# Key Identifier 20 (SHA-1) or at most 32 (SHA-256 methods) in practice.
MAX_ISSUER_NAME_CHARS = 1024
MAX_KEY_IDENTIFIER_BYTES = 64
UNRESOLVED_KEY_REFERENCE = ("The key reference in ds:KeyInfo names no certificate registered to your organisation "
                            "(the TLS client certificate's). " + ACCEPTED_KEY_REFERENCES)


@dataclass(frozen=True)
class KeyReference:
    """How ds:KeyInfo names the signing key: the certificate itself (``certificate``), or a reference
    to one the recipient holds (``kind`` "issuer-serial", "subject key identifier" or "thumbprint"),
    which only the recipient can resolve (`names`), among the certificates it accepts from the sender."""

    kind: str
    certificate: x509.Certificate | None = None
    issuer: "x509.Name | tuple | None" = None  # (a Name, or `issuer_name`'s normalised form)
    serial: int | None = None
    identifier: bytes = b""

    def names(self, certificate: x509.Certificate) -> bool:
        if self.certificate is not None:
            return certificate == self.certificate
        if self.kind == "issuer-serial":
            issuer = normalised_name(self.issuer) if isinstance(self.issuer, x509.Name) else self.issuer
            return certificate.serial_number == self.serial and normalised_name(certificate.issuer) == issuer
        if self.kind == "thumbprint":
            computed = hashlib.sha1(certificate.public_bytes(Encoding.DER)).digest()
        else:
            computed = subject_key_identifier(certificate)
        return computed is not None and hmac.compare_digest(computed, self.identifier)


def subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    """The certificate's Subject Key Identifier extension, else (as WSS4J computes one for a certificate
    without it) the SHA-1 of its public key (RFC 5280 4.2.1.2 method 1); None if the key is unreadable."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        pass
    except UNUSABLE_CERTIFICATE:
        return None
    try:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    except (*UNUSABLE_CERTIFICATE, TypeError):
        return None


def extract_signer_certificate(envelope: etree._Element) -> x509.Certificate:
    """The certificate the message carries as its signing key (BinarySecurityToken or X509Data).

    Not trusted by being returned: the caller validates it before calling `verify`. A message whose
    key is only referenced (`read_key_reference`) is refused: only the gateway resolves references."""
    reference = read_key_reference(envelope)
    if reference.certificate is None:
        raise _refused("The signing certificate must be carried in the message (a wsse:BinarySecurityToken, or "
                       "ds:X509Data with the ds:X509Certificate).", f"key referenced by {reference.kind}")
    return reference.certificate


def read_key_reference(envelope: etree._Element) -> KeyReference:
    security, signature, _, _ = _structure(envelope)
    return _key_reference(security, signature)


def _key_reference(security: etree._Element, signature: etree._Element) -> KeyReference:
    """What ds:KeyInfo says of the signing key: the certificate (BinarySecurityToken or X509Data), or a
    reference by issuer and serial number, Subject Key Identifier or SHA-1 thumbprint."""
    key_info = _the_one(signature.findall(q(DS, "KeyInfo")), "ds:Signature must hold one ds:KeyInfo.")
    key_info_children = _children(key_info)
    if len(key_info_children) != 1 or key_info_children[0].tag not in (q(WSSE, "SecurityTokenReference"),
                                                                        q(DS, "X509Data")):
        raise _refused(_KEY_INFO_SHAPE, f"KeyInfo holds {[c.tag for c in key_info_children]}")
    [holder] = key_info_children
    if holder.tag == q(DS, "X509Data"):
        return _x509_data(holder)
    parts = _children(holder)
    if len(parts) != 1:
        raise _refused(_KEY_INFO_SHAPE, f"SecurityTokenReference holds {[c.tag for c in parts]}")
    [part] = parts
    if part.tag == q(DS, "X509Data"):
        return _x509_data(part)
    if part.tag == q(WSSE, "KeyIdentifier"):
        kind = _KEY_IDENTIFIER_KINDS.get(part.get("ValueType"))
        identifier = _strict_base64(part, max_bytes=MAX_KEY_IDENTIFIER_BYTES)
        if kind is None or part.get("EncodingType") not in (None, BASE64) or identifier is None:
            raise _refused("wsse:KeyIdentifier must be the base64 of the certificate's Subject Key Identifier "
                           "(ValueType ...#X509SubjectKeyIdentifier) or SHA-1 thumbprint (ValueType "
                           "...#ThumbprintSHA1), at most 64 bytes. " + ACCEPTED_KEY_REFERENCES,
                           f"KeyIdentifier ValueType {part.get('ValueType')!r}")
        return KeyReference(kind, identifier=identifier)
    if part.tag != q(WSSE, "Reference"):
        raise _refused(_KEY_INFO_SHAPE, f"SecurityTokenReference holds {part.tag}")
    uri = part.get("URI") or ""
    if not uri.startswith("#") or part.get("ValueType") not in (None, X509V3):
        raise _refused("wsse:Reference must point by URI=\"#id\" to an X.509 v3 "
                       "wsse:BinarySecurityToken in wsse:Security.")
    tokens = [t for t in security.findall(q(WSSE, "BinarySecurityToken")) if _element_id(t) == uri[1:]]
    token = _the_one(tokens, _KEY_INFO_SHAPE + " The referenced wsse:BinarySecurityToken was not "
                             "found in wsse:Security by its wsu:Id.")
    if token.get("ValueType") != X509V3 or token.get("EncodingType") not in (None, BASE64):
        raise _refused("wsse:BinarySecurityToken must be an X.509 v3 certificate in base64 "
                       "(ValueType X509v3, EncodingType Base64Binary).")
    return KeyReference("certificate", certificate=_certificate(token.text))


def _x509_data(x509_data: etree._Element) -> KeyReference:
    """ds:X509Data: the certificate (zeep's Signature adds its issuer-serial beside it), or only its
    issuer-serial (a reference)."""
    if x509_data.find(q(DS, "X509Certificate")) is None and x509_data.find(q(DS, "X509IssuerSerial")) is not None:
        return _issuer_serial(x509_data)
    return _embedded(x509_data)


def _embedded(x509_data: etree._Element) -> KeyReference:
    certificates = x509_data.findall(q(DS, "X509Certificate"))
    text = _the_one(certificates, "ds:X509Data must hold exactly one ds:X509Certificate.").text
    return KeyReference("certificate", certificate=_certificate(text))


def _issuer_serial(x509_data: etree._Element) -> KeyReference:
    public = ("ds:X509IssuerSerial must hold the issuer's distinguished name (ds:X509IssuerName, as RFC 4514 "
              "writes it) and the certificate's serial number in decimal (ds:X509SerialNumber).")
    if [c.tag for c in _children(x509_data)] != [q(DS, "X509IssuerSerial")]:
        raise _refused("ds:X509Data must hold one ds:X509IssuerSerial and nothing else, or the ds:X509Certificate.")
    [issuer_serial] = _children(x509_data)
    if [c.tag for c in _children(issuer_serial)] != [q(DS, "X509IssuerName"), q(DS, "X509SerialNumber")]:
        raise _refused(public)
    name_text, serial_text = ((c.text or "").strip() for c in _children(issuer_serial))
    if len(name_text) > MAX_ISSUER_NAME_CHARS:  # (parsed in pure Python, before anything is verified)
        raise _refused(f"ds:X509IssuerName must be at most {MAX_ISSUER_NAME_CHARS} characters.",
                       f"X509IssuerName of {len(name_text)} characters")
    issuer = issuer_name(name_text)
    serial = int(serial_text, 10) if serial_text.isdigit() and len(serial_text) <= 50 else None
    if issuer is None or serial is None:
        raise _refused(public, f"X509IssuerSerial {name_text[:200]!r} {serial_text[:60]!r}")
    return KeyReference("issuer-serial", issuer=issuer, serial=serial)


def _certificate(der_text: str | None) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((der_text or "").split()), validate=True))
    except UNUSABLE_CERTIFICATE as exc:
        raise _refused("The signing certificate in the message cannot be read (base64 of a DER X.509 "
                       "certificate expected).", f"signing certificate unreadable: {exc}") from None


def _strict_base64(element: etree._Element, *, max_bytes: int | None = None) -> bytes | None:
    """The element's base64 content, or None if it is missing, empty, not base64, longer than
    ``max_bytes`` decoded, or mixed with child nodes (comments would make the text the verifier reads
    differ from the whole)."""
    if len(element):
        return None
    text = "".join((element.text or "").split())
    if not text or max_bytes is not None and len(text) > 4 * ((max_bytes + 2) // 3):
        return None
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return None if max_bytes is not None and len(decoded) > max_bytes else decoded


def _signer_key(signer: x509.Certificate):
    """(the key, "RSA"/"EC"/other, the byte length of a signature by it -- None if not RSA or EC)."""
    try:  # (parsed only now: a certificate whose key cannot be read still loads)
        key = signer.public_key()
    except UNUSABLE_CERTIFICATE as exc:
        raise _refused("The signing certificate's public key cannot be read (malformed or unsupported).",
                       f"signing certificate's key unreadable: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RSA", (key.key_size + 7) // 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "EC", 2 * ((key.curve.key_size + 7) // 8)
    return key, type(key).__name__, None


_SIGNATURE_SHAPE = ("ds:Signature must hold ds:SignedInfo, ds:SignatureValue and ds:KeyInfo, in that order, "
                    "and nothing else.")
_SIGNED_INFO_SHAPE = ("ds:SignedInfo must hold ds:CanonicalizationMethod, ds:SignatureMethod and two "
                      "ds:Reference elements, in that order.")
_REFERENCE_SHAPE = "Each ds:Reference must hold ds:Transforms, ds:DigestMethod and ds:DigestValue, in that order."
_REFERENCES = ("The signature must reference soap:Body and wsu:Timestamp, each exactly once, as "
               "URI=\"#\" + its wsu:Id.")
_TRANSFORMS = ("Each ds:Reference's Transforms must be exclusive C14N "
               "(http://www.w3.org/2001/10/xml-exc-c14n#), optionally preceded by enveloped-signature.")
_SIGNATURE_METHODS = ("SignatureMethod must be RSA-SHA256 or ECDSA-SHA256 (SHA-1 is refused). Set "
                      f"{RSA_SHA256} (or {ECDSA_SHA256} with an EC key).")
_DIGEST_METHOD = "DigestMethod must be SHA-256 (http://www.w3.org/2001/04/xmlenc#sha256; SHA-1 is refused)."
_KEY_FOR_METHOD = {RSA_SHA256: "RSA", ECDSA_SHA256: "EC"}
_EXC_C14N_OPTIONS = (q(EXC_C14N, "InclusiveNamespaces"),)


def _c14n_problem(element: etree._Element, public: str) -> str | None:
    """An exclusive C14N CanonicalizationMethod or Transform: only ec:InclusiveNamespaces inside."""
    if element.get("Algorithm") != EXC_C14N:
        return public
    for child in _children(element):
        if child.tag not in _EXC_C14N_OPTIONS or child.get("PrefixList") is None or _children(child):
            return public + " Only ec:InclusiveNamespaces PrefixList may appear inside it."
    return None


# Attributes on each element of ds:Signature, wsu:Timestamp and on soap:Body itself, which no schema
# closes: C14N sorts an element's attributes at a cost that grows with their square (50,000 on
# CanonicalizationMethod: 8 s). The admitted shape needs at most four.
MAX_ATTRIBUTES = 16


def _check_canonicalisable(signature: etree._Element, signed_info: etree._Element, timestamp: etree._Element,
                           body: etree._Element) -> None:
    """Bounds on what canonicalising costs, checked before any of it."""
    for element, name in ((body, "soap:Body"), (timestamp, "wsu:Timestamp"), (signed_info, "ds:SignedInfo")):
        if too_many_namespaces(element):
            raise _refused(f"More than {MAX_NAMESPACES_IN_SCOPE} namespaces are declared in scope of {name}.")
    for element in (body, *timestamp.iter(), *signature.iter()):
        if len(element.attrib) > MAX_ATTRIBUTES:
            raise _refused(f"An element of the signature, the Timestamp or soap:Body carries more than "
                           f"{MAX_ATTRIBUTES} attributes.")


REFERENCES_INSPECTED = 8
_C14N_METHOD = ("SignedInfo's CanonicalizationMethod must be exclusive C14N "
                "(http://www.w3.org/2001/10/xml-exc-c14n#).")


def _signed_info_problems(signature: etree._Element, body: etree._Element,
                          timestamp: etree._Element | None) -> list[str]:
    """The mismatches of ds:Signature's SignedInfo with the profile (``timestamp`` None: it is missing,
    and its reference can only be wrong)."""
    if [c.tag for c in _children(signature)] != [q(DS, "SignedInfo"), q(DS, "SignatureValue"), q(DS, "KeyInfo")]:
        return [_SIGNATURE_SHAPE]
    parts = _children(_children(signature)[0])
    if [c.tag for c in parts[:2]] != [q(DS, "CanonicalizationMethod"), q(DS, "SignatureMethod")] \
            or any(c.tag != q(DS, "Reference") for c in parts[2:]):
        return [_SIGNED_INFO_SHAPE]
    c14n, method, *references = parts
    problems = [_Problem(p, f"CanonicalizationMethod {c14n.get('Algorithm')!r}: {p}")
                for p in [_c14n_problem(c14n, _C14N_METHOD)] if p]
    if method.get("Algorithm") not in _KEY_FOR_METHOD or _children(method):
        problems.append(_Problem(_SIGNATURE_METHODS, f"SignatureMethod {method.get('Algorithm')!r}"))
    uris = set()
    for name, element in (("soap:Body", body), ("wsu:Timestamp", timestamp)):
        element_id = None if element is None else _element_id(element)
        if element is not None and element_id is None:
            problems.append(f"{name} must carry wsu:Id, and the signature must reference it by that Id.")
        uris.add("#" + element_id if element_id else f"(the {name})")
    problems += [p for p in _reference_problems(references, uris, []) if p not in problems]
    return problems


def check_signature_shape(signature: etree._Element, body: etree._Element, timestamp: etree._Element,
                          signer: x509.Certificate):
    """Everything the verifier will read must be there, once, and in the accepted algorithms, before
    any cryptography: so that an odd structure is a `SignatureInvalid` that says what to fix (every
    mismatch with the profile at once), never a library error. Returns the signer's public key (RSA
    or EC, matching the SignatureMethod)."""
    if [c.tag for c in _children(signature)] != [q(DS, "SignedInfo"), q(DS, "SignatureValue"), q(DS, "KeyInfo")]:
        raise _refused(_SIGNATURE_SHAPE)
    signed_info, signature_value, _ = _children(signature)
    _check_canonicalisable(signature, signed_info, timestamp, body)
    problems = _signed_info_problems(signature, body, timestamp)
    if problems:
        raise profile_refusal(problems)
    algorithm = _children(signed_info)[1].get("Algorithm")
    key, key_kind, signature_length = _signer_key(signer)
    if _KEY_FOR_METHOD[algorithm] != key_kind:
        raise _refused(f"SignatureMethod is {algorithm.rsplit('#', 1)[-1]} but the certificate's key is "
                       f"{key_kind}: use RSA-SHA256 with an RSA key, ECDSA-SHA256 with an EC key.")
    raw_signature = _strict_base64(signature_value)
    if raw_signature is None:
        raise _refused("ds:SignatureValue is missing, empty or not base64.")
    if signature_length is not None and len(raw_signature) != signature_length:
        raise _refused(f"ds:SignatureValue holds {len(raw_signature)} bytes; a signature by the certificate's "
                       f"{key_kind} key has {signature_length}.")
    return key


def _reference_problems(references: list[etree._Element], uris: set[str],
                        checked: list[tuple[str, etree._Element, bytes]]) -> list[str]:
    """The mismatches of the References with the profile: each points at one of ``uris`` (each exactly
    once), with the accepted transforms and a SHA-256 digest. (its URI, its C14N Transform, its
    digest) of each reference without any is appended to ``checked``."""
    problems: list[str] = []

    def note(problem: str) -> None:
        if problem not in problems:
            problems.append(problem)

    found = [r.get("URI") or "" for r in references]
    if sorted(found) != sorted(uris):
        note(_REFERENCES)
    # (a few are enough to name every kind of mismatch: a SignedInfo of thousands costs no more)
    for reference, uri in zip(references[:REFERENCES_INSPECTED], found):
        if [c.tag for c in _children(reference)] != [q(DS, "Transforms"), q(DS, "DigestMethod"),
                                                     q(DS, "DigestValue")]:
            note(_REFERENCE_SHAPE)
            continue
        transforms_element, digest_method, digest_value = _children(reference)
        transforms = _children(transforms_element)
        algorithms = tuple(t.get("Algorithm") for t in transforms)
        transforms_problem = None
        if any(t.tag != q(DS, "Transform") for t in transforms) or algorithms not in ACCEPTED_TRANSFORMS \
                or (len(transforms) == 2 and _children(transforms[0])):
            transforms_problem = _Problem(_TRANSFORMS, f"Transforms {algorithms!r}")
        else:
            transforms_problem = _c14n_problem(transforms[-1], _TRANSFORMS)
        digest_problem = None
        if digest_method.get("Algorithm") != SHA256 or _children(digest_method):
            digest_problem = _Problem(_DIGEST_METHOD, f"DigestMethod {digest_method.get('Algorithm')!r}")
        digest = _strict_base64(digest_value)
        if digest_problem is None and (digest is None or len(digest) != 32):
            digest_problem = "ds:DigestValue must be the base64 of a SHA-256 digest (32 bytes)."
        for problem in (transforms_problem, digest_problem):
            if problem:
                note(problem)
        if not transforms_problem and not digest_problem:
            checked.append((uri, transforms[-1], digest))
    return problems


def _check_references(references: list[etree._Element], uris: set[str]) -> list[tuple[str, etree._Element, bytes]]:
    """Each Reference points at one of ``uris`` (each exactly once), with the accepted transforms and
    a SHA-256 digest; (its URI, its C14N Transform, its digest) for each."""
    checked: list[tuple[str, etree._Element, bytes]] = []
    problems = _reference_problems(references, uris, checked)
    if problems:
        raise profile_refusal(problems)
    return checked


def _inclusive_prefixes(method: etree._Element) -> list[str] | None:
    """The PrefixList of an exclusive C14N element's first ec:InclusiveNamespaces (as signxml reads it)."""
    inclusive = method.find(q(EXC_C14N, "InclusiveNamespaces"))
    return None if inclusive is None else inclusive.get("PrefixList").split(" ")


def _exc_c14n(element: etree._Element, method: etree._Element) -> bytes:
    """``element`` in exclusive C14N without comments, with ``method``'s inclusive prefixes."""
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False,
                          inclusive_ns_prefixes=_inclusive_prefixes(method))


def _check_validity(signer: x509.Certificate, now: dt.datetime) -> None:
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise _refused("The signing certificate is not valid at this time.",
                       f"signature verification failed: signing certificate valid from "
                       f"{signer.not_valid_before_utc.isoformat()} to {signer.not_valid_after_utc.isoformat()}, "
                       f"not at {now.isoformat()}")


def _check_signature_value(key, raw_signature: bytes, signed_info_c14n: bytes) -> None:
    """The SignatureValue over the canonical SignedInfo, by the signer's key (the method was matched to
    the key's kind, and the value's length to the key's, by `check_signature_shape`)."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw_signature, signed_info_c14n, padding.PKCS1v15(), hashes.SHA256())
        else:  # XML-DSig's ECDSA value is r || s, each the curve's size (RFC 4050)
            half = len(raw_signature) // 2
            key.verify(encode_dss_signature(int.from_bytes(raw_signature[:half], "big"),
                                            int.from_bytes(raw_signature[half:], "big")),
                       signed_info_c14n, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _refused("The signature value does not verify with the certificate in the message.",
                       "signature verification failed: the SignatureValue does not verify over SignedInfo") from None


def verify(envelope: etree._Element, signer: x509.Certificate, *, now: dt.datetime | None = None) -> VerifiedMessage:
    """Verify the WS-Security signature with ``signer`` (already validated by the caller).

    XML-DSig core validation (https://www.w3.org/TR/xmldsig-core1/#sec-CoreValidation) on the one
    shape `check_signature_shape` admits, with lxml's C14N and cryptography's primitives: the
    SignatureValue over the canonical SignedInfo first, then each Reference of the SignedInfo *as
    signed* (re-parsed from those canonical bytes) by digesting its target's exclusive C14N. The
    targets are found by the structure, not by searching ids (their wsu:Id values are unique in the
    document: `check_unique_ids`), and the Signature lies in neither, so enveloped-signature removes
    nothing. What is returned is re-parsed from the very bytes that were digested, so comments and
    anything else outside the canonical form never reach the caller. `tests/wire/test_wsse_signxml.py`
    holds this to signxml's verifier, which did the same work by serialising and parsing the whole
    envelope again for each reference."""
    check_unique_ids(envelope)
    _, signature, timestamp, body = _structure(envelope)
    key = check_signature_shape(signature, body, timestamp, signer)
    _check_validity(signer, now or dt.datetime.now(dt.timezone.utc))
    signed_info, signature_value, _ = _children(signature)
    c14n_method = _children(signed_info)[0]
    parser = thread_parser()
    try:
        signed_info_c14n = _exc_c14n(signed_info, c14n_method)
        _check_signature_value(key, _strict_base64(signature_value), signed_info_c14n)
        targets = {"#" + _element_id(body): body, "#" + _element_id(timestamp): timestamp}
        # The References as signed (re-parsed from the bytes the signature covers), checked again there.
        as_signed = etree.fromstring(signed_info_c14n, parser).findall(q(DS, "Reference"))
        signed = {}
        for uri, transform, digest in _check_references(as_signed, set(targets)):
            target = targets[uri]
            target_c14n = _exc_c14n(target, transform)
            if not hmac.compare_digest(hashlib.sha256(target_c14n).digest(), digest):
                name = "soap:Body" if target is body else "wsu:Timestamp"
                raise _refused(f"The digest of {name} does not match its ds:DigestValue: it was changed after "
                               "signing, or not canonicalised with exclusive C14N.",
                               f"signature verification failed: digest mismatch for {name}")
            signed[target.tag] = etree.fromstring(target_c14n, parser)
    except etree.LxmlError as exc:  # C14N refused (e.g. a relative namespace URI), or unparseable
        raise _refused("The signature could not be verified: check it against the published "
                       "WS-SecurityPolicy.", f"signature verification failed: {exc}") from None
    # The message's identity for replay detection is what was signed, not how the signature is
    # spelled: base64 text and ECDSA values (s -> n-s) can be re-spelled and still verify, but the
    # canonical SignedInfo (which holds the Body and Timestamp digests) cannot change. Always without
    # inclusive prefixes, as it has been named since the first release (names are kept in the database).
    signature_id_c14n = (signed_info_c14n if _inclusive_prefixes(c14n_method) is None else
                         etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False))
    return VerifiedMessage(
        body=signed[q(SOAP_ENV, "Body")],
        timestamp=signed[q(WSU, "Timestamp")],
        signer=signer,
        signature_id=hashlib.sha256(signature_id_c14n).hexdigest(),
    )


def _duration(seconds: int) -> str:
    return f"{seconds // 60} minutes" if seconds % 60 == 0 and seconds >= 120 else f"{seconds} s"


def check_timestamp(timestamp: etree._Element, now: dt.datetime, *, max_lifetime_s: int, skew_s: int,
                    accept_longer_expires: bool = False) -> tuple[dt.datetime, dt.datetime]:
    """The signed Timestamp's Created and Expires must be present, in a zone, and cover ``now``
    (with ``skew_s`` either way). Returns (Created, the moment after which the message is no longer
    accepted, before skew).

    A message lives at most ``max_lifetime_s`` from Created. With ``accept_longer_expires`` a later
    Expires is not an error (node-soap always sends 10 minutes; WSS4J sets no cap): the message is
    treated as expiring at Created + ``max_lifetime_s``. Without it (the SDK checking the gateway's
    own responses), a longer lifetime is refused.
    """
    limit = _duration(max_lifetime_s)
    try:
        created = parse_time(timestamp.findtext(q(WSU, "Created")))
        expires = parse_time(timestamp.findtext(q(WSU, "Expires")))
        latest_by_age = created + dt.timedelta(seconds=max_lifetime_s)
    except (ValueError, OverflowError) as exc:
        raise MessageExpired(f"unreadable Timestamp: {exc}", public_message=(
            "wsu:Timestamp must carry Created and Expires as UTC date-times (e.g. 2026-01-31T12:00:00Z)."
        )) from None
    skew = dt.timedelta(seconds=skew_s)
    clock = f"the gateway's time is {format_time(now)}"
    if expires <= created:
        raise MessageExpired(f"Timestamp Expires {format_time(expires)} <= Created {format_time(created)}",
                             public_message="wsu:Timestamp Expires must be later than Created.")
    if expires > latest_by_age and not accept_longer_expires:
        raise MessageExpired(f"Timestamp lifetime exceeds {max_lifetime_s} s",
                             public_message=f"wsu:Timestamp lives longer than {limit} (Expires - Created).")
    if created > now + skew:
        raise MessageExpired(f"Timestamp Created {format_time(created)} is in the future",
                             public_message=f"wsu:Timestamp Created is in the future (check the clock): {clock}.")
    accepted_until = min(expires, latest_by_age)
    if now - skew > accepted_until:
        if expires <= latest_by_age:
            raise MessageExpired(f"Timestamp expired at {format_time(expires)}", public_message=(
                f"wsu:Timestamp has expired (Expires has passed; check the clock): {clock}."))
        raise MessageExpired(f"Timestamp Created {format_time(created)} is older than {max_lifetime_s} s",
                             public_message=(f"wsu:Timestamp is older than {limit} (Created + {max_lifetime_s} s "
                                             f"has passed): create it just before sending; {clock}."))
    return created, accepted_until
