"""The accreditation registry: organisations, their certificates, and the accreditation lifecycle.

registered --accredit--> pending_approval --approve (a second officer)--> accredited
accredited --(expiry passes)--> expired (shown so, and refused on every message)
accredited/expired --accredit (renewal or a change of scopes)--> approved by a second officer
accredited/pending_approval/expired --suspend--> suspended --reinstate (approved by a second)--> back
any but revoked --revoke--> revoked (final; its certificates are revoked with it)

Who acts is a signed-in officer account (gateway.officers), re-read here: a disabled or unknown
account acts on nothing. A change that widens what an organisation may do (an accreditation, a
renewal or change of scopes, a reinstatement) is a *proposal* with an id, shown to the approver with
exactly what it does; approving names that id, so the approver approves what they saw. Another
proposal for the same organisation supersedes a pending one (whose id then approves nothing). The
approver is a different account holding a role that permits it. Stopping traffic (suspend, revoke)
needs one officer. Issuing or registering a certificate is a proposal too (a certificate is the
organisation's credential): it is signed and bound only when a second officer approves it.

Every change is written to the audit chain in the same transaction as the change itself, with the
officer who made it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from types import SimpleNamespace

from cryptography import x509
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

from gateway import audit, officers as officers_mod
from gateway.audit import AuditTrail
from gateway.audit.report import safe_text
from gateway.db import audit_log, certificates, organisations, proposals, proxy_certificates
from gateway.officers import Officer
from gateway.trust import pki

KINDS = ("local_authority", "health", "education", "youth_offending", "police", "other")
SCOPES = ("push", "query", "shield", "mediate")  # mediate: reads on behalf of another (gateway.mediation)
# Ping needs an accreditation in force but no scope.
OPERATION_SCOPES = {"SubmitUpdates": "push", "FindChild": "query", "GetContacts": "query", "SetShielding": "shield",
                    "Ping": None}
ORG_PROPOSALS = ("accreditation", "renewal", "reinstatement")
TRUST_PROPOSALS = ("trust_add", "trust_remove")
# A certificate is a credential: whoever holds its key speaks as the organisation. Issuing one (from
# the organisation's CSR, or with a key made by the gateway) or registering one from another CA is
# proposed by one officer and carried out only when a second approves it (`approve_certificate`).
CERT_PROPOSALS = ("cert_issue", "cert_register")
# A proxy's certificate (nginx in front of `serve --behind-proxy` nodes) lets its holder speak as
# every organisation (it vouches for the Client-Cert header): registering one is proposed by a senior
# officer and approved by a second (gateway.trust.proxies).
PROXY_PROPOSALS = ("proxy_issue", "proxy_register")
# The linkage model decides which records are one child, and so whose involvements a reader sees:
# putting a model in use is proposed by one senior officer and approved by a second
# (gateway.index.linkage.versions reads the approved one).
LINKAGE_PROPOSALS = ("linkage_model",)
# Who may do what (a senior officer holds the officer's permissions too).
ORGANISATION_ROLES = ("officer",)
TRUST_ROLES = ("senior_officer",)
LINKAGE_ROLES = ("senior_officer",)
# Training a model reads every record of the index (in memory): a senior or data-quality officer.
LINKAGE_TRAIN_ROLES = ("senior_officer", "data_quality")
READ_ROLES = ("officer", "senior_officer", "auditor", "data_quality")


class RegistryError(Exception):
    """An accreditation officer's request that cannot be carried out (message says why)."""


@dataclass(frozen=True)
class Proposal:
    id: int
    kind: str
    org_code: str | None
    payload: dict
    status: str
    proposed_by: str
    proposed_at: dt.datetime
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    decision_reason: str | None = None

    def summary(self) -> str:
        """What the proposal does, as the approver is shown it (and the audit trail records it)."""
        p = self.payload
        if self.kind in ("accreditation", "renewal"):
            text = f"scopes={','.join(p['scopes'])} expires={p['expires']}"
            if p.get("evidence"):
                text += f" evidence={p['evidence']!r}"
            for item in p.get("evidence_files", ()):
                text += f" file={item['name']} sha256={item['sha256']}"
            return text
        if self.kind == "reinstatement":
            return f"reinstate: {p['reason']}"
        if self.kind == "trust_add":
            return f"trust CA {p['subject']} sha256={p['fingerprint']}"
        if self.kind == "trust_remove":
            return f"remove trusted CA {p.get('subject', '')} sha256={p['fingerprint']}".replace("  ", " ")
        if self.kind in CERT_PROPOSALS:
            return _certificate_summary(self.kind, p)
        if self.kind == "proxy_issue":
            return (f"issue proxy certificate {safe_text(p['name'])} for the key sha256={p['public_key_sha256']} "
                    "(from the proxy's CSR): it may speak for every organisation")
        if self.kind == "proxy_register":
            return (f"register proxy certificate {safe_text(p['name'])} sha256={p['fingerprint']} issued by "
                    f"{safe_text(p['issuer'])} until {p['not_after'][:10]}: it may speak for every organisation")
        if self.kind in LINKAGE_PROPOSALS:
            return f"use linkage model {p['version']} sha256={p['sha256']} (in use now: {p.get('replaces') or 'none'})"
        if self.kind in ("restore", "restore_ack"):
            lost = p.get("lost")
            return (f"{'acknowledge the ' if self.kind == 'restore_ack' else ''}restore of backup {p.get('backup')} "
                    f"(audit entry {p.get('restore_seq')}): "
                    + (f"audit entries {lost[0]}..{lost[1]} lost" if lost else "no checkpointed audit entry lost")
                    + "; decided with `contactgate restore acknowledge`")
        return json.dumps(p, sort_keys=True)

    def as_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "org_code": self.org_code, "status": self.status,
                "proposed_by": self.proposed_by, "proposed_at": _iso(self.proposed_at),
                "decided_by": self.decided_by, "decided_at": _iso(self.decided_at),
                "decision_reason": self.decision_reason, "summary": self.summary(),
                "payload": {k: v for k, v in self.payload.items() if k not in SECRET_OR_BULKY}}


