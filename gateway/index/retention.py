"""Retention: a child is archived on their 18th birthday (or when a death is recorded), kept for
the retention period, then purged (docs/officers.md "Retention").

The life of a record:

- **live**: returned to accredited callers as the contract says.
- **archived** from the 18th birthday (the anniversary of the birth date; 29 February -> 1 March
  in a common year), or from the day a pushed record carries a ``DateOfDeath``: no longer returned
  to anyone. GetContacts answers exactly as for an unknown id, FindChild never lists it, and a
  pushed record never links to it (it is filed under no blocking key). The read paths also check
  the exact date themselves, so a child is withheld from the birthday even before the next
  `retention run`. Data managers can read the archived record with `contactgate retention show`
  for ``retention_view_days`` (default 365: "kept for data managers for one year"); after that it
  is **sealed**: still held, but shown to no one, only its state and dates.
- **purged** ``retention_purge_years`` (default 6, the seeds' figure) after archiving: every row of
  the child is deleted (children, source records, involvements, blocking keys, review entries,
  distinct pairs, merge snapshots, and the rows of ids merged into it) and the deleted content is
  overwritten (SQLite ``secure_delete`` + incremental vacuum + WAL truncation; PostgreSQL delete +
  VACUUM). The audit trail keeps only the child id.

A pushed record whose child is 18 or over is rejected with the neutral ``NOT_HELD`` reason, which
depends only on the record itself, never on what the index holds. A pushed record with a date of
death is matched as usual; the child it joins (or the new child it makes) is archived at once, and
the answer is the same ``rejected``/``NOT_HELD`` whether or not a child was found, so a push cannot
test whether a child is, or was, in the index. A record restating an organisation's own source
record of an archived child is rejected the same way (the organisation learns only that its own
record is no longer held).

``archive_due`` (a clear DATE: the first day of the month of the 18th birthday or of the death) is
what `retention run` selects by, so that no clear birth date is needed in a query; each child
selected is then read and decided on the exact day.

`retention run` is safe to run from cron while the gateway serves: small batches, each in its own
transaction, each child's row locked (FOR UPDATE) and its state checked again before it is changed;
running it twice changes nothing more. Every archive and purge the run makes is one audit entry
naming only the child id; an archive by a recorded death is in the push's own entry (its child ids
and ``archived=N``), so that one exchange stays one entry.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection, Engine

from gateway.audit import chain as audit
from gateway.db import (
    blocking_keys, children, distinct_pairs, involvements, merges, review_queue, source_records, value_conflicts,
)
from gateway.db import portal_handles

ADULT_AGE = 18
BATCH = 200  # children per transaction in `retention run`
ROLE = "retention"  # who the audit names for the scheduled run
DATA_MANAGER_ROLE = "data_manager"  # who reads an archived record with `retention show`

NOT_HELD = "the child is 18 or over, or has died: not held by the index"

# Tables whose rows a purge deletes (vacuumed afterwards on PostgreSQL).
PURGED_TABLES = (blocking_keys, involvements, value_conflicts, portal_handles, source_records, review_queue, distinct_pairs, merges,
                 children)


# ---- dates ------------------------------------------------------------------------------------

def add_years(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` later; 29 February becomes 1 March in a common year."""
    if day.year + years > dt.MAXYEAR:
        return dt.date.max
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return dt.date(day.year + years, 3, 1)


def eighteenth_birthday(date_of_birth: dt.date) -> dt.date:
    return add_years(date_of_birth, ADULT_AGE)


def _identity_dates(identity: dict) -> tuple[dt.date | None, dt.date | None]:
    def parse(value):
        if value is None or isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(value)

    return parse(identity.get("date_of_birth")), parse(identity.get("date_of_death"))


def archive_date(record: dict) -> tuple[dt.date | None, str | None]:
    """(the day the child is archived, why: "age" | "death") from a shown record's identity."""
    born, died = _identity_dates(record.get("identity") or {})
    if died is not None:
        return died, "death"
    if born is None:
        return None, None
    return eighteenth_birthday(born), "age"


