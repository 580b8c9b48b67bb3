"""WS-Security verification in-process (no server): what other clients send is accepted where it
is safe, every degenerate signature structure is a `SignatureInvalid` (never another exception),
and each refusal's public message names what was wrong with the caller's own security header and
nothing else. The same checks run end to end in tests/gateway/pipeline and tests/interop."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
import xmlsec
from lxml import etree

from contactgate_wire.faults import MessageExpired, Refusal, SignatureInvalid
from contactgate_wire import wsse
from contactgate_wire.soap import CG, DS, MAX_NAMESPACES_IN_SCOPE, SOAP_ENV, WSU, new_envelope, q
from gateway.trust import pki
from tests.wire.degenerate import DEGENERATE, REFERENCE, SECURITY, SIGNATURE_VALUE, set_text
from tests.wire.signing import ENVELOPED, EXC_C14N, sign, xmlsec_key
from tests.wire.wss4j_shaped import KEY_IDENTIFIERS, SKI, key_reference

NOW = dt.datetime.now(dt.timezone.utc)

# Text from libraries or internals that must never reach a caller.
INTERNAL_WORDS = ("signxml", "Expected to find", "XPath", "Traceback", "{http", "lxml", "cryptography",
                  "NoneType", "binascii", "Incorrect padding", "fingerprint")


def _request() -> etree._Element:
    payload = etree.Element(q(CG, "FindChild"), nsmap={"cg": CG})
    etree.SubElement(payload, q(CG, "FamilyName")).text = "Smith"
    return new_envelope(payload)


def _signed(material, kind="rsa", **options) -> etree._Element:
    key_pem, cert_pem, _ = material[kind]
    if kind == "ec":
        options.setdefault("method", xmlsec.Transform.ECDSA_SHA256)
    signed = sign(_request(), xmlsec_key(key_pem, cert_pem), **options)
    # Nodes python-xmlsec creates are not found by lxml's find() until the tree is re-parsed.
    return etree.fromstring(etree.tostring(signed))


def _verify(envelope: etree._Element) -> wsse.VerifiedMessage:
    """What the gateway does: the certificate named in the message, then the signature (the
    certificate's trust is the pipeline's business and is tested there)."""
    envelope = etree.fromstring(etree.tostring(envelope))
    return wsse.verify(envelope, wsse.extract_signer_certificate(envelope))


def _refusal(envelope: etree._Element, expected: type[Refusal] = SignatureInvalid) -> Refusal:
    with pytest.raises(expected) as raised:
        _verify(envelope)
    message = raised.value.public_message
    for word in INTERNAL_WORDS:
        assert word not in message, message
    return raised.value


# ---- accepted ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("binary_token", [True, False], ids=["binary-token", "x509-data"])
def test_zeep_style_signatures_verify(material, kind, binary_token):
    verified = _verify(_signed(material, kind, binary_token=binary_token))
    assert verified.payload.tag == q(CG, "FindChild")


@pytest.mark.parametrize("body, timestamp", [
    ((ENVELOPED, EXC_C14N), (ENVELOPED, EXC_C14N)),
    ((EXC_C14N,), (ENVELOPED, EXC_C14N)),  # node-soap with signatureAlgorithm rsa-sha256 sends this
], ids=["both", "timestamp-only"])
def test_enveloped_signature_before_exclusive_c14n_is_accepted(material, body, timestamp):
    verified = _verify(_signed(material, transforms=body, timestamp_transforms=timestamp))
    assert verified.payload.findtext(q(CG, "FamilyName")) == "Smith"


def test_enveloped_signature_is_a_no_op_for_body_and_timestamp(material):
    """The Signature is a sibling of the Timestamp and outside the Body: removing it changes
    neither, so each digest is that of the element's exclusive C14N alone."""
    envelope = _signed(material, transforms=(ENVELOPED, EXC_C14N))
    by_id = {e.get(q(WSU, "Id")): e for e in envelope.iter() if e.get(q(WSU, "Id"))}
    for reference in envelope.findall(REFERENCE):
        target = by_id[reference.get("URI")[1:]]
        expected = hashlib.sha256(etree.tostring(target, method="c14n", exclusive=True)).digest()
        assert base64.b64decode(reference.findtext(q(DS, "DigestValue"))) == expected


