"""Step 1: the TLS client certificate names the organisation.

The TLS layer has already verified the chain to a configured CA; here the certificate must also be
registered to an organisation and not revoked. The organisation is never taken from the message.
"""

from __future__ import annotations

from cryptography import x509

from gateway.errors import CertificateRejected
from gateway.pipeline.context import Exchange, Services
from gateway.trust import pki, registry
from gateway.trust.pki import ChainError


def identify_client(exchange: Exchange, services: Services) -> None:
    if not exchange.peer_der:
        raise CertificateRejected("no client certificate reached the application")
    exchange.tls_fingerprint = pki.fingerprint_der(exchange.peer_der)
    try:
        certificate = x509.load_der_x509_certificate(exchange.peer_der)
        services.anchors.verify_client(certificate, at=exchange.received_at)
    except (ValueError, ChainError) as exc:
        raise CertificateRejected(f"TLS client certificate rejected: {exc}") from None
    with services.reader.connect() as conn:
        record = registry.get_cert(conn, exchange.tls_fingerprint)
        # Read with the certificate, in the same transaction; step 6 judges it.
        exchange.organisation = registry.get_org(conn, record.org_code) if record else None
    if record is None:
        raise CertificateRejected("TLS client certificate is not registered to any organisation")
    if record.revoked_at is not None:
        exchange.org_code = record.org_code
        raise CertificateRejected(f"TLS client certificate was revoked: {record.revoked_reason}")
    exchange.org_code = record.org_code
