"""Step 4 (gateway/pipeline/wssecurity.py) with the SOAP stacks' own defaults, through mutual TLS and
the real gateway (issue 29): the key references WSS4J writes are accepted when they name a
certificate registered to the TLS client's organisation and refused, in words saying which references
are accepted, when they do not (the same words whether or not the certificate is someone else's);
every profile mistake of a message is named in one fault; XML Encryption is refused by name."""

from __future__ import annotations

import base64
import datetime as dt

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from connectors.client import GatewayClient
from contactgate_wire import wsse
from contactgate_wire.soap import CG, DS, SOAP_ENV, WSSE, q
from tests.gateway.pipeline.attacks import assert_post_refused, fault_message, find_kwargs, resign
from gateway.db import certificates
from gateway.trust import pki
from tests.wire.wss4j_shaped import KEY_IDENTIFIERS, key_reference, wss4j_signed, without_security

import pytest

ACCEPTED_REFERENCES = ("wsse:BinarySecurityToken", "ds:X509Certificate", "ds:X509IssuerSerial",
                       "#X509SubjectKeyIdentifier", "#ThumbprintSHA1")
ENCRYPTION_REFUSED = "XML Encryption is not used: the channel is already encrypted by mutual TLS; sign only."


def _wss4j_find_child(gateway, client: GatewayClient, signer: str, **options) -> bytes:
    """A FindChild built by ``client`` and signed WSS4J's way with the key of ``signer``'s directory."""
    directory = gateway.certs[signer]
    return wss4j_signed(without_security(client.build_request("FindChild", **find_kwargs())),
                        (directory / "key.pem").read_bytes(), (directory / "cert.pem").read_bytes(), **options)


def _key_info_changed(data: bytes, tag: str, text: str) -> bytes:
    """The first ``tag`` in ds:KeyInfo given ``text`` (KeyInfo is not signed: the signature still verifies)."""
    envelope = etree.fromstring(data)
    envelope.find(f".//{q(DS, 'KeyInfo')}//{tag}").text = text
    return etree.tostring(envelope)


def test_an_issuer_name_longer_than_1_kib_is_refused_before_it_is_parsed(gateway, clients):
    """A 100 KB ds:X509IssuerName (1 MB took 8.8 s to parse): refused by its length, saying the limit."""
    la = clients("la")
    data = _key_info_changed(_wss4j_find_child(gateway, la, "la", key_identifier="IssuerSerial"),
                             q(DS, "X509IssuerName"), "CN=" + "a," * 50_000 + "O=x")
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA"))
    assert "at most 1024 characters" in message


def test_a_key_identifier_longer_than_64_bytes_is_refused_as_not_an_identifier(gateway, clients):
    la = clients("la")
    data = _key_info_changed(_wss4j_find_child(gateway, la, "la", key_identifier="SKIKeyIdentifier"),
                             q(WSSE, "KeyIdentifier"), base64.b64encode(b"\x01" * 65).decode())
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA"))
    assert message.startswith("wsse:KeyIdentifier must be the base64 of")



@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_wss4j_key_reference_to_the_organisations_own_certificate_is_accepted(gateway, clients, key_identifier):
    la = clients("la")
    data = _wss4j_find_child(gateway, la, "la", key_identifier=key_identifier)
    status, answer = la.post_raw("FindChild", data)  # the answer's signature and RequestDigest checked
    assert status == 200, GatewayClient.fault_code(answer) + ": " + fault_message(answer)
    assert answer.find(f"{q(SOAP_ENV, 'Body')}/{q(CG, 'FindChildResponse')}") is not None


def _serial_replaced(data: bytes) -> bytes:
    """The issuer-serial reference changed to a serial number no certificate has (KeyInfo is not signed)."""
    envelope = etree.fromstring(data)
    serial = envelope.find(f".//{q(DS, 'X509SerialNumber')}")
    serial.text = str(int(serial.text) + 1)
    return etree.tostring(envelope)


@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_wss4j_key_reference_to_another_organisations_certificate_is_refused_naming_the_accepted_references(
        gateway, clients, key_identifier):
    """Signed by HEALTH's key, referenced by HEALTH's issuer and serial (or key identifier), over LA's
    TLS connection: the reference is resolved among LA's certificates only, so it names none; the
    answer is the one a reference to no certificate at all gets (no oracle of other organisations)."""
    la = clients("la")
    foreign = _wss4j_find_child(gateway, la, "health", key_identifier=key_identifier)
    message = fault_message(assert_post_refused(gateway, la, "FindChild", foreign, "SignatureInvalid", org_code="LA"))
    for reference in ACCEPTED_REFERENCES:
        assert reference in message
    assert "HEALTH" not in message
    unknown = _wss4j_find_child(gateway, la, "la", key_identifier="IssuerSerial")
    unknown_message = fault_message(assert_post_refused(gateway, la, "FindChild", _serial_replaced(unknown),
                                                        "SignatureInvalid", org_code="LA"))
    assert unknown_message == message