def archive_due(record: dict) -> dt.date | None:
    """The clear ``children.archive_due`` for a shown record: the first day of the archive month."""
    day, _ = archive_date(record)
    return day.replace(day=1) if day is not None else None


def is_withheld(record: dict, today: dt.date) -> bool:
    """The record's child is 18 or over, or dead, on ``today``: returned to no one."""
    day, _ = archive_date(record)
    return day is not None and day <= today


def is_adult(date_of_birth: dt.date, today: dt.date) -> bool:
    return eighteenth_birthday(date_of_birth) <= today


# ---- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """How long an archived record can be read by data managers, and when it is destroyed."""

    view_days: int = 365
    purge_years: int = 6

    @classmethod
    def from_settings(cls, settings) -> "Policy":
        return cls(view_days=settings.retention_view_days, purge_years=settings.retention_purge_years)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at  # SQLite hands back naive UTC


def _record_of(conn: Connection, row) -> dict:
    """The shown record of a children row (sealed: gateway.index.sealed), opened with the
    connection's keys (the one place retention decodes it)."""
    from gateway.index import sealed

    return json.loads(sealed.vault_of(conn).open(row.record, sealed.child_context("record", row.child_id)))


# ---- the store's hooks ------------------------------------------------------------------------

def is_archived(conn: Connection, child_id: str) -> bool:
    return conn.execute(select(children.c.archived_at).where(children.c.child_id == child_id)).scalar() is not None


def _archive(conn: Connection, child_id: str, reason: str, now: dt.datetime, purge_years: int) -> None:
    """Archive the (locked) child: returned to no one, filed under no key, purged in due course."""
    conn.execute(update(children).where(children.c.child_id == child_id).values(
        archived_at=now, archive_reason=reason, purge_after=add_years(now.date(), purge_years)))
    conn.execute(delete(blocking_keys).where(blocking_keys.c.child_id == child_id))


def settle_deaths(conn: Connection, updates: list, results: list, now: dt.datetime,
                  purge_years: int = Policy.purge_years) -> list:
    """After a batch is applied (gateway.index.batches.apply_updates): the child each record with a
    date of death joined or made is archived, and the record's answer is the neutral rejection,
    found or not. The archived child's id goes in ``withheld_child_id``: the push's audit entry
    names it (gateway.pipeline.dispatch); it is never answered."""
    from gateway.index.model import ChildUpdate, UpdateResult

    settled = []
    for update_, result in zip(updates, results):
        if (isinstance(update_, ChildUpdate) and update_.identity.date_of_death is not None
                and result.outcome != "rejected"):
            child_id = result.child_id
            if child_id is not None:
                conn.execute(select(children.c.child_id).where(children.c.child_id == child_id)
                             .with_for_update()).first()
                if not is_archived(conn, child_id):
                    _archive(conn, child_id, "death", now, purge_years)
            result = UpdateResult(result.source_record_id, "rejected", detail=NOT_HELD,
                                  withheld_child_id=child_id, identifier_conflict=result.identifier_conflict)
        settled.append(result)
    return settled


# ---- `contactgate retention run` --------------------------------------------------------------

@dataclass
class RunCounts:
    archived: int = 0
    purged: int = 0
    archived_ids: list[str] = field(default_factory=list, repr=False)
    purged_ids: list[str] = field(default_factory=list, repr=False)


def run(engine: Engine, trail: audit.AuditTrail, policy: Policy = Policy(), *,
        clock: Callable[[], dt.datetime] = _utcnow, batch: int = BATCH, compact: bool = False) -> RunCounts:
    """Archive every child due by ``clock()``'s date and purge every archived child past its purge
    day. Idempotent; each batch is one transaction; each child is locked and checked again.
    ``compact`` (PostgreSQL): rewrite the purged tables (VACUUM FULL), see ``reclaim_space``."""
    prepare_secure_deletion(engine)
    counts = RunCounts()
    _archive_due_children(engine, trail, policy, clock, batch, counts)
    _purge_due_children(engine, trail, clock, batch, counts)
    if counts.purged or compact:
        reclaim_space(engine, compact=compact)
    return counts


