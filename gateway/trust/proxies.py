"""The proxies a node believes: certificates nginx presents on the mutual-TLS hop to `contactgate
serve --behind-proxy` nodes (docs/operations.md 6a).

A node believes the Client-Cert header (RFC 9440) only from a TLS peer whose certificate chains to a
configured CA, is registered here and is not revoked (gateway.pipeline.tls_client), and whose address
is in CONTACTGATE_TRUSTED_PROXIES. Such a certificate speaks for every organisation, so it is never
bound by one officer: a senior officer proposes it (`proxy issue` from the proxy's CSR, signed by the
gateway CA on approval; or `proxy register` of a certificate from a trusted CA) and a second senior
officer approves exactly that proposal. Revoking one (`proxy revoke`) needs one officer: stopping
traffic is never held up. Every step is in the audit chain, in the transaction of the change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from gateway.audit import AuditTrail
from gateway.config import Settings
from gateway.db import proxy_certificates
from gateway.officers import Officer
from gateway.trust import issuing, pki, registry
from gateway.trust.registry import PROXY_PROPOSALS, RegistryError

PROPOSE_ROLES = registry.TRUST_ROLES  # proposing, approving, declining: senior officers
REVOKE_ROLES = registry.ORGANISATION_ROLES  # revoking: any officer (a senior officer too)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ProxyError(ValueError):
    """Why a proxy certificate cannot be proposed or made (said to the officer)."""


@dataclass(frozen=True)
class ProxyRecord:
    fingerprint: str
    name: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    proposed_by: str
    approved_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_reason: str | None
    pem: str

    def as_json(self) -> dict:
        iso = lambda v: None if v is None else v.isoformat()  # noqa: E731
        return {"fingerprint": self.fingerprint, "name": self.name, "subject": self.subject, "issuer": self.issuer,
                "serial": self.serial, "not_before": iso(self.not_before), "not_after": iso(self.not_after),
                "proposed_by": self.proposed_by, "approved_by": self.approved_by, "created_at": iso(self.created_at),
                "revoked_at": iso(self.revoked_at), "revoked_reason": self.revoked_reason}


def _record_from_row(row) -> ProxyRecord:
    return ProxyRecord(**{name: getattr(row, name) for name in ProxyRecord.__dataclass_fields__})


_BY_FINGERPRINT = select(proxy_certificates).where(proxy_certificates.c.fingerprint == bindparam("fp"))


def get(conn: Connection, fingerprint: str) -> ProxyRecord | None:
    row = conn.execute(_BY_FINGERPRINT, {"fp": fingerprint}).first()
    return _record_from_row(row) if row else None


def list_proxies(conn: Connection) -> list[ProxyRecord]:
    rows = conn.execute(select(proxy_certificates).order_by(proxy_certificates.c.created_at))
    return [_record_from_row(r) for r in rows]


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ProxyError("the proxy's name must be 1-64 letters, digits, '.', '_' or '-' (e.g. nginx-1)")
    return name


# ---- what is proposed --------------------------------------------------------------------------------

def issue_payload(name: str, csr_pem: bytes) -> dict:
    """The proposal to sign the proxy's CSR with the gateway CA (checked now, and again when approved)."""
    request = _checked_csr(check_name(name), csr_pem)
    public = request.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"name": name, "csr": csr_pem.decode("ascii", "replace"),
            "public_key_sha256": hashlib.sha256(public).hexdigest()}


def register_payload(name: str, certificate_pem: bytes, anchors: pki.TrustAnchors) -> dict:
    """The proposal to register a proxy certificate issued by a trusted CA (its chain checked now)."""
    certificate = _chained(certificate_pem, anchors)
    info = pki.describe(certificate)
    return {"name": check_name(name), "certificate": info["pem"], "fingerprint": info["fingerprint"],
            "subject": info["subject"], "issuer": info["issuer"], "not_after": info["not_after"].isoformat()}


def made_on_approval(settings: Settings, anchors: pki.TrustAnchors, ca=None):
    """``make(proposal)`` for `approve`: signs the CSR with the gateway CA (``ca``: its (key,
    certificate), else read from the home), or checks the certificate to register again."""
    def make(proposal: registry.Proposal) -> x509.Certificate:
        payload = proposal.payload
        if proposal.kind == "proxy_register":
            return _chained(payload["certificate"].encode(), anchors)
        from gateway.home import load_ca

        ca_key, ca_cert = ca or load_ca(settings)
        request = _checked_csr(payload["name"], payload["csr"].encode())
        return pki.issue_proxy_cert(ca_key, ca_cert, payload["name"], request.public_key())

    return make


