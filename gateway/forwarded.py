"""Who is calling, when TLS may end at a proxy in front of the gateway (docs/operations.md "nginx in front of several nodes").

Directly (`contactgate serve`): the front did the mutual-TLS handshake and hands over the verified
client certificate. Behind a proxy (`contactgate serve --behind-proxy`): nginx does the clients'
handshake and forwards the certificate it verified in the ``Client-Cert`` header of RFC 9440 (a
structured-field byte sequence: ``:`` base64 of the DER ``:``), over a private hop that is mutual
TLS too: nginx presents its own proxy certificate to the node.

The header is a claim anyone could write, so it is believed only on that hop (the front marks it:
PROXY_HOP), from an address in ``CONTACTGATE_TRUSTED_PROXIES``, and from a TLS peer whose
certificate is a registered proxy certificate (checked against the registry by the pipeline:
gateway.pipeline.tls_client, with `Caller.proxy_der`). Anything else is refused, never ignored: a
forged header is an attack, audited as such; so is plain HTTP sent to a node's TLS port (the front
marks it: PLAIN_HTTP). A message with neither a TLS certificate nor a believed header is refused too.
The certificate, however it arrived, then goes through the same checks (chain, registry,
revocation, organisation).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

CLIENT_CERT = "HTTP_CLIENT_CERT"          # the Client-Cert header, as WSGI names it
FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"    # the client's address, as the trusted proxy saw it
PROXY_HOP = "contactgate.proxy_hop"       # set by the front of `serve --behind-proxy`
PLAIN_HTTP = "contactgate.plain_http"     # set by that front on a plain-HTTP request to its TLS port
_SF_BINARY = re.compile(r":([A-Za-z0-9+/]+={0,2}):")


@dataclass(frozen=True)
class Caller:
    """The certificate to check (DER) or why there is none to believe, and the caller's address."""

    certificate_der: bytes | None
    problem: str | None   # a refusal's exact reason (for the audit), when the certificate is not believed
    address: str | None
    # The TLS peer's certificate when it forwarded a Client-Cert header: it must be a registered proxy
    # certificate (the pipeline checks it first, before ``problem`` or the forwarded certificate).
    proxy_der: bytes | None = None


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
    if environ.get(PLAIN_HTTP):
        return Caller(None, f"plain HTTP from {remote} to a node that requires mutual TLS from its proxy: "
                            "refused", remote)
    header = environ.get(CLIENT_CERT)
    if header is None:
        return Caller(tls_der, None, remote)
    if tls_der is None:
        return Caller(None, f"a Client-Cert header came from {remote} without a TLS client certificate: "
                            "refused as forged", remote)
    if not environ.get(PROXY_HOP):
        return Caller(None, f"a Client-Cert header came from {remote} on a TLS connection with its own client "
                            "certificate: refused as forged", remote)
    if not is_trusted(remote, trusted_proxies):
        return Caller(None, f"a Client-Cert header came from {remote}, which is not a trusted proxy "
                            "(CONTACTGATE_TRUSTED_PROXIES): refused as forged", remote)
    forwarded = (environ.get(FORWARDED_FOR) or "").split(",")[-1].strip() or remote
    try:
        return Caller(parse_client_cert(header), None, forwarded, tls_der)
    except ValueError as exc:
        return Caller(None, f"the Client-Cert header from the proxy {remote} is unreadable: {exc}", forwarded, tls_der)
