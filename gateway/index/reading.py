"""What the index answers: FindChild's candidates, GetContacts' child (a merged child's old id
answers with the survivor's), and shielding a child. Lookups are index lookups at national scale:
by child id, by source record, by blocking key.
"""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from gateway.db import blocking_keys, children, involvements
from gateway.index import ids, linkage, retention, sealed
from gateway.index.deciding import (
    COMPARED_PER_RECORD, COMPARED_SOURCES_PER_CHILD, DEFAULT_POLICY, LinkPolicy, scoring_model,
)
from gateway.index.model import (
    Candidate, ChildView, Contact, FindQuery, Involvement, Supplier, address_from_json, carer_from_json,
    identity_from_json, locality, setting_from_json,
)
from gateway.index.writing import (
    MAX_MERGE_HOPS, _lock_live_child, _most_recent_first, _open_shown, _person_of, _sources_of,
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


def child_view(conn: Connection, rows: ChildRows | None, today: dt.date, *,
               with_provenance: bool = False) -> ChildView | None:
    """The child as GetContacts shows it, from its rows; None if it is not returned to anyone.
    ``with_provenance``: with who supplied the address and when (``address_source``)."""
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
        address_source=_supplier(_open_shown(v, row, "provenance").get("address")) if with_provenance else None,
    )


def _supplier(entry: dict | None) -> Supplier | None:
    if not entry or not entry.get("org") or not entry.get("at"):
        return None
    at = dt.datetime.fromisoformat(entry["at"])
    return Supplier(entry["org"], at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc))


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
