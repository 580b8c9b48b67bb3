"""Practitioners as accounts of their organisation: vetting dates, an argon2id password and a TOTP
second factor, enrolment by a one-time invitation code, sign-in sessions.

- An account is (organisation, user id); the audit names it ``ORG:user`` as a SOAP read names its
  ``Requester/UserId``. Ids follow the officers' rule (gateway.officers.canonical_id).
- Each account holds a role from the roles file (what it may see of a child: gateway.index.
  disclosure), a job title, its clearance (certificate number and date: re-checked every
  ``Settings.portal_clearance_years``), its training (refreshed every
  ``Settings.portal_training_years``) and an end date. Sign-in is refused, saying which, when any
  has lapsed, and a session ends at the next page once one does (`Practitioner.lapsed`).
- A user administrator (``user_admin``) creates, changes, disables, resets and re-enables the
  practitioners of their own organisation, never another's, and never another administrator's
  account (officers disable, reset and re-enable administrators, four-eyes:
  gateway.portal.appointments, which also appoints the first). A role — on a new account, or a
  change of role — is in force only once a second administrator of the organisation, or an officer,
  approves it (``portal_role_proposals``); taking a role away needs no second say. An administrator
  without a role searches nothing.
- Enrolment: the account is made with a TOTP secret (sealed) and a one-time invitation code (its
  SHA-256 kept, for INVITATION_DAYS), handed to the practitioner out of band; with it they see the
  secret once, choose a password and confirm a code. Making the code again (`reinvite`) resets the
  account: new secret, no password, sessions ended; a disabled account stays disabled (re-enabling
  is its own action, with a reason: `enable`).
- Sign-in costs one argon2id verification whatever is refused (a dummy hash for an unknown
  account: gateway.officers), outside any transaction. Failures are counted per account **and
  source address** only: ``Settings.lockout_failures`` in a row from one source lock that source
  out of that account for ``Settings.lockout_minutes`` — except a browser the account signed in
  from before (``known_browser``: the portal's signed cookie), so that colleagues behind one NAT
  address do not lock each other out. Nothing locks the account as a whole, so a
  stranger guessing a practitioner's password cannot lock them out (the portal's per-address
  throttle, gateway.console.throttle, bounds how fast any one address guesses). Once the password
  is right, though, wrong codes count across the whole account, whatever the address:
  ``CODE_FAILURES`` in a row lock the code step until the user administrator resets the account
  (their Practitioners page shows it) — only someone with the password can do that. The answer says
  only "refused" until both factors are right; then it says why (disabled, ended, lapsed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine

from gateway import audit, officers
from gateway.db import (portal_handles, portal_practitioners, portal_role_proposals, portal_sessions,
                        portal_signin_failures, reader)
from gateway.index import sealed
from gateway.portal import federated_sessions  # sessions signed in through an organisation's provider
from gateway.portal.errors import PortalError  # noqa: F401 (raised here; callers catch accounts.PortalError)

INVITATION_DAYS = 14
# "Password right, code wrong" this many times in a row, from any addresses, locks the code step
# until a reset: only someone who has the password can do it, so it locks out no stranger's victim.
CODE_FAILURES = 10
ADMIN_ROLE = "user administrator"  # the audit's role for an administrator's own actions


class NotSignedIn(PortalError):
    """No good session (ended, expired, or the account disabled or lapsed since)."""


totp_context = sealed.portal_totp_context

def canonical_user(text: str) -> str:
    try:
        return officers.canonical_id(text)
    except officers.OfficerError:
        raise PortalError("a user id is 2-64 letters, digits, '.', '-' or '_' (no spaces)") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value):
    return officers._aware(value)


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class Practitioner:
    org_code: str
    user_id: str
    name: str
    role: str | None
    job_title: str
    user_admin: bool
    clearance_number: str | None
    clearance_date: dt.date | None
    training_date: dt.date | None
    end_date: dt.date | None
    disabled: bool
    enrolled: bool
    code_locked: bool = False

    @property
    def who(self) -> str:
        return f"{self.org_code}:{self.user_id}"

    def clearance_due(self, settings) -> dt.date | None:
        return None if self.clearance_date is None else _add_years(self.clearance_date, settings.portal_clearance_years)

    def training_due(self, settings) -> dt.date | None:
        return None if self.training_date is None else _add_years(self.training_date, settings.portal_training_years)

    def lapsed(self, settings, today: dt.date) -> str | None:
        """Why the account may not be used today, said to its holder; None if it may."""
        if self.disabled:
            return "your account is disabled: ask your user administrator"
        if self.end_date is not None and self.end_date < today:
            return f"your account ended on {self.end_date:%d %B %Y}: ask your user administrator"
        if self.user_admin and self.role is None:
            return None  # an administrator only: vetting dates are for those who see children
        due = self.clearance_due(settings)
        if due is None or due <= today:
            return ("your clearance check has no date recorded" if due is None else
                    f"your clearance check was due for re-check on {due:%d %B %Y}") + \
                ": ask your user administrator to record a current certificate"
        due = self.training_due(settings)
        if due is None or due <= today:
            return ("your training has no date recorded" if due is None else
                    f"your training was due to be refreshed on {due:%d %B %Y}") + \
                ": ask your user administrator to record it once done"
        return None

    def lapses_within(self, settings, today: dt.date, days: int) -> dt.date | None:
        """The first of its dates (clearance, training, end) falling in the next ``days`` days."""
        found = self.lapsing(settings, today, days)
        return found[0] if found else None

    def lapsing(self, settings, today: dt.date, days: int) -> tuple[dt.date, str] | None:
        """(the first date falling in the next ``days`` days, what lapses then: clearance, training or
        account), or None."""
        dates = [(d, what) for d, what in ((self.clearance_due(settings), "clearance"),
                                           (self.training_due(settings), "training"),
                                           (None if self.end_date is None else self.end_date + dt.timedelta(days=1),
                                            "account"))
                 if d is not None and today <= d <= today + dt.timedelta(days=days)]
        return min(dates) if dates else None


def lapsing(conn: Connection, settings, today: dt.date, days: int, org_code: str | None = None) -> list:
    """[(practitioner, date, what)] of every enabled account with a role whose clearance, training or
    end date falls in the next ``days`` days, soonest first (officers' view; an administrator's
    page shows their own organisation's)."""
    query = select(portal_practitioners).where(portal_practitioners.c.disabled_at.is_(None),
                                               portal_practitioners.c.role.is_not(None))
    if org_code is not None:
        query = query.where(portal_practitioners.c.org_code == org_code)
    found = []
    for row in conn.execute(query):
        practitioner = _from_row(row)
        soon = practitioner.lapsing(settings, today, days)
        if soon is not None:
            found.append((practitioner, *soon))
    return sorted(found, key=lambda item: (item[1], item[0].who))


def _from_row(row) -> Practitioner:
    return Practitioner(row.org_code, row.user_id, row.name, row.role, row.job_title, bool(row.user_admin),
                        row.clearance_number, row.clearance_date, row.training_date, row.end_date,
                        row.disabled_at is not None, row.password_hash is not None, row.code_locked_at is not None)


def get(conn: Connection, org_code: str, user_id: str) -> Practitioner | None:
    row = conn.execute(select(portal_practitioners).where(portal_practitioners.c.org_code == org_code,
                                                          portal_practitioners.c.user_id == user_id)).first()
    return _from_row(row) if row else None


def list_of(conn: Connection, org_code: str) -> list[Practitioner]:
    return [_from_row(r) for r in conn.execute(select(portal_practitioners).where(
        portal_practitioners.c.org_code == org_code).order_by(portal_practitioners.c.user_id))]


def _invitation_hash(org_code: str, user_id: str, code: str) -> str:
    return hashlib.sha256(f"{org_code}\n{user_id}\n{code}".encode()).hexdigest()


def _new_invitation(org_code: str, user_id: str, now: dt.datetime) -> tuple[str, dict]:
    code = secrets.token_urlsafe(18)  # 144 bits: 24 characters
    return code, {"invitation_hash": _invitation_hash(org_code, user_id, code),
                  "invitation_expires": now + dt.timedelta(days=INVITATION_DAYS)}


@dataclass(frozen=True)
class Details:
    """What a user administrator sets of an account (checked by `checked`)."""

    name: str
    role: str | None
    job_title: str
    clearance_number: str | None
    clearance_date: dt.date | None
    training_date: dt.date | None
    end_date: dt.date | None

    def checked(self, rules) -> "Details":
        name, job = (self.name or "").strip(), (self.job_title or "").strip()
        if not name or len(name) > 200:
            raise PortalError("a name must not be blank (at most 200 characters)")
        if not job or len(job) > 200:
            raise PortalError("a job title must not be blank (at most 200 characters)")
        role = (self.role or "").strip() or None
        if role is not None:
            if len(role) > 64:
                raise PortalError("a role has at most 64 characters")
            if rules.configured and role.casefold() not in rules.roles:
                raise PortalError(f"the role must be one of the roles file's: {', '.join(sorted(rules.roles))}")
            role = role.casefold()
        number = (self.clearance_number or "").strip() or None
        if number is not None and len(number) > 64:
            raise PortalError("a certificate number has at most 64 characters")
        if role is not None and (number is None or self.clearance_date is None or self.training_date is None):
            raise PortalError("a practitioner needs a clearance certificate number and date, and a training date")
        return Details(name, role, job, number, self.clearance_date, self.training_date, self.end_date)


def _audit(conn: Connection, trail: audit.AuditTrail, operation: str, org_code: str, user_id: str | None,
           role: str | None, detail: str, outcome: str = "done") -> None:
    trail.append(conn, audit.Entry(operation=operation, outcome=outcome, org_code=org_code, user_id=user_id,
                                   role=role, detail=detail))


def create(conn: Connection, trail: audit.AuditTrail, org_code: str, user_id: str, details: Details, *,
           user_admin: bool, created_by: str, rules, now: dt.datetime | None = None,
           audited_as: tuple[str, str | None, str | None] | None = None) -> tuple[Practitioner, str]:
    """A new account and its one-time invitation code (shown once, never stored). ``audited_as``:
    (operation, user id, role) of the entry; None when the caller audits it (an officers' approval)."""
    now = now or _now()
    user_id = canonical_user(user_id)
    details = details.checked(rules)
    if get(conn, org_code, user_id) is not None:
        raise PortalError(f"{org_code} already has an account {user_id!r}")
    code, invitation = _new_invitation(org_code, user_id, now)
    secret = officers.new_totp_secret()
    conn.execute(portal_practitioners.insert().values(
        org_code=org_code, user_id=user_id, name=details.name, role=details.role, job_title=details.job_title,
        user_admin=user_admin, clearance_number=details.clearance_number, clearance_date=details.clearance_date,
        training_date=details.training_date, end_date=details.end_date,
        totp_secret=sealed.vault_of(conn).seal(secret, totp_context(org_code, user_id)),
        created_by=created_by, created_at=now, updated_at=now, **invitation))
    if audited_as is not None:
        operation, actor, role = audited_as
        _audit(conn, trail, operation, org_code, actor, role,
               f"added {org_code}:{user_id} ({details.name}, {details.job_title}) role={details.role or '-'}"
               f"{' user administrator' if user_admin else ''}; invitation made")
    return get(conn, org_code, user_id), code


# ---- what a user administrator does (always within their own organisation) ---------------------

def _own(conn: Connection, admin: Practitioner, user_id: str) -> Practitioner:
    """``user_id`` of the administrator's own organisation; another organisation's account is, to
    them, no account at all."""
    if not admin.user_admin:
        raise PortalError("this needs a user administrator")
    try:
        wanted = canonical_user(user_id)
    except PortalError:
        wanted = None
    target = None if wanted is None else get(conn, admin.org_code, wanted)
    if target is None:
        raise LookupError(f"{admin.org_code} has no account {user_id!r}")
    return target


def add(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, user_id: str, details: Details, *,
        rules, now: dt.datetime | None = None) -> tuple[Practitioner, str]:
    """A new account without a role; the role asked for is proposed, in force once a second
    administrator (or an officer) approves it."""
    if not admin.user_admin:
        raise PortalError("this needs a user administrator")
    now = now or _now()
    details = details.checked(rules)  # the vetting dates a role needs, checked now
    made, code = create(conn, trail, admin.org_code, user_id, replace(details, role=None), user_admin=False,
                        created_by=admin.who, rules=rules, now=now,
                        audited_as=("portal.practitioner.add", admin.user_id, ADMIN_ROLE))
    if details.role is not None:
        _propose_role(conn, trail, admin, made, details.role, now)
    return made, code


def _propose_role(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, target: Practitioner, role: str,
                  now: dt.datetime) -> int:
    """A role for ``target``, awaiting a second administrator's approval (an earlier pending one for
    the same account is superseded)."""
    conn.execute(update(portal_role_proposals).where(
        portal_role_proposals.c.org_code == target.org_code, portal_role_proposals.c.user_id == target.user_id,
        portal_role_proposals.c.status == "pending").values(status="superseded", decided_by=admin.who,
                                                             decided_at=now))
    proposal_id = conn.execute(portal_role_proposals.insert().values(
        org_code=target.org_code, user_id=target.user_id, role=role, status="pending", proposed_by=admin.who,
        proposed_at=now)).inserted_primary_key[0]
    _audit(conn, trail, "portal.practitioner.role", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"proposed role {role} for {target.who} (role proposal {proposal_id}): a second administrator approves it",
           "proposed")
    return proposal_id


@dataclass(frozen=True)
class RoleProposal:
    id: int
    org_code: str
    user_id: str
    role: str
    status: str
    proposed_by: str

    @property
    def who(self) -> str:
        return f"{self.org_code}:{self.user_id}"


def _role_proposal(row) -> RoleProposal:
    return RoleProposal(row.id, row.org_code, row.user_id, row.role, row.status, row.proposed_by)


def pending_roles(conn: Connection, org_code: str | None = None) -> list[RoleProposal]:
    query = select(portal_role_proposals).where(portal_role_proposals.c.status == "pending")
    if org_code is not None:
        query = query.where(portal_role_proposals.c.org_code == org_code)
    return [_role_proposal(r) for r in conn.execute(query.order_by(portal_role_proposals.c.id))]


def decide_role(conn: Connection, proposal_id: int, decided_by: str, now: dt.datetime, *,
                org_code: str | None = None) -> RoleProposal:
    """Put a pending role proposal in force, decided by ``decided_by`` (never its proposer); another
    organisation's proposal (``org_code`` given) is no proposal at all (LookupError)."""
    row = conn.execute(select(portal_role_proposals).where(portal_role_proposals.c.id == proposal_id)
                       .with_for_update()).first()
    if row is None or (org_code is not None and row.org_code != org_code):
        raise LookupError(f"no role proposal {proposal_id}")
    proposal = _role_proposal(row)
    if proposal.status != "pending":
        raise PortalError(f"role proposal {proposal.id} is {proposal.status}")
    if proposal.proposed_by == decided_by:
        raise PortalError(f"role proposal {proposal.id} was made by {decided_by}: a second administrator approves it")
    if decided_by == proposal.who:
        raise PortalError("nobody approves their own role")
    target = get(conn, proposal.org_code, proposal.user_id)
    if target is None or target.user_admin:
        raise PortalError(f"role proposal {proposal.id} is for no practitioner's account")
    conn.execute(update(portal_role_proposals).where(portal_role_proposals.c.id == proposal.id).values(
        status="approved", decided_by=decided_by, decided_at=now))
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == target.org_code,
                                                    portal_practitioners.c.user_id == target.user_id)
                 .values(role=proposal.role, updated_at=now))
    return proposal


