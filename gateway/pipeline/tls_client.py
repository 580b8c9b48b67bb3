"""Step 1: the TLS client certificate names the organisation.

The TLS layer (the front, or nginx in front of it: gateway.forwarded) has already verified the chain
to a configured CA; here it is verified again, and the certificate must also be registered to an
organisation and not revoked. The organisation is never taken from the message. A certificate
forwarded by a proxy counts only when the TLS peer that forwarded it holds a registered proxy
certificate, not revoked (`check_proxy`).
"""

from __future__ import annotations

from cryptography import x509

from contactgate_wire.certificates import UNUSABLE_CERTIFICATE
from contactgate_wire.faults import CertificateRejected, SignerMismatch
from gateway.pipeline.context import Exchange, Services
from gateway.trust import pki, proxies, registry
from gateway.trust.pki import ChainError

NOT_THE_CLIENTS_ORGANISATION = ("The signing certificate is not registered to your organisation (the TLS client "
                                "certificate's): sign with your own organisation's certificate.")


def identify_client(exchange: Exchange, services: Services) -> None:
    if exchange.proxy_der is not None:  # a Client-Cert header, from a TLS peer that must be a proxy
        check_proxy(exchange, services)
    if exchange.certificate_problem:  # e.g. a Client-Cert header from an address that is not a trusted proxy
        raise CertificateRejected(exchange.certificate_problem)
    if not exchange.peer_der:
        raise CertificateRejected("no client certificate reached the application")
    exchange.tls_fingerprint = pki.fingerprint_der(exchange.peer_der)
    try:  # (from a trusted proxy's Client-Cert header it has been parsed by no TLS library)
        certificate = x509.load_der_x509_certificate(exchange.peer_der)
    except UNUSABLE_CERTIFICATE as exc:
        raise CertificateRejected(f"TLS client certificate unreadable: {exc}") from None
    accept_certificate(certificate, exchange.tls_fingerprint, "TLS client certificate", exchange, services,
                       names_the_client=True)


def accept_certificate(certificate: x509.Certificate, fingerprint: str, what: str, exchange: Exchange,
                       services: Services, *, names_the_client: bool = False,
                       org_code: str | None = None) -> registry.CertificateRecord:
    """A certificate must chain to a configured CA (as a client certificate), be registered and not
    be revoked. For the TLS certificate (``names_the_client``) its organisation is read in the same
    transaction and put on the exchange, before the revocation check, so a refusal names it. One
    whose parts cannot be read (parsed lazily, as the chain is checked) is refused as unusable. With
    ``org_code`` (a signing certificate) one not registered to that organisation -- unregistered, or
    another organisation's, revoked or not -- is refused in the same words either way (SignerMismatch)."""
    try:
        services.anchors.verify_client(certificate, at=exchange.received_at)
    except ChainError as exc:
        raise CertificateRejected(f"{what} {fingerprint} rejected: {exc}", public_message=(
            f"The {what} is not accepted: it must be issued by a CA the gateway trusts, be valid now "
            "and be for client authentication.")) from None
    except UNUSABLE_CERTIFICATE as exc:
        raise CertificateRejected(f"{what} {fingerprint} unusable: {exc}",
                                  public_message=f"The {what} cannot be used (malformed or unsupported).") from None
    record, organisation = registry.get_cert_and_org(exchange.lookup_connection(services), fingerprint)
    if record is not None and names_the_client:
        exchange.org_code = record.org_code
        exchange.organisation = organisation  # step 6 judges it
    if record is None and names_the_client and proxies.get(exchange.lookup_connection(services), fingerprint):
        raise CertificateRejected(f"the proxy certificate {fingerprint} forwarded no Client-Cert header: no client "
                                  "certificate to check")
    if org_code is not None and (record is None or record.org_code != org_code):
        raise SignerMismatch(f"{what} {fingerprint} is not registered to any organisation" if record is None else
                             f"signed by {record.org_code}, TLS client is {org_code}",
                             public_message=NOT_THE_CLIENTS_ORGANISATION)
    if record is None:
        raise CertificateRejected(f"{what} {fingerprint} is not registered to any organisation",
                                  public_message=f"The {what} is not registered with the gateway.")
    if record.revoked_at is not None:
        raise CertificateRejected(f"{what} {fingerprint} was revoked: {record.revoked_reason}",
                                  public_message=f"The {what} has been revoked.")
    return record


def check_proxy(exchange: Exchange, services: Services) -> None:
    """The TLS peer that forwarded a Client-Cert header: its certificate must chain to a configured
    CA (as the handshake checked), be a registered proxy certificate (gateway.trust.proxies) and not
    be revoked. Anything else speaking as a proxy is refused as forging the header."""
    fingerprint = pki.fingerprint_der(exchange.proxy_der)
    try:
        certificate = x509.load_der_x509_certificate(exchange.proxy_der)
        services.anchors.verify_client(certificate, at=exchange.received_at)
    except ChainError as exc:
        raise CertificateRejected(f"a Client-Cert header came through a TLS peer whose certificate {fingerprint} "
                                  f"is not accepted: {exc}: refused as forged") from None
    except UNUSABLE_CERTIFICATE as exc:
        raise CertificateRejected(f"a Client-Cert header came through a TLS peer whose certificate {fingerprint} "
                                  f"is unusable: {exc}: refused as forged") from None
    record = proxies.get(exchange.lookup_connection(services), fingerprint)
    if record is None:
        raise CertificateRejected(f"a Client-Cert header came through a TLS peer whose certificate {fingerprint} "
                                  "is not a registered proxy certificate: refused as forged")
    if record.revoked_at is not None:
        raise CertificateRejected(f"a Client-Cert header came through the proxy certificate {fingerprint} "
                                  f"({record.name}), revoked: {record.revoked_reason}: refused")