# Payload entries never shown (a CA's or a CSR's PEM: bulky; a bundle's sealed passphrase: secret).
SECRET_OR_BULKY = ("pem", "crl", "csr", "certificate", "passphrase")


def _certificate_summary(kind: str, p: dict) -> str:
    """What a certificate proposal does, as the approver reads it: whose key, which subject, and
    whether the organisation already holds certificates (a second credential is how an impostor
    would be let in beside the real organisation)."""
    if kind == "cert_issue" and p.get("key") == "gateway":
        text = "issue a certificate with a key made by the gateway (an encrypted bundle for the organisation)"
    elif kind == "cert_issue":
        # Only what the gateway computed: the CSR's subject is the proposer's (or the requester's) text,
        # and is not used in the certificate (which names the organisation from the registry).
        text = f"issue a certificate for the key sha256={p['public_key_sha256']} (from the organisation's CSR)"
    else:
        text = (f"register certificate sha256={p['fingerprint']} issued by {safe_text(p['issuer'])} "
                f"until {p['not_after'][:10]}")
    held = p.get("active_certificates", 0)
    if held:
        text += f"; the organisation already holds {held} active certificate{'s' if held != 1 else ''}"
    return text


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
    pending: tuple[Proposal, ...] = field(default=())  # proposals awaiting a second officer

    def refusal_reason(self, today: dt.date) -> str | None:
        """Why this organisation may not exchange messages today, or None if it may."""
        if self.status != "accredited":
            return f"organisation status is {self.status}"
        if self.expires is None or self.expires < today:
            return f"accreditation expired on {self.expires}"
        return None

    def effective_status(self, today: dt.date) -> str:
        """The status as an officer should read it: an accreditation whose date has passed is expired."""
        if self.status == "accredited" and (self.expires is None or self.expires < today):
            return "expired"
        return self.status

    def as_json(self, today: dt.date) -> dict:
        return {"code": self.code, "name": self.name, "kind": self.kind, "status": self.effective_status(today),
                "scopes": sorted(self.scopes), "expires": _iso(self.expires), "proposed_by": self.proposed_by,
                "approved_by": self.approved_by, "evidence": self.evidence, "status_reason": self.status_reason,
                "pending": [p.as_json() for p in self.pending]}


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

    def as_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "org_code": self.org_code, "subject": self.subject,
                "issuer": self.issuer, "serial": self.serial, "not_before": _iso(self.not_before),
                "not_after": _iso(self.not_after), "revoked_at": _iso(self.revoked_at),
                "revoked_reason": self.revoked_reason}


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _proposal_from_row(row) -> Proposal:
    return Proposal(id=row.id, kind=row.kind, org_code=row.org_code, payload=json.loads(row.payload),
                    status=row.status, proposed_by=row.proposed_by, proposed_at=row.proposed_at,
                    decided_by=row.decided_by, decided_at=row.decided_at, decision_reason=row.decision_reason)


def _org_from_row(row, pending: tuple[Proposal, ...] = ()) -> Organisation:
    return Organisation(
        code=row.code, name=row.name, kind=row.kind, status=row.status,
        scopes=frozenset(s for s in row.scopes.split(",") if s), expires=row.expires,
        proposed_by=row.proposed_by, approved_by=row.approved_by, evidence=row.evidence,
        status_reason=row.status_reason, pending=pending,
    )


def _cert_from_row(row) -> CertificateRecord:
    return CertificateRecord(
        fingerprint=row.fingerprint, org_code=row.org_code, subject=row.subject, issuer=row.issuer,
        serial=row.serial, not_before=row.not_before, not_after=row.not_after,
        revoked_at=row.revoked_at, revoked_reason=row.revoked_reason,
    )


# Codes are unique whatever their case: every lookup goes by the upper-cased key.
_ORG_BY_CODE = select(organisations).where(organisations.c.code_key == func.upper(bindparam("code")))
# Officers' changes read the row they judge FOR UPDATE: a concurrent change waits, and is judged
# on what this one leaves (no approving a proposal that changed under the check).
_ORG_FOR_CHANGE = _ORG_BY_CODE.with_for_update()
_CERT_BY_FINGERPRINT = select(certificates).where(certificates.c.fingerprint == bindparam("fp"))
_CERT_AND_ORG = (select(certificates, *[c.label(f"o_{c.name}") for c in organisations.c])
                 .select_from(certificates.outerjoin(
                     organisations, organisations.c.code_key == func.upper(certificates.c.org_code)))
                 .where(certificates.c.fingerprint == bindparam("fp")))


