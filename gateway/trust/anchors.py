"""The trust list: the CAs whose certificates organisations may use (the gateway CA, and each CA in
$CONTACTGATE_HOME/trust with its CRL beside it). A change is proposed by a senior officer and made
when a second approves it (gateway.trust.registry); the client CA bundle is then rewritten, and the
running gateway picks it up for new connections within a second (gateway.front.ReloadingContext)
and in the application (gateway.app's anchors follow the trust directory).

The database decides and the files follow (`approving`): an approval's files are staged inside its
transaction and put in place only once the database says it is approved, so a commit that fails
leaves every trust file, and the running gateway's trust, as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gateway import files
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


def _rewrite_bundle(settings: Settings) -> None:
    from gateway.trust.crl import write_client_bundle

    write_client_bundle(settings)


def add_payload(pem: bytes, crl_pem: bytes | None) -> dict:
    """What a proposal to trust a CA carries, once the certificate is checked to be a CA (TrustError if not)."""
    cert = validate_ca(pem, crl_pem)
    return {"fingerprint": pki.fingerprint(cert), "subject": cert.subject.rfc4514_string(),
            "pem": pki.cert_pem(cert).decode(), "crl": crl_pem.decode() if crl_pem else None}


def _removable(settings: Settings, fingerprint: str) -> Anchor:
    """The trusted CA a removal names (TrustError for an unknown CA or the gateway's own)."""
    wanted = fingerprint.strip().lower().replace(":", "")
    anchor = next((a for a in list_anchors(settings) if a.fingerprint == wanted), None)
    if anchor is None:
        raise TrustError("no trusted CA with that fingerprint (see `contactgate trust list`)")
    if anchor.gateway_ca:
        raise TrustError("the gateway's own CA cannot be removed from the trust list")
    return anchor


def remove_payload(settings: Settings, fingerprint: str) -> dict:
    """What a proposal to remove a trusted CA carries (TrustError for an unknown CA or the gateway's own)."""
    anchor = _removable(settings, fingerprint)
    return {"fingerprint": anchor.fingerprint, "subject": anchor.subject}


class TrustFilesNotChanged(Exception):
    """A trust change the database recorded as approved could not be written to the trust files;
    they are left as they were before it (the message says what to do)."""


class StagedTrustChange:
    """An approved trust change made in two steps around the database's commit, so that the trust
    files never disagree with the database because a commit failed.

    ``stage(proposal)`` is registry.decide_trust_change's ``apply``, run inside its transaction: it
    checks the change can be made (a RegistryError if not, so nothing of the decision is recorded)
    and writes what it adds to files of their own, flushed to the disk, under names nothing reads
    (the trust list reads ``*.pem`` and ``*.crl``; the running gateway follows those and the client
    bundle). ``settle(engine)``, after the transaction, asks the database: if the proposal is
    approved, the staged files are renamed into place, or the removed CA's files removed, and the
    client bundle rewritten; if not (refused, rolled back, or the commit failed), the staged files
    are deleted and no trust file has changed. Use it through `approving`."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._proposal_id: int | None = None
        self._staged: list[tuple[Path, Path]] = []  # (staged file, where it goes)
        self._removed: list[Path] = []

    def stage(self, proposal) -> None:
        from gateway.trust.registry import RegistryError

        self._discard()
        p = proposal.payload
        try:
            if proposal.kind == "trust_add":
                self._stage_addition(p["pem"].encode(), p["crl"].encode() if p.get("crl") else None)
            else:
                anchor = _removable(self._settings, p["fingerprint"])
                self._removed = [anchor.path, _crl_path(self._settings, anchor.fingerprint)]
        except TrustError as exc:
            self._discard()
            raise RegistryError(str(exc)) from None
        except BaseException:
            self._discard()
            raise
        self._proposal_id = proposal.id

    def _stage_addition(self, pem: bytes, crl_pem: bytes | None) -> None:
        cert = validate_ca(pem, crl_pem)
        fingerprint = pki.fingerprint(cert)
        if any(a.fingerprint == fingerprint for a in list_anchors(self._settings)):
            raise TrustError("that CA is already trusted")
        if crl_pem is not None:  # the CRL first: the certificate is what makes the CA an anchor
            target = _crl_path(self._settings, fingerprint)
            self._staged.append((files.stage_private(target, crl_pem), target))
        target = self._settings.layout.trusted_cas_dir / f"{fingerprint[:16]}.pem"
        self._staged.append((files.stage_private(target, pki.cert_pem(cert)), target))

    def settle(self, engine) -> None:
        """Make the files agree with the database's decision (see the class)."""
        from gateway.trust.registry import get_proposal

        if self._proposal_id is None:
            return
        proposal_id, self._proposal_id = self._proposal_id, None
        try:
            with engine.connect() as conn:
                decided = get_proposal(conn, proposal_id)
        except BaseException:
            self._discard()
            raise
        if decided is not None and decided.status == "approved":
            self._publish(proposal_id)
        else:
            self._discard()

    def _publish(self, proposal_id: int) -> None:
        staged, self._staged = self._staged, []
        removed, self._removed = self._removed, []
        kept = {path: path.read_bytes() for path in removed if path.exists()}  # to put back on a failure
        placed: list[Path] = []
        try:
            for temporary, target in staged:
                files.publish(temporary, target)
                placed.append(target)
            for path in kept:
                path.unlink()
            _rewrite_bundle(self._settings)
            files.fsync_directory(self._settings.layout.trusted_cas_dir)
        except Exception as exc:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            for target in placed:
                target.unlink(missing_ok=True)
            for path, data in kept.items():
                write_private(path, data)
            try:
                _rewrite_bundle(self._settings)
            except Exception:
                pass  # the bundle was not replaced then either: it still holds the trust list as before
            raise TrustFilesNotChanged(
                f"proposal {proposal_id} is approved in the database, but the trust files could not be "
                f"changed ({exc}); they are as they were before it, and the running gateway trusts what it "
                f"trusted. Fix the cause, then propose the change again") from exc

    def _discard(self) -> None:
        for temporary, _ in self._staged:
            temporary.unlink(missing_ok=True)
        self._staged, self._removed = [], []


@contextlib.contextmanager
def approving(settings: Settings, engine):
    """The ``apply`` for registry.decide_trust_change inside the block (which runs the decision in
    its transaction), and the trust files made to agree with the database after it::

        with anchors.approving(settings, engine) as apply:
            registry.run_change(engine, trail, registry.decide_trust_change, proposal_id, actor,
                                approve=True, apply=apply)
    """
    change = StagedTrustChange(settings)
    try:
        yield change.stage
    finally:
        change.settle(engine)
