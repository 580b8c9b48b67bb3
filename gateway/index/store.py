"""Index operations. Each takes a Connection so that it runs inside the exchange's transaction,
together with the audit entry that records it.

Who is who (gateway.index.linkage): every incoming record is matched on every push.

1. The same organisation's source record id: an update of what it sent before.
2. A valid NHS number or unique pupil number already in the index: the same child, unless the rest
   of the identity disagrees (the match probability without the identifier is below the review
   band, the other identifier differs, or the pair looks like twins): then it is held for review
   like any other uncertain record (and counted as an ``identifier_conflict`` for `audit review`).
3. Otherwise the candidates filed under the record's blocking keys (never a scan) are compared
   field by field (Fellegi–Sunter, gateway/index/linkage) and the best decides: at or above the
   upper threshold, linked (``matched``); below the lower, a new child (``created``); between, a
   new child **and** the pair in the review queue, so that nothing sent is invisible while a
   person decides. A pair that looks like twins is never linked automatically.

A record held for review is answered exactly as one that is not: ``created`` with its new child's
id (``updated`` for a record the organisation sent before), no detail. Any other answer would tell
the sender that the index already holds a child like it (a push-only organisation sending a known
NHS number with other demographics would learn that the number is known). The truth is in the
result's ``held_for_review`` (the audit entry's ``review=N``) and in the queue.

Each source keeps its own record; what the index shows is derived by precedence
(gateway.index.precedence), with who supplied each value. An organisation restates its own
involvements and values only.

Lookups are index lookups at national scale: by child id, by source record, by blocking key.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, cast, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from stdnum.gb import upn

from gateway.config import Settings
from gateway.db import (
    blocking_keys, children, distinct_pairs, involvements, organisations, review_queue, source_records,
)
from gateway.index import ids, linkage, retention, sealed
from gateway.index.model import (
    Candidate, ChildUpdate, ChildView, Contact, FindQuery, Involvement,
    UnreadableUpdate, UpdateResult,
    address_from_json, carer_from_json, family_name_key, identity_from_json, locality, nhs_number_is_valid,
    normalise_name, setting_from_json,
)
from gateway.index.precedence import Source, derive
from gateway.security import vault as vault_mod
from gateway.index.writing import (  # noqa: F401 (moved there; still named here)
    MAX_MERGE_HOPS, _CHILD_BY_ID, _CHILD_FOR_UPDATE, _DELETE_SOURCE_INVOLVEMENTS,
    _DELETE_UNASSIGNED_INVOLVEMENTS, _blinded_keys, _Keys, _create_child, _shown_values, linkage_plain_type,
    _open_shown, _record_text, _store_source, _LIVE_CHILD, _lock_live_child, _refresh_child, _file_under,
    _replace_involvements, _involvement_rows, _sources, _sources_of, _person_and_keys, _most_recent_first,
    _person_of, _keys_of, provenance, sent_source_id, BulkSource, bulk_rows,
)
from gateway.index.deciding import (  # noqa: F401 (moved there; still named here)
    COMPARED_PER_RECORD, COMPARED_SOURCES_PER_CHILD, LinkPolicy, DEFAULT_POLICY, _rejection, _Hits, _key_hits,
    _decide, _linkable, _opposite_sex_twins_named_alike, _SAME_PLACE, _only_the_given_name_differs, _held_by,
    _held_under_another_first_name, _one_organisation_holds_both, _reconcile_split, _given_names_differ,
    _ANOTHER_DATE, _looks_like_a_sibling, _MODEL_FOR_SIZE, MODEL_REFRESH_S, _model_due, scoring_model,
    _compare_with, _recent_people, demographic_comparison, _identifier_verdict, is_distinct,
    _queue_for_review, comparison_json,
)
from gateway.index.batches import (  # noqa: F401 (moved there; still named here)
    _ADVISORY_LOCK, apply_updates, LOCK_BUCKETS, _LOCK_NAMESPACE, _lock_identities, NOT_STORED, _IN_CHUNK,
    _LINKED, _FILED, _ORG_KIND, _Replay, _chunks, _Batch, _as_stored, _apply_update, _apply_update_alone,
    _new_child,
)

MAX_CANDIDATES = 10  # FindChild's answer
# A child's row and its involvements' in one query: the child's columns, then an involvement's (all
# None for a child without any), one row per involvement, by organisation and then as stored.
_CHILD_AND_INVOLVEMENTS = (
    select(children, *[c.label(f"inv_{c.name}") for c in involvements.c])
    .select_from(children.outerjoin(involvements, involvements.c.child_id == children.c.child_id))
    .where(children.c.child_id == bindparam("child_id"))
    .order_by(involvements.c.org_code, involvements.c.id))
_MERGED_INTO = list(children.c.keys()).index("merged_into")


# ---- FindChild ----------------------------------------------------------------------------------

def find_children(conn: Connection, query: FindQuery, policy: LinkPolicy = DEFAULT_POLICY,
                  today: dt.date | None = None) -> list[Candidate]:
    """The children the query most likely means, best first: at most MAX_CANDIDATES, each scoring at
    least the policy's floor. A shielded child's location can not be confirmed by guessing: a
    location in the query neither finds nor ranks it."""
    # The prior for this index's size (never below the training set's): how many children could be meant.
    model = scoring_model(conn)
    v = sealed.vault_of(conn)
    located = sealed.blind_keys(v, linkage.query_keys(query))
    unlocated = sealed.blind_keys(v, linkage.query_keys(replace(query, postcode=None))) if query.postcode else located
    # A shielded child is a candidate only by the keys without the location, ranked among them
    # alone, so that the postcode cannot lift it into (or push it out of) the window compared.
    found = {**_candidate_rows(conn, unlocated),
             **(_candidate_rows(conn, located, shielded=False) if located != unlocated else {})}
    today = today or dt.datetime.now(dt.timezone.utc).date()
    shown = {c: _open_shown(v, row) for c, row in found.items()}
    found = {c: row for c, row in found.items()  # ---- retention: 18 today, before the run archives it
             if not retention.is_withheld(shown[c], today)}
    sources = _sources_of(conn, sorted(found))
    scored = []
    for child_id, row in found.items():
        asked = replace(query, postcode=None) if row.shielded else query
        recent = sorted(sources.get(child_id, ()), key=_most_recent_first)[:COMPARED_SOURCES_PER_CHILD]
        people = [linkage.person_from_record(shown[child_id]), *(_person_of(s) for s in recent)]
        score, probability = max(linkage.query_match(asked, person, model) for person in people)
        if score >= policy.find_floor and probability >= policy.find_min_probability:
            scored.append((score, child_id, row, probability))
    scored.sort(key=lambda item: (-item[0], item[1]))
    candidates = []
    for score, child_id, row, probability in scored[:MAX_CANDIDATES]:
        record = shown[child_id]
        identity = identity_from_json(record["identity"])
        candidates.append(Candidate(
            child_id=child_id, family_name=identity.family_name, given_names=identity.given_names,
            date_of_birth=identity.date_of_birth, gender=identity.gender,
            locality=None if row.shielded else locality(address_from_json(record.get("address"))),
            score=score, shielded=bool(row.shielded), probability=probability))
    return candidates


def _candidate_rows(conn: Connection, keys: set[str], shielded: bool | None = None) -> dict:
    """The live children under ``keys`` sharing the most of them (at most COMPARED_PER_RECORD);
    ``shielded=False``: unshielded children only."""
    if not keys:
        return {}
    ranked = (select(blocking_keys.c.child_id, func.count().label("shared"))
              .join(children, children.c.child_id == blocking_keys.c.child_id)
              .where(blocking_keys.c.key.in_(sorted(keys)), children.c.merged_into.is_(None),
                     children.c.archived_at.is_(None)))  # retention
    if shielded is not None:
        ranked = ranked.where(children.c.shielded == shielded)
    ranked = (ranked.group_by(blocking_keys.c.child_id).order_by(func.count().desc(), blocking_keys.c.child_id)
              .limit(COMPARED_PER_RECORD).subquery())
    rows = conn.execute(select(children.c.child_id, children.c.record, children.c.shielded)
                        .join(ranked, ranked.c.child_id == children.c.child_id))
    return {row.child_id: row for row in rows}


# ---- GetContacts --------------------------------------------------------------------------------

def resolve(conn: Connection, child_id: str) -> str | None:
    """The id a child is held under now: itself, or the survivor of the merges it went into."""
    for _ in range(MAX_MERGE_HOPS):
        row = conn.execute(select(children.c.merged_into).where(children.c.child_id == child_id)).first()
        if row is None:
            return None
        if row.merged_into is None:
            return child_id
        child_id = row.merged_into
    return None


@dataclass(frozen=True)
class ChildRows:
    """What a child's answer is made from, as read: its row (after following merges) and its
    involvements' rows. Two reads that compare equal make the same answer (``child_view``)."""

    child_id: str
    row: tuple
    involvements: tuple[tuple, ...]