def approve_role(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, proposal_id: int,
                 now: dt.datetime | None = None) -> RoleProposal:
    """A second administrator of the organisation approves a role another proposed."""
    if not admin.user_admin:
        raise PortalError("this needs a user administrator")
    proposal = decide_role(conn, proposal_id, admin.who, now or _now(), org_code=admin.org_code)
    _audit(conn, trail, "portal.practitioner.role", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"approved role {proposal.role} for {proposal.who} (role proposal {proposal.id} by {proposal.proposed_by})")
    return proposal


def change(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, user_id: str, details: Details, *,
           rules, now: dt.datetime | None = None) -> Practitioner:
    now = now or _now()
    target = _actionable(conn, admin, user_id, "changed")
    details = details.checked(rules)
    values = {k: getattr(details, k) for k in ("name", "job_title", "clearance_number", "clearance_date",
                                               "training_date", "end_date")}
    if details.role is None:
        values["role"] = None  # taking a role away needs no second say
    changed = sorted(k for k, v in values.items() if getattr(target, k) != v)
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == target.org_code,
                                                    portal_practitioners.c.user_id == target.user_id)
                 .values(updated_at=now, **values))
    _audit(conn, trail, "portal.practitioner.change", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"changed {target.who}: {', '.join(changed) or 'nothing'}")
    if details.role is not None and details.role != target.role:
        _propose_role(conn, trail, admin, target, details.role, now)
    return get(conn, target.org_code, target.user_id)


