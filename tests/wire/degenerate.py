"""Degenerate ds:Signature structures: each mutates a signed envelope (zeep's BinarySignature shape)
into something a careless or hostile client might send, with the text the gateway's fault message
must contain. Used in-process (test_wsse.py) and against the live gateway (test_xml_attacks.py)."""

from __future__ import annotations

import base64
import copy

from lxml import etree

from contactgate_wire.soap import DS, SOAP_ENV, WSSE, q
from tests.wire.signing import ENVELOPED, EXC_C14N

SECURITY = f"{q(SOAP_ENV, 'Header')}/{q(WSSE, 'Security')}"
SIGNATURE = f"{SECURITY}/{q(DS, 'Signature')}"
SIGNED_INFO = f"{SIGNATURE}/{q(DS, 'SignedInfo')}"
REFERENCE = f"{SIGNED_INFO}/{q(DS, 'Reference')}"


def set_text(path, text):
    def mutate(envelope):
        envelope.find(path).text = text
    return mutate


def _remove(path):
    def mutate(envelope):
        element = envelope.find(path)
        element.getparent().remove(element)
    return mutate


def _duplicate(path):
    def mutate(envelope):
        element = envelope.find(path)
        element.addnext(copy.deepcopy(element))
    return mutate


def _set_attribute(path, name, value):
    def mutate(envelope):
        if value is None:
            envelope.find(path).attrib.pop(name, None)
        else:
            envelope.find(path).set(name, value)
    return mutate


def _append(path, element_factory):
    def mutate(envelope):
        envelope.find(path).append(element_factory())
    return mutate


def _transforms(*algorithms):
    def mutate(envelope):
        for transforms in envelope.findall(f"{REFERENCE}/{q(DS, 'Transforms')}"):
            for transform in list(transforms):
                transforms.remove(transform)
            for algorithm in algorithms:
                etree.SubElement(transforms, q(DS, "Transform"), Algorithm=algorithm)
    return mutate


def _key_value():
    key_value = etree.Element(q(DS, "KeyValue"))
    rsa_value = etree.SubElement(key_value, q(DS, "RSAKeyValue"))
    etree.SubElement(rsa_value, q(DS, "Modulus")).text = base64.b64encode(b"\xff" * 100_000).decode()
    etree.SubElement(rsa_value, q(DS, "Exponent")).text = "AQAB"
    return key_value


def _der_key_value():
    element = etree.Element("{http://www.w3.org/2009/xmldsig11#}DEREncodedKeyValue")
    element.text = base64.b64encode(b"\x30\x03\x02\x01\x01").decode()
    return element


SIGNATURE_VALUE = f"{SIGNATURE}/{q(DS, 'SignatureValue')}"
DIGEST_VALUE = f"{REFERENCE}/{q(DS, 'DigestValue')}"
DIGEST_METHOD = f"{REFERENCE}/{q(DS, 'DigestMethod')}"
SIGNATURE_METHOD = f"{SIGNED_INFO}/{q(DS, 'SignatureMethod')}"
C14N_METHOD = f"{SIGNED_INFO}/{q(DS, 'CanonicalizationMethod')}"
KEY_INFO = f"{SIGNATURE}/{q(DS, 'KeyInfo')}"
TOKEN = f"{SECURITY}/{q(WSSE, 'BinarySecurityToken')}"

