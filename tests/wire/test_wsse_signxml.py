"""`wsse.verify` held to signxml's verifier, which the gateway used until 2026-12-05.

`wsse.verify` does XML-DSig core validation itself, on the one shape `check_signature_shape` admits
(lxml's C14N, cryptography's RSA and ECDSA), because signxml serialised and parsed the whole envelope
again for each reference (most of verifying a SubmitUpdates of 100). Here both verifiers judge the
same messages — signed by xmlsec in every admitted variant, then changed after signing in ways that
must and must not matter — and must agree: both accept, returning the same canonical Body and
Timestamp and the same message name, or both refuse, for the same reason. Where signxml failed with
a library error (not a refusal), `wsse.verify` must refuse."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest
import xmlsec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from contactgate_wire import wsse
from contactgate_wire.faults import Refusal, SignatureInvalid
from contactgate_wire.soap import CG, DS, SOAP_ENV, WSSE, new_envelope, parse_untrusted, q, thread_parser
from tests.wire.signing import ENVELOPED, EXC_C14N, sign, to_bytes, xmlsec_key

SIGNXML_CONFIG = SignatureConfiguration(
    require_x509=True, location=f"./{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/", expect_references=2,
    signature_methods=frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}))


def _request() -> etree._Element:
    payload = etree.Element(q(CG, "FindChild"), nsmap={"cg": CG})
    etree.SubElement(payload, q(CG, "FamilyName")).text = "Smith"
    etree.SubElement(payload, q(CG, "GivenName")).text = "Ann"
    return new_envelope(payload)


def signed_message(material, kind="rsa", *, binary_token=True, enveloped=False, prefixes=None,
                   signed_info_prefixes=None) -> bytes:
    key_pem, cert_pem, _ = material[kind]
    key = xmlsec_key(key_pem, cert_pem)
    transforms = (ENVELOPED, EXC_C14N) if enveloped else (EXC_C14N,)
    method = xmlsec.Transform.ECDSA_SHA256 if kind == "ec" else xmlsec.Transform.RSA_SHA256
    return to_bytes(sign(_request(), key, method=method, transforms=transforms, binary_token=binary_token,
                         inclusive_prefixes=prefixes, signed_info_prefixes=signed_info_prefixes))


# ---- the two verdicts -------------------------------------------------------------------------------

def _accepted(body: etree._Element, timestamp: etree._Element, signature_id: str) -> tuple:
    return "accepted", etree.tostring(body), etree.tostring(timestamp), signature_id


def _kind_of(refusal: Refusal) -> tuple:
    message = refusal.public_message
    if message.startswith("The digest of "):
        return "refused", "digest", message
    if "does not verify with the certificate" in message:
        return "refused", "signature", message
    return "refused", "shape", message


def signxml_verdict(data: bytes) -> tuple:
    """The gateway's verification as it was: the same shape checks, then signxml."""
    envelope = parse_untrusted(data)
    try:
        signer = wsse.extract_signer_certificate(envelope)
        wsse.check_unique_ids(envelope)
        _, signature, timestamp, body = wsse._structure(envelope)
        wsse.check_signature_shape(signature, body, timestamp, signer)
    except SignatureInvalid as refusal:
        return _kind_of(refusal)
    try:
        results = XMLVerifier().verify(envelope, x509_cert=signer, expect_config=SIGNXML_CONFIG,
                                       validate_schema=False, parser=thread_parser())
    except InvalidDigest as exc:
        name = _reference_name(signature, body, str(exc))
        return "refused", "digest", (f"The digest of {name} does not match its ds:DigestValue: it was changed "
                                     "after signing, or not canonicalised with exclusive C14N.")
    except InvalidSignature:
        return "refused", "signature", "The signature value does not verify with the certificate in the message."
    except (SignXMLException, ValueError) as exc:
        return "refused", "other", type(exc).__name__
    except Exception as exc:  # a library error, which the gateway answered as an internal error
        return "error", type(exc).__name__
    signed = {r.signed_xml.tag: r.signed_xml for r in results}
    signed_info = signature.find(q(DS, "SignedInfo"))
    name = hashlib.sha256(etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)).hexdigest()
    return _accepted(signed[q(SOAP_ENV, "Body")], signed[q(wsse.WSU, "Timestamp")], name)


def _reference_name(signature, body, message: str) -> str:
    references = signature.findall(f"{q(DS, 'SignedInfo')}/{q(DS, 'Reference')}")
    index = int(re.search(r"reference (\d+)", message).group(1))
    return "soap:Body" if references[index].get("URI")[1:] == body.get(q(wsse.WSU, "Id")) else "wsu:Timestamp"


def our_verdict(data: bytes) -> tuple:
    envelope = parse_untrusted(data)
    try:
        verified = wsse.verify(envelope, wsse.extract_signer_certificate(envelope))
    except SignatureInvalid as refusal:
        return _kind_of(refusal)
    return _accepted(verified.body, verified.timestamp, verified.signature_id)