_DUE = (select(children.c.child_id).where(
    children.c.archive_due <= bindparam("today"), children.c.archived_at.is_(None),
    children.c.merged_into.is_(None), children.c.child_id > bindparam("after"))
    .order_by(children.c.child_id).limit(bindparam("batch")))
_PURGE_DUE = (select(children.c.child_id).where(
    children.c.purge_after <= bindparam("today"), children.c.archived_at.is_not(None),
    children.c.merged_into.is_(None), children.c.child_id > bindparam("after"))
    .order_by(children.c.child_id).limit(bindparam("batch")))
_REASONS = {"age": "18th birthday", "death": "death recorded"}

TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
ATTEMPTS = 3


def _archive_due_children(engine, trail, policy, clock, batch, counts) -> None:
    def archive_batch(conn, now, rows):
        done = []
        for row in rows:
            if row.archived_at is not None or row.merged_into is not None:
                continue  # archived or merged meanwhile
            day, reason = archive_date(_record_of(conn, row))
            if day is None or day > now.date():
                continue  # due later this month
            _archive(conn, row.child_id, reason, now, policy.purge_years)
            done.append((row.child_id, f"archived: {_REASONS[reason]}"))
        return done

    for done in _batches(engine, trail, clock, batch, _DUE, "retention.archive", archive_batch):
        counts.archived += len(done)
        counts.archived_ids.extend(done)


def _purge_due_children(engine, trail, clock, batch, counts) -> None:
    def purge_batch(conn, now, rows):
        done = []
        for row in rows:
            if row.archived_at is None or row.purge_after is None or row.purge_after > now.date():
                continue
            purge_child(conn, row.child_id)
            done.append((row.child_id, f"purged: archived {_aware(row.archived_at).date()}"))
        return done

    for done in _batches(engine, trail, clock, batch, _PURGE_DUE, "retention.purge", purge_batch):
        counts.purged += len(done)
        counts.purged_ids.extend(done)


def _batches(engine, trail, clock, batch, due_query, operation, act):
    """Yield the child ids ``act`` changed, batch by batch (keyset over child ids, so children
    selected but not yet due never stop the walk). Each batch is one transaction: the batch's
    children are locked first, in id order, and checked again; then changed; then audited. The audit
    head is taken last, so a concurrent push (which takes child locks, then the head) never waits
    in a cycle with the run; a deadlock or serialization failure all the same runs the batch again."""
    from sqlalchemy.exc import OperationalError

    after = ""
    while True:
        for attempt in range(1, ATTEMPTS + 1):
            now = clock()
            try:
                with engine.begin() as conn:
                    due = list(conn.execute(due_query, {"today": now.date(), "after": after,
                                                        "batch": batch}).scalars())
                    rows = conn.execute(select(children).where(children.c.child_id.in_(due))
                                        .order_by(children.c.child_id).with_for_update()).all() if due else []
                    done = act(conn, now, rows)
                    for child_id, detail in done:
                        trail.append(conn, audit.Entry(operation=operation, outcome="done", role=ROLE,
                                                       child_ids=[child_id], detail=detail), now=now)
                break
            except OperationalError as exc:
                if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in TRANSIENT_SQLSTATES:
                    raise
        yield [child_id for child_id, _ in done]
        if len(due) < batch:
            return
        after = due[-1]


