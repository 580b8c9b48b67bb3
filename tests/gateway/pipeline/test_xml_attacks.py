"""XML-level attacks: entities, size, depth, signature wrapping, duplicate ids, weak or partial
signatures, a lying SOAPAction. Each must be refused with the contract's code, audited once, change
nothing, and leak nothing (`assert_refused` from attacks.py checks all of it)."""

from __future__ import annotations

import copy
import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import xmlsec
from lxml import etree
from zeep.wsse.signature import _sign_envelope_with_key_binary

from contactgate_wire import wsse
from contactgate_wire.soap import CG, DS, MAX_NAMESPACES_IN_SCOPE, SOAP_ENV, WSSE, WSU, q
from tests.gateway.pipeline.attacks import (
    assert_post_refused, assert_refused, baseline, fault_message, find_kwargs, resign, submit_kwargs,
)
from tests.wire import signing
from tests.wire.degenerate import DEGENERATE
from tests.support import unique_name

ATTACKER = "urn:attacker"
SECURITY = f"{q(SOAP_ENV, 'Header')}/{q(WSSE, 'Security')}"
WRAPPING_CODES = ("SignatureInvalid", "MalformedMessage")
MiB = 1024 * 1024


def _parse(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def _bytes(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _with_doctype(signed: bytes, family: str, doctype: str, reference: str) -> bytes:
    """Put ``doctype`` after the XML declaration and ``reference`` where the family name was."""
    declaration, rest = signed.split(b"?>", 1)
    assert family.encode() in rest
    return declaration + b"?>\n" + doctype.encode() + b"\n" + rest.replace(family.encode(), reference.encode())


def _org_key(client_dir: Path) -> xmlsec.Key:
    key = xmlsec.Key.from_memory((client_dir / "key.pem").read_bytes(), xmlsec.KeyFormat.PEM, None)
    key.load_cert_from_memory((client_dir / "cert.pem").read_bytes(), xmlsec.KeyFormat.PEM)
    return key


# ---- entities --------------------------------------------------------------------------------

XXE = '<!DOCTYPE soap-env:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
EXTERNAL_DTD = '<!DOCTYPE soap-env:Envelope SYSTEM "file:///etc/passwd">'
PARAMETER_ENTITY = ('<!DOCTYPE soap-env:Envelope [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>')
BILLION_LAUGHS = (
    '<!DOCTYPE soap-env:Envelope [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)


def _passwd_fragments() -> list[bytes]:
    try:
        lines = Path("/etc/passwd").read_bytes().splitlines()
    except OSError:
        lines = []
    return [b"root:x:0:0", b"/bin/bash", b"nologin", *(line for line in lines[:5] if line)]


@pytest.mark.parametrize("doctype, reference", [
    (XXE, "&x;"), (EXTERNAL_DTD, "Nobody"), (PARAMETER_ENTITY, "Nobody"), (BILLION_LAUGHS, "&lol9;"),
], ids=["xxe-file", "external-dtd", "parameter-entity", "billion-laughs"])
def test_doctype_and_entities_are_refused_without_leaking_files(gateway, clients, doctype, reference):
    la = clients("la")
    family = unique_name("Entity")
    signed = la.build_request("FindChild", **find_kwargs(FamilyName=family))
    data = _with_doctype(signed, family, doctype, reference)
    fault = assert_post_refused(gateway, la, "FindChild", data, "MalformedMessage", org_code="LA")
    text = etree.tostring(fault)
    for fragment in _passwd_fragments():
        assert fragment not in text
    assert b"lollollol" not in text


def _post_watching_fifo(client, operation: str, data: bytes, fifo: Path) -> tuple[tuple, bool]:
    """Post ``data`` while watching ``fifo``: a writer can open a FIFO without blocking only while a
    reader has it open, so a successful open means the gateway opened the file. Closing the writer
    at once gives the reader EOF, so the gateway is never left hanging."""
    opened = False
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.post_raw, operation, data)
        deadline = time.monotonic() + 20
        while not future.done() and time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader yet
                time.sleep(0.01)
                continue
            opened = True
            os.close(fd)
        return future.result(timeout=30), opened


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE soap-env:Envelope SYSTEM "file://{fifo}">',
    '<!DOCTYPE soap-env:Envelope [<!ENTITY % p SYSTEM "file://{fifo}"> %p;]>',
], ids=["external-subset", "parameter-entity"])
def test_parser_never_opens_a_file_named_in_a_doctype(gateway, clients, tmp_path, doctype):
    fifo = tmp_path / "probe.fifo"
    os.mkfifo(fifo)
    la = clients("la")
    family = unique_name("Fifo")
    data = _with_doctype(la.build_request("FindChild", **find_kwargs(FamilyName=family)), family,
                         doctype.format(fifo=fifo), "Nobody")
    seen = {}

    def attack():
        result, seen["opened"] = _post_watching_fifo(la, "FindChild", data, fifo)
        return result

    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, attack, "MalformedMessage", org_code="LA", sent=data)
    assert not seen["opened"], "the gateway opened a local file named in the DOCTYPE"