def assert_same_verdict(data: bytes) -> tuple:
    ours, theirs = our_verdict(data), signxml_verdict(data)
    if theirs[0] == "error":
        assert ours[0] == "refused", (ours, theirs)
    elif theirs[1] == "other":  # signxml's own wording: only the outcome is compared
        assert ours[0] == "refused", (ours, theirs)
    else:
        assert ours == theirs
    return ours


# ---- changes made after signing -----------------------------------------------------------------------

def _sub(pattern: bytes, replacement: bytes, count: int = 1):
    def change(data: bytes) -> bytes:
        changed = re.sub(pattern, replacement, data, count=count)
        return changed
    return change


def _signature_bit_flipped(data: bytes) -> bytes:
    match = re.search(rb"(<(?:\w+:)?SignatureValue>)([^<]+)(<)", data)
    raw = bytearray(base64.b64decode(match.group(2)))
    raw[len(raw) // 3] ^= 0x10
    return data[:match.start(2)] + base64.b64encode(bytes(raw)) + data[match.end(2):]


def _digests_swapped(data: bytes) -> bytes:
    values = re.findall(rb"<(?:\w+:)?DigestValue>([^<]+)</", data)
    if len(values) != 2:
        return data
    first, second = values
    return data.replace(first, b"@@", 1).replace(second, first, 1).replace(b"@@", second, 1)


# name -> (change, whether the message still verifies)
CHANGES = {
    "body-text-changed": (_sub(rb">Smith<", b">Jones<"), False),
    "body-text-split-by-a-comment": (_sub(rb">Smith<", b">Sm<!-- x -->ith<"), True),
    "body-text-by-character-reference": (_sub(rb">Smith<", b">&#83;mith<"), True),
    "body-text-as-cdata": (_sub(rb">Smith<", b"><![CDATA[Smith]]><"), True),
    "body-whitespace-added": (_sub(rb"</cg:FamilyName>", b"</cg:FamilyName>\n  "), False),
    "body-comment-between-elements": (_sub(rb"</cg:FamilyName>", b"</cg:FamilyName><!-- note -->"), True),
    "body-redundant-namespace-declaration": (_sub(rb"<cg:GivenName>", b'<cg:GivenName xmlns:cg="' + CG.encode() + b'">'), True),
    "body-unused-namespace-declaration": (_sub(rb"<cg:GivenName>", b'<cg:GivenName xmlns:x="urn:unused">'), True),
    "body-attribute-added": (_sub(rb"<cg:GivenName>", b'<cg:GivenName x="1">'), False),
    "envelope-unused-namespace": (_sub(rb"<soap:Envelope ", b'<soap:Envelope xmlns:extra="urn:extra" '), True),
    "envelope-xml-lang": (_sub(rb"<soap:Envelope ", b'<soap:Envelope xml:lang="en" '), True),
    "envelope-default-namespace": (_sub(rb"<soap:Envelope ", b'<soap:Envelope xmlns="urn:default" '), True),
    "payload-prefix-renamed": (lambda d: d.replace(b"cg:", b"c2:").replace(b"xmlns:cg=", b"xmlns:c2="), False),
    "soap-prefix-renamed": (lambda d: d.replace(b"soap:", b"s:").replace(b"xmlns:soap=", b"xmlns:s="), False),
    "timestamp-expires-changed": (_sub(rb"<wsu:Expires>(\d{4})", b"<wsu:Expires>2099"), False),
    "timestamp-created-changed": (_sub(rb"<wsu:Created>(\d{4})", b"<wsu:Created>2000"), False),
    "signature-value-bit-flipped": (_signature_bit_flipped, False),
    "digest-values-swapped": (_digests_swapped, False),
    "comment-in-signed-info": (_sub(rb"(<(?:\w+:)?SignatureMethod [^>]*/>)", rb"\g<1><!-- c -->"), True),
    "whitespace-in-signed-info": (_sub(rb"(<(?:\w+:)?SignatureMethod [^>]*/>)", b"\\g<1>\n"), False),
    "prefix-list-added-to-a-reference": (_sub(
        rb'(<(?:\w+:)?Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")/>',
        b'\\g<1>><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" '
        b'PrefixList="soap"/></Transform>'), False),
    "prefix-list-added-to-signed-info": (_sub(
        rb'(<(?:\w+:)?CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")/>',
        b'\\g<1>><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" '
        b'PrefixList="soap"/></CanonicalizationMethod>'), False),
    "text-after-body": (_sub(rb"</soap:Body>", b"</soap:Body>unsigned"), False),
    "text-after-timestamp": (_sub(rb"</wsu:Timestamp>", b"</wsu:Timestamp>unsigned"), False),
    "text-after-signature": (_sub(rb"</Signature>", b"</Signature>unsigned"), False),
    "signature-namespace-redeclared": (_sub(rb"<SignedInfo>", b'<SignedInfo xmlns="http://www.w3.org/2000/09/xmldsig#">'), True),
}

SIGNINGS = {
    "rsa": {}, "ec": {"kind": "ec"}, "x509-data": {"binary_token": False}, "enveloped": {"enveloped": True},
    "prefix-list": {"prefixes": "soap cg"}, "prefix-list-default": {"prefixes": "#default soap"},
    "signed-info-prefix-list": {"signed_info_prefixes": "soap"},
    "ec-everything": {"kind": "ec", "enveloped": True, "prefixes": "soap", "signed_info_prefixes": "wsu"},
}


@pytest.mark.parametrize("signing", list(SIGNINGS))
def test_every_admitted_way_of_signing_verifies_alike(material, signing):
    assert assert_same_verdict(signed_message(material, **SIGNINGS[signing]))[0] == "accepted"


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_change_after_signing_is_judged_alike(material, name):
    change, verifies = CHANGES[name]
    original = signed_message(material)
    data = change(original)
    assert data != original
    verdict = assert_same_verdict(data)
    assert (verdict[0] == "accepted") is verifies, verdict


def test_a_comment_splitting_signed_text_never_splits_what_the_caller_reads(material):
    """The comment is outside the canonical form, so the digest holds; the Body handed on is the
    canonical one, whose FamilyName is the whole signed text (read from the parsed message it
    would be "Sm")."""
    data = CHANGES["body-text-split-by-a-comment"][0](signed_message(material))
    envelope = parse_untrusted(data)
    assert envelope.find(f".//{q(CG, 'FamilyName')}").text == "Sm"
    verified = wsse.verify(envelope, wsse.extract_signer_certificate(envelope))
    assert verified.payload.findtext(q(CG, "FamilyName")) == "Smith"
    assert not list(verified.body.iter(etree.Comment))


def test_a_comment_before_the_canonicalization_method_changes_nothing(material):
    """The comment is outside the canonical SignedInfo; the method's PrefixList still applies."""
    data = _sub(rb"<SignedInfo>", b"<SignedInfo><!-- first -->")(signed_message(material, signed_info_prefixes="soap"))
    assert b"<!-- first -->" in data
    assert assert_same_verdict(data)[0] == "accepted"


def test_an_id_attribute_of_another_namespace_is_not_an_id(material):
    """Where they differ, on purpose: signxml looked references up by any attribute whose local name
    is Id and refused a foreign-namespace e:Id repeating the Body's id as ambiguous. `wsse.verify`
    finds the Body and Timestamp by the structure (wsu:Id, Id, ID, id and xml:id values must be
    unique), so such an attribute names nothing, and what is returned is the signed Body."""
    original = signed_message(material)
    body_id = re.search(rb'<soap:Body [^>]*?Id="([^"]+)"', original).group(1)
    data = original.replace(b"<wsse:Security ", b'<wsse:Security xmlns:e="urn:e" e:Id="' + body_id + b'" ', 1)
    assert signxml_verdict(data)[:2] == ("refused", "other")
    ours = our_verdict(data)
    assert ours == our_verdict(original)


def test_a_signature_with_signed_info_prefixes_keeps_its_old_name(material):
    """The message's name (replay key, kept in the database) is the SignedInfo's exclusive C14N
    without inclusive prefixes, as it always was, even where the signature covers it with them."""
    data = signed_message(material, signed_info_prefixes="soap")
    envelope = parse_untrusted(data)
    signed_info = envelope.find(f".//{q(DS, 'SignedInfo')}")
    plain = hashlib.sha256(etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)).hexdigest()
    assert our_verdict(data)[3] == plain