def _actionable(conn: Connection, admin: Practitioner, user_id: str, done: str) -> Practitioner:
    """An account of the administrator's organisation that they may act on: not their own, and not
    another administrator's (officers act on those, four-eyes: `contactgate portal-admin`)."""
    target = _own(conn, admin, user_id)
    if target.user_id == admin.user_id or target.user_admin:
        raise PortalError(f"a user administrator's account is {done} by the officers (four-eyes), "
                          f"not by an administrator")
    return target


def _end_sessions(conn: Connection, org_code: str, user_id: str) -> None:
    tokens = [r.token_hash for r in conn.execute(select(portal_sessions.c.token_hash).where(
        portal_sessions.c.org_code == org_code, portal_sessions.c.user_id == user_id))]
    if tokens:
        conn.execute(delete(portal_handles).where(portal_handles.c.session_hash.in_(tokens)))
        conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash.in_(tokens)))


def disable(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, user_id: str, reason: str,
            now: dt.datetime | None = None) -> Practitioner:
    target = _actionable(conn, admin, user_id, "disabled")
    reason = disable_account(conn, target, reason, now or _now())
    _audit(conn, trail, "portal.practitioner.disable", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"disabled {target.who}: {reason}")
    return get(conn, target.org_code, target.user_id)


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise PortalError("a reason is required")
    return reason[:1000]