def _pending(conn: Connection, code: str) -> tuple[Proposal, ...]:
    rows = conn.execute(select(proposals).where(proposals.c.org_code == code, proposals.c.status == "pending")
                        .order_by(proposals.c.id))
    return tuple(_proposal_from_row(r) for r in rows)


def get_org(conn: Connection, code: str, *, with_pending: bool = True) -> Organisation | None:
    """The organisation whose code is ``code`` in any case; ``with_pending=False`` on the message path
    (one query: the proposals awaiting approval do not decide a message)."""
    row = conn.execute(_ORG_BY_CODE, {"code": code}).first()
    if row is None:
        return None
    return _org_from_row(row, _pending(conn, row.code) if with_pending else ())


def _require_org(conn: Connection, code: str) -> Organisation:
    org = get_org(conn, code)
    if org is None:
        raise RegistryError(f"no organisation with code {code!r}")
    return org


def _org_for_change(conn: Connection, code: str) -> Organisation:
    row = conn.execute(_ORG_FOR_CHANGE, {"code": code}).first()
    if row is None:
        raise RegistryError(f"no organisation with code {code!r}")
    return _org_from_row(row, _pending(conn, row.code))


def list_orgs(conn: Connection, *, pending: bool = False, expiring_days: int | None = None,
              today: dt.date | None = None) -> list[Organisation]:
    """Every organisation; ``pending``: those with a proposal awaiting approval; ``expiring_days``:
    those whose accreditation, or an active certificate, ends within that many days (or has ended)."""
    today = today or dt.date.today()
    found = []
    for row in conn.execute(select(organisations).order_by(organisations.c.code)):
        org = _org_from_row(row, _pending(conn, row.code))
        if pending and not org.pending:
            continue
        if expiring_days is not None and not _expiring(conn, org, today, expiring_days):
            continue
        found.append(org)
    return found


def _expiring(conn: Connection, org: Organisation, today: dt.date, days: int) -> bool:
    horizon = today + dt.timedelta(days=days)
    if org.status == "accredited" and org.expires is not None and org.expires <= horizon:
        return True
    return bool(list_certs(conn, org.code, expiring_days=days, today=today))


def _record(conn: Connection, trail: AuditTrail, operation: str, actor: Officer | None, org_code: str | None,
            detail: str) -> None:
    trail.append(
        conn, audit.Entry(operation=operation, outcome="done", org_code=org_code,
                          user_id=actor.officer_id if actor else None,
                          role=actor.role_text if actor else "operator", detail=detail)
    )


def record_refusal(engine, trail: AuditTrail, actor: Officer | None, action: str, why: str) -> None:
    """An officer's action that was refused, in the audit chain (its own transaction: the refused
    change itself was rolled back, and changed nothing)."""
    with engine.begin() as conn:
        trail.append(conn, audit.Entry(operation="officer.refused", outcome="refused",
                                       user_id=actor.officer_id if actor else None,
                                       role=actor.role_text if actor else None, detail=f"{action}: {why}"))


def run_change(engine, trail: AuditTrail, fn, *args, **kwargs):
    """``fn(conn, trail, *args, **kwargs)``, a registry change that audits itself, in one transaction;
    if it is refused (RegistryError, OfficerError), nothing of it stays, the refusal is audited with
    the acting officer, and the error goes on to the caller."""
    try:
        with engine.begin() as conn:
            return fn(conn, trail, *args, **kwargs)
    except (RegistryError, officers_mod.OfficerError) as exc:
        actor = next((a for a in (*args, *kwargs.values()) if isinstance(a, Officer)), None)
        record_refusal(engine, trail, actor, fn.__name__.replace("_", " "), str(exc))
        raise


def acting(conn: Connection, actor: Officer, roles: tuple[str, ...], action: str) -> Officer:
    """The actor as the registry knows them now: an account that exists, is not disabled, and holds
    one of ``roles``. The session was checked by the caller; this is the registry's own check."""
    if not isinstance(actor, Officer):
        raise RegistryError("an officer's action needs a signed-in officer account")
    current = officers_mod.get(conn, actor.officer_id)
    if current is None or current.disabled:
        raise RegistryError(f"officer account {actor.officer_id!r} is not active")
    if not current.holds(*roles):
        raise RegistryError(f"{action} needs the role {' or '.join(roles)}; "
                            f"{current.officer_id} holds {current.role_text or 'none'}")
    return current


def _text(value: str | None, what: str, limit: int = 2000) -> str:
    cleaned = (value or "").strip()
    if not cleaned or not cleaned.isprintable():
        raise RegistryError(f"{what} must not be blank (printable text)")
    if len(cleaned) > limit:
        raise RegistryError(f"{what} has at most {limit} characters")
    return cleaned