def purge_child(conn: Connection, child_id: str) -> None:
    """Delete every row of the (locked) child and of the ids merged into it, everywhere."""
    ids = [child_id, *conn.execute(select(children.c.child_id).where(children.c.merged_into == child_id)).scalars()]
    conn.execute(delete(blocking_keys).where(blocking_keys.c.child_id.in_(ids)))
    conn.execute(delete(portal_handles).where(portal_handles.c.child_id.in_(ids)))  # the portal's forms
    conn.execute(delete(involvements).where(involvements.c.child_id.in_(ids)))
    # Value conflicts hold both values: those raised on these ids and those of their source records.
    sources = select(source_records.c.source_record_id).where(source_records.c.child_id.in_(ids))
    conn.execute(delete(value_conflicts).where(or_(value_conflicts.c.child_id.in_(ids),
                                                   value_conflicts.c.source_record_id.in_(sources))))
    conn.execute(delete(source_records).where(source_records.c.child_id.in_(ids)))
    conn.execute(delete(review_queue).where(or_(review_queue.c.child_id.in_(ids),
                                                review_queue.c.candidate_child_id.in_(ids))))
    conn.execute(delete(distinct_pairs).where(or_(distinct_pairs.c.child_a.in_(ids),
                                                  distinct_pairs.c.child_b.in_(ids))))
    # A merge snapshot holds both children's records as they were.
    conn.execute(delete(merges).where(or_(merges.c.survivor.in_(ids), merges.c.merged.in_(ids))))
    conn.execute(update(children).where(children.c.merged_into.in_(ids), children.c.child_id.not_in(ids))
                 .values(merged_into=None))  # not reached: merges keep chains flat
    conn.execute(delete(children).where(children.c.child_id.in_(ids)))


# ---- leaving no trace in the database files ---------------------------------------------------

