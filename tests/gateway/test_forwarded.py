"""The Client-Cert header (RFC 9440) is believed only on the proxy hop of `serve --behind-proxy`,
from a trusted address and a TLS peer (whose certificate the pipeline then checks is a registered
proxy's): on the direct mutual-TLS path it is refused as forged, whoever sends it; and its value must
be exactly an RFC 9440 byte sequence. (The path through nginx, and the proxy certificate's checks,
are tests/deploy/test_nginx_nodes.py.)"""

from __future__ import annotations

import base64
import ipaddress

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from contactgate_wire.certificates import load_cert_pem
from contactgate_wire.soap import SOAP_ACTION_PREFIX, fault_code, parse_untrusted
from gateway import forwarded
from gateway.config import SettingError, Settings
from gateway.db import audit_log


def _header(cert_dir) -> str:
    der = load_cert_pem((cert_dir / "cert.pem").read_bytes()).public_bytes(Encoding.DER)
    return ":" + base64.b64encode(der).decode() + ":"


def test_a_client_cert_header_on_a_direct_tls_connection_is_refused_and_audited(gateway):
    """LA, with its own TLS certificate, also claims HEALTH's in a header: refused, not ignored."""
    la = gateway.client("la")
    message = la.build_request("Ping", Requester={"UserId": "forger", "Role": "onboarding"})
    before = gateway.index_snapshot()
    response = la.session.post(la.endpoint, data=message, timeout=30, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}Ping"',
        "Client-Cert": _header(gateway.certs["health"])})
    assert response.status_code == 500
    assert fault_code(parse_untrusted(response.content)) == "CertificateRejected"
    assert gateway.index_snapshot() == before
    with gateway.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.request_id == response.headers["X-Request-Id"])).one()
    assert row.outcome == "refused" and row.fault_code == "CertificateRejected"
    assert "TLS connection with its own client certificate" in row.detail


@pytest.mark.parametrize("value", ["", "::", "MIIB:", ":MIIB", ":MII B:", ":abc$:", ":YWJj:, :YWJj:", "YWJj"])
def test_only_an_rfc9440_byte_sequence_is_read(value):
    with pytest.raises(ValueError):
        forwarded.parse_client_cert(value)


def test_an_rfc9440_byte_sequence_gives_its_bytes():
    assert forwarded.parse_client_cert(" :YWJjZA==: ") == b"abcd"


def test_the_header_counts_only_on_the_proxy_hop_from_a_trusted_address_and_a_tls_peer():
    trusted = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1"))
    header = {"HTTP_CLIENT_CERT": ":YWJjZA==:", "HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.5",
              forwarded.PROXY_HOP: True}
    believed = forwarded.caller({"REMOTE_ADDR": "10.0.0.9", **header}, b"proxy", trusted)
    # the proxy's own entry of X-Forwarded-For (the last); the TLS peer, for the pipeline to check
    assert believed == forwarded.Caller(b"abcd", None, "203.0.113.5", proxy_der=b"proxy")
    for remote in ("10.0.1.9", "127.0.0.1", "not-an-address", None):
        refused = forwarded.caller({"REMOTE_ADDR": remote, **header}, b"proxy", trusted)
        assert refused.certificate_der is None and "not a trusted proxy" in refused.problem
    assert forwarded.caller({"REMOTE_ADDR": "10.0.0.9", **header}, b"proxy", ()).certificate_der is None
    no_tls = forwarded.caller({"REMOTE_ADDR": "10.0.0.9", **header}, None, trusted)
    assert no_tls.certificate_der is None and "without a TLS client certificate" in no_tls.problem
    plain = forwarded.caller({"REMOTE_ADDR": "10.0.0.9", forwarded.PLAIN_HTTP: True, **header}, None, trusted)
    assert plain.certificate_der is None and "plain HTTP" in plain.problem
    not_the_hop = {k: v for k, v in header.items() if k != forwarded.PROXY_HOP}
    direct_forgery = forwarded.caller({"REMOTE_ADDR": "10.0.0.9", **not_the_hop}, b"tls", trusted)
    assert direct_forgery.certificate_der is None and "its own client certificate" in direct_forgery.problem
    direct = forwarded.caller({"REMOTE_ADDR": "10.0.0.9"}, b"tls", trusted)
    assert direct == forwarded.Caller(b"tls", None, "10.0.0.9")


def test_trusted_proxies_setting_is_checked(tmp_path):
    settings = Settings.from_env({"CONTACTGATE_HOME": str(tmp_path), "CONTACTGATE_TRUSTED_PROXIES": "127.0.0.2, 10.1.0.0/16"})
    assert settings.trusted_proxies == (ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("10.1.0.0/16"))
    with pytest.raises(SettingError, match="CONTACTGATE_TRUSTED_PROXIES holds 'nginx'"):
        Settings.from_env({"CONTACTGATE_HOME": str(tmp_path), "CONTACTGATE_TRUSTED_PROXIES": "nginx"})


def test_serve_behind_a_proxy_needs_trusted_proxies(tmp_path):
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "serve", "--behind-proxy"])
    assert result.exit_code == 2 and "CONTACTGATE_TRUSTED_PROXIES" in result.output