def disable_account(conn: Connection, target: Practitioner, reason: str, now: dt.datetime) -> str:
    """Disable ``target`` (the caller audits it); the reason, checked."""
    reason = _reason(reason)
    if target.disabled:
        raise PortalError(f"{target.who} is already disabled")
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == target.org_code,
                                                    portal_practitioners.c.user_id == target.user_id)
                 .values(disabled_at=now, disabled_reason=reason, updated_at=now))
    # Their open sessions end at their next page (`resume` finds the account disabled and says so).
    return reason


def enable_account(conn: Connection, target: Practitioner, reason: str, now: dt.datetime) -> str:
    """Re-enable a disabled account (the caller audits it); the reason, checked."""
    reason = _reason(reason)
    if not target.disabled:
        raise PortalError(f"{target.who} is not disabled")
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == target.org_code,
                                                    portal_practitioners.c.user_id == target.user_id)
                 .values(disabled_at=None, disabled_reason=None, updated_at=now))
    return reason


def enable(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, user_id: str, reason: str,
           now: dt.datetime | None = None) -> Practitioner:
    target = _actionable(conn, admin, user_id, "enabled")
    reason = enable_account(conn, target, reason, now or _now())
    _audit(conn, trail, "portal.practitioner.enable", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"enabled {target.who}: {reason}")
    return get(conn, target.org_code, target.user_id)


