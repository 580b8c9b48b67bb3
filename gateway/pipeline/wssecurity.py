"""Step 4: WS-Security. The signer's certificate -- carried in the message, or referenced by issuer and
serial number, Subject Key Identifier or thumbprint and then looked up among the certificates of the
TLS client's organisation only -- must chain to a configured CA, be registered and not revoked, and
belong to the TLS client's organisation; the signature must cover exactly the Body
and the Timestamp; the Timestamp must be fresh. Afterwards only the verified Body is used.

Every refusal here tells the caller, in the fault's message, what is wrong with their own security
header (`contactgate_wire.wsse` words those); the audit keeps the exact reason."""

from __future__ import annotations

import datetime as dt

from contactgate_wire.faults import SignatureInvalid
from gateway.pipeline.context import Exchange, Services
from contactgate_wire import wsse
from gateway.pipeline.tls_client import accept_certificate
from gateway.trust import pki, registry


def verify_security(exchange: Exchange, services: Services) -> None:
    # Every mismatch with the signature profile at once (one round trip for the integrator); none of
    # the message is used until the signature has verified below.
    reference, problems = wsse.profile_problems(exchange.envelope)
    signer = None if reference is None else signing_certificate(reference, exchange, services)
    if reference is not None and signer is None:
        problems.append(wsse.UNRESOLVED_KEY_REFERENCE)
    if problems:
        raise wsse.profile_refusal(problems)
    fingerprint = pki.fingerprint(signer)
    if fingerprint != exchange.tls_fingerprint:  # the TLS certificate was checked in step 1
        check_signing_certificate(signer, fingerprint, exchange, services)
    verified = wsse.verify(exchange.envelope, signer)
    settings = services.settings
    # node-soap always sends a 10-minute Timestamp and WSS4J sets no cap: a longer Expires is
    # accepted, but the message is treated as expiring at Created + the maximum lifetime.
    _, accepted_until = wsse.check_timestamp(verified.timestamp, exchange.received_at,
                                             max_lifetime_s=settings.max_timestamp_lifetime_s,
                                             skew_s=settings.clock_skew_s, accept_longer_expires=True)
    payload = verified.payload
    if payload is None or payload.tag != f"{{urn:contactgate:v1}}{exchange.operation}":
        raise SignatureInvalid("the signed Body does not hold the request",
                               public_message="The signed soap:Body must hold exactly the one request element.")
    exchange.payload = payload
    exchange.signature_id = verified.signature_id
    # The moment after which this message can no longer be accepted: how long replay remembers it.
    exchange.timestamp_expires = accepted_until + dt.timedelta(seconds=settings.clock_skew_s)


def signing_certificate(reference: wsse.KeyReference, exchange: Exchange, services: Services):
    """The certificate the key reference names: the one the message carries, or, for a reference by
    issuer and serial number, Subject Key Identifier or thumbprint (WSS4J's and WCF's defaults), the
    one it names among the certificates registered to the TLS client's organisation -- never another
    organisation's (issuer and serial number can repeat across CAs, and a reference must not tell
    whether a certificate of another organisation exists: the same one query whatever it names).
    None if it names none of them. Its chain, registration and revocation are checked after (as for
    a carried certificate)."""
    if reference.certificate is not None:
        return reference.certificate
    named = [(record, certificate) for record, certificate in
             registry.certificates_of(exchange.lookup_connection(services), exchange.org_code)
             if reference.names(certificate)]
    # (the same key under a renewed certificate has the same Subject Key Identifier: the one in use)
    named.sort(key=lambda pair: (pair[0].revoked_at is not None, -pair[0].not_after.timestamp()))
    return named[0][1] if named else None


def check_signing_certificate(signer, fingerprint: str, exchange: Exchange, services: Services) -> None:
    """A signing certificate other than the TLS one: it too must be accepted, and be registered to the
    TLS client's organisation (an unregistered one and another organisation's get the same answer:
    whether a certificate is another organisation's is not told)."""
    accept_certificate(signer, fingerprint, "signing certificate", exchange, services, org_code=exchange.org_code)
