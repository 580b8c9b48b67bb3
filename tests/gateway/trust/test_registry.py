"""The accreditation lifecycle and certificate rules, through the CLI an officer uses."""

import datetime as dt

import pytest
from sqlalchemy import select

from gateway.db import audit_log
from contactgate_local import LocalGateway, proposal_id
from gateway.trust import pki, registry


@pytest.fixture
def officer(tmp_path, database_url):
    """Run `contactgate ...` against a fresh home and database, signed in as the officer its
    --officer names (or the default local officer)."""
    gateway = LocalGateway(home=tmp_path, database_url=database_url)

    def run(*args, ok=True, as_=None):
        result = gateway.cli(*args, expect_ok=False, officer=as_)
        assert (result.exit_code == 0) == ok, result.output
        return result

    run("init")
    return run


def pending(officer, code: str) -> str:
    """The id of the organisation's pending proposal, as `org show` prints it."""
    return proposal_id(officer("org", "show", code).output)


def future(days=200):
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def test_accreditation_needs_two_different_officers(officer, engine):
    officer("org", "add", "LA9", "--name", "Lambeth", "--kind", "local_authority")
    proposal = proposal_id(officer("org", "accredit", "LA9", "--scope", "push", "--expires", future(),
                                   "--officer", "alice").output)
    refused = officer("org", "approve", "LA9", "--proposal", proposal, "--officer", "alice", ok=False)
    assert "second officer" in refused.output
    officer("org", "approve", "LA9", "--proposal", proposal, "--officer", "bob")
    with engine.connect() as conn:
        org = registry.get_org(conn, "LA9")
        assert org.status == "accredited" and org.proposed_by == "alice" and org.approved_by == "bob"
        operations = [r.operation for r in conn.execute(select(audit_log).order_by(audit_log.c.seq))]
    assert [o for o in operations if not o.startswith("officer.")] == ["org.add", "org.accredit", "org.approve"]


def test_officer_errors_are_refused_without_change(officer, engine):
    officer("org", "add", "H1", "--name", "Trust", "--kind", "health")
    assert "already exists" in officer("org", "add", "H1", "--name", "Again", "--kind", "health", ok=False).output
    officer("org", "add", "BAD", "--name", "x", "--kind", "bank", ok=False)
    assert "future" in officer("org", "accredit", "H1", "--scope", "query", "--expires", "2020-01-01",
                               "--officer", "alice", ok=False).output
    officer("org", "approve", "H1", "--officer", "bob", ok=False)  # nothing proposed
    with engine.connect() as conn:
        assert registry.get_org(conn, "H1").status == "registered"


def test_suspend_and_reinstate(officer, engine):
    officer("org", "add", "Y1", "--name", "YOT", "--kind", "youth_offending")
    officer("org", "accredit", "Y1", "--scope", "query", "--expires", future(), "--officer", "alice")
    officer("org", "approve", "Y1", "--proposal", pending(officer, "Y1"), "--officer", "bob")
    officer("org", "suspend", "Y1", "--officer", "carol", "--reason", "data breach under investigation")
    with engine.connect() as conn:
        org = registry.get_org(conn, "Y1")
        assert org.status == "suspended" and org.refusal_reason(dt.date.today())
    officer("org", "reinstate", "Y1", "--officer", "carol", "--reason", "investigation closed")
    with engine.connect() as conn:
        assert registry.get_org(conn, "Y1").status == "suspended"  # until a second officer approves
    officer("org", "approve", "Y1", "--proposal", pending(officer, "Y1"), "--officer", "carol", ok=False)
    officer("org", "approve", "Y1", "--proposal", pending(officer, "Y1"), "--officer", "alice")
    with engine.connect() as conn:
        assert registry.get_org(conn, "Y1").refusal_reason(dt.date.today()) is None
    shown = officer("org", "show", "Y1").output
    assert "proposed by alice, approved by bob" in shown