def reinvite(conn: Connection, trail: audit.AuditTrail, admin: Practitioner, user_id: str,
             now: dt.datetime | None = None) -> str:
    """A reset: a new invitation code and TOTP secret, no password, sessions and this account's
    sign-in failures gone; the practitioner enrols again. A disabled account stays disabled."""
    now = now or _now()
    target = _actionable(conn, admin, user_id, "reset")
    code = reset_account(conn, target, now)
    _audit(conn, trail, "portal.practitioner.reset", admin.org_code, admin.user_id, ADMIN_ROLE,
           f"reset {target.who}: new invitation and authenticator secret, password and security keys cleared")
    return code


def reset_account(conn: Connection, target: Practitioner, now: dt.datetime) -> str:
    """Reset ``target`` (the caller audits it); the new invitation code."""
    code, invitation = _new_invitation(target.org_code, target.user_id, now)
    secret = officers.new_totp_secret()
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == target.org_code,
                                                    portal_practitioners.c.user_id == target.user_id).values(
        password_hash=None, totp_last_step=None, code_failures=0, code_locked_at=None, updated_at=now,
        totp_secret=sealed.vault_of(conn).seal(secret, totp_context(target.org_code, target.user_id)), **invitation))
    _end_sessions(conn, target.org_code, target.user_id)
    conn.execute(delete(portal_signin_failures).where(portal_signin_failures.c.org_code == target.org_code,
                                                      portal_signin_failures.c.user_id == target.user_id))
    from gateway.portal import security_keys

    security_keys.forget_keys(conn, target.org_code, target.user_id)  # and every security key
    return code


# ---- enrolment ----------------------------------------------------------------------------------

_REFUSED_ENROLMENT = "not accepted: check the organisation, user id and invitation code (an invitation is good once)"


def _invited_row(conn: Connection, org_code: str, user_id: str, invitation: str, now: dt.datetime,
                 orgs_in_force=None):
    try:
        user_id = canonical_user(user_id)
    except PortalError:
        return None
    row = conn.execute(select(portal_practitioners).where(
        portal_practitioners.c.org_code == (org_code or "").strip().upper(),
        portal_practitioners.c.user_id == user_id)).first()
    if row is None or row.invitation_hash is None or row.disabled_at is not None:
        return None
    if _aware(row.invitation_expires) < now:
        return None
    if not hmac.compare_digest(row.invitation_hash, _invitation_hash(row.org_code, row.user_id, (invitation or "").strip())):
        return None
    if orgs_in_force is not None and orgs_in_force(conn, row.org_code) is not None:
        return None  # an organisation not accredited now enrols nobody
    return row


def enrolment_secret(conn: Connection, org_code: str, user_id: str, invitation: str,
                     now: dt.datetime | None = None, orgs_in_force=None) -> tuple[Practitioner, str]:
    """The account and its TOTP secret, for the one who holds its invitation code."""
    row = _invited_row(conn, org_code, user_id, invitation, now or _now(), orgs_in_force)
    if row is None:
        raise PortalError(_REFUSED_ENROLMENT)
    return _from_row(row), sealed.vault_of(conn).open(row.totp_secret, totp_context(row.org_code, row.user_id))