def test_inclusive_namespaces_prefix_list_in_exclusive_c14n_is_accepted(material):
    """WSS4J writes <ec:InclusiveNamespaces PrefixList="..."/> inside the exclusive C14N transform."""
    envelope = _signed(material, inclusive_prefixes="soap")
    assert envelope.find(f"{REFERENCE}/{q(DS, 'Transforms')}/{q(DS, 'Transform')}/"
                         "{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces") is not None
    assert _verify(envelope)


# ---- degenerate signature structures -------------------------------------------------------------

@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_signature_structure_is_signature_invalid_with_a_fixable_message(material, name):
    mutate, expected = DEGENERATE[name]
    envelope = _signed(material)
    mutate(envelope)
    refusal = _refusal(envelope)
    assert expected in refusal.public_message


def _ecdsa_value(raw: bytes):
    return set_text(SIGNATURE_VALUE, base64.b64encode(raw).decode())


@pytest.mark.parametrize("raw", [b"", b"\x00" * 64, b"\x01" * 63, b"\x01" * 65, b"\xff" * 64, b"\x00" * 4096],
                         ids=["empty", "zero-r-s", "63-bytes", "65-bytes", "r-s-above-order", "huge"])
def test_ecdsa_signature_values_of_any_shape_are_signature_invalid(material, raw):
    envelope = _signed(material, "ec")
    _ecdsa_value(raw)(envelope)
    _refusal(envelope)


def test_body_changed_after_signing_says_the_body_digest_does_not_match(material):
    envelope = _signed(material)
    envelope.find(f"{q(SOAP_ENV, 'Body')}/{q(CG, 'FindChild')}/{q(CG, 'FamilyName')}").text = "Jones"
    assert "soap:Body" in _refusal(envelope).public_message


def test_wrong_signature_value_says_it_does_not_verify_with_the_certificate(material):
    envelope = _signed(material)
    value = bytearray(base64.b64decode(envelope.findtext(SIGNATURE_VALUE)))
    value[10] ^= 1
    envelope.find(SIGNATURE_VALUE).text = base64.b64encode(bytes(value)).decode()
    refusal = _refusal(envelope)
    assert "does not verify with the certificate in the message" in refusal.public_message
    assert "SignatureValue does not verify over SignedInfo" in refusal.detail  # the audit says which check


# ---- the common mistakes, each with its own message ----------------------------------------------

def test_sha1_signature_method_is_named(material):
    envelope = _signed(material, method=xmlsec.Transform.RSA_SHA1)
    assert "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256 (SHA-1 is refused)" in _refusal(envelope).public_message


def test_sha1_digest_is_named(material):
    envelope = _signed(material, digest=xmlsec.Transform.SHA1)
    assert "DigestMethod must be SHA-256" in _refusal(envelope).public_message


def test_missing_timestamp_is_named(material):
    envelope = _signed(material, add_timestamp=False)
    assert "wsu:Timestamp" in _refusal(envelope).public_message


def test_unsigned_body_is_named(material):
    envelope = _signed(material, sign_body=False)
    assert "must reference soap:Body and wsu:Timestamp" in _refusal(envelope).public_message


def test_body_without_wsu_id_is_named(material):
    envelope = _signed(material)
    body = envelope.find(q(SOAP_ENV, "Body"))
    body.set("Id", body.attrib.pop(q(WSU, "Id")))  # xml-crypto's default: an unqualified Id
    assert "soap:Body must carry wsu:Id" in _refusal(envelope).public_message


def test_duplicate_id_is_named_without_echoing_it(material):
    envelope = _signed(material)
    body_id = envelope.find(q(SOAP_ENV, "Body")).get(q(WSU, "Id"))
    etree.SubElement(envelope.find(SECURITY), "{urn:x}Decoy").set(q(WSU, "Id"), body_id)
    refusal = _refusal(envelope)
    assert "more than once" in refusal.public_message and body_id not in refusal.public_message