DEGENERATE = {
    # SignatureValue
    "signature-value-empty-element": (set_text(SIGNATURE_VALUE, None), "SignatureValue"),
    "signature-value-blank": (set_text(SIGNATURE_VALUE, "  \n "), "SignatureValue"),
    "signature-value-not-base64": (set_text(SIGNATURE_VALUE, "!!!not base64!!!"), "SignatureValue"),
    "signature-value-odd-base64": (set_text(SIGNATURE_VALUE, "abc"), "SignatureValue"),
    "signature-value-short": (set_text(SIGNATURE_VALUE, base64.b64encode(b"x" * 10).decode()), "SignatureValue"),
    "signature-value-huge": (set_text(SIGNATURE_VALUE, base64.b64encode(b"\xff" * 70_000).decode()),
                             "SignatureValue"),
    "signature-value-missing": (_remove(SIGNATURE_VALUE), "ds:Signature must hold"),
    "signature-value-twice": (_duplicate(SIGNATURE_VALUE), "ds:Signature must hold"),
    # DigestValue and DigestMethod
    "digest-value-empty-element": (set_text(DIGEST_VALUE, None), "DigestValue"),
    "digest-value-not-base64": (set_text(DIGEST_VALUE, "%%%"), "DigestValue"),
    "digest-value-wrong-length": (set_text(DIGEST_VALUE, base64.b64encode(b"x" * 20).decode()), "DigestValue"),
    "digest-value-missing": (_remove(DIGEST_VALUE), "ds:Reference must hold"),
    "digest-method-missing": (_remove(DIGEST_METHOD), "ds:Reference must hold"),
    "digest-method-no-algorithm": (_set_attribute(DIGEST_METHOD, "Algorithm", None), "DigestMethod must be SHA-256"),
    "digest-method-unknown": (_set_attribute(DIGEST_METHOD, "Algorithm", "urn:nonsense"),
                              "DigestMethod must be SHA-256"),
    "digest-method-sha512": (_set_attribute(DIGEST_METHOD, "Algorithm", "http://www.w3.org/2001/04/xmlenc#sha512"),
                             "DigestMethod must be SHA-256"),
    # SignedInfo
    "signature-method-missing": (_remove(SIGNATURE_METHOD), "ds:SignedInfo must hold"),
    "signature-method-no-algorithm": (_set_attribute(SIGNATURE_METHOD, "Algorithm", None),
                                      "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256"),
    "signature-method-hmac": (_set_attribute(SIGNATURE_METHOD, "Algorithm",
                                             "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"),
                              "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256"),
    "signature-method-ecdsa-with-rsa-key": (_set_attribute(SIGNATURE_METHOD, "Algorithm",
                                                           "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"),
                                            "the certificate's key"),
    "c14n-missing": (_remove(C14N_METHOD), "ds:SignedInfo must hold"),
    "c14n-inclusive": (_set_attribute(C14N_METHOD, "Algorithm", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"),
                       "exclusive C14N"),
    "signed-info-missing": (_remove(f"{SIGNATURE}/{q(DS, 'SignedInfo')}"), "ds:Signature must hold"),
    "reference-without-uri": (_set_attribute(REFERENCE, "URI", None), "must reference soap:Body and wsu:Timestamp"),
    "reference-to-the-document": (_set_attribute(REFERENCE, "URI", ""), "must reference soap:Body and wsu:Timestamp"),
    "reference-xpointer": (_set_attribute(REFERENCE, "URI", "#xpointer(/)"),
                           "must reference soap:Body and wsu:Timestamp"),
    "third-reference": (_duplicate(REFERENCE), "must reference soap:Body and wsu:Timestamp"),
    # Transforms
    "no-transforms": (_transforms(), "Transforms"),
    "enveloped-alone": (_transforms(ENVELOPED.href), "Transforms"),
    "c14n-then-enveloped": (_transforms(EXC_C14N.href, ENVELOPED.href), "Transforms"),
    "c14n-twice": (_transforms(ENVELOPED.href, EXC_C14N.href, EXC_C14N.href), "Transforms"),
    "inclusive-c14n": (_transforms("http://www.w3.org/TR/2001/REC-xml-c14n-20010315"), "Transforms"),
    "exc-c14n-with-comments": (_transforms("http://www.w3.org/2001/10/xml-exc-c14n#WithComments"), "Transforms"),
    "base64": (_transforms("http://www.w3.org/2000/09/xmldsig#base64", EXC_C14N.href), "Transforms"),
    "xpath": (_transforms("http://www.w3.org/TR/1999/REC-xpath-19991116", EXC_C14N.href), "Transforms"),
    "transforms-missing": (_remove(f"{REFERENCE}/{q(DS, 'Transforms')}"), "ds:Reference must hold"),
    # KeyInfo and the token
    "key-value-with-huge-modulus": (_append(KEY_INFO, _key_value), "ds:KeyInfo must hold"),
    "der-encoded-key-value": (_append(KEY_INFO, _der_key_value), "ds:KeyInfo must hold"),
    "key-info-missing": (_remove(KEY_INFO), "ds:Signature must hold"),
    "key-info-empty": (_remove(f"{KEY_INFO}/{q(WSSE, 'SecurityTokenReference')}"), "ds:KeyInfo must hold"),
    "token-empty": (set_text(TOKEN, None), "signing certificate in the message cannot be read"),
    "token-not-base64": (set_text(TOKEN, "***"), "signing certificate in the message cannot be read"),
    "token-not-a-certificate": (set_text(TOKEN, base64.b64encode(b"\x30\x03\x02\x01\x01").decode()),
                                "signing certificate in the message cannot be read"),
    "token-missing": (_remove(TOKEN), "ds:KeyInfo must hold"),
    # the Signature element
    "ds-object-appended": (_append(SIGNATURE, lambda: etree.Element(q(DS, "Object"))), "ds:Signature must hold"),
    "manifest-appended": (_append(SIGNATURE, lambda: etree.Element(q(DS, "Manifest"))), "ds:Signature must hold"),
}