def enrol(engine: Engine, trail: audit.AuditTrail, org_code: str, user_id: str, invitation: str, password: str,
          code: str, *, now: dt.datetime | None = None, orgs_in_force=None) -> Practitioner:
    """Set the password and confirm the authenticator; the invitation is spent. Audited either way."""
    now = now or _now()
    try:
        officers.check_password(password)
    except officers.OfficerError as exc:
        raise PortalError(str(exc)) from None
    encoded = officers._HASHER.hash(password)  # outside the transaction: ~0.1-0.5 s
    with engine.begin() as conn:
        row = _invited_row(conn, org_code, user_id, invitation, now, orgs_in_force)
        step = None
        from gateway.portal import security_keys

        codes_off = row is not None and not security_keys.code_policy(conn, row.org_code).totp_allowed
        if row is not None and not codes_off:
            secret = sealed.vault_of(conn).open(row.totp_secret, totp_context(row.org_code, row.user_id))
            step = officers._matching_step(secret, code, now)
        if row is None or step is None:
            failure = (_REFUSED_ENROLMENT if row is None else
                       "not accepted: your organisation accepts security keys only: enrol with a security key"
                       if codes_off else "not accepted: the code does not match the secret shown")
            refused = (row.org_code, row.user_id) if row is not None else (
                (org_code or "").strip().upper()[:32] or None, (user_id or "").strip().lower()[:64] or None)
    if row is None or step is None:
        with engine.begin() as conn:
            _audit(conn, trail, "portal.enrol", refused[0], refused[1], None,
                   "enrolment refused: " + ("invitation not accepted" if row is None else
                                            "with an authenticator app, where the organisation accepts security "
                                            "keys only" if codes_off else "wrong code"), "refused")
        raise PortalError(failure)
    with engine.begin() as conn:
        done = conn.execute(update(portal_practitioners).where(
            portal_practitioners.c.org_code == row.org_code, portal_practitioners.c.user_id == row.user_id,
            portal_practitioners.c.invitation_hash == row.invitation_hash).values(
            password_hash=encoded, totp_last_step=step, invitation_hash=None, invitation_expires=None,
            updated_at=now))
        if done.rowcount != 1:
            raise PortalError(_REFUSED_ENROLMENT)
        _audit(conn, trail, "portal.enrol", row.org_code, row.user_id, row.role, "enrolled: password and authenticator set")
        return get(conn, row.org_code, row.user_id)


# ---- signing in ---------------------------------------------------------------------------------

REFUSED = "Sign-in refused: check the organisation, user id, password and code."