@pytest.mark.parametrize("attribute", [q(WSU, "Id"), "Id", "ID", "id", "{http://www.w3.org/XML/1998/namespace}id"])
def test_every_kind_of_id_attribute_counts_as_a_duplicate(material, attribute):
    envelope = _signed(material)
    body_id = envelope.find(q(SOAP_ENV, "Body")).get(q(WSU, "Id"))
    decoy = etree.SubElement(envelope.find(q(SOAP_ENV, "Body"))[0], "{urn:x}Decoy")
    decoy.set(attribute, body_id)
    assert "more than once" in _refusal(envelope).public_message


def test_two_id_attributes_of_one_element_with_one_value_are_a_duplicate(material):
    envelope = _signed(material)
    payload = envelope.find(q(SOAP_ENV, "Body"))[0]
    payload.set("Id", "same")
    payload.set("{http://www.w3.org/XML/1998/namespace}id", "same")
    assert "more than once" in _refusal(envelope).public_message


def test_no_security_header_is_named(material):
    envelope = _request()
    assert "wsse:Security" in _refusal(envelope).public_message


# ---- the Timestamp -------------------------------------------------------------------------------

def _timestamp(created: str | None, expires: str | None) -> etree._Element:
    timestamp = etree.Element(q(WSU, "Timestamp"))
    if created is not None:
        etree.SubElement(timestamp, q(WSU, "Created")).text = created
    if expires is not None:
        etree.SubElement(timestamp, q(WSU, "Expires")).text = expires
    return timestamp


def _at(seconds: float) -> str:
    return wsse.format_time(NOW + dt.timedelta(seconds=seconds))


def _check(created, expires, **options):
    options.setdefault("max_lifetime_s", 300)
    options.setdefault("skew_s", 60)
    return wsse.check_timestamp(_timestamp(created, expires), NOW, **options)


def test_longer_expires_is_accepted_until_created_plus_the_maximum_lifetime():
    created, accepted_until = _check(_at(-10), _at(590), accept_longer_expires=True)  # node-soap: 10 minutes
    assert accepted_until == created + dt.timedelta(seconds=300)
    assert abs(created - (NOW - dt.timedelta(seconds=10))) < dt.timedelta(milliseconds=1)


def test_shorter_expires_is_kept():
    _, accepted_until = _check(_at(-10), _at(50), accept_longer_expires=True)
    assert accepted_until == wsse.parse_time(_at(50))


def test_longer_expires_is_refused_where_the_caller_asks_for_strictness():
    """The SDK checks the gateway's own responses strictly (the default)."""
    with pytest.raises(MessageExpired) as raised:
        _check(_at(-10), _at(590))
    assert "longer than 5 minutes" in raised.value.public_message


def test_long_lived_timestamp_older_than_five_minutes_is_refused():
    with pytest.raises(MessageExpired) as raised:
        _check(_at(-400), _at(200), accept_longer_expires=True)
    assert "older than 5 minutes" in raised.value.public_message


def test_older_than_five_minutes_allows_the_clock_skew():
    _check(_at(-330), _at(270), accept_longer_expires=True)  # 30 s past Created + 300 s, skew 60 s


@pytest.mark.parametrize("created, expires, expected", [
    (_at(120), _at(420), "Created is in the future (check the clock)"),
    (_at(-300), _at(-90), "has expired"),
    (_at(0), _at(0), "Expires must be later than Created"),
    (_at(10), _at(0), "Expires must be later than Created"),
    (None, _at(100), "must carry Created and Expires"),
    (_at(0), None, "must carry Created and Expires"),
    ("", _at(100), "must carry Created and Expires"),
    ("2026-01-01T12:00:00", _at(100), "must carry Created and Expires"),   # no zone
    ("yesterday", _at(100), "must carry Created and Expires"),
    ("0001-01-01T00:00:00+01:00", _at(100), "must carry Created and Expires"),  # before year 1 in UTC
    (_at(0), "9999-12-31T23:59:59Z", None),   # accepted (capped); no overflow near the end of time
    (_at(0), "9999-12-31T23:59:59-01:00", "must carry Created and Expires"),
], ids=["future", "expired", "zero-lifetime", "negative-lifetime", "no-created", "no-expires", "empty-created",
        "no-zone", "not-a-time", "underflow", "end-of-time", "overflow"])