# ---- size and depth --------------------------------------------------------------------------

DEFAULT_LIMIT = 8 * MiB


def _oversized(la) -> bytes:
    """A validly signed SubmitUpdates padded (outside the signed parts) to ~9 MiB."""
    signed = la.build_request("SubmitUpdates", **submit_kwargs())
    head, tail = signed.split(b"?>", 1)
    data = head + b"?>" + b"<!--" + b"x" * (9 * MiB) + b"-->" + tail
    assert len(data) > 9 * MiB
    return data


def test_message_over_the_size_limit_is_refused_and_the_fault_bound_to_it(gateway, clients):
    la = clients("la")
    data = _oversized(la)
    assert_post_refused(gateway, la, "SubmitUpdates", data, "TooLarge", org_code="LA")


def test_deeply_nested_body_is_refused(gateway, clients):
    la = clients("la")

    def nest(envelope):
        payload = next(iter(envelope.find(q(SOAP_ENV, "Body"))))
        node = payload
        for _ in range(200):
            node = etree.SubElement(node, f"{{{CG}}}Nest")

    data = resign(la.signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()), nest)
    assert_post_refused(gateway, la, "SubmitUpdates", data, ("MalformedMessage", "SchemaInvalid"),
                        org_code="LA")


def test_namespaces_beyond_the_bound_in_scope_of_the_request_are_refused(gateway, clients):
    """Declarations on the Envelope are outside what is signed, but validating and canonicalising
    the elements below them costs with the square of their number: over MAX_NAMESPACES_IN_SCOPE the
    message is refused before the schema looks at it."""
    la = clients("la")
    data = la.build_request("SubmitUpdates", **submit_kwargs())
    declarations = b"".join(b' xmlns:p%d="urn:p:%d"' % (i, i) for i in range(MAX_NAMESPACES_IN_SCOPE))
    envelope_start = data.index(b"Envelope", data.index(b"<", data.index(b"?>") if b"?>" in data else 0))
    data = data[:envelope_start + len(b"Envelope")] + declarations + data[envelope_start + len(b"Envelope"):]
    assert_post_refused(gateway, la, "SubmitUpdates", data, "MalformedMessage", org_code="LA")


def test_text_between_the_envelope_parts_is_refused(gateway, clients):
    la = clients("la")
    data = la.build_request("SubmitUpdates", **submit_kwargs())
    closing = data.rindex(b"</", 0, data.rindex(b"</"))  # the Body's end tag, before the Envelope's
    end = data.index(b">", closing) + 1
    data = data[:end] + b"not signed by anybody" + data[end:]
    assert_post_refused(gateway, la, "SubmitUpdates", data, "MalformedMessage", org_code="LA")


# ---- signature wrapping and ids --------------------------------------------------------------

def _evil_body(la, family: str) -> etree._Element:
    """A Body (no wsu:Id) holding a different SubmitUpdates: what the attacker wants applied."""
    unsigned = _parse(la.build_request("SubmitUpdates", sign=False, **submit_kwargs(family)))
    body = unsigned.find(q(SOAP_ENV, "Body"))
    body.attrib.pop(q(WSU, "Id"), None)
    return copy.deepcopy(body)


def _wrap_in_header(envelope, evil):
    header, body = envelope.find(q(SOAP_ENV, "Header")), envelope.find(q(SOAP_ENV, "Body"))
    etree.SubElement(header, f"{{{ATTACKER}}}Wrapper").append(body)
    envelope.append(evil)


def _wrap_in_security(envelope, evil):
    security, body = envelope.find(SECURITY), envelope.find(q(SOAP_ENV, "Body"))
    etree.SubElement(security, f"{{{ATTACKER}}}Wrapper").append(body)
    envelope.append(evil)


