"""Trusting a gateway answer: signed by a pinned gateway certificate that chains to the CA, with a
fresh Timestamp, and bound to the exact request that was sent by its RequestDigest.

The SDK checks every answer with `AnswerVerifier`; so does the gateway's own onboarding check
(`contactgate org check`), which calls the gateway as the organisation would. Whatever stops a call
from producing a trusted answer is a `GatewayError`: `ResponseNotTrusted`, or `GatewayUnreachable`
when no answer came back at all (what a caller retries on).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from lxml import etree

from contactgate_wire import wsse
from contactgate_wire.certificates import ChainError, TrustAnchors, fingerprint
from contactgate_wire.faults import Refusal
from contactgate_wire.soap import CG, q


class GatewayError(Exception):
    """Anything that stopped a call from producing a trusted answer."""


class ResponseNotTrusted(GatewayError):
    """The response was not signed by the pinned gateway certificate, or not bound to our request."""


class GatewayUnreachable(GatewayError):
    """No SOAP answer came back: the connection or the TLS handshake failed (a certificate the
    gateway does not accept ends here), or the answer was not a SOAP envelope."""


class AnswerVerifier:
    """Checks a gateway response: pinned signer, chain to the CA, fresh Timestamp, digest binding.

    Several certificates may be pinned at once: while the gateway rotates its signing key, the
    published bundle holds the current certificate and the staged (or previous) one, and answers
    signed by either are accepted."""

    def __init__(self, ca: TrustAnchors, gateway_signing_certs: x509.Certificate | list[x509.Certificate],
                 *, max_age_s: int = 300, skew_s: int = 60):
        self._ca = ca
        if isinstance(gateway_signing_certs, x509.Certificate):
            gateway_signing_certs = [gateway_signing_certs]
        if not gateway_signing_certs:
            raise ValueError("no gateway signing certificate to pin")
        self._pinned = frozenset(fingerprint(c) for c in gateway_signing_certs)
        self._max_age_s = max_age_s
        self._skew_s = skew_s

    def verify(self, envelope: etree._Element, expected_digest: str | None,
               now: dt.datetime | None = None) -> wsse.VerifiedMessage:
        """The verified answer (use only what it returns), or `ResponseNotTrusted`."""
        try:
            signer = wsse.extract_signer_certificate(envelope)
            if fingerprint(signer) not in self._pinned:
                raise ResponseNotTrusted("response signed by a certificate other than the gateway's")
            self._ca.verify_signer(signer)
            verified = wsse.verify(envelope, signer)
            wsse.check_timestamp(verified.timestamp, now or dt.datetime.now(dt.timezone.utc),
                                 max_lifetime_s=self._max_age_s, skew_s=self._skew_s)
        except (Refusal, ChainError) as exc:
            raise ResponseNotTrusted(f"response signature not trusted: {getattr(exc, 'detail', exc)}") from None
        digests = [e.text for e in verified.body.iter(q(CG, "RequestDigest"))]
        if expected_digest is not None and digests != [expected_digest]:
            raise ResponseNotTrusted("response is not bound to the request that was sent")
        return verified
