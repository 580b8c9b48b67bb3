"""The accreditation registry: organisations, their certificates, and the accreditation lifecycle.

registered --accredit--> pending_approval --approve (a second officer)--> accredited
accredited --suspend--> suspended --reinstate--> accredited

Every change is written to the audit chain in the same transaction as the change itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from gateway import audit
from gateway.audit import AuditTrail
from gateway.db import certificates, organisations
from gateway.trust import pki

KINDS = ("local_authority", "health", "education", "youth_offending", "police", "other")
SCOPES = ("push", "query", "shield")
OPERATION_SCOPES = {"SubmitUpdates": "push", "FindChild": "query", "GetContacts": "query", "SetShielding": "shield"}


class RegistryError(Exception):
    """An accreditation officer's request that cannot be carried out (message says why)."""


@dataclass(frozen=True)
class Organisation:
    code: str
    name: str
    kind: str
    status: str
    scopes: frozenset[str]
    expires: dt.date | None
    proposed_by: str | None
    approved_by: str | None
    evidence: str | None
    status_reason: str | None
    pending_scopes: frozenset[str] | None = None  # a proposal awaiting approval, if any
    pending_expires: dt.date | None = None
    pending_by: str | None = None

    def refusal_reason(self, today: dt.date) -> str | None:
        """Why this organisation may not exchange messages today, or None if it may."""
        if self.status != "accredited":
            return f"organisation status is {self.status}"
        if self.expires is None or self.expires < today:
            return f"accreditation expired on {self.expires}"
        return None


@dataclass(frozen=True)
class CertificateRecord:
    fingerprint: str
    org_code: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revoked_reason: str | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _org_from_row(row) -> Organisation:
    return Organisation(
        code=row.code, name=row.name, kind=row.kind, status=row.status,
        scopes=frozenset(s for s in row.scopes.split(",") if s), expires=row.expires,
        proposed_by=row.proposed_by, approved_by=row.approved_by, evidence=row.evidence,
        status_reason=row.status_reason,
        pending_scopes=None if row.pending_scopes is None else frozenset(row.pending_scopes.split(",")),
        pending_expires=row.pending_expires, pending_by=row.pending_by,
    )


def _cert_from_row(row) -> CertificateRecord:
    return CertificateRecord(
        fingerprint=row.fingerprint, org_code=row.org_code, subject=row.subject, issuer=row.issuer,
        serial=row.serial, not_before=row.not_before, not_after=row.not_after,
        revoked_at=row.revoked_at, revoked_reason=row.revoked_reason,
    )


_ORG_BY_CODE = select(organisations).where(organisations.c.code == bindparam("code"))
# Officers' changes read the row they judge FOR UPDATE: a concurrent change waits, and is judged
# on what this one leaves (no approving a proposal that changed under the check).
_ORG_FOR_CHANGE = _ORG_BY_CODE.with_for_update()
_CERT_BY_FINGERPRINT = select(certificates).where(certificates.c.fingerprint == bindparam("fp"))


def get_org(conn: Connection, code: str) -> Organisation | None:
    row = conn.execute(_ORG_BY_CODE, {"code": code}).first()
    return _org_from_row(row) if row else None


def _require_org(conn: Connection, code: str) -> Organisation:
    org = get_org(conn, code)
    if org is None:
        raise RegistryError(f"no organisation with code {code!r}")
    return org


def _org_for_change(conn: Connection, code: str) -> Organisation:
    row = conn.execute(_ORG_FOR_CHANGE, {"code": code}).first()
    if row is None:
        raise RegistryError(f"no organisation with code {code!r}")
    return _org_from_row(row)


def list_orgs(conn: Connection) -> list[Organisation]:
    return [_org_from_row(r) for r in conn.execute(select(organisations).order_by(organisations.c.code))]


def _record(conn: Connection, trail: AuditTrail, operation: str, officer: str | None, org_code: str,
            detail: str) -> None:
    trail.append(
        conn, audit.Entry(operation=operation, outcome="done", org_code=org_code, user_id=officer,
                          role="accreditation_officer" if officer else "operator", detail=detail)
    )


def add_org(conn: Connection, trail: AuditTrail, code: str, name: str, kind: str) -> Organisation:
    if kind not in KINDS:
        raise RegistryError(f"kind must be one of {', '.join(KINDS)}")
    if not code or len(code) > 32 or not all(c.isalnum() or c in "-_" for c in code):
        raise RegistryError("code must be 1-32 letters, digits, '-' or '_'")
    if get_org(conn, code) is not None:
        raise RegistryError(f"organisation {code!r} already exists")
    now = _now()
    conn.execute(organisations.insert().values(
        code=code, name=name, kind=kind, status="registered", scopes="", created_at=now, updated_at=now,
    ))
    _record(conn, trail, "org.add", None, code, f"registered {name!r} ({kind})")
    return _require_org(conn, code)


def _set(conn: Connection, code: str, **values) -> None:
    conn.execute(update(organisations).where(organisations.c.code == code)
                 .values(updated_at=_now(), **values))