@dataclass(frozen=True)
class SignIn:
    practitioner: Practitioner | None
    said: str | None = None  # what the person is told when refused
    token: str | None = None
    # The password was right and a security key comes next: "key" (sign in with one of the
    # account's keys) or "register" (codes are off for the organisation and this account has no key:
    # it registers one before its session starts). (org code, user id) in ``account``.
    next_step: str | None = None
    account: tuple[str, str] | None = None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(engine: Engine, trail: audit.AuditTrail, org_code: str, user_id: str, password: str, code: str, *,
            settings, source: str | None, orgs_in_force, now: dt.datetime | None = None,
            known_browser: bool = False) -> SignIn:
    """Check both factors (one argon2id verification whatever the outcome, outside any transaction),
    then decide and audit in one short transaction. ``orgs_in_force(conn, org_code) -> str | None``:
    why the organisation's accreditation does not let its people in, or None."""
    now = now or _now()
    org_code = (org_code or "").strip().upper()[:32]
    try:
        wanted = canonical_user(user_id)
    except PortalError:
        wanted = None
    with reader(engine).connect() as conn:
        seen = None if wanted is None or not org_code else conn.execute(
            select(portal_practitioners.c.password_hash, portal_practitioners.c.totp_secret).where(
                portal_practitioners.c.org_code == org_code, portal_practitioners.c.user_id == wanted)).first()
        secret = None if seen is None else sealed.vault_of(conn).open(seen.totp_secret, totp_context(org_code, wanted))
    enrolled = seen is not None and seen.password_hash is not None
    password_ok = officers._password_matches(seen.password_hash if enrolled else officers._dummy_hash(), password)
    step = officers._matching_step(secret, code, now) if secret is not None else None
    where = officers.source_key(source)
    with engine.begin() as conn:
        def refuse(why: str, said: str = REFUSED) -> SignIn:
            _audit(conn, trail, "portal.login", org_code or None, wanted or "(invalid id)", None,
                   f"sign-in refused: {why}", "refused")
            return SignIn(None, said)

        row = None if seen is None else conn.execute(select(portal_practitioners).where(
            portal_practitioners.c.org_code == org_code, portal_practitioners.c.user_id == wanted)
            .with_for_update()).first()
        if row is None:
            return refuse("no such account")
        if row.password_hash is None:
            return refuse("not enrolled yet")
        if row.password_hash != seen.password_hash:
            return refuse("the account changed during the sign-in (not counted)")
        pair = conn.execute(select(portal_signin_failures).where(
            portal_signin_failures.c.org_code == org_code, portal_signin_failures.c.user_id == wanted,
            portal_signin_failures.c.source == where)).first()
        locked = _aware(pair.locked_until) if pair is not None else None
        # A browser this account signed in from before (the portal's known-browser cookie) is not
        # held by its address's lock: a colleague behind the same NAT address cannot lock them out.
        if locked is not None and locked > now and not known_browser:
            return refuse(f"locked out from {where} until {locked:%Y-%m-%d %H:%M:%S}Z (not counted)")
        if password_ok and row.code_locked_at is not None:
            return refuse(f"code step locked after {CODE_FAILURES} wrong codes with the right password "
                          f"(until the user administrator resets the account; not counted)")
        from gateway.portal import security_keys

        keys = security_keys.count_keys(conn, org_code, wanted)
        if not code:  # the password first; the security key next (security_keys), if it has one
            if password_ok and keys:
                return SignIn(None, next_step="key", account=(org_code, wanted))
            if password_ok:  # said as any refusal: the portal then shows a key step as if it had a key
                return refuse("no code and no security key registered (not counted)")
        code_ok = step is not None and (row.totp_last_step is None or step > row.totp_last_step)
        if not (password_ok and code_ok):
            why = "wrong password" if not password_ok else "code already used" if step is not None else "wrong code"
            note = _count_failure(conn, org_code, wanted, where, pair, settings, now)
            if password_ok:  # counted across the whole account, whatever the address
                failures = (row.code_failures or 0) + 1
                values = {"code_failures": failures}
                if failures >= CODE_FAILURES:
                    values["code_locked_at"] = now
                    note += (f"; code step locked after {failures} wrong codes with the right password from any "
                             f"address: the user administrator resets the account")
                conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == org_code,
                                                                portal_practitioners.c.user_id == wanted)
                             .values(**values))
            return refuse(why + note)
        conn.execute(delete(portal_signin_failures).where(
            portal_signin_failures.c.org_code == org_code, portal_signin_failures.c.user_id == wanted,
            portal_signin_failures.c.source == where))
        conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == org_code,
                                                        portal_practitioners.c.user_id == wanted)
                     .values(totp_last_step=step, code_failures=0))
        practitioner = _from_row(row)
        # Both factors are right: from here the person is told why they are refused.
        why = practitioner.lapsed(settings, now.date()) or orgs_in_force(conn, org_code)
        if why is not None:
            return refuse(why, f"Sign-in refused: {why}.")
        if not security_keys.code_policy(conn, org_code).totp_allowed:
            if keys:
                return refuse("an authenticator-app code, which the organisation no longer accepts (it has a key)",
                              "Sign-in refused: your organisation no longer accepts codes from an authenticator "
                              "app: sign in with your password and your security key (leave the code empty).")
            _audit(conn, trail, "portal.login", org_code, wanted, practitioner.role or ADMIN_ROLE,
                   "password and code right; the organisation no longer accepts codes: a security key must be "
                   "registered before the session starts", "pending")
            return SignIn(None, next_step="register", account=(org_code, wanted))
        return open_session(conn, trail, practitioner, settings, now, "signed in")


def open_session(conn: Connection, trail: audit.AuditTrail, practitioner: Practitioner, settings,
                 now: dt.datetime, said: str) -> SignIn:
    """Both factors are right and the account usable: a new session (audited ``said``)."""
    org_code, wanted = practitioner.org_code, practitioner.user_id
    _forget_stale_sessions(conn, org_code, wanted, settings, now)
    sweep(conn, settings, now)
    token = secrets.token_urlsafe(32)
    conn.execute(portal_sessions.insert().values(
        token_hash=_token_hash(token), org_code=org_code, user_id=wanted, created_at=now, last_seen=now,
        expires_at=now + dt.timedelta(hours=settings.session_max_hours)))
    _audit(conn, trail, "portal.login", org_code, wanted, practitioner.role or ADMIN_ROLE, said)
    return SignIn(practitioner, None, token)


def count_code_failure(conn: Connection, org_code: str, user_id: str, now: dt.datetime) -> str:
    """A wrong second factor after the right password (a code, or a security key's answer): counted
    across the whole account; at CODE_FAILURES the second step locks until a reset. The audit's note."""
    row = conn.execute(select(portal_practitioners.c.code_failures).where(
        portal_practitioners.c.org_code == org_code, portal_practitioners.c.user_id == user_id)).first()
    failures = ((row.code_failures if row else 0) or 0) + 1
    values = {"code_failures": failures}
    note = ""
    if failures >= CODE_FAILURES:
        values["code_locked_at"] = now
        note = (f"; second step locked after {failures} failures with the right password: the user "
                f"administrator resets the account")
    conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == org_code,
                                                    portal_practitioners.c.user_id == user_id).values(**values))
    return note


