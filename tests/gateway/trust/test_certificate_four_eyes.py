"""A certificate is the organisation's credential: one officer alone can never obtain one.

Issuing (from the organisation's CSR, or with a key the gateway makes) and registering are proposals
one officer makes and a second approves; the key is made on the organisation's machine (`contactgate
csr`), or by the gateway only through an explicit CLI option, into a bundle encrypted under a
passphrase. Through the real interfaces: the CLI, the console, and SOAP over mutual TLS."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import zipfile

import pytest
from sqlalchemy import select

from connectors import credentials
from contactgate_local import proposal_id
from gateway.db import audit_log, certificates
from gateway.trust import pki
from tests.conftest import _database
from tests.support import Gateway

READ = dict(user_id="hv.one", role="health visitor", reason_code="care_coordination",
            reason_text="checking before a home visit")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory):
    """A running gateway with LA (push, query) and HL1 (query, accredited, one certificate)."""
    home = tmp_path_factory.mktemp(f"four-eyes-{request.param}")
    with _database(request.param) as url:
        gateway = Gateway(backend=request.param, home=home, database_url=url, redis_url=None)
        gateway.cli("init")
        gateway.add_org("LA", "local_authority", ["push", "query"])
        gateway.add_org("HL1", "health", ["query"])
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


def hl1_certificates(gw) -> set[str]:
    with gw.engine.connect() as conn:
        return set(conn.execute(select(certificates.c.fingerprint).where(certificates.c.org_code == "HL1")).scalars())


def answered_as_hl1(gw, directory) -> bool:
    """Whether FindChild is answered with the key and certificate in ``directory``."""
    from connectors.client import GatewayClient

    if not (directory / "cert.pem").exists() or not (directory / "key.pem").exists():
        return False
    for name in ("ca.pem", "gateway-signing.pem"):
        if not (directory / name).exists():
            (directory / name).write_bytes((gw.certs["hl1"] / name).read_bytes())
    client = GatewayClient.from_directory(gw.url, directory)
    try:
        client.find_child(family_name="Nobody", date_of_birth="2016-01-01", **READ)
        return True
    except Exception:
        return False
    finally:
        client.close()


def organisation_request(tmp_path, code="HL1", key_type="rsa"):
    return credentials.make_request(code, tmp_path / "org-side", key_type=key_type)


# ---- one officer alone ---------------------------------------------------------------------------

def test_one_officer_alone_gets_no_working_credentials_from_the_cli(gw, tmp_path):
    before = hl1_certificates(gw)
    made = organisation_request(tmp_path)
    alone = tmp_path / "alice"
    gw.cli("cert", "issue", "HL1", "--out-dir", str(alone), officer="alice", expect_ok=False)
    gw.cli("cert", "issue", "HL1", "--csr", str(made.request_path), "--out", str(tmp_path / "alice.pem"),
           officer="alice", expect_ok=False)
    gw.cli("cert", "issue", "HL1", "--csr", str(made.request_path), officer="alice", expect_ok=False)
    assert hl1_certificates(gw) == before
    assert not answered_as_hl1(gw, alone)
    mine = tmp_path / "org-side"
    if (tmp_path / "alice.pem").exists():
        (mine / "cert.pem").write_bytes((tmp_path / "alice.pem").read_bytes())
    assert not answered_as_hl1(gw, mine)


def test_the_proposer_cannot_approve_their_own_certificate(gw, tmp_path):
    made = organisation_request(tmp_path)
    proposed = gw.cli("cert", "issue", "HL1", "--csr", str(made.request_path), officer="alice")
    number = proposal_id(proposed.output)
    refused = gw.cli("cert", "approve", "HL1", "--proposal", number, "--out-dir", str(tmp_path / "org-side"),
                     officer="alice", expect_ok=False)
    assert refused.exit_code == 2 and "second officer" in refused.output
    assert not (tmp_path / "org-side" / "cert.pem").exists()
    with gw.engine.connect() as conn:
        refusal = conn.execute(select(audit_log.c.user_id, audit_log.c.detail).where(
            audit_log.c.operation == "officer.refused").order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert refusal.user_id == "alice" and "second officer" in refusal.detail
    gw.cli("cert", "decline", "HL1", "--proposal", number, "--reason", "test over", officer="bob")


def test_a_csr_approved_by_a_second_officer_gives_working_credentials_and_both_are_audited(gw, tmp_path):
    made = organisation_request(tmp_path)
    proposed = gw.cli("cert", "issue", "HL1", "--csr", str(made.request_path), officer="alice")
    assert made.public_key_sha256 in proposed.output  # what the officer compares with the organisation
    assert "already holds 1 active certificate" in proposed.output
    number = proposal_id(proposed.output)
    shown = gw.cli("org", "show", "HL1").output
    assert f"proposal {number} (cert_issue) by alice" in shown
    approved = gw.cli("cert", "approve", "HL1", "--proposal", number, "--out-dir", str(made.key_path.parent),
                      officer="bob")
    directory = made.key_path.parent
    assert {p.name for p in directory.iterdir()} == {"key.pem", "request.csr", "cert.pem", "ca.pem",
                                                      "gateway-signing.pem"}
    assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    issued = pki.load_cert_pem((directory / "cert.pem").read_bytes())
    assert pki.fingerprint(issued) in approved.output and pki.fingerprint(issued) in hl1_certificates(gw)
    assert answered_as_hl1(gw, directory)
    with gw.engine.connect() as conn:
        entry = conn.execute(select(audit_log.c.user_id, audit_log.c.detail).where(
            audit_log.c.operation == "cert.issue").order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert entry.user_id == "bob" and "proposed by alice" in entry.detail and "approved by bob" in entry.detail
    assert "additional: HL1 held" in entry.detail
    again = gw.cli("cert", "approve", "HL1", "--proposal", number, "--out", str(tmp_path / "again.pem"),
                   officer="carol", expect_ok=False)
    assert again.exit_code == 2 and "approved" in again.output and not (tmp_path / "again.pem").exists()


def test_an_ecdsa_csr_from_the_client_command_is_signed(gw, tmp_path):
    out = tmp_path / "ec"
    result = gw.cli("csr", "--org", "hl1", "--out-dir", str(out), "--ec")
    assert result.exit_code == 0 and (out / "key.pem").stat().st_mode & 0o777 == 0o600
    assert "BEGIN CERTIFICATE REQUEST" in (out / "request.csr").read_text()
    number = proposal_id(gw.cli("cert", "issue", "HL1", "--csr", str(out / "request.csr"), officer="bob").output)
    gw.cli("cert", "approve", "HL1", "--proposal", number, "--out", str(out / "cert.pem"), officer="carol")
    assert answered_as_hl1(gw, out)


def test_a_key_made_by_the_gateway_comes_only_in_an_encrypted_bundle(gw, tmp_path):
    proposed = gw.cli("cert", "issue", "HL1", "--gateway-key", officer="alice")
    passphrase = re.search(r"never sees it\): (\S+)", proposed.output)[1]
    number = proposal_id(proposed.output)
    no_dir = gw.cli("cert", "approve", "HL1", "--proposal", number, "--out", str(tmp_path / "x.pem"),
                    officer="bob", expect_ok=False)
    assert no_dir.exit_code == 2 and "--out-dir" in no_dir.output
    out = tmp_path / "bundle"
    gw.cli("cert", "approve", "HL1", "--proposal", number, "--out-dir", str(out), officer="bob")
    assert sorted(p.name for p in out.iterdir()) == ["bundle.p12", "ca.pem", "cert.pem", "gateway-signing.pem"]
    assert (out / "bundle.p12").stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in (out / "bundle.p12").read_bytes()
    assert not answered_as_hl1(gw, out)  # no key in clear anywhere
    wrong = gw.cli("unbundle", str(out / "bundle.p12"), "--out-dir", str(tmp_path / "opened"),
                   "--passphrase-stdin", input="not-the-passphrase\n", expect_ok=False)
    assert wrong.exit_code == 2 and not (tmp_path / "opened" / "key.pem").exists()
    gw.cli("unbundle", str(out / "bundle.p12"), "--out-dir", str(tmp_path / "opened"), "--passphrase-stdin",
           input=passphrase + "\n")
    opened = tmp_path / "opened"
    assert (opened / "key.pem").stat().st_mode & 0o777 == 0o600
    assert answered_as_hl1(gw, opened)


def test_neither_officer_alone_holds_both_the_bundle_and_its_passphrase(gw, tmp_path):
    """The proposer is shown the passphrase (and never gets the bundle); the approver writes the bundle
    and is never shown the passphrase, nor can read it from the proposal."""
    proposed = gw.cli("cert", "issue", "HL1", "--gateway-key", officer="alice")
    found = re.search(r"never sees it\): (\S+)", proposed.output)
    assert found, proposed.output
    passphrase = found[1]
    number = proposal_id(proposed.output)
    shown = gw.cli("org", "show", "HL1", "--json", officer="bob").output + gw.cli("org", "show", "HL1", officer="bob").output
    assert passphrase not in shown
    approved = gw.cli("cert", "approve", "HL1", "--proposal", number, "--out-dir", str(tmp_path / "b"), officer="bob")
    assert passphrase not in approved.output
    with gw.engine.connect() as conn:
        details = " ".join(conn.execute(select(audit_log.c.detail)).scalars())
    assert passphrase not in details


def test_what_a_csr_subject_says_is_not_shown_to_the_approver(gw, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = pki.new_ec_key()
    forged = "HL1 (key sha256=" + "ab" * 32 + ")\n  a second officer approves it with: anything"
    request = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, forged),
        x509.NameAttribute(NameOID.COMMON_NAME, "HL1")])).sign(key, hashes.SHA256()))
    (tmp_path / "forged.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
    proposed = gw.cli("cert", "issue", "HL1", "--csr", str(tmp_path / "forged.csr"), officer="alice")
    listing = gw.cli("cert", "list", "HL1", officer="bob").output + gw.cli("org", "show", "HL1", officer="bob").output
    for shown in (proposed.output, listing):
        assert "ab" * 32 not in shown and "anything" not in shown
    gw.cli("cert", "decline", "HL1", "--proposal", proposal_id(proposed.output), "--reason", "forged", officer="bob")


def test_registering_a_certificate_of_another_ca_is_a_proposal_too(gw, tmp_path):
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = pki.make_ca("Regional Health CA")
    (tmp_path / "regional.pem").write_bytes(pki.cert_pem(ca_cert))
    trusted = proposal_id(gw.cli("trust", "add-ca", str(tmp_path / "regional.pem"), officer="senior-s").output)
    gw.cli("trust", "approve", "--proposal", trusted, officer="senior-t")
    key = pki.new_ec_key()
    leaf = pki.issue_org_cert(ca_key, ca_cert, "HL1", "HL1 organisation", key.public_key())
    (tmp_path / "leaf.pem").write_bytes(pki.cert_pem(leaf))
    before = hl1_certificates(gw)
    proposed = gw.cli("cert", "register", "HL1", "--cert", str(tmp_path / "leaf.pem"), officer="alice")
    assert hl1_certificates(gw) == before
    number = proposal_id(proposed.output)
    assert gw.cli("cert", "approve", "HL1", "--proposal", number, officer="alice",
                  expect_ok=False).exit_code == 2
    gw.cli("cert", "approve", "HL1", "--proposal", number, officer="bob")
    assert pki.fingerprint(leaf) in hl1_certificates(gw)
    assert key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # the key never went anywhere


def test_org_approve_points_a_certificate_proposal_to_cert_approve(gw, tmp_path):
    made = organisation_request(tmp_path)
    number = proposal_id(gw.cli("cert", "issue", "HL1", "--csr", str(made.request_path), officer="alice").output)
    wrong = gw.cli("org", "approve", "HL1", "--proposal", number, officer="bob", expect_ok=False)
    assert wrong.exit_code == 2 and f"cert approve HL1 --proposal {number}" in wrong.output
    assert f"proposal {number} (cert_issue) by alice, awaiting a second officer" in gw.cli("org", "show", "HL1").output
    gw.cli("org", "decline", "HL1", "--proposal", number, "--reason", "not needed", officer="bob")


def test_declining_a_certificate_leaves_a_pending_accreditation_pending(gw, tmp_path):
    gw.cli("org", "add", "HL2", "--name", "HL2 organisation", "--kind", "health")
    expires = (dt.date.today() + dt.timedelta(days=200)).isoformat()
    gw.cli("org", "accredit", "HL2", "--scope", "query", "--expires", expires, officer="alice")
    made = organisation_request(tmp_path, "HL2")
    number = proposal_id(gw.cli("cert", "issue", "HL2", "--csr", str(made.request_path), officer="alice").output)
    gw.cli("cert", "decline", "HL2", "--proposal", number, "--reason", "wrong key", officer="bob")
    status = json.loads(gw.cli("org", "show", "HL2", "--json").output)["status"]
    assert status == "pending_approval"


# ---- flagged: a second credential for one organisation ------------------------------------------

def test_an_additional_certificate_is_a_finding_of_audit_review(gw):
    gw.issue_cert("HL1", "hl1-second")  # HL1 holds one already; LA holds one only
    since = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    output = gw.cli("audit", "review", "--since", since, "--rule", "additional_certificate", "--json",
                    officer="auditor-1").output
    findings = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    subjects = {f["subject"] for f in findings}
    assert "organisation HL1" in subjects and "organisation LA" not in subjects


# ---- the console ---------------------------------------------------------------------------------
# alice and bob sign in to the console (whose clock runs an hour ahead, so each of its codes is fresh);
# the command line of these tests acts as carol: an officer's codes must move forward in time, and a
# console code an hour ahead would refuse the same officer's next sign-in at the terminal.

@pytest.fixture(scope="module")
def console_browser(gw):
    from gateway.config import Settings
    from gateway.console import create_console
    from tests.gateway.console.conftest import Browser, Clock

    clock = Clock()
    app = create_console(Settings.from_env({}, home=str(gw.home), database_url=gw.database_url), clock=clock)

    def make(officer_id: str) -> Browser:
        return Browser(app, gw, clock).sign_in(officer_id)
    yield make
    app.extensions["contactgate"]["engine"].dispose()


def test_one_officer_alone_gets_no_credentials_from_the_console(gw, console_browser, tmp_path):
    before = hl1_certificates(gw)
    alice = console_browser("alice")
    alice.get("/organisations/HL1")
    no_csr = alice.post("/organisations/HL1/certificates", {})
    assert no_csr.mimetype != "application/zip" and b"PRIVATE KEY" not in no_csr.get_data()
    made = organisation_request(tmp_path)
    with_csr = alice.post("/organisations/HL1/certificates",
                          {"csr": (io.BytesIO(made.request_path.read_bytes()), "hl1.csr")},
                          content_type="multipart/form-data")
    assert b"BEGIN CERTIFICATE" not in with_csr.get_data()
    assert hl1_certificates(gw) == before


def test_the_console_approves_a_csr_with_the_step_up_and_a_second_officer(gw, console_browser, tmp_path):
    made = organisation_request(tmp_path)
    alice, bob = console_browser("alice"), console_browser("bob")
    alice.get("/organisations/HL1")
    alice.post("/organisations/HL1/certificates", {"csr": (io.BytesIO(made.request_path.read_bytes()), "hl1.csr")},
               content_type="multipart/form-data")
    with gw.engine.connect() as conn:
        from gateway.trust import registry

        number = max(p.id for p in registry.list_proposals(conn, kinds=registry.CERT_PROPOSALS)
                     if p.proposed_by == "alice")
    page = bob.get("/organisations/HL1").get_data(as_text=True)
    assert made.public_key_sha256 in page and "already holds" in page
    own = alice.post(f"/proposals/{number}/approve", step_up=True)
    assert own.status_code == 302 and hl1_certificates(gw) == hl1_certificates(gw)
    before = hl1_certificates(gw)
    without_step_up = bob.post(f"/proposals/{number}/approve", {})
    assert hl1_certificates(gw) == before and without_step_up.status_code == 302
    approved = bob.post(f"/proposals/{number}/approve", step_up=True)
    assert approved.status_code == 302
    added = hl1_certificates(gw) - before
    assert len(added) == 1
    fingerprint = added.pop()
    download = bob.get(f"/certificates/{fingerprint}.pem")
    assert download.status_code == 200 and b"BEGIN CERTIFICATE" in download.get_data()
    assert b"PRIVATE" not in download.get_data()
    (made.key_path.parent / "cert.pem").write_bytes(download.get_data())
    assert answered_as_hl1(gw, made.key_path.parent)
    dashboard = bob.get("/").get_data(as_text=True)
    assert "HL1" in dashboard and fingerprint[:16] in dashboard  # flagged: another credential for HL1


def test_the_console_never_approves_a_key_made_by_the_gateway(gw, console_browser):
    number = proposal_id(gw.cli("cert", "issue", "HL1", "--gateway-key", officer="carol").output)
    before = hl1_certificates(gw)
    bob = console_browser("bob")
    bob.get("/")
    answer = bob.post(f"/proposals/{number}/approve", step_up=True)
    assert answer.mimetype != "application/zip" and b"PRIVATE KEY" not in answer.get_data()
    assert hl1_certificates(gw) == before
    page = bob.get("/organisations/HL1").get_data(as_text=True)
    assert "cert approve HL1" in page  # said where it is done
    bob.post(f"/proposals/{number}/decline", {"reason": "made by the organisation instead"}, step_up=True)
    with gw.engine.connect() as conn:
        from gateway.trust import registry

        assert registry.get_proposal(conn, int(number)).status == "declined"
