"""The trust list: the CAs whose certificates organisations may use (the gateway CA, and each CA in
$CONTACTGATE_HOME/trust with its CRL beside it). A change is proposed by a senior officer and made
when a second approves it (gateway.trust.registry); the client CA bundle is then rewritten, and the
running gateway picks it up for new connections within a second (gateway.front.ReloadingContext)
and in the application (gateway.app's anchors follow the trust directory).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gateway.config import Settings
from gateway.files import write_private
from gateway.trust import pki


class TrustError(ValueError):
    """A certificate that cannot be a trust anchor, or a change that cannot be made (says why)."""


@dataclass(frozen=True)
class Anchor:
    fingerprint: str
    subject: str
    not_after: dt.datetime
    gateway_ca: bool
    crl_next_update: dt.datetime | None
    path: Path

    def as_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "subject": self.subject, "not_after": self.not_after.isoformat(),
                "gateway_ca": self.gateway_ca, "path": str(self.path),
                "crl_next_update": self.crl_next_update.isoformat() if self.crl_next_update else None}


def _crl_path(settings: Settings, fingerprint: str) -> Path:
    return settings.layout.trusted_cas_dir / f"{fingerprint[:16]}.crl"


def list_anchors(settings: Settings) -> list[Anchor]:
    layout = settings.layout
    found = []
    for path in [layout.ca_cert, *sorted(layout.trusted_cas_dir.glob("*.pem"))]:
        cert = pki.load_cert_pem(path.read_bytes())
        fingerprint = pki.fingerprint(cert)
        crl_file = layout.crl if path == layout.ca_cert else _crl_path(settings, fingerprint)
        next_update = x509.load_pem_x509_crl(crl_file.read_bytes()).next_update_utc if crl_file.exists() else None
        found.append(Anchor(fingerprint, cert.subject.rfc4514_string(), cert.not_valid_after_utc,
                            path == layout.ca_cert, next_update, path))
    return found


def validate_ca(pem: bytes, crl_pem: bytes | None = None, now: dt.datetime | None = None) -> x509.Certificate:
    """Only a CA certificate is accepted: basicConstraints CA=true and keyUsage keyCertSign, within
    its dates; its CRL, if given, must be signed by it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        certs = pki.load_certs_pem(pem)
    except ValueError as exc:
        raise TrustError(f"not a PEM certificate: {exc}") from None
    if len(certs) != 1:
        raise TrustError(f"give exactly one CA certificate (the file holds {len(certs)})")
    [cert] = certs
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise TrustError(f"not a CA certificate: it has no {exc.oid._name} extension") from None
    if not constraints.ca:
        raise TrustError("not a CA certificate: basicConstraints CA is false (an organisation's or a server's "
                         "certificate cannot be a trust anchor)")
    if not usage.key_cert_sign:
        raise TrustError("not a CA certificate: its key usage does not include keyCertSign")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TrustError(f"the CA certificate is outside its dates ({cert.not_valid_before_utc:%Y-%m-%d} to "
                         f"{cert.not_valid_after_utc:%Y-%m-%d})")
    if crl_pem is not None:
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
        except ValueError as exc:
            raise TrustError(f"not a PEM CRL: {exc}") from None
        if crl.issuer != cert.subject or not crl.is_signature_valid(cert.public_key()):
            raise TrustError("the CRL is not signed by this CA")
    return cert


def add_anchor(settings: Settings, pem: bytes, crl_pem: bytes | None = None) -> Anchor:
    cert = validate_ca(pem, crl_pem)
    fingerprint = pki.fingerprint(cert)
    if any(a.fingerprint == fingerprint for a in list_anchors(settings)):
        raise TrustError("that CA is already trusted")
    target = settings.layout.trusted_cas_dir / f"{fingerprint[:16]}.pem"
    if crl_pem is not None:
        write_private(_crl_path(settings, fingerprint), crl_pem)
    write_private(target, pki.cert_pem(cert))
    _rewrite_bundle(settings)
    return next(a for a in list_anchors(settings) if a.fingerprint == fingerprint)


def remove_anchor(settings: Settings, fingerprint: str) -> Anchor:
    fingerprint = fingerprint.strip().lower().replace(":", "")
    anchor = next((a for a in list_anchors(settings) if a.fingerprint == fingerprint), None)
    if anchor is None:
        raise TrustError("no trusted CA with that fingerprint (see `contactgate trust list`)")
    if anchor.gateway_ca:
        raise TrustError("the gateway's own CA cannot be removed from the trust list")
    anchor.path.unlink()
    _crl_path(settings, fingerprint).unlink(missing_ok=True)
    _rewrite_bundle(settings)
    return anchor


def _rewrite_bundle(settings: Settings) -> None:
    from gateway.trust.crl import write_client_bundle

    write_client_bundle(settings)


def add_payload(pem: bytes, crl_pem: bytes | None) -> dict:
    """What a proposal to trust a CA carries, once the certificate is checked to be a CA (TrustError if not)."""
    cert = validate_ca(pem, crl_pem)
    return {"fingerprint": pki.fingerprint(cert), "subject": cert.subject.rfc4514_string(),
            "pem": pki.cert_pem(cert).decode(), "crl": crl_pem.decode() if crl_pem else None}


def remove_payload(settings: Settings, fingerprint: str) -> dict:
    """What a proposal to remove a trusted CA carries (TrustError for an unknown CA or the gateway's own)."""
    wanted = fingerprint.strip().lower().replace(":", "")
    anchor = next((a for a in list_anchors(settings) if a.fingerprint == wanted), None)
    if anchor is None:
        raise TrustError("no trusted CA with that fingerprint (see `contactgate trust list`)")
    if anchor.gateway_ca:
        raise TrustError("the gateway's own CA cannot be removed from the trust list")
    return {"fingerprint": anchor.fingerprint, "subject": anchor.subject}


def applier(settings: Settings):
    """registry.decide_trust_change's ``apply``: makes an approved trust change (the CA checked again
    and written, or removed; the running gateway follows within a second). A change that cannot be
    made is a RegistryError, so nothing of the decision is recorded."""
    from gateway.trust.registry import RegistryError

    def apply(proposal) -> None:
        p = proposal.payload
        try:
            if proposal.kind == "trust_add":
                add_anchor(settings, p["pem"].encode(), p["crl"].encode() if p.get("crl") else None)
            else:
                remove_anchor(settings, p["fingerprint"])
        except TrustError as exc:
            raise RegistryError(str(exc)) from None
    return apply
