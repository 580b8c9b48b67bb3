"""The trust list: explicit CAs with fingerprint, subject, expiry and CRL; changed only by a senior
officer's proposal that a second senior officer approves; only a CA certificate is accepted; the
running gateway follows a change without a restart (at the handshake and in the application)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from contactgate_local import proposal_id
from gateway.trust import pki
from tests.support import child_pids, private_gateway


@pytest.fixture
def gw(tmp_path, database_url):
    from contactgate_local import LocalGateway

    gateway = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gateway.cli("init")
    return gateway


def _run(gw, *args, officer="senior-s", ok=True):
    result = gw.cli(*args, expect_ok=False, officer=officer)
    assert (result.exit_code == 0) == ok, result.output
    return result


def _files(tmp_path, name="Regional Health CA"):
    ca_key, ca_cert = pki.make_ca(name)
    pki.write_public(tmp_path / f"{name}.pem", pki.cert_pem(ca_cert))
    crl = pki.make_crl(ca_key, ca_cert, [], 30, 1)
    (tmp_path / f"{name}.crl").write_bytes(crl)
    return ca_key, ca_cert, tmp_path / f"{name}.pem", tmp_path / f"{name}.crl"


def test_trust_list_shows_the_gateway_ca_with_fingerprint_subject_expiry_and_crl(gw):
    [anchor] = json.loads(_run(gw, "trust", "list", "--json").output)["anchors"]
    assert anchor["gateway_ca"] and anchor["subject"] and anchor["not_after"] and anchor["crl_next_update"]
    assert len(anchor["fingerprint"]) == 64


def test_adding_a_ca_needs_a_senior_officer_and_a_second_one(gw, tmp_path):
    _, ca_cert, pem, crl = _files(tmp_path)
    assert "senior_officer" in _run(gw, "trust", "add-ca", str(pem), officer="officer-a", ok=False).output
    proposal = proposal_id(_run(gw, "trust", "add-ca", str(pem), "--crl", str(crl)).output)
    assert len(json.loads(_run(gw, "trust", "list", "--json").output)["anchors"]) == 1  # not yet
    assert "second officer" in _run(gw, "trust", "approve", "--proposal", proposal, ok=False).output
    assert "senior_officer" in _run(gw, "trust", "approve", "--proposal", proposal, officer="officer-b",
                                    ok=False).output
    _run(gw, "trust", "approve", "--proposal", proposal, officer="senior-t")
    anchors = json.loads(_run(gw, "trust", "list", "--json").output)["anchors"]
    assert [a["subject"] for a in anchors if not a["gateway_ca"]] == [ca_cert.subject.rfc4514_string()]
    assert all(a["crl_next_update"] for a in anchors)
    from sqlalchemy import select

    from gateway.db import audit_log

    with _engine(gw).connect() as conn:
        rows = conn.execute(select(audit_log.c.operation, audit_log.c.user_id)
                            .where(audit_log.c.operation.like("trust.%")).order_by(audit_log.c.seq)).all()
    assert [tuple(r) for r in rows] == [("trust.propose", "senior-s"), ("trust.approve", "senior-t")]


def _engine(gw):
    from gateway.db import make_engine

    return make_engine(gw.database_url, keys=gw.home / "keys" / "data-keys.json")


@pytest.mark.parametrize("what", ["organisation certificate", "revoked organisation certificate", "not a certificate",
                                  "expired CA", "CRL of another CA"])
def test_only_a_ca_certificate_is_accepted(gw, tmp_path, what):
    ca_key, ca_cert, pem, crl = _files(tmp_path)
    extra = []
    if what in ("organisation certificate", "revoked organisation certificate"):
        gw.cli("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority")
        directory = gw.issue_cert("LA", "la")
        if what.startswith("revoked"):
            gw.cli("cert", "revoke", pki.fingerprint(pki.load_cert_pem((directory / "cert.pem").read_bytes())),
                   "--reason", "lost")
        pem = directory / "cert.pem"
    elif what == "not a certificate":
        pem.write_text("hello")
    elif what == "expired CA":
        old_key, old_ca = pki.make_ca("Old CA", days=1)
        expired = (x509.CertificateBuilder().subject_name(old_ca.subject).issuer_name(old_ca.subject)
                   .public_key(old_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(dt.datetime(2021, 1, 1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(old_ca.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
                   .sign(old_key, hashes.SHA256()))
        pem.write_bytes(pki.cert_pem(expired))
    else:
        _, _, _, other_crl = _files(tmp_path, "Another CA")
        extra = ["--crl", str(other_crl)]
    result = _run(gw, "trust", "add-ca", str(pem), *extra, ok=False)
    assert result.exit_code == 2
    assert len(json.loads(_run(gw, "trust", "list", "--json").output)["pending"]) == 0


def test_the_gateway_ca_cannot_be_removed(gw):
    [anchor] = json.loads(_run(gw, "trust", "list", "--json").output)["anchors"]
    assert "cannot be removed" in _run(gw, "trust", "remove", anchor["fingerprint"], ok=False).output


def test_a_ca_removed_from_the_trust_list_refuses_its_clients_without_a_restart(tmp_path, database_url):
    """A CA added and approved: its organisation's certificate works over mutual TLS; removed and
    approved: a new connection is refused at the handshake, with the same workers."""
    with private_gateway("sqlite" if database_url.startswith("sqlite") else "postgresql", tmp_path / "gw",
                         orgs={"LA": ("local_authority", ["query"])}) as gateway:
        ca_key, ca_cert, pem, crl = _files(tmp_path)
        proposal = proposal_id(gateway.cli("trust", "add-ca", str(pem), "--crl", str(crl), officer="senior-s").output)
        gateway.cli("trust", "approve", "--proposal", proposal, officer="senior-t")
        key = pki.new_ec_key()
        client = tmp_path / "regional-la"
        client.mkdir()
        pki.write_private(client / "key.pem", pki.key_pem(key))
        pki.write_public(client / "cert.pem", pki.cert_pem(pki.issue_org_cert(ca_key, ca_cert, "LA", "LA", key.public_key())))
        gateway.cli("cert", "register", "LA", "--cert", str(client / "cert.pem"))
        ca = gateway.certs["la"] / "ca.pem"
        workers = child_pids(gateway.process.pid)
        time.sleep(1.2)

        def healthz():
            return requests.get(f"{gateway.url}/healthz", cert=(str(client / "cert.pem"), str(client / "key.pem")),
                                verify=str(ca), timeout=10)

        assert healthz().status_code == 200
        fingerprint = pki.fingerprint(ca_cert)
        proposal = proposal_id(gateway.cli("trust", "remove", fingerprint, officer="senior-s").output)
        gateway.cli("trust", "approve", "--proposal", proposal, officer="senior-t")
        time.sleep(1.5)
        with pytest.raises(requests.exceptions.ConnectionError):  # an SSLError, or closed after it (TLS 1.3)
            healthz()
        assert child_pids(gateway.process.pid) == workers


def _break_commits_that_approve(engine) -> None:
    """From now on, a transaction that marks a proposal approved fails at COMMIT, not before: the
    trigger inserts a row whose deferred foreign key points nowhere, which the database checks only
    when the transaction commits (what a lost connection, a full disk or a serialisation failure
    at that moment would do)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE commit_breaker (proposal_id INTEGER REFERENCES proposals (id) "
                          "DEFERRABLE INITIALLY DEFERRED)"))
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER break_commit AFTER UPDATE OF status ON proposals "
                              "WHEN NEW.status = 'approved' BEGIN INSERT INTO commit_breaker VALUES (-1); END"))
        else:
            conn.execute(text("CREATE FUNCTION break_commit() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN INSERT INTO commit_breaker VALUES (-1); RETURN NEW; END $$"))
            conn.execute(text("CREATE TRIGGER break_commit AFTER UPDATE OF status ON proposals FOR EACH ROW "
                              "WHEN (NEW.status = 'approved') EXECUTE FUNCTION break_commit()"))