@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_wss4j_reference_to_the_organisations_revoked_certificate_is_refused_as_revoked(gateway, clients,
                                                                                       key_identifier):
    la = clients("la")
    data = _wss4j_find_child(gateway, la, "la_revoked", key_identifier=key_identifier)
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "CertificateRejected", org_code="LA"))
    assert message == "The signing certificate has been revoked."


def _der_string(attribute: x509.NameAttribute) -> str:
    """The attribute's value as Java writes an unknown type's: # and the hex of its DER."""
    tag = attribute._type.value
    content = attribute.value.encode("utf-16-be" if tag == 30 else "utf-8")
    length = bytes([len(content)]) if len(content) < 128 else bytes([0x81, len(content)])
    return "#" + (bytes([tag]) + length + content).hex()


ISSUER_NAME_FORMS = {  # (the test CA's name is one RDN: the .NET form of several is tested below)
    "lower-case attribute types": lambda name: ",".join(
        "+".join(f"{a.rfc4514_attribute_name.lower()}={a.value}" for a in rdn) for rdn in reversed(name.rdns)),
    "Java (dotted OIDs, hex DER values)": lambda name: ",".join(
        "+".join(f"{a.oid.dotted_string}={_der_string(a)}" for a in rdn) for rdn in reversed(name.rdns)),
    "values in another case, spaced": lambda name: ", ".join(
        "+".join(f"{a.rfc4514_attribute_name} = {a.value.upper()}" for a in rdn) for rdn in reversed(name.rdns)),
}


@pytest.mark.parametrize("form", list(ISSUER_NAME_FORMS))
def test_an_issuer_name_as_other_stacks_write_it_names_the_organisations_certificate(gateway, clients, form):
    la = clients("la")
    issuer = x509.load_pem_x509_certificate((gateway.certs["la"] / "cert.pem").read_bytes()).issuer
    written = ISSUER_NAME_FORMS[form](issuer)
    assert written != issuer.rfc4514_string()
    data = _key_info_changed(_wss4j_find_child(gateway, la, "la", key_identifier="IssuerSerial"),
                             q(DS, "X509IssuerName"), written)
    status, answer = la.post_raw("FindChild", data)
    assert status == 200, GatewayClient.fault_code(answer) + ": " + fault_message(answer)


@pytest.mark.parametrize("written", ["CN=Test CA, E=ca@example.org", "CN=Test CA,EMAILADDRESS=CA@Example.org",
                                     "cn=test ca,1.2.840.113549.1.9.1=#160e6361406578616d706c652e6f7267"])
def test_an_issuer_name_with_an_email_address_as_stacks_write_it_is_understood(written):
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issuer = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ca@example.org"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    certificate = _certificate(issuer, 77, "LA", public_key)
    x509_data = etree.fromstring(f'<ds:X509Data xmlns:ds="{DS}"><ds:X509IssuerSerial><ds:X509IssuerName/>'
                                 f'<ds:X509SerialNumber>77</ds:X509SerialNumber></ds:X509IssuerSerial></ds:X509Data>')
    x509_data.find(f".//{q(DS, 'X509IssuerName')}").text = written
    reference = wsse._x509_data(x509_data)
    assert reference.names(certificate)
    assert not wsse.KeyReference(reference.kind, issuer=reference.issuer, serial=78).names(certificate)


def test_a_carried_certificate_of_another_organisation_gets_the_answer_an_unregistered_one_gets(gateway, clients):
    """Signed with HEALTH's key and certificate, or with a certificate the gateway's CA issued but no
    officer registered, over LA's TLS connection: the same code and words (no oracle of whether a
    certificate belongs to another organisation)."""
    from cryptography.hazmat.primitives import serialization

    la = clients("la")
    ca_dir = gateway.home / "ca"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    unregistered = pki.issue_org_cert(ca_key, ca_cert, "LA", "LA", key.public_key())
    answers = []
    for signer_key, signer_cert in ((key, unregistered), (None, None)):
        if signer_cert is None:
            data = clients("health").build_request("FindChild", **find_kwargs())
        else:
            signer = wsse.EnvelopeSigner(pki.key_pem(signer_key), pki.cert_pem(signer_cert))
            data = resign(signer, la.build_request("FindChild", sign=False, **find_kwargs()))
        fault = assert_post_refused(gateway, la, "FindChild", data, "SignerMismatch", org_code="LA")
        answers.append(fault_message(fault))
    assert answers[0] == answers[1]
    assert "sign with your own organisation's certificate" in answers[0]


