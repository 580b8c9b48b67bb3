"""Who is calling, when TLS may end at a proxy in front of the gateway (docs/operations.md "nginx in front of several nodes").

Directly (`contactgate serve`): the front did the mutual-TLS handshake and hands over the verified
client certificate. Behind a proxy (`contactgate serve --behind-proxy`): nginx does the handshake and
forwards the certificate it verified in the ``Client-Cert`` header of RFC 9440 (a structured-field
byte sequence: ``:`` base64 of the DER ``:``), over a private hop.

The header is a claim anyone could write, so it is believed only from an address in
``CONTACTGATE_TRUSTED_PROXIES``; from anywhere else — including a client with its own TLS
certificate — it is refused, never ignored: a forged header is an attack, audited as such. A
message with neither a TLS certificate nor a trusted header is refused too. The certificate, however
it arrived, then goes through the same checks (chain, registry, revocation, organisation).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

CLIENT_CERT = "HTTP_CLIENT_CERT"          # the Client-Cert header, as WSGI names it
FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"    # the client's address, as the trusted proxy saw it
_SF_BINARY = re.compile(r":([A-Za-z0-9+/]+={0,2}):")


@dataclass(frozen=True)
class Caller:
    """The certificate to check (DER) or why there is none to believe, and the caller's address."""

    certificate_der: bytes | None
    problem: str | None   # a refusal's exact reason (for the audit), when the certificate is not believed
    address: str | None


def is_trusted(address: str | None, trusted: tuple) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def parse_client_cert(value: str) -> bytes:
    """The DER certificate in an RFC 9440 Client-Cert value; ValueError if it is not one."""
    match = _SF_BINARY.fullmatch(value.strip())
    if match is None:
        raise ValueError("not an RFC 9440 byte sequence (:base64 of the DER certificate:)")
    try:
        return base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None


def caller(environ: dict, tls_der: bytes | None, trusted_proxies: tuple) -> Caller:
    remote = environ.get("REMOTE_ADDR")
    header = environ.get(CLIENT_CERT)
    if header is None:
        return Caller(tls_der, None, remote)
    if tls_der is not None:
        return Caller(None, f"a Client-Cert header came from {remote} on a TLS connection with its own client "
                            "certificate: refused as forged", remote)
    if not is_trusted(remote, trusted_proxies):
        return Caller(None, f"a Client-Cert header came from {remote}, which is not a trusted proxy "
                            "(CONTACTGATE_TRUSTED_PROXIES): refused as forged", remote)
    forwarded = (environ.get(FORWARDED_FOR) or "").split(",")[-1].strip() or remote
    try:
        return Caller(parse_client_cert(header), None, forwarded)
    except ValueError as exc:
        return Caller(None, f"the Client-Cert header from the proxy {remote} is unreadable: {exc}", forwarded)