def add_org(conn: Connection, trail: AuditTrail, code: str, name: str, kind: str, actor: Officer) -> Organisation:
    actor = acting(conn, actor, ORGANISATION_ROLES, "registering an organisation")
    if kind not in KINDS:
        raise RegistryError(f"kind must be one of {', '.join(KINDS)}")
    if not code or len(code) > 32 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in code):
        raise RegistryError("code must be 1-32 letters, digits, '-' or '_'")
    name = _text(name, "the organisation's name", 200)
    existing = get_org(conn, code)
    if existing is not None:
        same = "" if existing.code == code else f" (as {existing.code!r}: codes are the same whatever their case)"
        raise RegistryError(f"organisation {code!r} already exists{same}")
    now = _now()
    conn.execute(organisations.insert().values(
        code=code, code_key=code.upper(), name=name, kind=kind, status="registered", scopes="", created_at=now,
        updated_at=now,
    ))
    _record(conn, trail, "org.add", actor, code, f"registered {name!r} ({kind})")
    return _require_org(conn, code)


def _set(conn: Connection, code: str, **values) -> None:
    conn.execute(update(organisations).where(organisations.c.code == code)
                 .values(updated_at=_now(), **values))


def _new_proposal(conn: Connection, kind: str, org_code: str | None, payload: dict, actor: Officer) -> Proposal:
    result = conn.execute(proposals.insert().values(
        kind=kind, org_code=org_code, payload=json.dumps(payload, sort_keys=True), status="pending",
        proposed_by=actor.officer_id, proposed_at=_now()))
    return get_proposal(conn, result.inserted_primary_key[0])


def get_proposal(conn: Connection, proposal_id: int) -> Proposal | None:
    row = conn.execute(select(proposals).where(proposals.c.id == proposal_id)).first()
    return _proposal_from_row(row) if row else None


def list_proposals(conn: Connection, *, kinds: tuple[str, ...] | None = None, status: str | None = "pending") -> list[Proposal]:
    query = select(proposals).order_by(proposals.c.id)
    if kinds:
        query = query.where(proposals.c.kind.in_(kinds))
    if status:
        query = query.where(proposals.c.status == status)
    return [_proposal_from_row(r) for r in conn.execute(query)]


def _supersede(conn: Connection, trail: AuditTrail, actor: Officer, old: Proposal, new_id: int) -> None:
    conn.execute(update(proposals).where(proposals.c.id == old.id).values(
        status="superseded", decided_by=actor.officer_id, decided_at=_now(),
        decision_reason=f"replaced by proposal {new_id}"))
    _record(conn, trail, "org.supersede", actor, old.org_code,
            f"proposal {old.id} ({old.kind}: {old.summary()}) replaced by proposal {new_id}")


def propose_accreditation(conn: Connection, trail: AuditTrail, code: str, scopes: list[str], expires: dt.date,
                          actor: Officer, evidence: str | None, today: dt.date, *,
                          evidence_files: list[dict] | None = None, max_days: int = 3 * 365 + 1) -> Proposal:
    """A proposal to accredit (or renew, or change the scopes of) an organisation: its id is what a
    second officer approves."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "proposing an accreditation")
    org = _org_for_change(conn, code)
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise RegistryError(f"scopes must be among {', '.join(SCOPES)}")
    if expires <= today:
        raise RegistryError("expiry must be in the future")
    if expires > today + dt.timedelta(days=max_days):
        raise RegistryError(f"expiry must be at most {max_days} days ahead (until "
                            f"{today + dt.timedelta(days=max_days)}; CONTACTGATE_MAX_ACCREDITATION_DAYS)")
    if evidence is not None:
        evidence = _text(evidence, "the evidence reference")
    if org.status == "suspended":
        raise RegistryError("organisation is suspended; reinstate it first")
    if org.status == "revoked":
        raise RegistryError("organisation is revoked; a revoked organisation is registered again under a new code")
    # A first accreditation waits in pending_approval; a renewal or change of an accredited
    # organisation waits beside the accreditation in force, which carries on until approval.
    kind = "renewal" if org.status == "accredited" else "accreditation"
    payload = {"scopes": sorted(set(scopes)), "expires": expires.isoformat(), "evidence": evidence,
               "evidence_files": list(evidence_files or ())}
    proposal = _new_proposal(conn, kind, org.code, payload, actor)
    for old in org.pending:
        if old.kind in ("accreditation", "renewal"):
            _supersede(conn, trail, actor, old, proposal.id)
    if org.status == "registered":
        _set(conn, org.code, status="pending_approval")
    _record(conn, trail, "org.accredit", actor, org.code, f"proposal {proposal.id} ({kind}): {proposal.summary()}")
    return proposal


def _proposal_for_decision(conn: Connection, proposal_id: int, org: Organisation | None) -> Proposal:
    row = conn.execute(select(proposals).where(proposals.c.id == proposal_id).with_for_update()).first()
    if row is None or (org is not None and row.org_code != org.code):
        where = f" for {org.code}" if org is not None else ""
        raise RegistryError(f"no proposal {proposal_id}{where}")
    proposal = _proposal_from_row(row)
    if proposal.status != "pending":
        why = f" ({proposal.decision_reason})" if proposal.decision_reason else ""
        raise RegistryError(f"proposal {proposal_id} is {proposal.status}{why}: there is nothing to approve")
    return proposal


def _decide(conn: Connection, proposal: Proposal, actor: Officer, status: str, reason: str | None) -> None:
    conn.execute(update(proposals).where(proposals.c.id == proposal.id).values(
        status=status, decided_by=actor.officer_id, decided_at=_now(), decision_reason=reason))


def _second_officer(proposal: Proposal, actor: Officer) -> None:
    if actor.officer_id == proposal.proposed_by:
        raise RegistryError(f"proposal {proposal.id} was made by {actor.officer_id}: "
                            f"approval needs a second officer, a different account")


def approve(conn: Connection, trail: AuditTrail, code: str, proposal_id: int, actor: Officer) -> Organisation:
    """A second officer approves the organisation's proposal ``proposal_id``, exactly as proposed."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "approving a proposal")
    org = _org_for_change(conn, code)
    proposal = _proposal_for_decision(conn, proposal_id, org)
    _second_officer(proposal, actor)
    p = proposal.payload
    if proposal.kind in ("accreditation", "renewal"):
        if org.status == "suspended":
            raise RegistryError("organisation is suspended; reinstate it first")
        if org.status == "revoked":
            raise RegistryError("organisation is revoked")
        expires = dt.date.fromisoformat(p["expires"])
        if expires <= dt.date.today():
            raise RegistryError(f"proposal {proposal.id} expires on {expires}, which has passed: propose again")
        _set(conn, org.code, status="accredited", scopes=",".join(p["scopes"]), expires=expires,
             proposed_by=proposal.proposed_by, evidence=p.get("evidence"), approved_by=actor.officer_id,
             status_reason=None)
    elif proposal.kind == "reinstatement":
        if org.status != "suspended":
            raise RegistryError(f"cannot reinstate: status is {org.status}")
        # Back to where it was: accredited if it ever was approved, else still onboarding.
        if org.approved_by is not None:
            status = "accredited"
        else:
            status = "pending_approval" if any(q.kind == "accreditation" for q in org.pending) else "registered"
        _set(conn, org.code, status=status, status_reason=None)
    elif proposal.kind in CERT_PROPOSALS:
        raise RegistryError(f"proposal {proposal.id} ({proposal.kind}) is a certificate: approve it with "
                            f"`contactgate cert approve {org.code} --proposal {proposal.id}`")
    else:
        raise RegistryError(f"proposal {proposal.id} is not an organisation's proposal")
    _decide(conn, proposal, actor, "approved", None)
    _record(conn, trail, "org.approve", actor, org.code,
            f"approved proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {proposal.summary()}")
    return _require_org(conn, org.code)