def _checked_csr(name: str, csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        request = pki.load_csr(csr_pem)
    except ValueError as exc:
        raise ProxyError(f"unreadable CSR: {exc}") from None
    problem = pki.csr_problem(request, name, "the proxy")
    if problem:
        raise ProxyError(problem)
    return request


def _chained(certificate_pem: bytes, anchors: pki.TrustAnchors) -> x509.Certificate:
    """As an organisation's certificate to register: it chains to a trusted CA, for client authentication."""
    try:
        return issuing.chained(certificate_pem, anchors)
    except issuing.IssueError as exc:
        raise ProxyError(str(exc)) from None


# ---- the changes, each audited in its own transaction (registry.run_change) ---------------------------

def propose(conn: Connection, trail: AuditTrail, actor: Officer, kind: str, payload: dict) -> registry.Proposal:
    actor = registry.acting(conn, actor, PROPOSE_ROLES, "proposing a proxy certificate")
    if kind not in PROXY_PROPOSALS:
        raise RegistryError(f"not a proxy proposal: {kind}")
    if kind == "proxy_register":
        _refuse_bound(conn, payload["fingerprint"])
    for old in registry.list_proposals(conn, kinds=PROXY_PROPOSALS):
        if old.payload.get("name") == payload["name"]:
            raise RegistryError(f"proposal {old.id} for proxy {payload['name']} awaits a decision: "
                                "approve or decline it first")
    proposal = registry._new_proposal(conn, kind, None, payload, actor)
    registry._record(conn, trail, "proxy.propose", actor, None,
                     f"proposal {proposal.id} ({kind}): {proposal.summary()}")
    return proposal


def _refuse_bound(conn: Connection, fingerprint: str) -> None:
    bound = registry.bound_already(conn, fingerprint)
    if bound is not None:
        raise RegistryError(f"that certificate is {bound} already: a proxy needs a certificate of its own")


def _pending(conn: Connection, proposal_id: int) -> registry.Proposal:
    proposal = registry._proposal_for_decision(conn, proposal_id, None)
    if proposal.kind not in PROXY_PROPOSALS:
        raise RegistryError(f"proposal {proposal.id} ({proposal.kind}) is not a proxy certificate")
    return proposal


def approve(conn: Connection, trail: AuditTrail, proposal_id: int, actor: Officer, *, make) -> ProxyRecord:
    """A second senior officer approves: ``make(proposal)`` signs (or re-checks) the certificate,
    which is registered, all in this transaction; the audit entry names both officers."""
    actor = registry.acting(conn, actor, PROPOSE_ROLES, "approving a proxy certificate")
    proposal = _pending(conn, proposal_id)
    registry._second_officer(proposal, actor)
    certificate = make(proposal)
    info = pki.describe(certificate)
    _refuse_bound(conn, info["fingerprint"])
    conn.execute(proxy_certificates.insert().values(
        name=proposal.payload["name"], proposed_by=proposal.proposed_by, approved_by=actor.officer_id,
        created_at=registry._now(), **info))
    registry._decide(conn, proposal, actor, "approved", None)
    registry._record(conn, trail, "proxy.approve", actor, None,
                     f"approved proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: "
                     f"{proposal.summary()}; proxy certificate {info['fingerprint']} {info['subject']} "
                     f"until {info['not_after']:%Y-%m-%d}")
    return get(conn, info["fingerprint"])


def decline(conn: Connection, trail: AuditTrail, proposal_id: int, actor: Officer, reason: str) -> registry.Proposal:
    actor = registry.acting(conn, actor, PROPOSE_ROLES, "declining a proxy certificate")
    proposal = _pending(conn, proposal_id)
    reason = registry._text(reason, "the reason")
    registry._decide(conn, proposal, actor, "declined", reason)
    registry._record(conn, trail, "proxy.decline", actor, None,
                     f"declined proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {reason}")
    return registry.get_proposal(conn, proposal.id)


def revoke(conn: Connection, trail: AuditTrail, fingerprint: str, reason: str, actor: Officer) -> ProxyRecord:
    """Stop believing a proxy certificate: its next message is refused by every node."""
    actor = registry.acting(conn, actor, REVOKE_ROLES, "revoking a proxy certificate")
    fingerprint = (fingerprint or "").strip().lower().replace(":", "")
    record = get(conn, fingerprint)
    if record is None:
        raise RegistryError("no proxy certificate with that fingerprint")
    if record.revoked_at is not None:
        raise RegistryError("that proxy certificate is already revoked")
    reason = registry._text(reason, "the reason")
    conn.execute(update(proxy_certificates).where(proxy_certificates.c.fingerprint == fingerprint)
                 .values(revoked_at=registry._now(), revoked_reason=reason))
    registry._record(conn, trail, "proxy.revoke", actor, None, f"revoked proxy certificate {fingerprint} "
                     f"({record.name}): {reason}")
    return get(conn, fingerprint)