def _wrap_in_security_and_steal_id(envelope, evil):
    body_id = envelope.find(q(SOAP_ENV, "Body")).get(q(WSU, "Id"))
    _wrap_in_security(envelope, evil)
    evil.set(q(WSU, "Id"), body_id)


def _wrap_in_signature_object(envelope, evil):
    signature = envelope.find(f"{SECURITY}/{q(DS, 'Signature')}")
    body = envelope.find(q(SOAP_ENV, "Body"))
    etree.SubElement(signature, q(DS, "Object")).append(body)
    envelope.append(evil)


@pytest.mark.parametrize("wrap", [_wrap_in_header, _wrap_in_security, _wrap_in_security_and_steal_id,
                                  _wrap_in_signature_object],
                         ids=["in-header", "in-security", "in-security-id-stolen", "in-ds-object"])
def test_signature_wrapping_is_refused_and_nothing_applied(gateway, clients, wrap):
    la = clients("la")
    envelope = _parse(la.build_request("SubmitUpdates", **submit_kwargs()))
    wrap(envelope, _evil_body(la, unique_name("Wrapped")))
    data = _bytes(envelope)
    assert_post_refused(gateway, la, "SubmitUpdates", data, WRAPPING_CODES, org_code="LA")


def _decoy_with_body_id(envelope):
    return envelope.find(q(SOAP_ENV, "Body")).get(q(WSU, "Id"))


def _decoy_with_timestamp_id(envelope):
    return envelope.find(f"{SECURITY}/{q(WSU, 'Timestamp')}").get(q(WSU, "Id"))


@pytest.mark.parametrize("stolen_id", [_decoy_with_body_id, _decoy_with_timestamp_id],
                         ids=["body-id", "timestamp-id"])
def test_duplicate_wsu_id_is_refused(gateway, clients, stolen_id):
    la = clients("la")
    envelope = _parse(la.build_request("SubmitUpdates", **submit_kwargs()))
    security = envelope.find(SECURITY)
    decoy = etree.SubElement(security, f"{{{ATTACKER}}}Decoy")
    decoy.set(q(WSU, "Id"), stolen_id(envelope))
    data = _bytes(envelope)
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, WRAPPING_CODES, org_code="LA")
    message = fault_message(fault)
    assert "appears more than once" in message and decoy.get(q(WSU, "Id")) not in message


# ---- partial, missing and weak signatures ----------------------------------------------------

def test_signature_covering_only_the_body_is_refused(gateway, clients):
    la = clients("la")
    envelope = _parse(la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    _sign_envelope_with_key_binary(envelope, _org_key(gateway.certs["la"]), xmlsec.Transform.RSA_SHA256,
                                   xmlsec.Transform.SHA256)  # no Timestamp yet: only the Body is referenced
    wsse.add_timestamp(envelope)  # present, fresh, unsigned
    references = envelope.findall(f".//{{{DS}}}SignedInfo/{{{DS}}}Reference")
    assert [r.get("URI") for r in references] == ["#" + envelope.find(q(SOAP_ENV, "Body")).get(q(WSU, "Id"))]
    data = _bytes(envelope)
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "SignatureInvalid", org_code="LA")
    assert "The signature must reference soap:Body and wsu:Timestamp" in fault_message(fault)


def test_unsigned_message_with_a_timestamp_is_refused(gateway, clients):
    la = clients("la")
    envelope = _parse(la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    wsse.add_timestamp(envelope)
    data = _bytes(envelope)
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "SignatureInvalid", org_code="LA")
    assert fault_message(fault) == "The message must hold exactly one ds:Signature, in wsse:Security."


@pytest.mark.parametrize("method, digest, message", [
    (xmlsec.Transform.RSA_SHA1, xmlsec.Transform.SHA1, "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256"),
    (xmlsec.Transform.RSA_SHA1, xmlsec.Transform.SHA256, "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256"),
    (xmlsec.Transform.RSA_SHA256, xmlsec.Transform.SHA1, "DigestMethod must be SHA-256"),
], ids=["rsa-sha1+sha1", "rsa-sha1+sha256", "rsa-sha256+sha1"])
def test_sha1_signature_or_digest_is_refused(gateway, clients, method, digest, message):
    la = clients("la")
    envelope = _parse(la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    wsse.add_timestamp(envelope)
    _sign_envelope_with_key_binary(envelope, _org_key(gateway.certs["la"]), method, digest)
    data = _bytes(envelope)
    assert b"sha1" in data
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "SignatureInvalid", org_code="LA")
    assert message in fault_message(fault) and "SHA-1 is refused" in fault_message(fault)