def decline(conn: Connection, trail: AuditTrail, code: str, proposal_id: int, actor: Officer,
            reason: str) -> Organisation:
    """Decline (or, by its proposer, withdraw) a pending proposal, with a reason."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "declining a proposal")
    org = _org_for_change(conn, code)
    proposal = _proposal_for_decision(conn, proposal_id, org)
    reason = _text(reason, "the reason")
    _decide(conn, proposal, actor, "declined", reason)
    if proposal.kind == "accreditation" and org.status == "pending_approval" and not any(
            q.kind == "accreditation" and q.id != proposal.id for q in org.pending):
        _set(conn, org.code, status="registered")
    _record(conn, trail, "org.decline", actor, org.code,
            f"declined proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {reason}")
    return _require_org(conn, org.code)


def suspend(conn: Connection, trail: AuditTrail, code: str, actor: Officer, reason: str) -> Organisation:
    actor = acting(conn, actor, ORGANISATION_ROLES, "suspending an organisation")
    org = _org_for_change(conn, code)
    if org.status not in ("accredited", "pending_approval"):
        raise RegistryError(f"cannot suspend: status is {org.status}")
    reason = _text(reason, "the reason")
    _set(conn, org.code, status="suspended", status_reason=reason)
    _record(conn, trail, "org.suspend", actor, org.code, f"suspended: {reason}")
    return _require_org(conn, org.code)


def reinstate(conn: Connection, trail: AuditTrail, code: str, actor: Officer, reason: str) -> Proposal:
    """Propose lifting a suspension: a second officer approves it."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "proposing a reinstatement")
    org = _org_for_change(conn, code)
    if org.status != "suspended":
        raise RegistryError(f"cannot reinstate: status is {org.status}")
    reason = _text(reason, "the reason")
    proposal = _new_proposal(conn, "reinstatement", org.code, {"reason": reason}, actor)
    for old in org.pending:
        if old.kind == "reinstatement":
            _supersede(conn, trail, actor, old, proposal.id)
    _record(conn, trail, "org.reinstate", actor, org.code, f"proposal {proposal.id} (reinstatement): {reason}")
    return proposal


