"""Officers appoint an organisation's first user administrator of the portal, and disable, reset and
re-enable administrators' accounts (which no administrator may touch): one officer proposes, a
different officer approves (or declines) — four-eyes, as for everything that grants access. Each
step, and each refusal, is an entry in the audit chain (``portal.admin.propose``, ``.approve``,
``.decline``) naming the organisation; approving an appointment or a reset gives the one-time
invitation code (never stored or audited), which the officers hand over out of band. Officers also
approve a role one administrator proposed (``approve_role``), e.g. for an organisation that has only
one administrator."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from gateway import audit
from gateway.db import portal_admin_proposals
from gateway.four_eyes import FourEyes
from gateway.officers import Officer
from gateway.portal import accounts
from gateway.portal.accounts import PortalError
from gateway.trust import registry

ROLES = registry.ORGANISATION_ROLES  # the officers who onboard organisations


@dataclass(frozen=True)
class Proposal:
    id: int
    org_code: str
    user_id: str
    name: str
    job_title: str
    status: str
    proposed_by: str
    decided_by: str | None
    action: str = "appoint"
    why: str | None = None

    def summary(self) -> str:
        if self.action == "appoint":
            return f"{self.user_id} ({self.name}, {self.job_title}) as {self.org_code}'s user administrator"
        said = f"{self.action} {self.org_code}:{self.user_id} ({self.name}, {self.job_title})"
        return said + (f": {self.why}" if self.why else "")


def _proposal(conn: Connection, proposal_id: int, *, lock: bool = False) -> Proposal | None:
    query = select(portal_admin_proposals).where(portal_admin_proposals.c.id == proposal_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return None
    return Proposal(row.id, row.org_code, row.user_id, row.name, row.job_title, row.status, row.proposed_by,
                    row.decided_by, row.action, row.why)


FOUR_EYES = FourEyes(portal_admin_proposals, PortalError, "portal.admin", ROLES, "appointing a user administrator",
                     "portal-admin proposal", _proposal, summarised=True)
run = FOUR_EYES.run  # fn(conn, trail, actor, *args) in one transaction; a refusal audited, then raised


def list_pending(conn: Connection) -> list[Proposal]:
    ids = conn.execute(select(portal_admin_proposals.c.id).where(portal_admin_proposals.c.status == "pending")
                       .order_by(portal_admin_proposals.c.id)).scalars().all()
    return [_proposal(conn, i) for i in ids]


def _accredited(conn: Connection, org_code: str, today: dt.date) -> registry.Organisation:
    org = registry.get_org(conn, org_code, with_pending=False)
    if org is None:
        raise PortalError(f"no organisation with code {org_code!r}")
    if org.effective_status(today) != "accredited":
        raise PortalError(f"{org.code} is {org.effective_status(today)}: only an accredited organisation has "
                          f"portal accounts")
    return org


def propose(conn: Connection, trail: audit.AuditTrail, actor: Officer, org_code: str, user_id: str, name: str,
            job_title: str, now: dt.datetime) -> Proposal:
    FOUR_EYES.require(actor)
    org = _accredited(conn, org_code, now.date())
    user_id = accounts.canonical_user(user_id)
    name, job_title = (name or "").strip(), (job_title or "").strip()
    if not name or not job_title or len(name) > 200 or len(job_title) > 200:
        raise PortalError("a name and a job title are required (at most 200 characters each)")
    if accounts.get(conn, org.code, user_id) is not None:
        raise PortalError(f"{org.code} already has an account {user_id!r}")
    pending = conn.execute(select(portal_admin_proposals.c.id).where(
        portal_admin_proposals.c.org_code == org.code, portal_admin_proposals.c.user_id == user_id,
        portal_admin_proposals.c.status == "pending")).first()
    if pending is not None:
        raise PortalError(f"proposal {pending.id} already proposes {org.code}:{user_id}")
    return FOUR_EYES.proposed(conn, trail, actor, now, org_code=org.code, user_id=user_id, name=name,
                              job_title=job_title, action="appoint")


ACTIONS = ("disable", "reset", "enable")


def propose_action(conn: Connection, trail: audit.AuditTrail, actor: Officer, action: str, org_code: str,
                   user_id: str, why: str | None, now: dt.datetime) -> Proposal:
    """Propose to disable, reset or re-enable an account (an administrator's, which no administrator
    may touch, or any other of the organisation's); a second officer approves it."""
    FOUR_EYES.require(actor)
    if action not in ACTIONS:
        raise PortalError(f"no such action {action!r}")
    org_code = (org_code or "").strip().upper()[:32]
    target = accounts.get(conn, org_code, accounts.canonical_user(user_id))
    if target is None:
        raise PortalError(f"{org_code} has no portal account {user_id!r}")
    why = (why or "").strip() or None
    if action != "reset" and why is None:
        raise PortalError("a reason is required")
    if action == "disable" and target.disabled:
        raise PortalError(f"{target.who} is already disabled")
    if action == "enable" and not target.disabled:
        raise PortalError(f"{target.who} is not disabled")
    pending = conn.execute(select(portal_admin_proposals.c.id).where(
        portal_admin_proposals.c.org_code == target.org_code, portal_admin_proposals.c.user_id == target.user_id,
        portal_admin_proposals.c.action == action, portal_admin_proposals.c.status == "pending")).first()
    if pending is not None:
        raise PortalError(f"proposal {pending.id} already proposes to {action} {target.who}")
    return FOUR_EYES.proposed(conn, trail, actor, now, org_code=target.org_code, user_id=target.user_id,
                              name=target.name, job_title=target.job_title, action=action, why=why and why[:1000])


def approve_role(conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal_id: int,
                 now: dt.datetime) -> accounts.RoleProposal:
    """An officer approves a role an organisation's administrator proposed (its second pair of eyes
    when it has only one administrator)."""
    FOUR_EYES.require(actor)
    try:
        proposal = accounts.decide_role(conn, proposal_id, actor.officer_id, now)
    except LookupError as exc:
        raise PortalError(str(exc)) from None
    trail.append(conn, FOUR_EYES.entry("portal.admin.approve-role", actor, proposal.org_code,
                                       f"approved role {proposal.role} for {proposal.who} (role proposal "
                                       f"{proposal.id} by {proposal.proposed_by})"))
    return proposal


def approve(conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal_id: int, now: dt.datetime,
            rules) -> tuple[Proposal, str]:
    """(the proposal, the invitation code of an appointment or a reset; None for others)."""
    proposal = FOUR_EYES.pending(conn, actor, proposal_id)
    if proposal.action != "appoint":
        return _approve_action(conn, trail, actor, proposal, now)
    _accredited(conn, proposal.org_code, now.date())
    _, code = accounts.create(conn, trail, proposal.org_code, proposal.user_id, accounts.Details(
        proposal.name, None, proposal.job_title, None, None, None, None), user_admin=True,
        created_by=f"officers {proposal.proposed_by}+{actor.officer_id}", rules=rules, now=now)
    return FOUR_EYES.approved(conn, trail, actor, proposal, now, "; account made, invitation issued"), code


def _approve_action(conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal: Proposal,
                    now: dt.datetime) -> tuple[Proposal, str | None]:
    target = accounts.get(conn, proposal.org_code, proposal.user_id)
    if target is None:
        raise PortalError(f"{proposal.org_code} has no portal account {proposal.user_id!r} any more")
    code = None
    if proposal.action == "disable":
        accounts.disable_account(conn, target, proposal.why, now)
    elif proposal.action == "enable":
        accounts.enable_account(conn, target, proposal.why, now)
    else:
        code = accounts.reset_account(conn, target, now)
    return FOUR_EYES.approved(conn, trail, actor, proposal, now, "; new invitation issued" if code else ""), code


def decline(conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal_id: int, reason: str,
            now: dt.datetime) -> Proposal:
    return FOUR_EYES.decline(conn, trail, actor, proposal_id, reason, now)