@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_a_reference_to_the_organisations_certificate_on_a_message_signed_by_its_other_key_is_refused(
        gateway, clients, key_identifier):
    """Signed with the key of LA's (revoked) second certificate, the reference naming LA's first: the
    reference resolves to the certificate it names, whose key did not make the signature."""
    la = clients("la")
    data = _wss4j_find_child(gateway, la, "la_revoked", key_identifier=key_identifier)
    envelope = etree.fromstring(data)
    named = x509.load_pem_x509_certificate((gateway.certs["la"] / "cert.pem").read_bytes())
    written = envelope.find(f".//{q(DS, 'KeyInfo')}/{q(WSSE, 'SecurityTokenReference')}")
    written.getparent().replace(written, key_reference(key_identifier, named))
    data = etree.tostring(envelope)
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA"))
    assert "revoked" not in message


@pytest.mark.parametrize("key_identifier", KEY_IDENTIFIERS)
def test_a_reference_to_a_registered_certificate_that_no_longer_chains_is_refused_as_not_accepted(
        gateway, clients, key_identifier):
    """A certificate registered to LA but issued by another CA of the same name (the gateway's CA
    replaced, say): found by the reference, then refused by the chain check, as a carried one is."""
    from sqlalchemy import delete

    la = clients("la")
    other_ca_key, other_ca = pki.make_ca()  # "ContactGate Gateway CA" too: issuer-serial matches by name
    key = pki.new_rsa_key()  # (signed RSA-SHA256, as WSS4J does)
    stray = pki.issue_org_cert(other_ca_key, other_ca, "LA", "LA", key.public_key())
    described = pki.describe(stray)
    with gateway.engine.begin() as conn:
        conn.execute(certificates.insert().values(org_code="LA", created_at=dt.datetime.now(dt.timezone.utc),
                                                  **described))
    try:
        data = wss4j_signed(without_security(la.build_request("FindChild", **find_kwargs())),
                            pki.key_pem(key), pki.cert_pem(stray), key_identifier=key_identifier)
        message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "CertificateRejected",
                                                    org_code="LA"))
        assert message.startswith("The signing certificate is not accepted: it must be issued by a CA the gateway "
                                  "trusts")
    finally:
        with gateway.engine.begin() as conn:
            conn.execute(delete(certificates).where(certificates.c.fingerprint == described["fingerprint"]))


def test_wss4j_16_defaults_get_one_fault_naming_all_three_mistakes(gateway, clients):
    """WSS4J 1.6 as the distributions ship it: RSA-SHA1, SHA-1 digests, only the Body signed and no
    Timestamp. One round trip tells the integrator all three settings."""
    la = clients("la")
    data = _wss4j_find_child(gateway, la, "la", signature_method=xmlsec.Transform.RSA_SHA1,
                             digest_method=xmlsec.Transform.SHA1, timestamp=False)
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA"))
    assert "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256" in message
    assert "DigestMethod must be SHA-256" in message
    assert "wsu:Timestamp" in message and "soap:Body and wsu:Timestamp" in message
    assert message.startswith("The signature does not follow the profile in 4 ways: (1) ")
    assert wsse._TIMESTAMP_MISSING in message


def test_the_audit_keeps_the_offending_values_of_a_combined_refusal_and_the_fault_does_not(gateway, clients):
    from tests.gateway.pipeline.attacks import baseline

    la = clients("la")
    data = _wss4j_find_child(gateway, la, "la", signature_method=xmlsec.Transform.RSA_SHA1,
                             digest_method=xmlsec.Transform.SHA1, timestamp=False)
    _, seq = baseline(gateway)
    message = fault_message(assert_post_refused(gateway, la, "FindChild", data, "SignatureInvalid", org_code="LA"))
    [entry] = gateway.audit_entries_after(seq)
    assert "'http://www.w3.org/2000/09/xmldsig#rsa-sha1'" in entry["detail"]
    assert "'http://www.w3.org/2000/09/xmldsig#sha1'" in entry["detail"]
    assert "xmldsig#rsa-sha1" not in message


def _encrypted_body(unsigned: bytes, recipient_cert_pem: bytes) -> bytes:
    """The request element encrypted as WCF does even with ProtectionLevel.Sign: xenc:EncryptedData
    (AES-256-CBC) in the Body, its key in an xenc:EncryptedKey (RSA-OAEP) for the recipient."""
    envelope = etree.fromstring(unsigned)
    payload = envelope.find(q(SOAP_ENV, "Body"))[0]
    keys = xmlsec.KeysManager()
    keys.add_key(xmlsec.Key.from_memory(recipient_cert_pem, xmlsec.KeyFormat.CERT_PEM, None))
    template = xmlsec.template.encrypted_data_create(envelope, xmlsec.Transform.AES256,
                                                     type=xmlsec.EncryptionType.ELEMENT, ns="xenc")
    xmlsec.template.encrypted_data_ensure_cipher_value(template)
    key_info = xmlsec.template.encrypted_data_ensure_key_info(template, ns="dsig")
    encrypted_key = xmlsec.template.add_encrypted_key(key_info, xmlsec.Transform.RSA_OAEP)
    xmlsec.template.encrypted_data_ensure_cipher_value(encrypted_key)
    context = xmlsec.EncryptionContext(keys)
    context.key = xmlsec.Key.generate(xmlsec.KeyData.AES, 256, xmlsec.KeyDataType.SESSION)
    context.encrypt_xml(template, payload)
    return etree.tostring(envelope)