def test_cert_issue_from_csr_register_foreign_ca_and_revoke(officer, engine, tmp_path):
    officer("org", "add", "S1", "--name", "School", "--kind", "education")
    key = pki.new_ec_key()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    def csr_for(cn, signing_key=key):
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Anything"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(signing_key, hashes.SHA256()))
        path = tmp_path / f"{cn}.csr"
        path.write_bytes(csr.public_bytes(pki.serialization.Encoding.PEM))
        return str(path)

    refused = officer("cert", "issue", "S1", "--csr", csr_for("i-am-someone-else"), ok=False).output
    assert "must name the organisation" in refused
    proposed = officer("cert", "issue", "S1", "--csr", csr_for("s1"), as_="alice")
    officer("cert", "approve", "S1", "--proposal", proposal_id(proposed.output), "--out", str(tmp_path / "s1.pem"),
            as_="bob")
    issued = pki.load_cert_pem((tmp_path / "s1.pem").read_bytes())
    assert issued.subject.rfc4514_string().startswith("O=School,CN=S1")  # the gateway names it

    # A certificate from a CA nobody trusts cannot be registered; once the CA is trusted, it can.
    ca_key, ca_cert = pki.make_ca("Regional Health CA")
    other_key = pki.new_rsa_key()
    other = pki.issue_org_cert(ca_key, ca_cert, "S1", "School", other_key.public_key())
    (tmp_path / "other.pem").write_bytes(pki.cert_pem(other))
    (tmp_path / "regional-ca.pem").write_bytes(pki.cert_pem(ca_cert))
    assert "trusted CA" in officer("cert", "register", "S1", "--cert", str(tmp_path / "other.pem"), ok=False).output
    proposal = proposal_id(officer("trust", "add-ca", str(tmp_path / "regional-ca.pem"), as_="senior-s").output)
    assert "trusted CA" in officer("cert", "register", "S1", "--cert", str(tmp_path / "other.pem"), ok=False).output
    officer("trust", "approve", "--proposal", proposal, as_="senior-s", ok=False)  # not by its proposer
    officer("trust", "approve", "--proposal", proposal, as_="senior-t")
    registering = officer("cert", "register", "S1", "--cert", str(tmp_path / "other.pem"), as_="alice")
    bound = officer("cert", "list", "S1", "--json").output
    assert pki.fingerprint(other) not in bound  # not bound until approved
    assert f"proposal {proposal_id(registering.output)} (cert_register)" in officer("cert", "list", "S1").output
    officer("cert", "approve", "S1", "--proposal", proposal_id(registering.output), as_="bob")

    fingerprint = pki.fingerprint(other)
    officer("cert", "revoke", fingerprint, "--reason", "key lost")
    officer("cert", "revoke", fingerprint, "--reason", "again", ok=False)
    listing = officer("cert", "list", "S1").output
    assert "REVOKED" in listing and pki.fingerprint(issued) in listing


