"""Carrying data over from before 0005: migration 0005 calls adopt_legacy_rows on its upgrade and
restore_legacy_identifiers on its downgrade. The rows are written by gateway.index.writing.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.db import children, review_queue, source_records
from gateway.index import linkage, sealed
from gateway.index.model import (
    ChildUpdate, Involvement, address_from_json, carer_from_json, identity_from_json, setting_from_json,
)
from gateway.index.writing import _blinded_keys, _create_child, _refresh_child


# ---- Carrying data over from before 0005 (the migration calls these) ---------------------------

def adopt_legacy_rows(conn: Connection) -> None:
    """Each source record gets its child's record; each involvement a source record of its
    organisation; every child its shown record, provenance and keys; a record held unstored by the
    old review queue becomes a child of its own, paired with its candidate. The identifier columns
    are retired (identifiers are keys now; their unique constraints would refuse a held record)."""
    conn.execute(update(children).values(nhs_number=None, pupil_number=None))
    conn.execute(text(
        "UPDATE source_records SET record = (SELECT record FROM children "
        "WHERE children.child_id = source_records.child_id), "
        "received_at = (SELECT updated_at FROM children WHERE children.child_id = source_records.child_id) "
        "WHERE record IS NULL"))
    # An involvement belonged to (child, organisation): it is the source record's when the
    # organisation has one record of the child; else it stays unassigned, and the organisation's
    # next update of any of its records of the child restates it (as before 0005).
    conn.execute(text(
        "UPDATE involvements SET source_record_id = (SELECT min(s.source_record_id) FROM source_records s "
        "WHERE s.child_id = involvements.child_id AND s.org_code = involvements.org_code) "
        "WHERE source_record_id IS NULL AND (SELECT count(*) FROM source_records s "
        "WHERE s.child_id = involvements.child_id AND s.org_code = involvements.org_code) = 1"))
    last = ""
    while True:
        batch = conn.execute(select(children.c.child_id, children.c.updated_at).where(children.c.child_id > last)
                             .order_by(children.c.child_id).limit(1000)).all()
        if not batch:
            break
        for child_id, updated_at in batch:
            _refresh_child(conn, child_id, updated_at, retention_schema=False)  # no source record: left as it is
        last = batch[-1].child_id
    for row in conn.execute(select(review_queue).where(review_queue.c.child_id.is_(None))).all():
        update_ = _update_from_held(row.source_record_id, json.loads(row.submitted))
        taken = conn.execute(select(source_records.c.child_id).where(
            source_records.c.org_code == row.org_code,
            source_records.c.source_record_id == row.source_record_id)).scalar()
        keys = _blinded_keys(sealed.vault_of(conn), linkage.blocking_keys(linkage.person_from_update(update_)))
        child_id = taken or _create_child(conn, row.org_code, update_, keys, row.created_at, retention_schema=False)
        conn.execute(update(review_queue).where(review_queue.c.id == row.id).values(child_id=child_id))


def _update_from_held(srid: str, held: dict) -> ChildUpdate:
    record = held["record"]
    address = address_from_json(record.get("address"))
    return ChildUpdate(
        source_record_id=srid, identity=identity_from_json(record["identity"]),
        address=address, carers=tuple(carer_from_json(c) for c in record.get("carers") or ()),
        educational_setting=setting_from_json(record.get("educational_setting")),
        gp_practice=setting_from_json(record.get("gp_practice")),
        involvements=tuple(Involvement(
            service=i["service"], start=dt.date.fromisoformat(i["start"]), caf_assessment=i["caf_assessment"],
            lead_professional=i["lead_professional"], practitioner_name=i.get("practitioner_name"),
            role=i.get("role"), phone=i.get("phone"), email=i.get("email"),
            end=dt.date.fromisoformat(i["end"]) if i.get("end") else None)
            for i in held.get("involvements") or ()))


def restore_legacy_identifiers(conn: Connection) -> None:
    """For a downgrade below 0005: identifiers back in their unique columns, where still unique."""
    # Where two children claim one number, the one not stored as a held record keeps it (an explicit
    # order: the rows' physical order changes with every update, e.g. 0006's backfill).
    held = select(review_queue.c.child_id).where(review_queue.c.child_id.is_not(None))
    for row in conn.execute(select(children.c.child_id, children.c.record)
                            .where(children.c.merged_into.is_(None))
                            .order_by(children.c.child_id.in_(held), children.c.created_at,
                                      children.c.child_id)).all():
        identity = json.loads(row.record).get("identity") or {}
        try:
            with conn.begin_nested():
                conn.execute(update(children).where(children.c.child_id == row.child_id).values(
                    nhs_number=identity.get("nhs_number"), pupil_number=identity.get("pupil_number")))
        except IntegrityError:
            pass  # two children now claim one number (a pair held for review): left for a person