def revoke_org(conn: Connection, trail: AuditTrail, code: str, actor: Officer, reason: str) -> Organisation:
    """End an organisation for good: its traffic stops, its certificates are revoked, its proposals lapse."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "revoking an organisation")
    org = _org_for_change(conn, code)
    if org.status == "revoked":
        raise RegistryError("organisation is already revoked")
    reason = _text(reason, "the reason")
    _set(conn, org.code, status="revoked", status_reason=reason)
    for proposal in org.pending:
        _decide(conn, proposal, actor, "declined", "organisation revoked")
    for record in list_certs(conn, org.code):
        if record.revoked_at is None:
            conn.execute(update(certificates).where(certificates.c.fingerprint == record.fingerprint)
                         .values(revoked_at=_now(), revoked_reason=f"organisation revoked: {reason}"))
            _record(conn, trail, "cert.revoke", actor, org.code, f"revoked {record.fingerprint}: organisation revoked")
    _record(conn, trail, "org.revoke", actor, org.code, f"revoked: {reason}")
    return _require_org(conn, org.code)


def history(conn: Connection, code: str) -> list[dict]:
    """Everything officers did to the organisation and its certificates, oldest first (from the audit chain)."""
    org = _require_org(conn, code)
    rows = conn.execute(select(audit_log.c.seq, audit_log.c.at, audit_log.c.operation, audit_log.c.user_id,
                               audit_log.c.detail)
                        .where(audit_log.c.org_code == org.code,
                               or_(audit_log.c.operation.like("org.%"), audit_log.c.operation.like("cert.%")))
                        .order_by(audit_log.c.seq))
    return [{"seq": r.seq, "at": r.at, "operation": r.operation, "officer": r.user_id, "detail": r.detail}
            for r in rows]


def _active_certificates(conn: Connection, code: str) -> int:
    return conn.execute(select(func.count()).select_from(certificates).where(
        certificates.c.org_code == code, certificates.c.revoked_at.is_(None),
        certificates.c.not_after > _now())).scalar_one()


def propose_certificate(conn: Connection, trail: AuditTrail, code: str, kind: str, payload: dict,
                        actor: Officer) -> Proposal:
    """Propose issuing (``cert_issue``: payload from gateway.trust.issuing, a checked CSR or a key to
    be made by the gateway) or registering (``cert_register``: a certificate that chains to a trusted
    CA) a certificate for the organisation. Nothing is signed or bound until a second officer
    approves it with `approve_certificate`. The proposal records how many active certificates the
    organisation holds already: the approver is told, and the audit review flags a second one."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "proposing a certificate")
    if kind not in CERT_PROPOSALS:
        raise RegistryError(f"not a certificate proposal: {kind}")
    org = _org_for_change(conn, code)
    if org.status == "revoked":
        raise RegistryError("organisation is revoked")
    if kind == "cert_register":
        _refuse_registered(conn, payload["fingerprint"])
        for old in org.pending:
            if old.kind == "cert_register" and old.payload.get("fingerprint") == payload["fingerprint"]:
                raise RegistryError(f"proposal {old.id} registers that certificate already: approve or decline it")
    payload = {**payload, "active_certificates": _active_certificates(conn, org.code)}
    proposal = _new_proposal(conn, kind, org.code, payload, actor)
    _record(conn, trail, "cert.propose", actor, org.code, f"proposal {proposal.id} ({kind}): {proposal.summary()}")
    return proposal


def approve_certificate(conn: Connection, trail: AuditTrail, code: str, proposal_id: int, actor: Officer, *,
                        make) -> CertificateRecord:
    """A second officer approves the certificate proposal ``proposal_id``: ``make(org, proposal)``
    then signs the certificate (or re-checks the one to register) and returns it, and it is bound to
    the organisation, all in this transaction (if anything fails, nothing is bound). The audit entry
    names both officers."""
    actor = acting(conn, actor, ORGANISATION_ROLES, "approving a certificate")
    org = _org_for_change(conn, code)
    proposal = _proposal_for_decision(conn, proposal_id, org)
    if proposal.kind not in CERT_PROPOSALS:
        raise RegistryError(f"proposal {proposal.id} ({proposal.kind}) is not a certificate: approve it with "
                            f"`contactgate org approve {org.code} --proposal {proposal.id}`")
    _second_officer(proposal, actor)
    if org.status == "revoked":
        raise RegistryError("organisation is revoked")
    cert = make(org, proposal)
    record = _bind_certificate(conn, trail, org, cert, actor,
                               "issue" if proposal.kind == "cert_issue" else "register", proposal)
    _decide(conn, proposal, actor, "approved", None)
    _record(conn, trail, "cert.approve", actor, org.code,
            f"approved proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {proposal.summary()}; "
            f"certificate {record.fingerprint}")
    return record


def bound_already(conn: Connection, fingerprint: str) -> str | None:
    """What a certificate is bound to already, said for a refusal: an organisation, or a proxy
    (gateway.trust.proxies); None if nothing. A certificate is bound to one of them at most: a
    proxy's bound to an organisation too would speak as it without a Client-Cert header, and
    revoking the proxy would not stop that."""
    existing = get_cert(conn, fingerprint)
    if existing is not None:
        return f"registered to {existing.org_code}"
    proxy = conn.execute(select(proxy_certificates.c.name).where(proxy_certificates.c.fingerprint == fingerprint)).first()
    return None if proxy is None else f"the proxy certificate of {proxy.name}"


def _refuse_registered(conn: Connection, fingerprint: str) -> None:
    bound = bound_already(conn, fingerprint)
    if bound is not None:
        raise RegistryError(f"that certificate is {bound} already: an organisation needs a certificate of its own")