def test_init_is_safe_to_run_twice(officer, tmp_path):
    ca_before = (tmp_path / "ca" / "ca.pem").read_bytes()
    second = officer("init")
    assert "kept     gateway CA" in second.output
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == ca_before
    assert oct((tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o777) == "0o600"


def test_init_server_names_go_into_the_server_certificate(officer, tmp_path):
    officer("init", "--server-name", "gateway.example.org")
    cert = pki.load_cert_pem((tmp_path / "tls" / "server.pem").read_bytes())
    from cryptography import x509

    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gateway.example.org" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_chain_validation_rejects_foreign_and_expired_certificates():
    ca_key, ca_cert = pki.make_ca()
    anchors = pki.TrustAnchors([ca_cert])
    good_key = pki.new_rsa_key()
    good = pki.issue_org_cert(ca_key, ca_cert, "A", "A", good_key.public_key())
    anchors.verify_client(good)
    rogue_key, rogue_ca = pki.make_ca("Rogue")
    rogue = pki.issue_org_cert(rogue_key, rogue_ca, "A", "A", good_key.public_key())
    with pytest.raises(pki.ChainError):
        anchors.verify_client(rogue)
    with pytest.raises(pki.ChainError):
        anchors.verify_client(good, at=good.not_valid_after_utc + dt.timedelta(days=1))


def test_the_gateways_signing_certificate_is_not_a_client_certificate():
    ca_key, ca_cert = pki.make_ca()
    _, signing = pki.issue_signing_cert(ca_key, ca_cert)
    anchors = pki.TrustAnchors([ca_cert])
    with pytest.raises(pki.ChainError, match="extendedKeyUsage"):
        anchors.verify_client(signing)
    anchors.verify_signer(signing)  # but it does chain, for clients checking responses


def test_renewal_keeps_the_accreditation_in_force_until_a_second_officer_approves(officer, engine):
    officer("org", "add", "R1", "--name", "Renewing", "--kind", "health")
    officer("org", "accredit", "R1", "--scope", "query", "--expires", future(30), "--officer", "alice")
    officer("org", "approve", "R1", "--proposal", pending(officer, "R1"), "--officer", "bob")
    officer("org", "accredit", "R1", "--scope", "query", "--scope", "push", "--expires", future(400),
            "--officer", "carol")
    shown = officer("org", "show", "R1").output
    assert "status=accredited" in shown and "(renewal) by carol" in shown and "scopes=push,query" in shown
    renewal = pending(officer, "R1")
    with engine.connect() as conn:
        org = registry.get_org(conn, "R1")
    assert org.refusal_reason(dt.date.today()) is None  # traffic carries on meanwhile
    assert org.scopes == {"query"} and org.expires == dt.date.fromisoformat(future(30))
    assert "second officer" in officer("org", "approve", "R1", "--proposal", renewal, "--officer", "carol",
                                      ok=False).output
    officer("org", "approve", "R1", "--proposal", renewal, "--officer", "alice")
    with engine.connect() as conn:
        org = registry.get_org(conn, "R1")
    assert org.scopes == {"query", "push"} and org.expires == dt.date.fromisoformat(future(400))
    assert (org.proposed_by, org.approved_by, org.pending) == ("carol", "alice", ())


def test_the_message_paths_one_lookup_reads_what_the_two_lookups_read(officer, engine, tmp_path):
    """`get_cert_and_org` (one query per message) names the same certificate and organisation as
    `get_cert` then `get_org(..., with_pending=False)`: accredited, suspended, revoked, unknown."""
    officer("org", "add", "Mixed1", "--name", "Mixed Case", "--kind", "health")
    officer("org", "accredit", "MIXED1", "--scope", "query", "--expires", future(), "--officer", "alice")
    officer("org", "approve", "mixed1", "--proposal", pending(officer, "Mixed1"), "--officer", "bob")
    from connectors import credentials

    made = credentials.make_request("MIXED1", tmp_path / "m")
    proposed = officer("cert", "issue", "MIXED1", "--csr", str(made.request_path), as_="alice")
    officer("cert", "approve", "MIXED1", "--proposal", proposal_id(proposed.output), "--out-dir", str(tmp_path / "m"),
            as_="bob")
    fingerprint = pki.fingerprint(pki.load_cert_pem((tmp_path / "m" / "cert.pem").read_bytes()))

    def both():
        with engine.connect() as conn:
            cert = registry.get_cert(conn, fingerprint)
            return (cert, registry.get_org(conn, cert.org_code, with_pending=False)), \
                registry.get_cert_and_org(conn, fingerprint)

    two, one = both()
    assert one == two and one[1].code == "Mixed1" and one[1].status == "accredited"
    officer("org", "suspend", "mixed1", "--officer", "carol", "--reason", "checking")
    officer("cert", "revoke", fingerprint, "--reason", "key lost")
    two, one = both()
    assert one == two and one[0].revoked_at is not None and one[1].status == "suspended"
    with engine.connect() as conn:
        assert registry.get_cert_and_org(conn, "0" * 64) == (None, None)
