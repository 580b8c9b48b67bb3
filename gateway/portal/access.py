"""A practitioner's search and view of a child: FindChild's and GetContacts' own code
(gateway.index, gateway.pipeline.dispatch's criteria, policy and disclosure), each audited as a SOAP
read is, in the read's own transaction: operation ``FindChild`` / ``GetContacts``, the organisation
and user (``ORG:user``), the practitioner's role, the reason, the children named, and a detail that
starts ``channel=web`` and says what was disclosed (``fields=...``, a shielded child's mark). So
`audit report --user` and `--child` (subject access), and every `audit review` rule, see portal
reads as they see SOAP ones. The entry has no certificate fingerprint; its source is the browser's
address.

A child is never named in a URL: each candidate a search shows is an opaque handle (random, its
SHA-256 kept in ``portal_handles`` with the child and the session), sent back in a POST body, good
only in the session that was shown it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from contactgate_wire.faults import NotFound, RateLimited, ReasonRequired, SchemaInvalid
from gateway import audit
from gateway.db import portal_handles
from gateway.index import store as index
from gateway.index.model import Candidate, ChildView, FindQuery
from gateway.pipeline.authorisation import RATE_WINDOW_S
from gateway.pipeline.dispatch import disclosed, has_minimum_criteria, link_policy_of
from gateway.portal.accounts import Practitioner, PortalError

CHANNEL = "channel=web"
# What a practitioner may give as the reason for a read (the code; the text says more).
REASON_CODES = {
    "safeguarding": "Safeguarding: concern for the child's welfare",
    "service": "Providing a service to the child",
    "assessment": "An assessment or referral",
    "coordination": "Co-ordinating with the other services involved",
    "other": "Other (say what in the text)",
}
MINIMUM = "Give the family name and date of birth, or an NHS number or a pupil number."


class ReadRefused(PortalError):
    """A search or view refused, as FindChild or GetContacts would refuse it: ``fault_code`` is the
    SOAP fault's code; the refusal is an audit entry (`audit_refusal`) and changes nothing else."""

    def __init__(self, message: str, fault_code: str):
        super().__init__(message)
        self.fault_code = fault_code


@dataclass(frozen=True)
class Reason:
    code: str
    text: str

    @classmethod
    def checked(cls, code: str | None, text: str | None) -> "Reason":
        code, text = (code or "").strip(), (text or "").strip()
        if code not in REASON_CODES:
            raise ReadRefused("choose the reason for this access", ReasonRequired.code)
        if not text:
            raise ReadRefused("say in a few words why you need this record", ReasonRequired.code)
        if len(text) > 500:
            raise ReadRefused("the reason's text has at most 500 characters", ReasonRequired.code)
        return cls(code, text)


@dataclass(frozen=True)
class Found:
    handle: str
    candidate: Candidate


def _handle_hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def _entry(practitioner: Practitioner, operation: str, reason: Reason, child_ids: list[str], detail: str,
           source: str | None, request_id: str | None, outcome: str = "accepted",
           fault_code: str | None = None, on_behalf=None) -> audit.Entry:
    """``on_behalf``: a mediator's read for a requester (gateway.mediation.OnBehalfOf): named too."""
    return audit.Entry(operation=operation, outcome=outcome, org_code=practitioner.org_code,
                       user_id=practitioner.user_id, role=practitioner.role, reason_code=reason.code,
                       reason_text=reason.text, child_ids=child_ids, fault_code=fault_code,
                       detail=f"{CHANNEL} {detail}", source_address=(source or None) and source[:64],
                       request_id=request_id, on_behalf_of=on_behalf.as_json() if on_behalf else None,
                       behalf_key=on_behalf.key if on_behalf else None)