def _forget_stale_sessions(conn: Connection, org_code: str, user_id: str, settings, now: dt.datetime) -> None:
    """The account's sessions that have ended unseen (idle or too old), and their handles."""
    idle = now - dt.timedelta(minutes=settings.session_idle_minutes)
    stale = [r.token_hash for r in conn.execute(select(portal_sessions.c.token_hash).where(
        portal_sessions.c.org_code == org_code, portal_sessions.c.user_id == user_id,
        (portal_sessions.c.expires_at <= now) | (portal_sessions.c.last_seen <= idle)))]
    if stale:
        conn.execute(delete(portal_handles).where(portal_handles.c.session_hash.in_(stale)))
        conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash.in_(stale)))


def sweep(conn: Connection, settings, now: dt.datetime) -> None:
    """Anyone's sign-in clears what no session can use any more: sessions past their end, and
    handles older than the longest session (each by an index: cheap)."""
    oldest = now - dt.timedelta(hours=settings.session_max_hours)
    conn.execute(delete(portal_handles).where(portal_handles.c.created_at < oldest))
    ended = [r.token_hash for r in conn.execute(select(portal_sessions.c.token_hash).where(
        portal_sessions.c.expires_at <= now))]
    if ended:
        conn.execute(delete(portal_handles).where(portal_handles.c.session_hash.in_(ended)))
        conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash.in_(ended)))


def _count_failure(conn: Connection, org_code: str, user_id: str, where: str, pair, settings,
                   now: dt.datetime) -> str:
    window = dt.timedelta(minutes=settings.lockout_minutes)
    recent = pair is not None and now - _aware(pair.updated_at) < window
    failures = (pair.failures if recent else 0) + 1
    values = {"failures": failures, "locked_until": None, "updated_at": now}
    note = ""
    if failures >= settings.lockout_failures:
        values.update(failures=0, locked_until=now + window)
        note = f"; {where} locked out of this account for {settings.lockout_minutes} minutes after {failures} failures"
    if pair is None:
        conn.execute(portal_signin_failures.insert().values(org_code=org_code, user_id=user_id, source=where, **values))
    else:
        conn.execute(update(portal_signin_failures).where(
            portal_signin_failures.c.org_code == org_code, portal_signin_failures.c.user_id == user_id,
            portal_signin_failures.c.source == where).values(**values))
    return note


def refuse_unchecked(engine: Engine, trail: audit.AuditTrail, org_code: str, user_id: str, why: str) -> None:
    with engine.begin() as conn:
        _audit(conn, trail, "portal.login", (org_code or "").strip().upper()[:32] or None,
               (user_id or "").strip().lower()[:64] or "(invalid id)", None, f"sign-in refused unchecked: {why}",
               "refused")


def resume(conn: Connection, token: str, *, settings, now: dt.datetime | None = None,
           orgs_in_force=None) -> tuple[Practitioner, str]:
    """The practitioner whose session ``token`` is (and the session's hash), if it is still good, the
    account still usable and (``orgs_in_force(conn, org_code)``: why not, or None) its organisation
    still accredited; the idle clock restarts."""
    now = now or _now()
    token_hash = _token_hash(token)
    row = conn.execute(select(portal_sessions).where(portal_sessions.c.token_hash == token_hash)).first()
    if row is None:
        raise NotSignedIn("you are not signed in")

    def end(why: str):
        drop_session(conn, token_hash)
        raise NotSignedIn(why)

    if now >= _aware(row.expires_at):
        end(f"your session ended after {settings.session_max_hours} hours")
    if now >= _aware(row.last_seen) + dt.timedelta(minutes=settings.session_idle_minutes):
        end(f"your session ended after {settings.session_idle_minutes} minutes without use")
    practitioner = get(conn, row.org_code, row.user_id)
    through_provider, provider_refusal = federated_sessions.session_refusal(conn, token_hash)
    why = ("your account is gone" if practitioner is None else
           "your account was reset: enrol again" if not (practitioner.enrolled or through_provider) else
           provider_refusal or practitioner.lapsed(settings, now.date()))
    if why is None and orgs_in_force is not None:
        why = orgs_in_force(conn, practitioner.org_code)
    if why is not None:
        end(why)
    conn.execute(update(portal_sessions).where(portal_sessions.c.token_hash == token_hash).values(last_seen=now))
    return practitioner, token_hash


def end_session(conn: Connection, trail: audit.AuditTrail, token: str) -> None:
    token_hash = _token_hash(token)
    row = conn.execute(select(portal_sessions).where(portal_sessions.c.token_hash == token_hash)).first()
    if row is None:
        return
    drop_session(conn, token_hash)
    _audit(conn, trail, "portal.logout", row.org_code, row.user_id, None, "signed out")


def drop_session(conn: Connection, token_hash: str) -> None:
    """A session, its handles and (signed in through a provider) what the provider said of it."""
    conn.execute(delete(portal_handles).where(portal_handles.c.session_hash == token_hash))
    federated_sessions.forget(conn, token_hash)
    conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash == token_hash))
