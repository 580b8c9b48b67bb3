"""The ``mediated`` review rule (gateway.audit.review): heavy use of access through another
authorised user (gateway.mediation).

A mediator reads on behalf of people who have no access of their own: a contact team doing that all
day is its job, and a requester calling now and then is the service working. What deserves a second
pair of eyes is a lot of it in the period reviewed:

- per mediator (``ORG:user``): at least ``mediated_per_mediator`` (default 100) mediated reads
  (searches and views answered on behalf of someone) - a mediator reading for many "callers" may be
  reading for themselves;
- per requester (their ``organisation:name``, as recorded): at least ``mediated_per_requester``
  (default 20) mediated reads, through any mediator - someone using the route as their everyday
  access should be given access of their own (or asked why they keep calling).

Counted by the database (GROUP BY over the period, by ``ix_audit_at``); the evidence is the reads.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import func, select

from gateway.db import audit_log

MEDIATED_READS = ("FindChild", "GetContacts")


def findings(rule, period, _seqs, _whole) -> Iterable:
    """The rule's findings (``rule``: the review's _Rule instance: conn, since, until, thresholds;
    ``period``, ``_seqs``, ``_whole``: the review's own helpers, passed in: this module imports
    nothing of gateway.audit.review)."""
    conn, t = rule.conn, rule.t
    where = (audit_log.c.on_behalf_of.is_not(None), audit_log.c.operation.in_(MEDIATED_READS),
             audit_log.c.outcome == "accepted", *period(rule.since, rule.until))
    count = func.count()
    for org, user, n in conn.execute(
            select(audit_log.c.org_code, audit_log.c.user_id, count).where(*where)
            .group_by(audit_log.c.org_code, audit_log.c.user_id).having(count >= t.mediated_per_mediator)
            .order_by(audit_log.c.org_code, audit_log.c.user_id)):
        requesters = conn.execute(select(func.count(func.distinct(audit_log.c.behalf_key))).where(
            *where, audit_log.c.org_code == org, audit_log.c.user_id == user)).scalar_one()
        yield _whole("mediated", f"{org}:{user}",
                     f"{n} reads on behalf of others ({requesters} different requesters) by one mediator",
                     _seqs(conn, *where, audit_log.c.org_code == org, audit_log.c.user_id == user))
    for key, n in conn.execute(
            select(audit_log.c.behalf_key, count).where(*where).group_by(audit_log.c.behalf_key)
            .having(count >= t.mediated_per_requester).order_by(audit_log.c.behalf_key)):
        mediators = conn.execute(select(func.count(func.distinct(audit_log.c.org_code + ":" + audit_log.c.user_id)))
                                 .where(*where, audit_log.c.behalf_key == key)).scalar_one()
        yield _whole("mediated", f"requester {key}",
                     f"{n} reads made for one requester through {mediators} mediator(s): give them access of "
                     f"their own, or ask why",
                     _seqs(conn, *where, audit_log.c.behalf_key == key))