def _bind_certificate(conn: Connection, trail: AuditTrail, org: Organisation, cert: x509.Certificate,
                      actor: Officer, how: str, proposal: Proposal) -> CertificateRecord:
    info = pki.describe(cert)
    _refuse_registered(conn, info["fingerprint"])
    held = _active_certificates(conn, org.code)
    conn.execute(certificates.insert().values(org_code=org.code, created_at=_now(), **info))
    also = f"; additional: {org.code} held {held} active certificate{'s' if held != 1 else ''}" if held else ""
    _record(conn, trail, f"cert.{how}", actor, org.code,
            f"certificate {info['fingerprint']} {info['subject']} until {info['not_after']:%Y-%m-%d}, "
            f"proposed by {proposal.proposed_by} (proposal {proposal.id}), approved by {actor.officer_id}{also}")
    return get_cert(conn, info["fingerprint"])


def additional_certificates(conn: Connection, since: dt.datetime) -> list[tuple[CertificateRecord, int]]:
    """Certificates bound since ``since`` to an organisation that already held an active one then,
    with how many it held: each is a second credential for the same organisation, worth a look."""
    found = []
    recent = conn.execute(select(certificates).where(certificates.c.created_at >= since)
                          .order_by(certificates.c.created_at)).all()
    for row in recent:
        held = conn.execute(select(func.count()).select_from(certificates).where(
            certificates.c.org_code == row.org_code, certificates.c.fingerprint != row.fingerprint,
            certificates.c.created_at <= row.created_at, certificates.c.not_after > row.created_at,
            or_(certificates.c.revoked_at.is_(None), certificates.c.revoked_at > row.created_at))).scalar_one()
        if held:
            found.append((_cert_from_row(row), held))
    return found


def get_cert(conn: Connection, fp: str) -> CertificateRecord | None:
    row = conn.execute(_CERT_BY_FINGERPRINT, {"fp": fp}).first()
    return _cert_from_row(row) if row else None


def get_cert_and_org(conn: Connection, fp: str) -> tuple[CertificateRecord | None, Organisation | None]:
    """The certificate and the organisation it is registered to, in one query (as `get_cert` and
    `get_org(..., with_pending=False)`: the message path's lookup)."""
    row = conn.execute(_CERT_AND_ORG, {"fp": fp}).first()
    if row is None:
        return None, None
    values = row._mapping
    org = None
    if values["o_code"] is not None:
        org = _org_from_row(SimpleNamespace(**{c.name: values[f"o_{c.name}"] for c in organisations.c}))
    return _cert_from_row(row), org


_CERTS_OF_ORG = select(certificates).where(certificates.c.org_code == bindparam("code"))


def certificates_of(conn: Connection, org_code: str) -> list[tuple[CertificateRecord, x509.Certificate]]:
    """Every certificate registered to the organisation (revoked ones too), each with its parsed
    certificate: where the message path resolves a key reference (issuer-serial, Subject Key
    Identifier, thumbprint), so that it can name only the organisation's own."""
    return [(_cert_from_row(row), _parsed_certificate(row.pem)) for row in conn.execute(_CERTS_OF_ORG, {"code": org_code})]


@functools.lru_cache(maxsize=1024)  # registered certificates, parsed once (bounded: tests/gateway/test_process_caches.py)
def _parsed_certificate(pem: str) -> x509.Certificate:
    """(a certificate's PEM never changes: parsed once per process)"""
    return x509.load_pem_x509_certificate(pem.encode())


def list_certs(conn: Connection, code: str | None = None, *, expiring_days: int | None = None,
               today: dt.date | None = None) -> list[CertificateRecord]:
    """Certificates (of one organisation); ``expiring_days``: the active ones ending within that many days."""
    query = select(certificates).order_by(certificates.c.org_code, certificates.c.created_at)
    if code:
        org = get_org(conn, code)
        query = query.where(certificates.c.org_code == (org.code if org else code))
    if expiring_days is not None:
        horizon = dt.datetime.combine((today or dt.date.today()) + dt.timedelta(days=expiring_days),
                                      dt.time.max, tzinfo=dt.timezone.utc)
        query = query.where(certificates.c.revoked_at.is_(None), certificates.c.not_after <= horizon)
    return [_cert_from_row(r) for r in conn.execute(query)]


def revoke_cert(conn: Connection, trail: AuditTrail, fp: str, reason: str, actor: Officer) -> CertificateRecord:
    actor = acting(conn, actor, ORGANISATION_ROLES, "revoking a certificate")
    fp = (fp or "").strip().lower().replace(":", "")
    record = get_cert(conn, fp)
    if record is None:
        raise RegistryError("no certificate with that fingerprint")
    if record.revoked_at is not None:
        raise RegistryError("certificate is already revoked")
    reason = _text(reason, "the reason")
    conn.execute(update(certificates).where(certificates.c.fingerprint == fp)
                 .values(revoked_at=_now(), revoked_reason=reason))
    _record(conn, trail, "cert.revoke", actor, record.org_code, f"revoked {fp}: {reason}")
    return get_cert(conn, fp)


# ---- the trust list: changes proposed by a senior officer, approved by a second ----------------------

