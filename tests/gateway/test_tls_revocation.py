"""A revoked certificate is refused at the TLS handshake: the gateway CA's CRL is in the server's
TLS context, and a revocation reaches the running gateway within a second, without a restart
(same worker processes), while the application still refuses it on a connection already open."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import requests
from cryptography import x509

from connectors.client import GatewayFault, GatewayUnreachable
from gateway.trust import pki
from tests.support import child_pids

WHO = dict(user_id="tls.check", role="engineer")


def _handshake(gateway, directory) -> None:
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    context.load_cert_chain(str(directory / "cert.pem"), str(directory / "key.pem"))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = tls.recv(64)  # TLS 1.3: a refused client certificate shows on the first read
        if not answer:
            raise ConnectionResetError("closed")


def test_a_revoked_certificate_is_refused_at_the_handshake_without_a_restart(gateway, clients):
    name = f"la_tls_{gateway.backend}"
    directory = gateway.issue_cert("LA", name)
    open_client = gateway.client(name)
    assert open_client.ping(**WHO)["Organisation"] == "LA"  # a keep-alive connection, open
    _handshake(gateway, directory)
    workers = child_pids(gateway.process.pid)
    fingerprint = pki.fingerprint(pki.load_cert_pem((directory / "cert.pem").read_bytes()))
    gateway.cli("cert", "revoke", fingerprint, "--reason", "key compromised")
    time.sleep(1.5)
    seq = gateway.audit_seq()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(gateway, directory)
    with pytest.raises(GatewayUnreachable):
        gateway.client(name).ping(**WHO)
    refused = [e for e in gateway.settle_audit(seq) if e["operation"] == "tls_handshake"]
    assert {e["fault_code"] for e in refused} <= {"CertificateRejected"}  # audited, a few a minute per address
    # the connection opened before the revocation: the application refuses the certificate itself
    with pytest.raises(GatewayFault) as refused:
        open_client.ping(**WHO)
    assert refused.value.code == "CertificateRejected"
    assert clients("health").ping(**WHO)["Organisation"] == "HEALTH"  # everyone else carries on
    assert child_pids(gateway.process.pid) == workers


def test_the_crl_is_published_at_get_crl_with_the_revoked_serials(gateway, clients):
    la = clients("la")
    der = la.session.get(f"{gateway.url}/crl", timeout=10)
    assert der.status_code == 200 and der.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(der.content)
    revoked = pki.load_cert_pem((gateway.certs["la_revoked"] / "cert.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    live = pki.load_cert_pem((gateway.certs["la"] / "cert.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(live.serial_number) is None
    ca = pki.load_cert_pem((gateway.certs["la"] / "ca.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and crl.issuer == ca.subject
    pem = la.session.get(f"{gateway.url}/crl?format=pem", timeout=10)
    assert x509.load_pem_x509_crl(pem.content).fingerprint(crl.signature_hash_algorithm) == crl.fingerprint(
        crl.signature_hash_algorithm)


def test_cert_crl_writes_the_crl_for_hosts_without_the_ca_key(gateway, tmp_path):
    out = tmp_path / "crl.pem"
    result = gateway.cli("cert", "crl", "--out", str(out))
    assert "valid until" in result.output
    crl = x509.load_pem_x509_crl(out.read_bytes())
    revoked = pki.load_cert_pem((gateway.certs["la_revoked"] / "cert.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None


def test_a_node_without_the_ca_key_refuses_a_certificate_revoked_after_it_started_once_the_crl_is_copied(
        gateway, tmp_path):
    """A serving host holds no CA key: the CRL is renewed where the key is (contactgate-crl.timer)
    and copied over (ca/crl.pem, as rsync puts it: whole, by rename). The running node refuses the
    revoked certificate at the handshake within seconds, without a restart; until the copy arrives
    the application refuses it (the registry), while the handshake still passes."""
    from gateway.trust import crl

    name = f"la_node_{gateway.backend}"
    directory = gateway.issue_cert("LA", name)
    _handshake(gateway, directory)
    ca_key_file = gateway.home / "ca" / "ca-key.pem"
    ca_host_key = tmp_path / "ca-key.pem"
    ca_key_file.rename(ca_host_key)  # the CA key is on the officers' host only
    try:
        fingerprint = pki.fingerprint(pki.load_cert_pem((directory / "cert.pem").read_bytes()))
        gateway.cli("cert", "revoke", fingerprint, "--reason", "key compromised")  # no CA key here: no new CRL
        with pytest.raises(GatewayFault) as refused:
            gateway.client(name).ping(**WHO)
        assert refused.value.code == "CertificateRejected"
        time.sleep(1.5)
        _handshake(gateway, directory)  # the node's CRL is still the one it had

        with gateway.engine.connect() as conn:  # the CA host renews the CRL (`contactgate cert crl`) ...
            renewed = crl.make(gateway_settings(gateway), conn, ca=(
                pki.load_key_pem(ca_host_key.read_bytes()), pki.load_cert_pem((gateway.home / "ca" / "ca.pem").read_bytes())))
    finally:
        ca_host_key.rename(ca_key_file)
    copied = gateway.home / "ca" / ".crl.pem.rsync-tmp"  # ... and copies it over, as rsync does
    pki.write_private(copied, renewed)
    copied.replace(gateway.home / "ca" / "crl.pem")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _handshake(gateway, directory)
        except (ssl.SSLError, ConnectionError):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the node still accepts the revoked certificate at the handshake")


def gateway_settings(gateway):
    from gateway.config import Settings

    return Settings.from_env({"CONTACTGATE_HOME": str(gateway.home), "CONTACTGATE_DATABASE_URL": gateway.database_url})