def test_encrypted_body_is_refused_saying_xml_encryption_is_not_used(gateway, clients):
    la = clients("la")
    unsigned = without_security(la.build_request("FindChild", **find_kwargs()))
    data = resign(la.signer, _encrypted_body(unsigned, (gateway.certs["health"] / "cert.pem").read_bytes()))
    assert b"EncryptedData" in data and b"EncryptedKey" in data
    fault = assert_post_refused(gateway, la, "FindChild", data, "MalformedMessage", org_code="LA")
    assert fault_message(fault) == ENCRYPTION_REFUSED


@pytest.mark.parametrize("encoding", ["UTF-16", "UTF-32"])
def test_encrypted_body_in_another_encoding_than_utf8_is_refused_saying_xml_encryption_is_not_used(
        gateway, clients, encoding):
    la = clients("la")
    unsigned = without_security(la.build_request("FindChild", **find_kwargs()))
    signed = resign(la.signer, _encrypted_body(unsigned, (gateway.certs["health"] / "cert.pem").read_bytes()))
    data = etree.tostring(etree.fromstring(signed), encoding=encoding, xml_declaration=True)
    assert b"EncryptedData" not in data and b"EncryptedKey" not in data
    fault = assert_post_refused(gateway, la, "FindChild", data, "MalformedMessage", org_code="LA")
    assert fault_message(fault) == ENCRYPTION_REFUSED


def test_encrypted_key_in_the_security_header_alone_is_refused_saying_xml_encryption_is_not_used(gateway, clients):
    """A signed, readable request that also carries an xenc:EncryptedKey in wsse:Security."""
    la = clients("la")
    envelope = etree.fromstring(la.build_request("FindChild", **find_kwargs()))
    security = envelope.find(f"{q(SOAP_ENV, 'Header')}/{q(WSSE, 'Security')}")
    xenc = "http://www.w3.org/2001/04/xmlenc#"
    encrypted_key = etree.SubElement(security, f"{{{xenc}}}EncryptedKey", nsmap={"xenc": xenc})
    etree.SubElement(etree.SubElement(encrypted_key, f"{{{xenc}}}CipherData"), f"{{{xenc}}}CipherValue").text = "AAAA"
    data = etree.tostring(envelope)
    fault = assert_post_refused(gateway, la, "FindChild", data, "MalformedMessage", org_code="LA")
    assert fault_message(fault) == ENCRYPTION_REFUSED




def _certificate(issuer: x509.Name, serial: int, subject: str, public_key) -> x509.Certificate:
    """A certificate named ``subject``, by a CA named ``issuer`` (a key of its own each time: two CAs
    named alike), with ``serial``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(public_key).serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(ca_key, hashes.SHA256()))


def test_an_issuer_serial_shared_across_cas_resolves_only_among_the_tls_clients_organisations_certificates(engine):
    """Two CAs with the same name can issue the same serial number: LA and HEALTH each hold one such
    certificate. The reference resolves to the certificate of the TLS client's organisation, never
    the other's, and to nothing for an organisation holding neither (as for a reference to nothing)."""
    from types import SimpleNamespace

    from gateway.db import organisations
    from gateway.pipeline.wssecurity import signing_certificate

    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ContactGate Gateway CA")])
    held = {code: _certificate(issuer, 0x1234567, code, ec.generate_private_key(ec.SECP256R1()).public_key())
            for code in ("LA", "HEALTH")}
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        for code in ("LA", "HEALTH", "OTHER"):
            conn.execute(organisations.insert().values(code=code, code_key=code, name=code, kind="other",
                                                       status="accredited", scopes="query", created_at=now,
                                                       updated_at=now))
        for code, certificate in held.items():
            conn.execute(certificates.insert().values(org_code=code, created_at=now, **pki.describe(certificate)))
    reference = wsse.KeyReference("issuer-serial", issuer=issuer, serial=0x1234567)
    with engine.connect() as conn:
        def resolved(org_code: str):
            return signing_certificate(reference, SimpleNamespace(org_code=org_code,
                                                                  lookup_connection=lambda services: conn), None)

        assert resolved("LA") == held["LA"]
        assert resolved("HEALTH") == held["HEALTH"]
        assert resolved("OTHER") is None