def propose_trust_change(conn: Connection, trail: AuditTrail, actor: Officer, kind: str, payload: dict) -> Proposal:
    """``kind`` trust_add (payload: fingerprint, subject, pem[, crl]) or trust_remove (fingerprint,
    subject). Checked by the caller (gateway.trust.anchors) before it is proposed, and again when applied."""
    actor = acting(conn, actor, TRUST_ROLES, "proposing a trust change")
    if kind not in TRUST_PROPOSALS:
        raise RegistryError(f"not a trust change: {kind}")
    for old in list_proposals(conn, kinds=TRUST_PROPOSALS):
        if old.payload.get("fingerprint") == payload["fingerprint"]:
            raise RegistryError(f"proposal {old.id} for that CA awaits a decision: approve or decline it first")
    proposal = _new_proposal(conn, kind, None, payload, actor)
    _record(conn, trail, "trust.propose", actor, None, f"proposal {proposal.id} ({kind}): {proposal.summary()}")
    return proposal


def decide_trust_change(conn: Connection, trail: AuditTrail, proposal_id: int, actor: Officer, *, approve: bool,
                        reason: str | None = None, apply=None) -> Proposal:
    """A second senior officer approves or declines, with a reason. On approval ``apply(proposal)``
    (gateway.trust.anchors.approving's) checks the change and stages its files inside this
    transaction (if it fails, nothing is recorded); the files are put in place only once the
    approval is committed, so a failed commit changes none of them."""
    actor = acting(conn, actor, TRUST_ROLES, "deciding a trust change")
    proposal = _proposal_for_decision(conn, proposal_id, None)
    if proposal.kind not in TRUST_PROPOSALS:
        raise RegistryError(f"proposal {proposal.id} is not a trust change (see `org show {proposal.org_code}`)")
    return _approve_or_decline(conn, trail, proposal, actor, "trust", approve=approve, reason=reason, apply=apply)


def _approve_or_decline(conn: Connection, trail: AuditTrail, proposal: Proposal, actor: Officer, operation: str, *,
                        approve: bool, reason: str | None, apply=None) -> Proposal:
    """Decide a proposal that belongs to no organisation (a trust change, a linkage model): approved
    by a second officer after ``apply(proposal)`` (which may refuse), or declined with a reason;
    audited as ``<operation>.approve`` / ``.decline``."""
    if approve:
        _second_officer(proposal, actor)
        if apply is not None:
            apply(proposal)
        _decide(conn, proposal, actor, "approved", None)
        _record(conn, trail, f"{operation}.approve", actor, None,
                f"approved proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {proposal.summary()}")
    else:
        reason = _text(reason, "the reason")
        _decide(conn, proposal, actor, "declined", reason)
        _record(conn, trail, f"{operation}.decline", actor, None,
                f"declined proposal {proposal.id} ({proposal.kind}) by {proposal.proposed_by}: {reason}")
    return get_proposal(conn, proposal.id)


# ---- the linkage model in use: proposed by a senior officer, approved by a second -------------------

def propose_linkage_model(conn: Connection, trail: AuditTrail, actor: Officer, payload: dict) -> Proposal:
    """Propose putting a model in use (payload: version, sha256, file, replaces; checked by the
    caller, gateway.cli.linkage, and again on approval). A pending proposal is superseded."""
    actor = acting(conn, actor, LINKAGE_ROLES, "proposing a linkage model")
    proposal = _new_proposal(conn, "linkage_model", None, payload, actor)
    for old in list_proposals(conn, kinds=LINKAGE_PROPOSALS):
        if old.id != proposal.id:
            conn.execute(update(proposals).where(proposals.c.id == old.id).values(
                status="superseded", decided_by=actor.officer_id, decided_at=_now(),
                decision_reason=f"replaced by proposal {proposal.id}"))
            _record(conn, trail, "linkage.supersede", actor, None,
                    f"proposal {old.id} ({old.summary()}) replaced by proposal {proposal.id}")
    _record(conn, trail, "linkage.propose", actor, None, f"proposal {proposal.id}: {proposal.summary()}")
    return proposal


def decide_linkage_model(conn: Connection, trail: AuditTrail, proposal_id: int, actor: Officer, *, approve: bool,
                         reason: str | None = None, check=None) -> Proposal:
    """A second senior officer approves (``check(conn, proposal)`` first re-reads the model file and
    refuses one that is not, byte for byte, the one proposed) or declines with a reason. The
    running gateways follow an approval within seconds (gateway.index.linkage.versions.CHECK_S)."""
    actor = acting(conn, actor, LINKAGE_ROLES, "deciding on a linkage model")
    proposal = _proposal_for_decision(conn, proposal_id, None)
    if proposal.kind not in LINKAGE_PROPOSALS:
        raise RegistryError(f"proposal {proposal.id} ({proposal.kind}) is not a linkage model")
    newer = conn.execute(select(proposals.c.id).where(proposals.c.kind.in_(LINKAGE_PROPOSALS),
                                                      proposals.c.id > proposal.id).limit(1)).first()
    if approve and newer is not None:  # the model in use is the newest approved proposal's
        raise RegistryError(f"proposal {newer.id} came after proposal {proposal.id}: decide that one")
    return _approve_or_decline(conn, trail, proposal, actor, "linkage", approve=approve, reason=reason,
                               apply=(lambda p: check(conn, p)) if check is not None else None)
