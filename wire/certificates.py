"""Certificates as both sides of the gateway see them: fingerprints, PEM loading, and chain
validation against configured CAs (cryptography's RFC 5280 path building).

Chain validation has no revocation checking: revocation is the gateway registry's job, consulted on
every message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError,
)


# What cryptography raises for a certificate that cannot be read or used. Parts are parsed lazily:
# an unknown X.509 version fails loading with InvalidVersion (not a ValueError), an unknown or
# malformed key only when it is read (UnsupportedAlgorithm, ValueError).
UNUSABLE_CERTIFICATE = (ValueError, x509.InvalidVersion, UnsupportedAlgorithm)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lower-case hex: how certificates are named everywhere."""
    return cert.fingerprint(hashes.SHA256()).hex()


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def load_cert_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def load_certs_pem(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


_CLIENT_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


class ChainError(Exception):
    """The certificate does not chain to a configured CA, is outside its validity, or is unfit."""


@dataclass
class TrustAnchors:
    """The CAs an organisation's certificate may chain to. Built once per process."""

    roots: list[x509.Certificate]

    def __post_init__(self):
        self._store = Store(self.roots) if self.roots else None
        # Client certificates already found to chain, by DER, with the period in which that holds
        # (the leaf's and its issuer's validity): the same certificate arrives with every message,
        # and the answer cannot change while these roots stay (a trust change builds new anchors).
        # Only successes are kept; revocation is not a chain question (the registry's, every time).
        self._verified: dict[bytes, tuple[dt.datetime, dt.datetime]] = {}

    @classmethod
    def from_files(cls, paths: list[Path]) -> "TrustAnchors":
        roots: list[x509.Certificate] = []
        for path in paths:
            roots.extend(load_certs_pem(path.read_bytes()))
        return cls(roots)

    VERIFIED_CACHE = 4096  # distinct client certificates remembered (a national deployment: a few thousand)

    def verify_client(self, leaf: x509.Certificate, *, at: dt.datetime | None = None) -> None:
        """Raise ChainError unless ``leaf`` chains to a root and may authenticate a client."""
        if self._store is None:
            raise ChainError("no trusted CA is configured")
        at = at or _now()
        der = leaf.public_bytes(Encoding.DER)
        period = self._verified.get(der)
        if period is not None and period[0] <= at <= period[1]:
            return
        self._verify_client_chain(leaf, at)
        issuers = [root for root in self.roots if root.subject == leaf.issuer]
        starts = [leaf.not_valid_before_utc, *(r.not_valid_before_utc for r in issuers)]
        ends = [leaf.not_valid_after_utc, *(r.not_valid_after_utc for r in issuers)]
        if len(self._verified) >= self.VERIFIED_CACHE:
            self._verified.clear()
        self._verified[der] = (max(starts), min(ends))

    def _verify_client_chain(self, leaf: x509.Certificate, at: dt.datetime) -> None:
        verifier = (
            PolicyBuilder().store(self._store).time(at or _now())
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_CLIENT_EE_POLICY)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, [])
        except VerificationError as exc:
            raise ChainError(str(exc)) from exc
        # The Web PKI profile lets a certificate without extendedKeyUsage through; an organisation's
        # certificate must say it is for client authentication (the gateway's own signing
        # certificate, from the same CA, does not).
        try:
            usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise ChainError("certificate has no extendedKeyUsage clientAuth") from None
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise ChainError("certificate is not for client authentication")

    def verify_signer(self, leaf: x509.Certificate, *, at: dt.datetime | None = None) -> None:
        """Raise ChainError unless ``leaf`` (a response signer) chains to a root and is in date.

        Signing certificates carry no clientAuth EKU, so this checks the path and validity itself.
        """
        at = at or _now()
        if not (leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc):
            raise ChainError("certificate is outside its validity period")
        for root in self.roots:
            if root.subject != leaf.issuer:
                continue
            try:
                leaf.verify_directly_issued_by(root)
                return
            except (InvalidSignature, ValueError, TypeError):  # wrong signature or key type
                continue
        raise ChainError("certificate was not issued by a trusted CA")
