"""Sealing what was stored in clear (migration 0007), opening it again (its downgrade), and
re-sealing under a new data key (`contactgate keys rotate`).

Sealed columns and their row identities are listed in gateway.index.sealed. Everything here works
in batches of BATCH rows, so that it can run while the gateway serves (rotation commits each batch;
a migration runs in its own transaction).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, not_, select, update
from sqlalchemy.engine import Connection, Engine

from gateway.db import (
    blocking_keys, children, involvements, merges, officers, portal_practitioners, processed_messages, review_queue,
    source_records, value_conflicts,
)
from gateway.index import sealed
from gateway.security import vault as vault_mod

BATCH = 500
SEALED_LIKE = vault_mod.PREFIX + "%"


def _clear(column):
    return and_(column.is_not(None), not_(column.like(SEALED_LIKE)))


# ---- 0007: seal what is in clear -----------------------------------------------------------------

def seal_existing(conn: Connection, v) -> None:
    """Seal every identifying value and blind every lookup value stored before 0007. Idempotent."""
    from gateway.index import writing

    with sealed.installed(conn, v):
        while True:  # source records (and with each, its involvements and review entries)
            rows = conn.execute(select(source_records).where(_clear(source_records.c.record)).limit(BATCH)).all()
            if not rows:
                break
            for row in rows:
                stored = sealed.blind_source_id(v, row.org_code, row.source_record_id)
                conn.execute(update(source_records).where(
                    source_records.c.org_code == row.org_code,
                    source_records.c.source_record_id == row.source_record_id).values(
                    source_record_id=stored,
                    record=sealed.seal_source(v, row.org_code, stored, row.source_record_id, row.record)))
                for table in (involvements, review_queue):
                    conn.execute(update(table).where(table.c.org_code == row.org_code,
                                                     table.c.source_record_id == row.source_record_id)
                                 .values(source_record_id=stored))
        last = 0
        while True:  # involvements: the practitioner's details
            rows = conn.execute(select(involvements).where(involvements.c.sealed.is_(None), involvements.c.id > last)
                                .order_by(involvements.c.id).limit(BATCH)).all()
            if not rows:
                break
            for row in rows:
                conn.execute(update(involvements).where(involvements.c.id == row.id).values(
                    sealed=sealed.seal_involvement(v, row.org_code, row.source_record_id, row._mapping),
                    practitioner_name=None, phone=None, email=None))
            last = rows[-1].id
        # Every child shown and filed again from its (now sealed) sources: blind keys only.
        last = ""
        while True:
            batch = conn.execute(select(children.c.child_id, children.c.updated_at).where(children.c.child_id > last)
                                 .order_by(children.c.child_id).limit(BATCH)).all()
            if not batch:
                break
            for child_id, updated_at in batch:
                writing._refresh_child(conn, child_id, updated_at, conflicts_schema=False)
            last = batch[-1].child_id
        # Children with no source of their own (merged away) keep their record, sealed as it is.
        for row in conn.execute(select(children.c.child_id, children.c.record, children.c.provenance)
                                .where(_clear(children.c.record))).all():
            conn.execute(update(children).where(children.c.child_id == row.child_id).values(
                **_sealed_child_values(v, row.child_id, row.record, row.provenance)))
        conn.execute(delete(blocking_keys).where(blocking_keys.c.key.like("%:%")))  # clear keys; blind ones have no ':'
        for row in conn.execute(select(review_queue.c.id, review_queue.c.submitted)
                                .where(_clear(review_queue.c.submitted))).all():
            conn.execute(update(review_queue).where(review_queue.c.id == row.id).values(
                submitted=v.seal(row.submitted, sealed.submitted_context(row.id))))
        for row in conn.execute(select(merges.c.id, merges.c.snapshot)).all():
            conn.execute(update(merges).where(merges.c.id == row.id).values(
                snapshot=json.dumps(_seal_snapshot(v, json.loads(row.snapshot)), sort_keys=True)))
        for row in conn.execute(select(processed_messages).where(processed_messages.c.answer.is_not(None))).all():
            answer = bytes(row.answer)
            if not answer.startswith(vault_mod.PREFIX.encode()):
                conn.execute(update(processed_messages).where(
                    processed_messages.c.org_code == row.org_code,
                    processed_messages.c.signature_id == row.signature_id).values(
                    answer=v.seal(answer, sealed.answer_context(row.org_code, row.signature_id)).encode("ascii")))


def _sealed_child_values(v, child_id: str, record: str, provenance: str | None) -> dict:
    return dict(record=v.seal(record, sealed.child_context("record", child_id)),
                provenance=None if provenance is None else v.seal(provenance, sealed.child_context("provenance", child_id)),
                family_name_norm="", date_of_birth=sealed.RETIRED_DATE)


def _seal_snapshot(v, snapshot: dict) -> dict:
    for child in snapshot.get("children", ()):
        if child.get("record") and not vault_mod.is_sealed(child["record"]):
            values = _sealed_child_values(v, child["child_id"], child["record"], child.get("provenance"))
            child.update(values, date_of_birth=sealed.RETIRED_DATE.isoformat())
    for source in snapshot.get("source_records", ()):
        if source.get("record") and not vault_mod.is_sealed(source["record"]):
            stored = sealed.blind_source_id(v, source["org_code"], source["source_record_id"])
            source["record"] = sealed.seal_source(v, source["org_code"], stored, source["source_record_id"],
                                                  source["record"])
            source["source_record_id"] = stored
    return snapshot


# ---- 0007 downgrade: open everything again -------------------------------------------------------

def open_existing(conn: Connection, v) -> None:
    """Back to clear values and clear keys (a downgrade below 0007)."""
    from gateway.index import writing

    sent: dict[tuple[str, str], str] = {}
    for row in conn.execute(select(source_records).where(source_records.c.record.like(SEALED_LIKE))).all():
        srid, record_text = sealed.open_source(v, row.org_code, row.source_record_id, row.record)
        sent[(row.org_code, row.source_record_id)] = srid
        conn.execute(update(source_records).where(
            source_records.c.org_code == row.org_code,
            source_records.c.source_record_id == row.source_record_id).values(source_record_id=srid, record=record_text))
    for row in conn.execute(select(involvements).where(involvements.c.sealed.is_not(None))).all():
        person = sealed.open_involvement(v, row.org_code, row.source_record_id, row.sealed)
        conn.execute(update(involvements).where(involvements.c.id == row.id).values(
            sealed=None, source_record_id=sent.get((row.org_code, row.source_record_id), row.source_record_id),
            **person))
    for row in conn.execute(select(review_queue.c.id, review_queue.c.org_code, review_queue.c.source_record_id,
                                   review_queue.c.submitted)).all():
        values = {}
        if (row.org_code, row.source_record_id) in sent:
            values["source_record_id"] = sent[(row.org_code, row.source_record_id)]
        if vault_mod.is_sealed(row.submitted):
            values["submitted"] = v.open(row.submitted, sealed.submitted_context(row.id))
        if values:
            conn.execute(update(review_queue).where(review_queue.c.id == row.id).values(**values))
    for row in conn.execute(select(children.c.child_id, children.c.record, children.c.provenance)
                            .where(children.c.record.like(SEALED_LIKE))).all():
        record = v.open(row.record, sealed.child_context("record", row.child_id))
        provenance = None if row.provenance is None else v.open(row.provenance, sealed.child_context("provenance", row.child_id))
        identity = json.loads(record).get("identity") or {}
        from gateway.index.model import family_name_key
        conn.execute(update(children).where(children.c.child_id == row.child_id).values(
            record=record, provenance=provenance, family_name_norm=family_name_key(identity.get("family_name") or ""),
            date_of_birth=dt.date.fromisoformat(identity["date_of_birth"])))
    conn.execute(delete(blocking_keys))
    with sealed.installed(conn, sealed.plain()):
        for (child_id,) in conn.execute(select(children.c.child_id)).all():
            writing._refresh_child(conn, child_id, dt.datetime.now(dt.timezone.utc), conflicts_schema=False)
    for row in conn.execute(select(processed_messages).where(processed_messages.c.answer.is_not(None))).all():
        token = bytes(row.answer).decode("ascii", "replace")
        if vault_mod.is_sealed(token):
            conn.execute(update(processed_messages).where(
                processed_messages.c.org_code == row.org_code,
                processed_messages.c.signature_id == row.signature_id).values(
                answer=v.open_bytes(token, sealed.answer_context(row.org_code, row.signature_id))))


# ---- keys rotate: re-seal under the active key ---------------------------------------------------

@dataclass(frozen=True)
class SealedColumn:
    table: object
    column: str
    key_columns: tuple[str, ...]
    context: object  # row -> associated data
    binary: bool = False


SEALED_COLUMNS = (
    SealedColumn(children, "record", ("child_id",), lambda r: sealed.child_context("record", r.child_id)),
    SealedColumn(children, "provenance", ("child_id",), lambda r: sealed.child_context("provenance", r.child_id)),
    SealedColumn(source_records, "record", ("org_code", "source_record_id"),
                 lambda r: sealed.source_context(r.org_code, r.source_record_id)),
    SealedColumn(review_queue, "submitted", ("id",), lambda r: sealed.submitted_context(r.id)),
    SealedColumn(value_conflicts, "detail", ("id",), lambda r: sealed.conflict_context(r.id)),
    SealedColumn(involvements, "sealed", ("id",), lambda r: sealed.involvement_context(r.org_code, r.source_record_id)),
    SealedColumn(officers, "totp_secret", ("officer_id",), lambda r: sealed.officer_totp_context(r.officer_id)),
    SealedColumn(portal_practitioners, "totp_secret", ("org_code", "user_id"),
                 lambda r: sealed.portal_totp_context(r.org_code, r.user_id)),
    SealedColumn(processed_messages, "answer", ("org_code", "signature_id"),
                 lambda r: sealed.answer_context(r.org_code, r.signature_id), binary=True),
)


def key_usage(conn: Connection) -> dict[str, int]:
    """How many stored values each data key seals (merges' snapshots included)."""
    counts: dict[str, int] = {}
    for spec in SEALED_COLUMNS:
        column = spec.table.c[spec.column]
        if spec.binary:  # a handful of short-lived rows: counted here, not by the database
            for (token,) in conn.execute(select(column).where(column.is_not(None))):
                kid = vault_mod.key_id_of(bytes(token).decode("ascii", "replace"))
                if kid:
                    counts[kid] = counts.get(kid, 0) + 1
            continue
        text_ = func.substr(column, len(vault_mod.PREFIX) + 1, 9)
        for kid, n in conn.execute(select(text_, func.count()).where(column.like(SEALED_LIKE)).group_by(text_)):
            counts[kid] = counts.get(kid, 0) + n
    for (snapshot,) in conn.execute(select(merges.c.snapshot)):
        for kid in _snapshot_key_ids(json.loads(snapshot)):
            counts[kid] = counts.get(kid, 0) + 1
    return counts


def _snapshot_key_ids(snapshot: dict):
    for child in snapshot.get("children", ()):
        for name in ("record", "provenance"):
            kid = vault_mod.key_id_of(child.get(name))
            if kid:
                yield kid
    for source in snapshot.get("source_records", ()):
        kid = vault_mod.key_id_of(source.get("record"))
        if kid:
            yield kid


def rekey(engine: Engine, v, progress=None) -> int:
    """Re-seal every value not under the active key, BATCH rows per transaction, while the gateway
    serves. A row a writer changed meanwhile is left to the next pass (the writer sealed it anew).
    Returns how many values were re-sealed."""
    active = v.ring.active
    done = 0
    for spec in SEALED_COLUMNS:
        column = spec.table.c[spec.column]
        keys = [spec.table.c[k] for k in spec.key_columns]
        while True:
            with engine.begin() as conn:
                query = select(*keys, spec.table.c[spec.column], *_context_columns(spec)).where(column.is_not(None))
                if spec.binary:  # short-lived rows (minutes): all read, filtered here, in one pass
                    stale = [r for r in conn.execute(query).all() if vault_mod.key_id_of(
                        bytes(getattr(r, spec.column)).decode("ascii", "replace")) != active]
                else:
                    stale = conn.execute(query.where(not_(column.like(f"{vault_mod.PREFIX}{active}:%")))
                                         .limit(BATCH)).all()
                if not stale:
                    break
                changed = 0
                for row in stale:
                    token = getattr(row, spec.column)
                    token = bytes(token).decode("ascii") if spec.binary else token
                    fresh = v.seal(v.open_bytes(token, spec.context(row)), spec.context(row))
                    where = [k == getattr(row, k.name) for k in keys]
                    stored = fresh.encode("ascii") if spec.binary else fresh
                    result = conn.execute(update(spec.table).where(*where, column == getattr(row, spec.column))
                                          .values({spec.column: stored}))
                    changed += result.rowcount
                done += changed
                if progress:
                    progress(spec, changed)
                if changed == 0 or spec.binary:
                    break  # rows that moved under our feet are taken by the next pass
    with engine.begin() as conn:
        for row in conn.execute(select(merges.c.id, merges.c.snapshot).with_for_update()).all():
            snapshot = json.loads(row.snapshot)
            if any(kid != active for kid in _snapshot_key_ids(snapshot)):
                conn.execute(update(merges).where(merges.c.id == row.id).values(
                    snapshot=json.dumps(_reseal_snapshot(v, snapshot), sort_keys=True)))
                done += 1
    return done


def _context_columns(spec: SealedColumn):
    extra = {"org_code", "source_record_id", "child_id", "signature_id"} & set(spec.table.c.keys())
    return [spec.table.c[name] for name in sorted(extra - set(spec.key_columns))]


def _reseal_snapshot(v, snapshot: dict) -> dict:
    for child in snapshot.get("children", ()):
        for name in ("record", "provenance"):
            if vault_mod.is_sealed(child.get(name)):
                context = sealed.child_context(name, child["child_id"])
                child[name] = v.seal(v.open(child[name], context), context)
    for source in snapshot.get("source_records", ()):
        if vault_mod.is_sealed(source.get("record")):
            context = sealed.source_context(source["org_code"], source["source_record_id"])
            source["record"] = v.seal(v.open(source["record"], context), context)
    return snapshot


def has_rows(conn: Connection) -> bool:
    return any(conn.execute(select(t.c[c]).limit(1)).first() is not None
               for t, c in ((children, "child_id"), (processed_messages, "org_code"), (merges, "id")))