def _mend_commits(engine) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER break_commit" + ("" if engine.dialect.name == "sqlite" else " ON proposals")))
        conn.execute(text("DROP TABLE commit_breaker"))


def _trust_files(home) -> dict[str, bytes]:
    """Every file the trust list is made of: the trusted CAs, their CRLs, the client CA bundle."""
    return {str(path.relative_to(home)): path.read_bytes()
            for path in sorted([*(home / "trust").rglob("*"), home / "tls" / "client-cas.pem"]) if path.is_file()}


def test_a_trust_change_whose_commit_fails_changes_no_file_and_not_the_running_gateway(tmp_path, database_url):
    """A CA removal and a CA addition approved while every commit that approves fails: the trust
    files stay as they were, the running gateway keeps trusting what it trusted (its client from the
    CA whose removal failed still connects), and the proposals are still pending; once commits work
    again, the same approvals go through."""
    from gateway.db import make_engine

    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    with private_gateway(backend, tmp_path / "gw", orgs={"LA": ("local_authority", ["query"])},
                         database_url=database_url) as gateway:
        ca_key, ca_cert, pem, crl = _files(tmp_path)
        added = proposal_id(gateway.cli("trust", "add-ca", str(pem), "--crl", str(crl), officer="senior-s").output)
        gateway.cli("trust", "approve", "--proposal", added, officer="senior-t")
        key = pki.new_ec_key()
        client = tmp_path / "regional-la"
        client.mkdir()
        pki.write_private(client / "key.pem", pki.key_pem(key))
        pki.write_public(client / "cert.pem", pki.cert_pem(pki.issue_org_cert(ca_key, ca_cert, "LA", "LA", key.public_key())))
        gateway.cli("cert", "register", "LA", "--cert", str(client / "cert.pem"))
        time.sleep(1.2)

        def healthz():
            return requests.get(f"{gateway.url}/healthz", cert=(str(client / "cert.pem"), str(client / "key.pem")),
                                verify=str(gateway.certs["la"] / "ca.pem"), timeout=10)

        assert healthz().status_code == 200
        removal = proposal_id(gateway.cli("trust", "remove", pki.fingerprint(ca_cert), officer="senior-s").output)
        _, _, other_pem, other_crl = _files(tmp_path, "Another Regional CA")
        addition = proposal_id(gateway.cli("trust", "add-ca", str(other_pem), "--crl", str(other_crl),
                                           officer="senior-s").output)
        engine = make_engine(gateway.database_url, keys=gateway.home / "keys" / "data-keys.json")
        before = _trust_files(gateway.home)
        listed = _run(gateway, "trust", "list", "--json").output
        _break_commits_that_approve(engine)
        try:
            for proposal in (removal, addition):
                failed = gateway.cli("trust", "approve", "--proposal", proposal, officer="senior-t", expect_ok=False)
                assert failed.exit_code == 3, failed.output
                assert _trust_files(gateway.home) == before, f"proposal {proposal}: the trust files changed"
            time.sleep(1.5)  # the running gateway looks at the trust files at most once a second
            assert healthz().status_code == 200
            assert _run(gateway, "trust", "list", "--json").output == listed  # both still pending
        finally:
            _mend_commits(engine)
            engine.dispose()
        for proposal in (removal, addition):
            gateway.cli("trust", "approve", "--proposal", proposal, officer="senior-t")
        anchors = json.loads(_run(gateway, "trust", "list", "--json").output)
        assert [a["subject"] for a in anchors["anchors"] if not a["gateway_ca"]] == ["CN=Another Regional CA"]
        assert anchors["pending"] == []
        time.sleep(1.5)
        with pytest.raises(requests.exceptions.ConnectionError):
            healthz()
