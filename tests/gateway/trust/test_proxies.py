"""A proxy certificate speaks for every organisation (the nodes behind nginx believe the Client-Cert
header it vouches for), so one officer alone can never register one: a senior officer proposes it
(`proxy issue` from the proxy's CSR, or `proxy register` of a certificate from a trusted CA) and a
second approves; each step and each refusal is in the audit chain. Revoking needs one officer and
puts a gateway-issued proxy certificate on the CRL. (What the nodes do with it:
tests/deploy/test_nginx_nodes.py.)"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from contactgate_local import proposal_id
from contactgate_local.nginx import make_key_and_csr
from gateway.db import audit_log, proxy_certificates
from gateway.trust import pki
from tests.conftest import _database
from tests.support import Gateway


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"proxies-{request.param}")
    with _database(request.param) as url:
        gateway = Gateway(backend=request.param, home=home, database_url=url, redis_url=None)
        gateway.cli("init")
        try:
            yield gateway
        finally:
            gateway.stop()


def registered(gw) -> dict[str, object]:
    with gw.engine.connect() as conn:
        return {row.name: row for row in conn.execute(select(proxy_certificates))}


def audit_after(gw, seq: int) -> list:
    with gw.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.seq > seq).order_by(audit_log.c.seq)).all()


def test_a_proxy_certificate_from_a_csr_needs_two_senior_officers_and_is_audited(gw, tmp_path):
    key, csr = make_key_and_csr(tmp_path, "nginx-1")
    seq = gw.audit_seq()
    refused = gw.cli("proxy", "issue", "--name", "nginx-1", "--csr", str(csr), officer="officer-a", expect_ok=False)
    assert refused.exit_code == 2 and "senior_officer" in refused.output  # an officer: not enough
    proposed = gw.cli("proxy", "issue", "--name", "nginx-1", "--csr", str(csr), officer="senior-s")
    proposal = proposal_id(proposed.output)
    assert "contactgate proxy approve --proposal" in proposed.output and "nginx-1" not in registered(gw)
    alone = gw.cli("proxy", "approve", "--proposal", proposal, officer="senior-s", expect_ok=False)
    assert alone.exit_code == 2 and "second officer" in alone.output and "nginx-1" not in registered(gw)
    out = tmp_path / "nginx-1.pem"
    gw.cli("proxy", "approve", "--proposal", proposal, "--out", str(out), officer="senior-t")

    row = registered(gw)["nginx-1"]
    assert (row.proposed_by, row.approved_by, row.revoked_at) == ("senior-s", "senior-t", None)
    certificate = pki.load_cert_pem(out.read_bytes())
    assert pki.fingerprint(certificate) == row.fingerprint
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nginx-1"
    assert certificate.issuer == pki.load_cert_pem((gw.home / "ca" / "ca.pem").read_bytes()).subject
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    entries = [(e.operation, e.outcome, e.user_id) for e in audit_after(gw, seq)
               if e.operation.startswith(("proxy.", "officer.refused"))]
    assert entries == [("officer.refused", "refused", "officer-a"), ("proxy.propose", "done", "senior-s"),
                       ("officer.refused", "refused", "senior-s"), ("proxy.approve", "done", "senior-t")]
    listed = gw.cli("proxy", "list", officer="auditor-1").output
    assert row.fingerprint in listed and "senior-s" in listed and "senior-t" in listed


def test_a_proxy_csr_must_name_the_proxy_and_a_registered_certificate_must_chain_to_a_trusted_ca(gw, tmp_path):
    _, csr = make_key_and_csr(tmp_path, "someone-else")
    wrong = gw.cli("proxy", "issue", "--name", "nginx-2", "--csr", str(csr), officer="senior-s", expect_ok=False)
    assert wrong.exit_code == 2 and "must name the proxy (CN=nginx-2)" in wrong.output
    foreign_key, foreign_ca = pki.make_ca("Not Trusted CA")
    key = pki.new_ec_key()
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(pki.cert_pem(pki.issue_proxy_cert(foreign_key, foreign_ca, "nginx-2", key.public_key())))
    seq = gw.audit_seq()
    refused = gw.cli("proxy", "register", "--name", "nginx-2", "--cert", str(stranger), officer="senior-s",
                     expect_ok=False)
    assert refused.exit_code == 2 and "does not chain to a trusted CA" in refused.output
    assert [e.operation for e in audit_after(gw, seq)] == ["officer.refused"]
    assert "nginx-2" not in registered(gw)


def test_a_registered_proxy_certificate_can_be_declined_and_a_revoked_one_is_on_the_crl(gw, tmp_path):
    ca_key = pki.load_key_pem((gw.home / "ca" / "ca-key.pem").read_bytes())
    ca_cert = pki.load_cert_pem((gw.home / "ca" / "ca.pem").read_bytes())
    made = tmp_path / "nginx-3.pem"
    certificate = pki.issue_proxy_cert(ca_key, ca_cert, "nginx-3", pki.new_ec_key().public_key())
    made.write_bytes(pki.cert_pem(certificate))
    first = proposal_id(gw.cli("proxy", "register", "--name", "nginx-3", "--cert", str(made), officer="senior-s").output)
    gw.cli("proxy", "decline", "--proposal", first, "--reason", "not the host we expected", officer="senior-t")
    assert "nginx-3" not in registered(gw)
    again = proposal_id(gw.cli("proxy", "register", "--name", "nginx-3", "--cert", str(made), officer="senior-t").output)
    gw.cli("proxy", "approve", "--proposal", again, officer="senior-s")
    fingerprint = pki.fingerprint(certificate)
    assert registered(gw)["nginx-3"].fingerprint == fingerprint
    gw.cli("proxy", "revoke", fingerprint, "--reason", "the nginx host was decommissioned", officer="officer-b")
    assert registered(gw)["nginx-3"].revoked_reason == "the nginx host was decommissioned"
    crl = x509.load_pem_x509_crl((gw.home / "ca" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    assert b"-----BEGIN X509 CRL-----" in (gw.home / "tls" / "client-cas.pem").read_bytes()


def test_a_registered_proxy_certificate_is_never_bound_to_an_organisation(gw, tmp_path):
    """A proxy certificate is a proxy's, not an organisation's: bound to one as well, it would speak
    as that organisation without a Client-Cert header, and `proxy revoke` would not stop that where
    no CRL of the gateway CA covers it (a proxy certificate from a trusted CA)."""
    gw.add_org("PXORG", "local_authority", ["query"])
    ca_key = pki.load_key_pem((gw.home / "ca" / "ca-key.pem").read_bytes())
    ca_cert = pki.load_cert_pem((gw.home / "ca" / "ca.pem").read_bytes())
    certificate = pki.issue_proxy_cert(ca_key, ca_cert, "nginx-9", pki.new_ec_key().public_key())
    made = tmp_path / "nginx-9.pem"
    made.write_bytes(pki.cert_pem(certificate))
    proposal = proposal_id(gw.cli("proxy", "register", "--name", "nginx-9", "--cert", str(made),
                                  officer="senior-s").output)
    gw.cli("proxy", "approve", "--proposal", proposal, officer="senior-t")
    seq = gw.audit_seq()
    refused = gw.cli("cert", "register", "PXORG", "--cert", str(made), officer="officer-a", expect_ok=False)
    assert refused.exit_code == 2 and "proxy certificate" in refused.output, refused.output
    assert [e.operation for e in audit_after(gw, seq)] == ["officer.refused"]
    with gw.engine.connect() as conn:
        from gateway.trust import registry

        assert registry.get_cert(conn, pki.fingerprint(certificate)) is None