def test_timestamp_refusals_say_what_is_wrong(created, expires, expected):
    if expected is None:
        _check(created, expires, accept_longer_expires=True)
        return
    with pytest.raises(MessageExpired) as raised:
        _check(created, expires, accept_longer_expires=True)
    assert expected in raised.value.public_message


def test_future_and_expired_messages_give_the_gateway_time():
    with pytest.raises(MessageExpired) as raised:
        _check(_at(3600), _at(3900), accept_longer_expires=True)
    assert wsse.format_time(NOW)[:16] in raised.value.public_message


# ---- the pipeline step: how long a message is remembered -------------------------------------------

@pytest.mark.parametrize("lifetime_s, remembered_s", [(600, 300 + 60), (120, 120 + 60)],
                         ids=["node-soap-10-minutes", "2-minutes"])
def test_replay_window_ends_when_the_message_can_no_longer_be_accepted(material, lifetime_s, remembered_s):
    """exchange.timestamp_expires (how long replay remembers the message) is
    min(Expires, Created + 5 minutes) + skew: a longer Expires does not lengthen it."""
    from types import SimpleNamespace

    from gateway.pipeline.context import Exchange
    from gateway.pipeline.wssecurity import verify_security

    created = NOW.replace(microsecond=0)
    envelope = etree.fromstring(etree.tostring(_signed(material, created=created, lifetime_s=lifetime_s)))
    exchange = Exchange(raw=b"", size=0, soap_action=None, peer_der=None, received_at=created,
                        request_digest=None, tls_fingerprint=pki.fingerprint(material["rsa"][2]),
                        envelope=envelope, operation="FindChild")
    services = SimpleNamespace(settings=SimpleNamespace(max_timestamp_lifetime_s=300, clock_skew_s=60))
    verify_security(exchange, services)
    assert exchange.timestamp_expires == created + dt.timedelta(seconds=remembered_s)
    assert exchange.payload.tag == q(CG, "FindChild")


# ---- bounds on what canonicalising may cost --------------------------------------------------------

def _with_declarations(envelope: etree._Element, count: int) -> etree._Element:
    """``count`` more namespace declarations on the Envelope (outside what exclusive C14N signs)."""
    declarations = b"".join(b' xmlns:p%d="urn:p:%d"' % (i, i) for i in range(count))
    return etree.fromstring(etree.tostring(envelope).replace(b"<soap:Envelope", b"<soap:Envelope" + declarations, 1))


def test_namespaces_in_scope_of_what_is_canonicalised_are_bounded(material):
    """lxml's C14N of an element copies every namespace in scope from its ancestors, at a cost that
    grows with their square: more than MAX_NAMESPACES_IN_SCOPE is refused before any C14N."""
    envelope = _signed(material)
    in_scope = max(len(envelope.find(path).nsmap) for path in (
        q(SOAP_ENV, "Body"), f"{SECURITY}/{q(WSU, 'Timestamp')}", f"{SECURITY}/{q(DS, 'Signature')}/{q(DS, 'SignedInfo')}"))
    assert _verify(_with_declarations(envelope, MAX_NAMESPACES_IN_SCOPE - in_scope))
    refusal = _refusal(_with_declarations(envelope, MAX_NAMESPACES_IN_SCOPE - in_scope + 1))
    assert refusal.public_message.startswith(f"More than {MAX_NAMESPACES_IN_SCOPE} namespaces are declared in scope of ")


@pytest.mark.parametrize("path", [f"{SECURITY}/{q(DS, 'Signature')}/{q(DS, 'SignedInfo')}/{q(DS, 'CanonicalizationMethod')}",
                                  f"{SECURITY}/{q(WSU, 'Timestamp')}", q(SOAP_ENV, "Body")],
                         ids=["canonicalization-method", "timestamp", "body"])
