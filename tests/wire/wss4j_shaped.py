"""Requests signed the way WSS4J's WSSecSignature writes them (1.6 as the distributions package it,
and 2.x), made with python-xmlsec: the key named by a wsse:SecurityTokenReference holding
ds:X509Data/ds:X509IssuerSerial (WSS4J's default, keyIdentifierType IssuerSerial), a
wsse:KeyIdentifier with the certificate's Subject Key Identifier (SKIKeyIdentifier), or its SHA-1
thumbprint (Thumbprint, WSS 1.1); ds:KeyInfo and the reference carry ids of their own, and every
SignedInfo's exclusive C14N carries ec:InclusiveNamespaces (WSS4J's addInclusivePrefixes). WSS4J 1.6's other
defaults: RSA-SHA1, SHA-1 digests, and only the Body signed (no Timestamp unless asked for)."""

from __future__ import annotations

import base64
import hashlib
import uuid

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from contactgate_wire import wsse
from contactgate_wire.soap import DS, SOAP_ENV, WSSE, WSU, q

SKI = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509SubjectKeyIdentifier"
THUMBPRINT = "http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#ThumbprintSHA1"
KEY_IDENTIFIERS = ("IssuerSerial", "SKIKeyIdentifier", "Thumbprint")


def key_reference(kind: str, certificate: x509.Certificate) -> etree._Element:
    """The wsse:SecurityTokenReference WSS4J writes for ``kind`` (one of KEY_IDENTIFIERS)."""
    reference = etree.Element(q(WSSE, "SecurityTokenReference"), nsmap={"wsse": WSSE, "wsu": WSU})
    reference.set(q(WSU, "Id"), f"STR-{uuid.uuid4().hex}")
    if kind == "IssuerSerial":
        issuer_serial = etree.SubElement(etree.SubElement(reference, q(DS, "X509Data"), nsmap={"ds": DS}),
                                         q(DS, "X509IssuerSerial"))
        etree.SubElement(issuer_serial, q(DS, "X509IssuerName")).text = certificate.issuer.rfc4514_string()
        etree.SubElement(issuer_serial, q(DS, "X509SerialNumber")).text = str(certificate.serial_number)
        return reference
    if kind == "SKIKeyIdentifier":
        value_type = SKI
        value = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    else:
        value_type = THUMBPRINT
        value = hashlib.sha1(certificate.public_bytes(Encoding.DER)).digest()
    identifier = etree.SubElement(reference, q(WSSE, "KeyIdentifier"),
                                  {"EncodingType": wsse.BASE64, "ValueType": value_type})
    identifier.text = base64.b64encode(value).decode()
    return reference


def wss4j_signed(unsigned: bytes, key_pem: bytes, cert_pem: bytes, *, key_identifier: str = "IssuerSerial",
                 signature_method=xmlsec.Transform.RSA_SHA256, digest_method=xmlsec.Transform.SHA256,
                 timestamp: bool = True) -> bytes:
    """``unsigned`` (a request zeep built, without a Security header) signed as WSS4J signs it:
    with ``timestamp`` a wsu:Timestamp signed with the Body (the gateway's profile), without it only
    the Body (WSS4J 1.6's default action "Signature")."""
    envelope = etree.fromstring(unsigned)
    security = wsse.security_header(envelope)
    targets = [envelope.find(q(SOAP_ENV, "Body"))]
    if timestamp:
        targets.append(wsse.add_timestamp(envelope))
    signature = xmlsec.template.create(envelope, xmlsec.Transform.EXCL_C14N, signature_method, ns="ds")
    signature.set("Id", f"SIG-{uuid.uuid4().hex}")
    security.insert(0, signature)
    xmlsec.template.transform_add_c14n_inclusive_namespaces(signature.find(f".//{q(DS, 'CanonicalizationMethod')}"),
                                                            ["soap"])
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
    for target in targets:
        target_id = f"id-{uuid.uuid4().hex}"
        target.set(q(WSU, "Id"), target_id)
        reference = xmlsec.template.add_reference(signature, digest_method, uri="#" + target_id)
        xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N)
        context.register_id(target, "Id", WSU)
    key_info = xmlsec.template.ensure_key_info(signature, id=f"KI-{uuid.uuid4().hex}")
    context.sign(signature)
    key_info.append(key_reference(key_identifier, x509.load_pem_x509_certificate(cert_pem)))
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def without_security(signed_request: bytes) -> bytes:
    """A request the SDK built and signed, with its Security header taken off."""
    envelope = etree.fromstring(signed_request)
    header = envelope.find(q(SOAP_ENV, "Header"))
    for security in header.findall(q(WSSE, "Security")):
        header.remove(security)
    return etree.tostring(envelope)
