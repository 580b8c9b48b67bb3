"""The gateway CA's certificate revocation list: made from the registry's revoked certificates that
the gateway CA issued (organisations' and proxies'), signed with the CA key (so only where officers
work: `init`, `serve` at start, `cert revoke`, `org revoke`, `proxy revoke`, `cert crl`, which
deploy/contactgate-crl.timer runs daily), written to the home, and put in the client CA bundle with
the CAs (for nginx). The server's TLS context (gateway.server, gateway.front) loads the CAs and CRLs
themselves (`client_ca_sources`) and refuses a revoked or expired client certificate at the
handshake; each worker follows a changed file (a CRL copied to a host without the CA key too) for
new connections without a restart. The application still refuses revoked certificates itself
(gateway.pipeline.tls_client).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import select

from gateway.config import Settings
from gateway.db import certificates, proxy_certificates
from gateway.files import write_private
from gateway.home import load_ca
from gateway.trust import pki


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def make(settings: Settings, conn, ca=None) -> bytes:
    ca_key, ca_cert = ca or load_ca(settings)
    issuer = ca_cert.subject.rfc4514_string()
    revoked = []
    for table in (certificates, proxy_certificates):  # organisations' and proxies' certificates
        rows = conn.execute(select(table.c.serial, table.c.revoked_at, table.c.issuer)
                            .where(table.c.revoked_at.is_not(None)))
        revoked += [(int(r.serial, 16), _aware(r.revoked_at))  # stored as hex (pki.describe)
                    for r in rows if r.issuer == issuer]
    number = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    return pki.make_crl(ca_key, ca_cert, revoked, settings.crl_days, number)


def publish(settings: Settings, engine, ca=None) -> bytes:
    """Make the CRL, write it to the home, and rewrite the client CA bundle the TLS context loads
    (``ca``: the CA's (key, certificate) when the caller holds them, else read from the home)."""
    with engine.connect() as conn:
        pem = make(settings, conn, ca)
    write_private(settings.layout.crl, pem)
    write_client_bundle(settings)
    return pem


def renew(settings: Settings, engine, ca=None) -> bytes | None:
    """Publish a new CRL where the CA key is (after a revocation, at init, at serve's start); None on a
    host without it, which keeps the CRL it was given."""
    if not settings.layout.ca_key.exists():
        return None
    return publish(settings, engine, ca)


def client_ca_sources(settings: Settings) -> list:
    """The files the client CA bundle is made of: the CAs a client certificate may chain to (the
    gateway CA, trust/*.pem), then the CRLs there are (ca/crl.pem, trust/*.crl). The server's TLS
    context is built from these (gateway.server), so a node follows a CRL copied to it alone."""
    from gateway.app import trust_anchor_files

    crls = [settings.layout.crl, *sorted(settings.layout.trusted_cas_dir.glob("*.crl"))]
    return [*trust_anchor_files(settings), *(path for path in crls if path.exists())]


def write_client_bundle(settings: Settings) -> str:
    """The CAs a client certificate may chain to, and their CRLs, in one PEM file (replaced whole):
    for nginx (ssl_client_certificate, ssl_crl) and anything else that wants one file."""
    parts = [path.read_bytes().rstrip() + b"\n" for path in client_ca_sources(settings)]
    bundle = settings.layout.client_ca_bundle
    temporary = bundle.with_name(bundle.name + ".new")
    write_private(temporary, b"".join(parts))
    temporary.replace(bundle)  # whole or not at all: a worker never loads half a bundle
    return str(bundle)


def next_update(pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_crl(pem).next_update_utc
