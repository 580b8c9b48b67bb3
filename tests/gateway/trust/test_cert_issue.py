"""`cert issue` proposes, `cert approve` (a second officer) signs: a CSR's key must be strong and its
subject must name the organisation (checked when proposed and again when approved); files are never
written over without --force, and a certificate is registered only with its files."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

from contactgate_local import LocalGateway, proposal_id
from gateway.trust import pki


@pytest.fixture
def gw(tmp_path, database_url):
    gateway = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gateway.cli("init")
    gateway.cli("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority")
    gateway.cli("org", "add", "OTHER", "--name", "Other", "--kind", "health")
    return gateway


def csr(tmp_path, key, cn="LA", name="la"):
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
    path = tmp_path / f"{name}.csr"
    path.write_bytes(request.public_bytes(pki.serialization.Encoding.PEM))
    return str(path)


def certs(gw):
    return json.loads(gw.cli("cert", "list", "--json").output)


def pending_certificates(gw):
    return [p for o in json.loads(gw.cli("org", "list", "--pending", "--json").output) for p in o["pending"]
            if p["kind"].startswith("cert_")]


@pytest.mark.parametrize("key, why", [
    (lambda: rsa.generate_private_key(65537, 1024), "1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP192R1()), "secp192r1"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
    (lambda: dsa.generate_private_key(2048), "RSA or ECDSA"),
], ids=["rsa1024", "p192", "secp256k1", "dsa"])
def test_a_csr_with_a_weak_key_is_refused(gw, tmp_path, key, why):
    result = gw.cli("cert", "issue", "LA", "--csr", csr(tmp_path, key()), expect_ok=False)
    assert result.exit_code == 2 and why in result.output
    assert certs(gw) == [] and pending_certificates(gw) == []


@pytest.mark.parametrize("key", [lambda: rsa.generate_private_key(65537, 2048),
                                 lambda: ec.generate_private_key(ec.SECP256R1()),
                                 lambda: ec.generate_private_key(ec.SECP384R1())], ids=["rsa2048", "p256", "p384"])
def test_a_csr_with_a_strong_key_naming_the_organisation_is_signed(gw, tmp_path, key):
    proposed = gw.cli("cert", "issue", "LA", "--csr", csr(tmp_path, key(), cn="la"), officer="alice")
    assert certs(gw) == []  # nothing signed yet
    gw.cli("cert", "approve", "LA", "--proposal", proposal_id(proposed.output), "--out", str(tmp_path / "la.pem"),
           officer="bob")
    issued = pki.load_cert_pem((tmp_path / "la.pem").read_bytes())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "LA"
    assert [c["fingerprint"] for c in certs(gw)] == [pki.fingerprint(issued)]


def test_a_csr_naming_another_organisation_is_refused(gw, tmp_path):
    result = gw.cli("cert", "issue", "LA", "--csr", csr(tmp_path, pki.new_ec_key(), cn="OTHER"), expect_ok=False)
    assert result.exit_code == 2 and "must name the organisation" in result.output and certs(gw) == []


def test_a_csr_with_a_bad_self_signature_is_refused(gw, tmp_path):
    path = csr(tmp_path, pki.new_ec_key())
    der = x509.load_pem_x509_csr(open(path, "rb").read()).public_bytes(pki.serialization.Encoding.DER)
    tampered = der[:-3] + bytes([der[-3] ^ 1]) + der[-2:]
    forged = tmp_path / "forged.csr"
    import base64

    forged.write_text("-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(tampered).decode()
                      + "-----END CERTIFICATE REQUEST-----\n")
    result = gw.cli("cert", "issue", "LA", "--csr", str(forged), expect_ok=False)
    assert result.exit_code == 2 and "CSR" in result.output and certs(gw) == []


def test_existing_files_are_never_overwritten_without_force(gw, tmp_path):
    other = gw.issue_cert("OTHER", "other")
    cert_before = (other / "cert.pem").read_bytes()
    proposed = gw.cli("cert", "issue", "LA", "--csr", csr(tmp_path, pki.new_ec_key()), officer="alice")
    number = proposal_id(proposed.output)
    result = gw.cli("cert", "approve", "LA", "--proposal", number, "--out-dir", str(other), officer="bob",
                    expect_ok=False)  # the other's folder
    assert result.exit_code == 2 and "already exist" in result.output
    assert (other / "cert.pem").read_bytes() == cert_before
    assert [c["org_code"] for c in certs(gw)] == ["OTHER"]  # nothing registered for LA
    gw.cli("cert", "approve", "LA", "--proposal", number, "--out-dir", str(tmp_path / "la"), officer="bob")
    assert len(certs(gw)) == 2


def test_a_failed_registration_leaves_no_files(gw, tmp_path):
    proposed = gw.cli("cert", "issue", "OTHER", "--csr", csr(tmp_path, pki.new_ec_key(), cn="OTHER"), officer="alice")
    gw.cli("org", "revoke", "OTHER", "--reason", "dissolved")
    out = tmp_path / "out"
    result = gw.cli("cert", "approve", "OTHER", "--proposal", proposal_id(proposed.output), "--out-dir", str(out),
                    officer="bob", expect_ok=False)
    assert result.exit_code == 2
    assert not out.exists() or not any(out.iterdir())
    assert certs(gw) == []


def test_an_organisation_holds_several_valid_certificates_for_rotation(gw):
    gw.cli("org", "accredit", "LA", "--scope", "query", "--expires", "2027-06-30")
    first, second = gw.issue_cert("LA", "la-old"), gw.issue_cert("LA", "la-new")
    active = [c for c in certs(gw) if c["org_code"] == "LA" and not c["revoked_at"]]
    assert len(active) == 2
