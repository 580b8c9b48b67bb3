"""A certificate is the organisation's credential: one officer alone can never obtain one.

Through the real interfaces: the CLI, the console, and SOAP over mutual TLS."""

from __future__ import annotations

import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from gateway.db import certificates
from gateway.trust import pki
from tests.conftest import _database
from tests.support import Gateway

READ = dict(user_id="hv.one", role="health visitor", reason_code="care_coordination",
            reason_text="checking before a home visit")
ONE_OFFICER_MINTS_CREDENTIALS = pytest.mark.xfail(
    strict=True, reason="one officer alone can obtain working credentials for any organisation (issue 22, 1)")


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


def organisation_request(tmp_path):
    directory = tmp_path / "org-side"
    directory.mkdir()
    key = pki.new_rsa_key()
    (directory / "key.pem").write_bytes(pki.key_pem(key))
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HL1")])).sign(key, hashes.SHA256()))
    (directory / "request.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return directory


@ONE_OFFICER_MINTS_CREDENTIALS
def test_one_officer_alone_gets_no_working_credentials_from_the_cli(gw, tmp_path):
    before = hl1_certificates(gw)
    mine = organisation_request(tmp_path)
    alone = tmp_path / "alice"
    gw.cli("cert", "issue", "HL1", "--out-dir", str(alone), officer="alice", expect_ok=False)
    gw.cli("cert", "issue", "HL1", "--csr", str(mine / "request.csr"), "--out", str(tmp_path / "alice.pem"),
           officer="alice", expect_ok=False)
    gw.cli("cert", "issue", "HL1", "--csr", str(mine / "request.csr"), officer="alice", expect_ok=False)
    assert hl1_certificates(gw) == before
    assert not answered_as_hl1(gw, alone)
    if (tmp_path / "alice.pem").exists():
        (mine / "cert.pem").write_bytes((tmp_path / "alice.pem").read_bytes())
    assert not answered_as_hl1(gw, mine)


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


@ONE_OFFICER_MINTS_CREDENTIALS
def test_one_officer_alone_gets_no_credentials_from_the_console(gw, console_browser, tmp_path):
    before = hl1_certificates(gw)
    alice = console_browser("alice")
    alice.get("/organisations/HL1")
    no_csr = alice.post("/organisations/HL1/certificates", {})
    assert no_csr.mimetype != "application/zip" and b"PRIVATE KEY" not in no_csr.get_data()
    mine = organisation_request(tmp_path)
    with_csr = alice.post("/organisations/HL1/certificates",
                          {"csr": (io.BytesIO((mine / "request.csr").read_bytes()), "hl1.csr")},
                          content_type="multipart/form-data")
    assert b"BEGIN CERTIFICATE" not in with_csr.get_data()
    assert hl1_certificates(gw) == before