def child_rows(conn: Connection, child_id: str) -> ChildRows | None:
    """The rows of the child ``child_id`` names (a merged child's old id: the survivor's), or None."""
    canonical = ids.normalise(child_id)
    if canonical is None:
        return None
    rows = conn.execute(_CHILD_AND_INVOLVEMENTS, {"child_id": canonical}).all()
    if rows and rows[0][_MERGED_INTO] is not None:  # merges keep chains flat: one more step
        canonical = resolve(conn, rows[0][_MERGED_INTO])
        rows = conn.execute(_CHILD_AND_INVOLVEMENTS, {"child_id": canonical}).all() if canonical else []
    if not rows:
        return None
    width = len(children.c)
    return ChildRows(canonical, tuple(rows[0][:width]),
                     tuple(tuple(row[width:]) for row in rows if row[width] is not None))  # (outer join: none)


def child_view(conn: Connection, rows: ChildRows | None, today: dt.date) -> ChildView | None:
    """The child as GetContacts shows it, from its rows; None if it is not returned to anyone."""
    if rows is None:
        return None
    row = children_row._make(rows.row)
    v = sealed.vault_of(conn)
    record = _open_shown(v, row)
    if row.archived_at is not None or retention.is_withheld(record, today):  # ---- retention: as unknown
        return None
    contacts = []
    for inv in map(involvements_row._make, rows.involvements):
        person = (sealed.open_involvement(v, inv.org_code, inv.source_record_id, inv.sealed) if inv.sealed
                  else dict(practitioner_name=inv.practitioner_name, phone=inv.phone, email=inv.email))
        involvement = Involvement(
            service=inv.service, start=inv.start, caf_assessment=inv.caf_assessment,
            lead_professional=inv.lead_professional, role=inv.role, end=inv.end, **person)
        if involvement.is_current(today):
            contacts.append(Contact(inv.org_code, involvement))
    return ChildView(
        child_id=rows.child_id, shielded=bool(row.shielded),
        identity=identity_from_json(record["identity"]),
        address=address_from_json(record.get("address")),
        carers=tuple(carer_from_json(c) for c in record.get("carers") or ()),
        educational_setting=setting_from_json(record.get("educational_setting")),
        gp_practice=setting_from_json(record.get("gp_practice")),
        contacts=tuple(contacts),
    )


children_row = collections.namedtuple("children_row", [c.name for c in children.columns])
involvements_row = collections.namedtuple("involvements_row", [c.name for c in involvements.columns])


def get_child(conn: Connection, child_id: str, today: dt.date) -> ChildView | None:
    """The child (a merged child's old id answers with the survivor's id and record)."""
    return child_view(conn, child_rows(conn, child_id), today)


def set_shielding(conn: Connection, child_id: str, shielded: bool, today: dt.date) -> str | None:
    """Shield or unshield the child (a merged child's old id: its survivor); its id, or None for an
    id the index does not hold or no longer returns (the same answer GetContacts gives)."""
    child = get_child(conn, child_id, today)
    if child is None:
        return None
    _lock_live_child(conn, child.child_id)
    conn.execute(update(children).where(children.c.child_id == child.child_id).values(shielded=shielded))
    return child.child_id


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