def _counted(conn, store, settings, practitioner: Practitioner) -> None:
    """Count a read against the SOAP pipeline's keys (``org:ORG`` and ``user:ORG:user``, the same
    limits: gateway.pipeline.authorisation), in the read's transaction where the store counts there
    (the embedded store on SQLite), else in one round trip of its own; over a limit: RateLimited
    (the read's transaction rolls back, and the refusal is audited on its own)."""
    if store is None:
        return
    keys = [f"org:{practitioner.org_code}", f"user:{practitioner.org_code}:{practitioner.user_id}"]
    counts = store.hit_in(conn, keys, RATE_WINDOW_S) if store.counts_in_transaction else store.hit(keys, RATE_WINDOW_S)
    if counts[0] > settings.rate_limit_per_org:
        raise ReadRefused(f"your organisation is over {settings.rate_limit_per_org} searches and views a minute: "
                          f"wait a minute and try again", RateLimited.code)
    if counts[1] > settings.rate_limit_per_user:
        raise ReadRefused(f"you are over {settings.rate_limit_per_user} searches and views a minute: wait a "
                          f"minute and try again", RateLimited.code)


def search(engine: Engine, trail: audit.AuditTrail, settings, practitioner: Practitioner, query: FindQuery,
           reason: Reason, *, session_hash: str, source: str | None, request_id: str | None,
           now: dt.datetime, store=None, on_behalf=None) -> list[Found]:
    """FindChild for a practitioner (``on_behalf``: a mediator's, for that requester): the
    candidates, each with a handle for this session."""
    if not has_minimum_criteria(query):
        raise ReadRefused(MINIMUM, SchemaInvalid.code)
    with engine.begin() as conn:
        _counted(conn, store, settings, practitioner)
        candidates = index.find_children(conn, query, link_policy_of(settings), now.date())
        found = []
        for candidate in candidates:
            handle = secrets.token_urlsafe(24)
            conn.execute(portal_handles.insert().values(handle_hash=_handle_hash(handle), session_hash=session_hash,
                                                        child_id=candidate.child_id, created_at=now))
            found.append(Found(handle, candidate))
        shielded = sum(c.shielded for c in candidates)
        trail.append(conn, _entry(practitioner, "FindChild", reason, [c.child_id for c in candidates],
                                  f"candidates={len(candidates)}"
                                  + (f" shielded={shielded} location=withheld" if shielded else ""),
                                  source, request_id, on_behalf=on_behalf))
    return found


def view(engine: Engine, trail: audit.AuditTrail, settings, roles, practitioner: Practitioner, handle: str,
         reason: Reason, *, session_hash: str, source: str | None, request_id: str | None,
         now: dt.datetime, store=None, on_behalf=None) -> ChildView | None:
    """GetContacts for a practitioner: the child a handle of this session stands for, as their role
    may see it; None for a handle this session was not given or a child no longer returned to anyone
    (each audited as GetContacts' NotFound)."""
    with engine.begin() as conn:
        _counted(conn, store, settings, practitioner)
        child_id = conn.execute(select(portal_handles.c.child_id).where(
            portal_handles.c.handle_hash == _handle_hash(handle or ""),
            portal_handles.c.session_hash == session_hash)).scalar()
        if child_id is None:
            trail.append(conn, _entry(practitioner, "GetContacts", reason, [], "unknown handle (not this session's)",
                                      source, request_id, outcome="refused", fault_code=NotFound.code))
            return None
        child = index.get_child(conn, child_id, now.date())
        if child is None:
            trail.append(conn, _entry(practitioner, "GetContacts", reason, [child_id], "no such child id", source,
                                      request_id, outcome="refused", fault_code=NotFound.code))
            return None
        child, mark = disclosed(child, practitioner.role, settings.shield_roles, roles,
                                on_behalf.role if on_behalf else None)
        trail.append(conn, _entry(practitioner, "GetContacts", reason, [child.child_id],
                                  f"contacts={len(child.contacts)} {mark}", source, request_id, on_behalf=on_behalf))
    return child


def audit_refusal(engine: Engine, trail: audit.AuditTrail, practitioner: Practitioner, operation: str,
                  refused: ReadRefused, reason_code: str | None, reason_text: str | None, *, source: str | None,
                  request_id: str | None) -> None:
    """A refused search or view, audited as FindChild or GetContacts refused with its fault (the
    reason as given, if any); nothing else is written."""
    given = Reason((reason_code or "").strip()[:32] or None, (reason_text or "").strip()[:500] or None)
    with engine.begin() as conn:
        trail.append(conn, _entry(practitioner, operation, given, [],
                                  f"refused: {refused}", source, request_id, outcome="refused",
                                  fault_code=refused.fault_code))