def prepare_secure_deletion(engine: Engine) -> None:
    """SQLite: a file made before 0006 has auto_vacuum=NONE; convert it once (a VACUUM, which
    rewrites the file and holds the write lock while it runs). Every connection already sets
    secure_delete (gateway.db)."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        sqlite = raw.driver_connection
        if sqlite.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            sqlite.execute("PRAGMA auto_vacuum=INCREMENTAL")
            sqlite.execute("VACUUM")
    finally:
        raw.close()


CHECKPOINT_ATTEMPTS = 20


def reclaim_space(engine: Engine, compact: bool = False) -> None:
    """After a purge. SQLite: the freed pages (already zeroed by secure_delete) are given back to
    the file system, and the WAL, which still holds earlier images of the purged pages, is
    checkpointed and truncated (retried while readers hold it).

    PostgreSQL: VACUUM the tables the purge touched (outside a transaction): the dead row versions
    are removed and no query can reach them, but VACUUM does not overwrite the bytes it frees: they
    stay in the pages' free space until reused (and in WAL segments until recycled). ``compact``
    runs VACUUM FULL instead, which writes each table and its indexes afresh and drops the old
    files; it holds an exclusive lock on each table while it runs (the gateway waits), so it is for
    a maintenance window (docs/officers.md "Retention")."""
    import time

    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            sqlite = raw.driver_connection
            sqlite.execute("PRAGMA incremental_vacuum").fetchall()
            for _ in range(CHECKPOINT_ATTEMPTS):
                busy, _log, _done = sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    break
                time.sleep(0.1)
        finally:
            raw.close()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in PURGED_TABLES:
            conn.exec_driver_sql(f"VACUUM {'FULL ' if compact else ''}{table.name}")


# ---- `contactgate retention show` -------------------------------------------------------------

def show(conn: Connection, trail: audit.AuditTrail, child_id: str, officer: str, policy: Policy = Policy(),
         now: dt.datetime | None = None, *, officer_roles=(), shield_roles=frozenset()) -> dict | None:
    """The child's retention state (live | archived | purged), its dates, and for an archived child
    still in its viewing period, its record and involvements. None: no such child, now or before.
    Reading it is audited (the child id and the officer).

    A shielded child's location is withheld as the review queue withholds it (gateway.index.shielding):
    the record without its address, settings and carers' contact details, each involvement without
    its phone and email, unless one of ``officer_roles`` is in ``shield_roles`` (the setting
    CONTACTGATE_REVIEW_SHIELD_ROLES; none by default). Either way the audit entry is marked as a
    read of a shielded child (``shielded=yes location=...``, what `audit review`'s shielded rule finds)."""
    from gateway.index import ids, shielding

    now = now or _utcnow()
    canonical = ids.normalise(child_id)
    if canonical is None:
        return None
    row = conn.execute(select(children).where(children.c.child_id == canonical)).first()
    shielded = row is not None and bool(row.shielded)
    if row is not None and row.merged_into is not None:
        merged_into = row.merged_into
        row = conn.execute(select(children).where(children.c.child_id == merged_into)).first()
        state = {"child_id": canonical, "merged_into": merged_into}
    else:
        state = {"child_id": canonical}
    shielded = shielded or (row is not None and bool(row.shielded))  # shielding is never lost by merging
    shown_to_role = shielded and bool(set(officer_roles) & set(shield_roles))
    withheld = shielded and not shown_to_role
    if row is not None:
        state.update(shielded=shielded, location_withheld=withheld)
    if row is None:
        purge = _purge_entry(conn, canonical)
        if purge is None:
            return None
        state.update(state="purged", archived_at=purge["detail"].rpartition("archived ")[2] or None,
                     purged_at=purge["at"])
    elif row.archived_at is None:
        state.update(state="live", archive_due=row.archive_due.isoformat() if row.archive_due else None)
    else:
        archived_at = _aware(row.archived_at)
        sealed_from = archived_at.date() + dt.timedelta(days=policy.view_days)
        state.update(state="archived", reason=row.archive_reason, archived_at=archived_at.isoformat(),
                     sealed_from=sealed_from.isoformat(), purge_after=row.purge_after.isoformat())
        if now.date() < sealed_from:
            from gateway.index import sealed

            v = sealed.vault_of(conn)
            state["record"] = _record_of(conn, row)
            state["involvements"] = [
                {"org": i.org_code, "service": i.service, "role": i.role, "start": i.start.isoformat(),
                 "end": i.end.isoformat() if i.end else None,
                 **sealed.open_involvement(v, i.org_code, i.source_record_id, i.sealed)}
                for i in conn.execute(select(involvements).where(involvements.c.child_id == row.child_id)
                                      .order_by(involvements.c.org_code, involvements.c.id))]
            if withheld:
                state["record"] = shielding.record_without_location(state["record"])
                state["involvements"] = [shielding.involvement_without_location(i) for i in state["involvements"]]
        else:
            state["sealed"] = True
    mark = f" {shielding.audit_mark(shown_to_role)}" if shielded else ""
    trail.append(conn, audit.Entry(operation="retention.show", outcome="done", user_id=officer,
                                   role=DATA_MANAGER_ROLE, child_ids=[canonical],
                                   detail=f"state={state['state']}{mark}"), now=now)
    return state


def _purge_entry(conn: Connection, child_id: str) -> dict | None:
    """The audit entry of the child's purge (the trail keeps ids, never identifying values)."""
    return next((e for e in reversed(audit.report_for_child(conn, child_id))
                 if e["operation"] == "retention.purge"), None)


# ---- migration 0006 ---------------------------------------------------------------------------

def backfill_archive_due(conn: Connection, batch: int = 1000) -> None:
    """Every existing child gets its archive_due from its shown record, in batches."""
    after = ""
    while True:
        rows = conn.execute(select(children.c.child_id, children.c.record).where(children.c.child_id > after)
                            .order_by(children.c.child_id).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            due = archive_due(json.loads(row.record))  # migration 0006 runs before 0007 seals records
            if due is not None:
                conn.execute(update(children).where(children.c.child_id == row.child_id).values(archive_due=due))
        after = rows[-1].child_id