def test_attributes_on_what_no_schema_closes_are_bounded(material, path):
    """C14N sorts an element's attributes at a cost that grows with their square; the signature's
    elements, the Timestamp and soap:Body may carry at most wsse.MAX_ATTRIBUTES."""
    envelope = _signed(material)
    element = envelope.find(path)
    for i in range(wsse.MAX_ATTRIBUTES + 1 - len(element.attrib)):
        element.set(f"{{urn:extra}}a{i}", "x")
    assert "more than 16 attributes" in _refusal(envelope).public_message
    del element.attrib["{urn:extra}a0"]
    assert "more than 16 attributes" not in _refusal(envelope).public_message  # (changed after signing)


@pytest.mark.parametrize("text", ["unsigned text", "\u00a0", "\u3000", "\u0085"],
                         ids=["words", "no-break-space", "ideographic-space", "next-line"])
@pytest.mark.parametrize("container", ["Envelope", "Header", "Security"])
def test_text_between_the_envelope_parts_is_refused(material, container, text):
    """Envelope, Header and Security hold elements only; text among them is signed by nothing.
    Only XML's whitespace (space, tab, CR, LF) may lie between them, not other Unicode spaces."""
    envelope = _signed(material)
    element = {"Envelope": envelope, "Header": envelope.find(q(SOAP_ENV, "Header")),
               "Security": envelope.find(SECURITY)}[container]
    element[0].tail = text
    assert "must hold elements only" in _refusal(envelope).public_message
    element[0].tail = " \t\r\n"
    assert _verify(envelope)


# ---- key references and the profile's mismatches named together (issue 29) ----------------------

def _with_key_info(envelope: etree._Element, reference: etree._Element) -> etree._Element:
    """The signed envelope with its (unsigned) KeyInfo holding ``reference`` instead."""
    key_info = envelope.find(f".//{q(DS, 'KeyInfo')}")
    for child in list(key_info):
        key_info.remove(child)
    key_info.append(reference)
    return etree.fromstring(etree.tostring(envelope))


@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_a_wss4j_key_reference_is_read_and_names_only_its_certificate(material, key_identifier):
    _, cert_pem, _ = material["rsa"]
    certificate = pki.load_cert_pem(cert_pem)
    other = pki.load_cert_pem(material["ec"][1])
    envelope = _with_key_info(_signed(material), key_reference(key_identifier, certificate))
    reference, problems = wsse.profile_problems(envelope)
    assert problems == [] and reference.certificate is None
    assert reference.names(certificate) and not reference.names(other)
    # the SDK (checking the gateway's answers) resolves no reference: the certificate must be carried
    assert "must be carried in the message" in _refusal(envelope).public_message


def test_issuer_serial_directly_in_key_info_is_a_reference_too(material):
    certificate = pki.load_cert_pem(material["rsa"][1])
    x509_data = key_reference("IssuerSerial", certificate)[0]
    reference, problems = wsse.profile_problems(_with_key_info(_signed(material), x509_data))
    assert problems == [] and (reference.kind, reference.serial) == ("issuer-serial", certificate.serial_number)


@pytest.mark.parametrize("value_type, text", [(SKI, "not base64!"), ("urn:unknown", "AAAA"), (SKI, "")],
                         ids=["not-base64", "unknown-value-type", "empty"])
def test_an_unusable_key_identifier_is_refused_naming_the_accepted_references(material, value_type, text):
    reference = key_reference("SKIKeyIdentifier", pki.load_cert_pem(material["rsa"][1]))
    identifier = reference[0]
    identifier.set("ValueType", value_type)
    identifier.text = text
    _, problems = wsse.profile_problems(_with_key_info(_signed(material), reference))
    [problem] = problems
    assert "wsse:KeyIdentifier must be" in problem and "ds:X509IssuerSerial" in problem


def test_every_profile_mismatch_is_named_in_one_refusal(material):
    envelope = _signed(material, method=xmlsec.Transform.RSA_SHA1, digest=xmlsec.Transform.SHA1)
    envelope.find(f".//{q(DS, 'CanonicalizationMethod')}").set("Algorithm", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
    refusal = _refusal(envelope)
    message = refusal.public_message
    assert message.startswith("The signature does not follow the profile in 3 ways: (1) ")
    for named in ("CanonicalizationMethod must be exclusive C14N", "SignatureMethod must be RSA-SHA256",
                  "DigestMethod must be SHA-256"):
        assert named in message
