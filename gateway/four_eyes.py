"""Four-eyes proposals kept in a table of their own: an organisation's identity provider
(gateway.trust.identity_providers) and a portal user administrator's appointment or account action
(gateway.portal.appointments). One officer proposes, a different officer approves or declines (with
a reason); each step, and each refusal, is an audit entry ``<prefix>.propose``, ``.approve``,
``.decline`` naming the organisation and the officer.

The organisations' own proposals (accreditation, certificates, the trust list, proxies, the linkage
model) are rows of the one ``proposals`` table and are decided by gateway.trust.registry's steps,
which word their refusals and audit their refusals differently (``officer.refused``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Table, update
from sqlalchemy.engine import Connection, Engine

from gateway import audit
from gateway.officers import Officer


@dataclass(frozen=True)
class FourEyes:
    """How one kind of proposal is proposed and decided. ``read(conn, id, lock=False)`` gives a
    proposal (with ``id``, ``org_code``, ``status``, ``proposed_by`` and ``summary()``) or None."""

    table: Table  # with id, status, proposed_by, proposed_at, decided_by, decided_at, reason
    error: type[Exception]  # what a refusal raises
    prefix: str  # of the audited operations: "idp" gives idp.propose, idp.approve, idp.decline
    roles: tuple[str, ...]  # who may propose and decide
    needs: str  # what the refusal of another role says is refused: "registering an identity provider"
    noun: str  # what a refusal calls a proposal that is not there: "identity provider proposal"
    read: Callable
    summarised: bool = False  # refusals and the decline's entry say the proposal's summary too
    reason_limit: int | None = None  # a decline's reason is stored up to this many characters

    def entry(self, operation: str, actor: Officer, org_code: str | None, detail: str,
              outcome: str = "done") -> audit.Entry:
        return audit.Entry(operation=operation, outcome=outcome, org_code=org_code, user_id=actor.officer_id,
                           role=actor.role_text, detail=detail)

    def require(self, actor: Officer) -> None:
        if not actor.holds(*self.roles):
            raise self.error(f"{self.needs} needs the role {' or '.join(self.roles)}")

    def _named(self, proposal) -> str:
        return f"proposal {proposal.id}" + (f" ({proposal.summary()})" if self.summarised else "")

    def proposed(self, conn: Connection, trail: audit.AuditTrail, actor: Officer, now: dt.datetime, **values):
        """A new pending proposal of ``values`` by ``actor``, audited."""
        proposal_id = conn.execute(self.table.insert().values(
            **values, status="pending", proposed_by=actor.officer_id, proposed_at=now)).inserted_primary_key[0]
        proposal = self.read(conn, proposal_id)
        trail.append(conn, self.entry(f"{self.prefix}.propose", actor, proposal.org_code,
                                      f"proposal {proposal.id}: {proposal.summary()}"))
        return proposal

    def pending(self, conn: Connection, actor: Officer, proposal_id: int):
        """The proposal (locked) awaiting a decision that ``actor``, a second officer, may make."""
        self.require(actor)
        proposal = self.read(conn, proposal_id, lock=True)
        if proposal is None:
            raise self.error(f"no {self.noun} {proposal_id}")
        if proposal.status != "pending":
            raise self.error(f"{self._named(proposal)} is {proposal.status} already")
        if proposal.proposed_by == actor.officer_id:
            raise self.error(f"{self._named(proposal)} was made by {actor.officer_id}: a second officer decides it")
        return proposal

    def _decide(self, conn: Connection, proposal, actor: Officer, status: str, now: dt.datetime, **values) -> None:
        conn.execute(update(self.table).where(self.table.c.id == proposal.id).values(
            status=status, decided_by=actor.officer_id, decided_at=now, **values))

    def approved(self, conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal, now: dt.datetime,
                 done: str = ""):
        """Marks the pending ``proposal`` approved by ``actor`` and audits it (``done``: what the
        approval did, after its summary); the proposal as it is now."""
        self._decide(conn, proposal, actor, "approved", now)
        trail.append(conn, self.entry(f"{self.prefix}.approve", actor, proposal.org_code,
                                      f"approved proposal {proposal.id} by {proposal.proposed_by}: "
                                      f"{proposal.summary()}{done}"))
        return self.read(conn, proposal.id)

    def decline(self, conn: Connection, trail: audit.AuditTrail, actor: Officer, proposal_id: int, reason: str,
                now: dt.datetime):
        """A second officer declines the proposal, with a reason; the proposal as it is now."""
        reason = (reason or "").strip()
        if not reason:
            raise self.error("a reason is required")
        proposal = self.pending(conn, actor, proposal_id)
        self._decide(conn, proposal, actor, "declined", now, reason=reason[:self.reason_limit])
        said = f"{proposal.summary()}: {reason}" if self.summarised else reason
        trail.append(conn, self.entry(f"{self.prefix}.decline", actor, proposal.org_code,
                                      f"declined proposal {proposal.id} by {proposal.proposed_by}: {said}"))
        return self.read(conn, proposal.id)

    def run(self, engine: Engine, trail: audit.AuditTrail, operation: str, actor: Officer, fn, *args,
            org_code=None, **kwargs):
        """``fn(conn, trail, actor, *args)`` in one transaction; a refusal changes nothing and is audited
        (``operation``, outcome refused) in a transaction of its own, then raised."""
        try:
            with engine.begin() as conn:
                return fn(conn, trail, actor, *args, **kwargs)
        except self.error as exc:
            with engine.begin() as conn:
                trail.append(conn, self.entry(operation, actor, org_code, f"refused: {exc}", "refused"))
            raise
