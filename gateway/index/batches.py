"""SubmitUpdates (a connector's push): a batch of records applied inside the exchange's
transaction, one answer per record in order. Each record is decided by gateway.index.deciding and
its rows written as gateway.index.writing writes them; the batch reads what the index holds under
its keys once, and writes new records' rows together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import replace

from sqlalchemy import bindparam, cast, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from gateway.db import blocking_keys, children, involvements, organisations, source_records
from gateway.index import bulk as bulk_mod
from gateway.index import ids, linkage, retention, sealed
from gateway.index.deciding import (
    COMPARED_PER_RECORD, DEFAULT_POLICY, LinkPolicy, _compare_with, _decide, _Hits, _key_hits, _model_due,
    _queue_for_review, _recent_people, _reconcile_split, _rejection, scoring_model,
)
from gateway.index.model import ChildUpdate, UnreadableUpdate, UpdateResult
from gateway.index.precedence import Source, derive
from gateway.index.writing import (
    _DELETE_SOURCE_INVOLVEMENTS, _DELETE_UNASSIGNED_INVOLVEMENTS, _blinded_keys, _create_child, _file_under,
    _involvement_rows, _Keys, _lock_live_child, _record_text, _refresh_child, _shown_values, _sources_of,
    _store_source, linkage_plain_type,
)


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :bucket)")


# ---- SubmitUpdates ---------------------------------------------------------------------------------

def apply_updates(conn: Connection, org_code: str, updates: list[ChildUpdate | UnreadableUpdate],
                  now: dt.datetime, policy: LinkPolicy = DEFAULT_POLICY,
                  purge_years: int = retention.Policy.purge_years, *, bulk: bool = False) -> list[UpdateResult]:
    """Apply a batch inside the caller's transaction, one result per update in order. Each update
    is as if it ran in its own savepoint, so one record the database will not take is rejected
    alone instead of failing the batch; so is one the connector could not read (an
    UnreadableUpdate).

    The batch is matched as one (``_Batch``): what the index holds under the batch's keys and
    source records is read once, after the batch's locks, and kept in step in memory as each
    record lands, so that every record meets exactly the index it would have met had the records
    before it been stored one at a time; new records' rows are written together, and a group the
    database refuses is rolled back and applied again one record at a time (the first way, which
    the in-memory view follows).

    ``bulk`` (`contactgate load`, gateway.bulk_load): the same decisions and rows, with the reads
    and writes made per child done once for the batch (gateway.index.bulk)."""
    readable = [u for u in updates if isinstance(u, ChildUpdate)]
    v = sealed.vault_of(conn)
    people = {id(u): linkage.person_from_update(u) for u in readable}
    keys = {id(u): _blinded_keys(v, linkage.blocking_keys(people[id(u)])) for u in readable}
    _lock_identities(conn, org_code, readable, keys)
    batch = _Batch(conn, org_code, v, now, policy, len(updates), readable, people, keys)
    if bulk:
        bulk_mod.prefetch_sources(batch, readable)
    for index, update_ in enumerate(updates):
        if isinstance(update_, UnreadableUpdate):
            batch.results[index] = UpdateResult(update_.source_record_id, "rejected", detail=update_.reason)
            continue
        batch.apply(index, update_)
    batch.flush()
    arrived = frozenset((org_code, stored_id) for stored_id in batch.stored.values())
    if bulk:
        questioned = bulk_mod.refresh_children(conn, sorted(batch.changed), now, arrived=arrived)
    else:
        questioned = {child_id for child_id in sorted(batch.changed)  # a lower source's disagreement: a value conflict
                      if _refresh_child(conn, child_id, now, arrived=arrived)}
    results = [replace(r, value_conflict=True) if r is not None and r.child_id in questioned else r
               for r in batch.results]
    return retention.settle_deaths(conn, updates, results, now, purge_years)  # a recorded death archives


LOCK_BUCKETS = 256  # bounds the advisory locks one batch takes, whatever its size
_LOCK_NAMESPACE = 0x4347  # "CG": the first key of pg_advisory_xact_lock(int, int)


def _lock_identities(conn: Connection, org_code: str, updates: list[ChildUpdate],
                     keys: dict[int, set[str]] | None = None) -> None:
    """Serialise concurrent batches that could meet the same child (PostgreSQL; SQLite transactions
    already hold the write lock). Matching is check-then-insert, so two batches carrying the same
    new child must not interleave. Every key a batch could meet a child by (its source records and
    every blocking key, identifiers included: two records that could match share one) is hashed
    into one of LOCK_BUCKETS buckets, and the buckets are locked up front in one order: no deadlock
    among batches, and never more than LOCK_BUCKETS locks however large the batch."""
    if conn.dialect.name != "postgresql":
        return
    if keys is None:
        v = sealed.vault_of(conn)
        keys = {id(u): _blinded_keys(v, linkage.blocking_keys(linkage.person_from_update(u))) for u in updates}
    lock_keys = set()
    for update_ in updates:
        lock_keys.add(("source", org_code, update_.source_record_id))
        lock_keys.update(("key", k) for k in keys[id(update_)])
    buckets = sorted({int.from_bytes(hashlib.sha256(repr(k).encode()).digest()[:4], "big") % LOCK_BUCKETS
                      for k in lock_keys})
    for bucket in buckets:
        conn.execute(_ADVISORY_LOCK, {"namespace": _LOCK_NAMESPACE, "bucket": bucket})


NOT_STORED = "the record could not be stored as sent"
_IN_CHUNK = 500  # values per IN (...) of the batch's reads (SQLite's bound-parameter limit)
_LINKED = (select(source_records.c.source_record_id, source_records.c.child_id)
           .where(source_records.c.org_code == bindparam("org_code"),
                  source_records.c.source_record_id.in_(bindparam("stored_ids", expanding=True))))
_FILED = (select(blocking_keys.c.key, blocking_keys.c.child_id)
          .join(children, children.c.child_id == blocking_keys.c.child_id)  # retention: live children only
          .where(blocking_keys.c.key.in_(bindparam("keys", expanding=True)), children.c.archived_at.is_(None)))
_ORG_KIND = select(organisations.c.kind).where(organisations.c.code == bindparam("org_code"))


class _Replay(Exception):
    """The group staged since the last write cannot go on as staged (a candidate was merged
    meanwhile): it is rolled back and applied again one record at a time."""


def _chunks(values: list, size: int = _IN_CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


class _Batch:
    """One SubmitUpdates, matched as one.

    Read once, after the batch's locks: the children already holding the batch's source records,
    and the live children filed under any key of the batch (``under``); each candidate's source
    records, opened once, when first compared (``sources``). Kept in step with every record that
    lands (its source record, its keys, its source added to its child's), so each record is
    matched against exactly what the database would answer had the records before it been
    written one at a time.

    New records (created, matched, held for review) are staged: their rows are written together,
    in one savepoint per group, when the batch ends or a record needs the database as it stands
    (an organisation restating a record it sent before is applied alone, exactly as it always
    was). If the database refuses a group (IntegrityError, DataError), or a candidate turns out
    to have been merged meanwhile, the group is rolled back and applied again one record at a
    time, each in its own savepoint: the record refused is rejected alone, as before.
    """

    def __init__(self, conn: Connection, org_code: str, v, now: dt.datetime, policy: LinkPolicy, size: int,
                 updates: list[ChildUpdate], people: dict, keys: dict):
        self.conn, self.org_code, self.v, self.now, self.policy = conn, org_code, v, now, policy
        self.people, self.keys = people, keys
        self.plain = isinstance(v, linkage_plain_type())
        self.stored = {id(u): sealed.blind_source_id(v, org_code, u.source_record_id) for u in updates}
        self.batch_keys = sorted(set().union(*keys.values())) if keys else []
        self.kind = conn.execute(_ORG_KIND, {"org_code": org_code}).scalar()
        self.received_at = _as_stored(conn, now)
        self.results: list[UpdateResult | None] = [None] * size
        self.changed: set[str] = set()  # children whose shown record is derived again once, at the end
        self.created: set[str] = set()  # children this batch made (its own rows: no one else can merge them)
        self.model: linkage.Model | None = None
        self._savepoint = None
        self._group: list[tuple[int, ChildUpdate]] = []
        self._reset_group()
        self._read()

    # ---- what the index holds, as the batch sees it ----

    def _read(self) -> None:
        self.linked: dict[str, str] = {}
        stored = sorted(set(self.stored.values()))
        for chunk in _chunks(stored):
            for row in self.conn.execute(_LINKED, {"org_code": self.org_code, "stored_ids": chunk}):
                self.linked[row.source_record_id] = row.child_id
        self.under: dict[str, set[str]] = {}
        for chunk in _chunks(self.batch_keys):
            for row in self.conn.execute(_FILED, {"keys": chunk}):
                self.under.setdefault(row.key, set()).add(row.child_id)
        self.sources: dict[str, list[Source]] = {}  # every child with staged rows is here, complete
        self._recent: dict[str, list[linkage.Person]] = {}  # recent_people, from ``sources``

    def hits(self, keys: _Keys) -> _Hits:
        """``_key_hits``, from what the batch holds."""
        if not keys:
            return _Hits(set(), [])
        shared: dict[str, int] = {}
        by_identifier = set()
        for key in keys:
            held = self.under.get(key)
            if not held:
                continue
            for child in held:
                shared[child] = shared.get(child, 0) + 1
            if key in keys.identifiers:
                by_identifier |= held
        ranked = sorted(shared, key=lambda child: (-shared[child], child))[:COMPARED_PER_RECORD]
        return _Hits(by_identifier, ranked)

    def sources_of(self, child_ids: list[str]) -> dict[str, list[Source]]:
        """``_sources_of``, each child's opened once per batch."""
        missing = [c for c in child_ids if c not in self.sources]
        if missing:
            found = _sources_of(self.conn, missing)
            for child_id in missing:
                self.sources[child_id] = found.get(child_id, [])
        return {c: self.sources[c] for c in child_ids}

    def recent_people(self, child_ids: list[str]) -> dict[str, list[linkage.Person]]:
        """``_recent_people`` of each child, worked out once per batch (again when its sources change)."""
        missing = [c for c in child_ids if c not in self._recent]
        if missing:
            for child_id, sources in self.sources_of(missing).items():
                self._recent[child_id] = _recent_people(sources)
        return {c: self._recent[c] for c in child_ids}

    def _landed(self, stored_id: str, child_id: str, keys: _Keys) -> None:
        """A record written through (alone) landed on ``child_id``: filed under its keys."""
        self.linked[stored_id] = child_id
        for key in keys:
            self.under.setdefault(key, set()).add(child_id)
        self.sources.pop(child_id, None)  # read again from the database when next compared
        self._recent.pop(child_id, None)

    # ---- one record ----

    def apply(self, index: int, update_: ChildUpdate) -> None:
        at = time.monotonic()
        if _model_due(at):
            self.flush()  # the index's size the model is scaled by counts the batch's records so far
        self.model = scoring_model(self.conn, at)
        self._current = (index, update_)
        try:
            result = _apply_update(self, update_, self.people[id(update_)], self.keys[id(update_)])
        except (_Replay, IntegrityError, DataError):
            if self._savepoint is None:
                raise
            self._replay(also=(index, update_))
            return
        self.results[index] = result

    def alone(self, update_: ChildUpdate) -> UpdateResult:
        """The record applied by itself, in its own savepoint, reading the database (the path
        every record took before batches were matched as one)."""
        self.flush()
        stored_id, keys = self.stored[id(update_)], self.keys[id(update_)]
        before = self.linked.get(stored_id)
        try:
            with self.conn.begin_nested():
                result = _apply_update_alone(self.conn, self.org_code, update_, self.people[id(update_)], keys,
                                             self.now, self.policy, self.changed)
        except (IntegrityError, DataError):
            return UpdateResult(update_.source_record_id, "rejected", detail=NOT_STORED)
        if result.outcome != "rejected" and result.child_id is not None:
            if before is not None and before != result.child_id:
                self._read()  # its child was merged meanwhile: read the index again
            self._landed(stored_id, result.child_id, keys)
        return result

    def lock(self, child_id: str) -> None:
        """``_lock_live_child`` for a staged record: a child merged meanwhile replays the group."""
        self._open_group()
        if child_id not in self.created and _lock_live_child(self.conn, child_id) != child_id:
            raise _Replay

    # ---- staging and writing ----

    def _reset_group(self) -> None:
        self._group = []
        self._group_changed: set[str] = set()
        self._group_created: set[str] = set()
        self._rows = {"children": [], "source_records": [], "by_source": [], "unassigned": [],
                      "involvements": [], "blocking_keys": []}

    def _open_group(self) -> None:
        if self._savepoint is None:
            self._savepoint = self.conn.begin_nested()
        if not self._group or self._group[-1] is not self._current:
            self._group.append(self._current)

    def stage_child(self, update_: ChildUpdate, stored_id: str, keys: _Keys, text_: str) -> str:
        """What ``_create_child`` writes, staged."""
        self._open_group()
        child_id = ids.new_child_id()
        record, provenance = derive([Source(self.org_code, stored_id, None, self.now, text_)])
        self._rows["children"].append(dict(
            child_id=child_id, shielded=False, created_at=self.now, updated_at=self.now,
            **_shown_values(self.v, child_id, record, provenance), archive_due=retention.archive_due(record)))
        self.created.add(child_id)
        self._group_created.add(child_id)
        self.sources[child_id] = []
        self.stage_source(update_, stored_id, child_id, keys, text_)
        return child_id

    def stage_source(self, update_: ChildUpdate, stored_id: str, child_id: str, keys: _Keys, text_: str) -> None:
        """What ``_store_source`` (a new source record) and ``_file_under`` (without removing) write, staged."""
        self._open_group()
        org_code, v = self.org_code, self.v
        token = text_ if self.plain else sealed.seal_source(v, org_code, stored_id, update_.source_record_id, text_)
        self._rows["source_records"].append(dict(
            org_code=org_code, source_record_id=stored_id, child_id=child_id, record=token, received_at=self.now))
        self._rows["by_source"].append({"o": org_code, "s": stored_id})
        self._rows["unassigned"].append({"c": child_id, "o": org_code})
        self._rows["involvements"].extend(_involvement_rows(v, child_id, org_code, stored_id, update_.involvements))
        held = self.sources_of([child_id])[child_id]
        self.sources[child_id] = [*held, Source(org_code, stored_id, self.kind, self.received_at, text_,
                                                update_.source_record_id)]
        self._recent.pop(child_id, None)
        self.linked[stored_id] = child_id
        for key in sorted(keys):
            filed = self.under.setdefault(key, set())
            if child_id not in filed:
                filed.add(child_id)
                self._rows["blocking_keys"].append({"key": key, "child_id": child_id})

    def stage_changed(self, child_id: str) -> None:
        self._group_changed.add(child_id)

    def flush(self) -> None:
        """Write the staged group, in its savepoint; if the database refuses it, apply it again one
        record at a time."""
        if self._savepoint is None:
            return
        try:
            self._write()
        except (IntegrityError, DataError):
            self._replay()
            return
        self._savepoint.commit()
        self._savepoint = None
        self.changed |= self._group_changed
        self._reset_group()

    def _write(self) -> None:
        rows, conn = self._rows, self.conn
        if rows["children"]:
            conn.execute(insert(children), rows["children"])
        if rows["source_records"]:
            conn.execute(insert(source_records), rows["source_records"])
        if rows["by_source"]:  # a source record owns its involvements (_replace_involvements)
            conn.execute(_DELETE_SOURCE_INVOLVEMENTS, rows["by_source"])
            conn.execute(_DELETE_UNASSIGNED_INVOLVEMENTS, rows["unassigned"])
        if rows["involvements"]:
            conn.execute(insert(involvements), rows["involvements"])
        if rows["blocking_keys"]:
            conn.execute(insert(blocking_keys), rows["blocking_keys"])

    def _replay(self, also: tuple[int, ChildUpdate] | None = None) -> None:
        group = self._group + ([also] if also is not None and also not in self._group else [])
        self._savepoint.rollback()
        self._savepoint = None
        self.created -= self._group_created
        self._reset_group()
        self._read()
        for index, update_ in group:
            self.results[index] = self.alone(update_)


def _as_stored(conn: Connection, at: dt.datetime) -> dt.datetime:
    """``at`` as ``source_records.received_at`` hands it back once stored (SQLite keeps the
    wall-clock time without its zone; PostgreSQL the instant)."""
    value = bindparam("at", at, type_=source_records.c.received_at.type)
    if conn.dialect.name == "postgresql":
        value = cast(value, source_records.c.received_at.type)
    return conn.execute(select(value)).scalar_one()


def _apply_update(batch: _Batch, update_: ChildUpdate, person: linkage.Person, keys: _Keys) -> UpdateResult:
    """Match one record of the batch and stage what it stores (``_apply_update_alone`` decides the
    same way, reading the database instead of the batch)."""
    conn, now = batch.conn, batch.now
    srid = update_.source_record_id
    reason = _rejection(update_, now.date())
    if reason:
        return UpdateResult(srid, "rejected", detail=reason)
    stored_id = batch.stored[id(update_)]
    if stored_id in batch.linked:  # the organisation restates its own record: applied alone
        return batch.alone(update_)
    hits = batch.hits(keys)
    decision, candidate, comparison = _decide(conn, person, hits, batch.policy, batch, org_code=batch.org_code)
    text_ = _record_text(update_)
    if decision == "link":
        batch.lock(candidate)
        batch.stage_source(update_, stored_id, candidate, keys, text_)
        batch.stage_changed(candidate)
        _reconcile_split(conn, batch.org_code, stored_id, candidate, comparison, now)
        return UpdateResult(srid, "matched", candidate)
    child_id = batch.stage_child(update_, stored_id, keys, text_)
    held = decision == "review" and _queue_for_review(conn, batch.org_code, stored_id, child_id, candidate,
                                                      comparison, now)
    return _new_child(srid, child_id, held, hits)


def _apply_update_alone(conn: Connection, org_code: str, update_: ChildUpdate, person: linkage.Person,
                  keys: set[str], now: dt.datetime, policy: LinkPolicy, changed: set[str]) -> UpdateResult:
    """Match and store one record, reading the database (a record restating one its organisation
    sent before; a group of the batch applied again one record at a time). A child it joins is
    locked first (and followed if it was merged meanwhile), gets the record's keys at once (a later
    record of the batch finds it by them), and is derived again once at the end of the batch
    (``changed``)."""
    srid = update_.source_record_id
    reason = _rejection(update_, now.date())
    if reason:
        return UpdateResult(srid, "rejected", detail=reason)
    stored_id = sealed.blind_source_id(sealed.vault_of(conn), org_code, srid)
    linked = conn.execute(select(source_records.c.child_id).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id == stored_id)).scalar()
    hits = _key_hits(conn, keys)

    if linked is not None:
        # The organisation restates its own record. If it now carries an identifier another child
        # holds, the update still lands on its own child and a person looks at the pair.
        linked = _lock_live_child(conn, linked)
        linked = conn.execute(select(source_records.c.child_id).where(  # a merge may have moved it
            source_records.c.org_code == org_code, source_records.c.source_record_id == stored_id)).scalar_one()
        if retention.is_archived(conn, linked):  # ---- retention: its own record, no longer held
            return UpdateResult(srid, "rejected", detail=retention.NOT_HELD)
        _store_source(conn, org_code, update_, linked, now, existing=True)
        _file_under(conn, linked, keys, remove=False)
        changed.add(linked)
        others = sorted(hits.by_identifier - {linked})
        held = False
        for other, comparison in zip(others, _compare_with(conn, person, others)):
            if comparison is not None and _queue_for_review(conn, org_code, stored_id, linked, other,
                                                            comparison, now):
                held = True
                break
        # Answered as any restated record is, held for review or not (see gateway.index.deciding).
        return UpdateResult(srid, "updated", linked, held_for_review=held, identifier_conflict=bool(others))

    decision, candidate, comparison = _decide(conn, person, hits, policy, org_code=org_code)
    if decision == "link":
        candidate = _lock_live_child(conn, candidate)
        _store_source(conn, org_code, update_, candidate, now)
        _file_under(conn, candidate, keys, remove=False)
        changed.add(candidate)
        _reconcile_split(conn, org_code, stored_id, candidate, comparison, now)
        return UpdateResult(srid, "matched", candidate)
    child_id = _create_child(conn, org_code, update_, keys, now)
    held = decision == "review" and _queue_for_review(conn, org_code, stored_id, child_id, candidate, comparison, now)
    return _new_child(srid, child_id, held, hits)


def _new_child(srid: str, child_id: str, held_for_review: bool, hits: "_Hits") -> UpdateResult:
    """A record stored as a new child is answered ``created`` with that child's id, whether or not
    it is also paired with another child for review: the answer never says that the index already
    holds a child like it (see gateway.index.deciding). Its identifier met a child it was not
    linked to: an ``identifier_conflict``, for the audit."""
    return UpdateResult(srid, "created", child_id, held_for_review=held_for_review,
                        identifier_conflict=bool(hits.by_identifier))