def test_a_signer_certificate_out_of_its_validity_is_refused(material):
    data = signed_message(material)
    envelope = parse_untrusted(data)
    signer = wsse.extract_signer_certificate(envelope)
    for moment in (signer.not_valid_after_utc + dt.timedelta(seconds=1),
                   signer.not_valid_before_utc - dt.timedelta(seconds=1)):
        with pytest.raises(SignatureInvalid) as raised:
            wsse.verify(envelope, signer, now=moment)
        assert raised.value.public_message == "The signing certificate is not valid at this time."


def test_a_relative_namespace_uri_is_refused_not_an_error(material):
    """libxml2's C14N refuses relative namespace URIs; signxml let that error escape."""
    data = _sub(rb"<cg:GivenName>", b'<cg:GivenName xmlns:rel="relative/uri" rel:a="1">')(signed_message(material))
    assert assert_same_verdict(data)[0] == "refused"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signing=st.sampled_from(sorted(SIGNINGS)),
       changes=st.lists(st.sampled_from(sorted(CHANGES)), max_size=3, unique=True))
def test_any_mix_of_signing_and_changes_is_judged_alike(material, signing, changes):
    data = signed_message(material, **SIGNINGS[signing])
    for name in changes:
        data = CHANGES[name][0](data)
    assert_same_verdict(data)