# ---- degenerate signature values (issue 5) ---------------------------------------------------

def _emptied(element_name: str):
    def mutate(envelope):
        for element in envelope.iter(q(DS, element_name)):
            element.text = None
    return mutate


def _removed(element_name: str):
    def mutate(envelope):
        for element in list(envelope.iter(q(DS, element_name))):
            element.getparent().remove(element)
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_emptied("SignatureValue"), "ds:SignatureValue is missing, empty or not base64."),
    (_emptied("DigestValue"), "ds:DigestValue must be the base64 of a SHA-256 digest (32 bytes)."),
    (_removed("SignatureValue"), "ds:Signature must hold ds:SignedInfo, ds:SignatureValue and ds:KeyInfo"),
    (_removed("DigestValue"), "Each ds:Reference must hold ds:Transforms, ds:DigestMethod and ds:DigestValue"),
], ids=["empty-signature-value", "empty-digest-value", "no-signature-value", "no-digest-value"])
def test_empty_or_missing_signature_or_digest_value_is_signature_invalid(gateway, clients, mutate, message):
    """Issue 5: an empty SignatureValue reached b64decode(None) in signxml and was answered 503."""
    la = clients("la")
    envelope = _parse(la.build_request("FindChild", **find_kwargs()))
    mutate(envelope)
    data = _bytes(envelope)
    fault = assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA")
    assert fault_message(fault).startswith(message)


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_signature_structure_is_signature_invalid_never_unavailable(gateway, clients, name):
    """Odd base64, odd KeyInfo, missing or doubled parts, unknown algorithms, huge values: each is the
    caller's own bad input, refused with SignatureInvalid and a message saying what to fix."""
    mutate, expected = DEGENERATE[name]
    la = clients("la")
    envelope = _parse(la.build_request("FindChild", **find_kwargs()))
    mutate(envelope)
    data = _bytes(envelope)
    fault = assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA")
    assert expected in fault_message(fault)


# ---- reference transforms: enveloped-signature only where it is a no-op ---------------------------

def _signed_with_transforms(gateway, la, transforms) -> bytes:
    envelope = _parse(la.build_request("FindChild", sign=False, **find_kwargs()))
    signing.sign(envelope, _org_key(gateway.certs["la"]), transforms=transforms)
    return _bytes(envelope)


def test_enveloped_signature_transform_is_accepted_for_body_and_timestamp(gateway, clients):
    """node-soap's default transforms; the Signature is outside the Body and beside the Timestamp."""
    la = clients("la")
    data = _signed_with_transforms(gateway, la, (signing.ENVELOPED, signing.EXC_C14N))
    assert data.count(b"xmldsig#enveloped-signature") == 2
    status, answer = la.post_raw("FindChild", data)
    assert status == 200 and answer.find(f".//{{{CG}}}FindChildResponse") is not None


@pytest.mark.parametrize("transforms", [
    (signing.ENVELOPED,),
    (xmlsec.Transform.C14N,),
    (xmlsec.Transform.EXCL_C14N_COMMENTS,),
], ids=["enveloped-alone", "inclusive-c14n", "exc-c14n-with-comments"])  # more in tests/wire
def test_other_reference_transforms_are_refused(gateway, clients, transforms):
    la = clients("la")
    data = _signed_with_transforms(gateway, la, transforms)
    fault = assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA")
    assert "Transforms must be exclusive C14N" in fault_message(fault)


# ---- SOAPAction ------------------------------------------------------------------------------

@pytest.mark.parametrize("operation, claimed", [("FindChild", "SubmitUpdates"),
                                                ("SubmitUpdates", "GetContacts")])
def test_soap_action_not_matching_the_body_is_refused(gateway, clients, operation, claimed):
    la = clients("la")
    kwargs = find_kwargs() if operation == "FindChild" else submit_kwargs()
    data = la.build_request(operation, **kwargs)
    assert_post_refused(gateway, la, claimed, data, "MalformedMessage", org_code="LA")


def test_server_log_has_no_unexpected_failures(gateway):
    """Runs last in this module: none of the attacks above should have hit the catch-all."""
    assert "unexpected failure while handling a message" not in (gateway.home / "server.log").read_text(
        errors="replace")