def propose_accreditation(conn: Connection, trail: AuditTrail, code: str, scopes: list[str], expires: dt.date,
                          officer: str, evidence: str | None, today: dt.date) -> Organisation:
    org = _org_for_change(conn, code)
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise RegistryError(f"scopes must be among {', '.join(SCOPES)}")
    if expires <= today:
        raise RegistryError("expiry must be in the future")
    if not officer:
        raise RegistryError("an officer id is required")
    if org.status == "suspended":
        raise RegistryError("organisation is suspended; reinstate it first")
    scope_list = ",".join(sorted(set(scopes)))
    # A first accreditation waits in pending_approval; a renewal or change of an accredited
    # organisation waits beside the accreditation in force, which carries on until approval.
    status = "accredited" if org.status == "accredited" else "pending_approval"
    _set(conn, code, status=status, pending_scopes=scope_list, pending_expires=expires,
         pending_by=officer, pending_evidence=evidence)
    kind = "renewal" if status == "accredited" else "accreditation"
    _record(conn, trail, "org.accredit", officer, code,
            f"proposed {kind}: scopes={scope_list} expires={expires}")
    return _require_org(conn, code)


def approve(conn: Connection, trail: AuditTrail, code: str, officer: str) -> Organisation:
    org = _org_for_change(conn, code)
    if org.pending_scopes is None:
        raise RegistryError(f"nothing to approve (status is {org.status})")
    if org.status == "suspended":
        raise RegistryError("organisation is suspended; reinstate it first")
    if not officer or officer == org.pending_by:
        raise RegistryError("approval needs a second officer, different from the proposer")
    conn.execute(update(organisations).where(organisations.c.code == code).values(
        status="accredited", scopes=organisations.c.pending_scopes, expires=organisations.c.pending_expires,
        proposed_by=organisations.c.pending_by, evidence=organisations.c.pending_evidence,
        approved_by=officer, status_reason=None, pending_scopes=None, pending_expires=None,
        pending_by=None, pending_evidence=None, updated_at=_now()))
    _record(conn, trail, "org.approve", officer, code,
            f"approved proposal by {org.pending_by}: scopes={','.join(sorted(org.pending_scopes))} "
            f"expires={org.pending_expires}")
    return _require_org(conn, code)


def suspend(conn: Connection, trail: AuditTrail, code: str, officer: str, reason: str) -> Organisation:
    org = _org_for_change(conn, code)
    if org.status not in ("accredited", "pending_approval"):
        raise RegistryError(f"cannot suspend: status is {org.status}")
    if not reason:
        raise RegistryError("a reason is required")
    _set(conn, code, status="suspended", status_reason=reason)
    _record(conn, trail, "org.suspend", officer, code, f"suspended: {reason}")
    return _require_org(conn, code)


def reinstate(conn: Connection, trail: AuditTrail, code: str, officer: str) -> Organisation:
    org = _org_for_change(conn, code)
    if org.status != "suspended":
        raise RegistryError(f"cannot reinstate: status is {org.status}")
    # Back to where it was: accredited if it ever was approved, else still onboarding.
    if org.approved_by is not None:
        status = "accredited"
    else:
        status = "pending_approval" if org.pending_scopes is not None else "registered"
    _set(conn, code, status=status, status_reason=None)
    _record(conn, trail, "org.reinstate", officer, code, f"reinstated ({status})")
    return _require_org(conn, code)


def register_cert(conn: Connection, trail: AuditTrail, code: str, cert: x509.Certificate) -> CertificateRecord:
    _require_org(conn, code)
    info = pki.describe(cert)
    existing = get_cert(conn, info["fingerprint"])
    if existing is not None:
        raise RegistryError(f"certificate already registered to {existing.org_code}")
    conn.execute(certificates.insert().values(org_code=code, created_at=_now(), **info))
    _record(conn, trail, "cert.register", None, code, f"certificate {info['fingerprint']} {info['subject']}")
    return get_cert(conn, info["fingerprint"])


def get_cert(conn: Connection, fp: str) -> CertificateRecord | None:
    row = conn.execute(_CERT_BY_FINGERPRINT, {"fp": fp}).first()
    return _cert_from_row(row) if row else None


def list_certs(conn: Connection, code: str | None = None) -> list[CertificateRecord]:
    query = select(certificates).order_by(certificates.c.org_code, certificates.c.created_at)
    if code:
        query = query.where(certificates.c.org_code == code)
    return [_cert_from_row(r) for r in conn.execute(query)]


def revoke_cert(conn: Connection, trail: AuditTrail, fp: str, reason: str) -> CertificateRecord:
    fp = fp.lower().replace(":", "")
    record = get_cert(conn, fp)
    if record is None:
        raise RegistryError("no certificate with that fingerprint")
    if record.revoked_at is not None:
        raise RegistryError("certificate is already revoked")
    if not reason:
        raise RegistryError("a reason is required")
    conn.execute(update(certificates).where(certificates.c.fingerprint == fp)
                 .values(revoked_at=_now(), revoked_reason=reason))
    _record(conn, trail, "cert.revoke", None, record.org_code, f"revoked {fp}: {reason}")
    return get_cert(conn, fp)
