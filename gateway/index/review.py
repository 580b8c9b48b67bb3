"""The review queue a data-quality officer works, and merges that can be undone.

- ``link`` an open pair: the record stored as its own child joins the existing child (a merge with
  the existing child surviving).
- ``distinct``: the pair are different children, never linked or queued again.
- ``merge A B``: any two children, A surviving. Every source record and involvement of B moves to A;
  B's id resolves to A from then on (GetContacts with B answers A's record with A's id).
- ``unmerge MERGE_ID``: puts back exactly what the merge moved. When nothing was sent for either
  child in between, both come back byte for byte as they were; otherwise each gets its own source
  records and involvements back (including what those sources sent since) and its shown record is
  derived from them again.

Every action is one transaction with its audit entry; nothing is deleted, so no sequence of them
loses an involvement.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from gateway.audit import chain as audit
from gateway.db import blocking_keys, children, distinct_pairs, involvements, merges, review_queue, source_records
from gateway.index import ids, linkage, sealed, shielding, store, writing

ROLE = "data_quality_officer"


class ReviewError(Exception):
    """An action the queue refuses, with the reason (shown to the officer as it is)."""


def _record(conn: Connection, trail: audit.AuditTrail, operation: str, officer: str, child_ids: list[str],
            detail: str) -> None:
    trail.append(conn, audit.Entry(operation=operation, outcome="done", user_id=officer, role=ROLE,
                                   child_ids=sorted(set(child_ids)), detail=detail))


def _entry(conn: Connection, review_id: int, lock: bool = False):
    query = select(review_queue).where(review_queue.c.id == review_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None or row.child_id is None:
        raise ReviewError(f"no review entry {review_id}")
    return row


def _child(conn: Connection, child_id: str) -> str:
    canonical = ids.normalise(child_id)
    row = None if canonical is None else conn.execute(
        select(children.c.child_id, children.c.archived_at).where(children.c.child_id == canonical)).first()
    if row is None:
        raise ReviewError(f"no child {child_id}")
    if row.archived_at is not None:  # retention: an archived record is neither revived nor extended
        raise ReviewError(f"child {canonical} is archived (retention): see `contactgate retention show`")
    return canonical


def list_entries(conn: Connection, status: str | None = "open", limit: int = 100, *,
                 officer_roles: Collection[str] = (), shield_roles: Collection[str] = frozenset()) -> list[dict]:
    """The queue's entries, oldest first. An entry with a shielded child has no score (None) unless
    one of ``officer_roles`` is in ``shield_roles``, as in `show`: the score is the pair's match
    probability, from which it follows whether their withheld addresses agree."""
    query = select(review_queue).where(review_queue.c.child_id.is_not(None))
    if status:
        query = query.where(review_queue.c.status == status)
    rows = conn.execute(query.order_by(review_queue.c.id).limit(limit)).all()
    shielded = _entries_with_a_shielded_child(conn, rows)
    shown_to_role = bool(set(officer_roles) & set(shield_roles))
    entries = []
    for r in rows:
        withheld = r.id in shielded and not shown_to_role
        sender = {"org": r.org_code, "source_record_id": None if withheld else (
            store.sent_source_id(conn, r.org_code, r.source_record_id) or r.source_record_id)}
        entries.append({
            "id": r.id, "status": r.status, "child_id": r.child_id, "candidate_child_id": r.candidate_child_id,
            "score": None if withheld else r.score, **(shielding.anonymous(sender) if withheld else sender),
            "created_at": r.created_at.isoformat(), "decided_by": r.decided_by,
            "shielded": r.id in shielded, "location_withheld": withheld})
    return entries


def _entries_with_a_shielded_child(conn: Connection, rows) -> set[int]:
    """The ids of the entries among ``rows`` with a shielded child, judged as `show` judges it:
    either child of the pair, or the child either is held under now (after merges)."""
    held: dict[str, tuple[str | None, bool]] = {}  # child id: (merged into, shielded)
    wanted = {c for r in rows for c in (r.child_id, r.candidate_child_id) if c}
    for _ in range(store.MAX_MERGE_HOPS + 1):
        missing = sorted(wanted - held.keys())
        if not missing:
            break
        for start in range(0, len(missing), 500):
            for row in conn.execute(select(children.c.child_id, children.c.merged_into, children.c.shielded)
                                    .where(children.c.child_id.in_(missing[start:start + 500]))):
                held[row.child_id] = (row.merged_into, bool(row.shielded))
        for child_id in missing:
            held.setdefault(child_id, (None, False))
        wanted = {merged_into for merged_into, _ in held.values() if merged_into}

    def shielded(child_id: str | None) -> bool:
        for _ in range(store.MAX_MERGE_HOPS + 1):
            if child_id is None:
                return False
            merged_into, is_shielded = held.get(child_id, (None, False))
            if is_shielded:
                return True
            child_id = merged_into
        return False

    return {r.id for r in rows if shielded(r.child_id) or shielded(r.candidate_child_id)}


def show(conn: Connection, trail: audit.AuditTrail, review_id: int, officer: str, *,
         officer_roles: Collection[str] = (), shield_roles: Collection[str] = frozenset()) -> dict:
    """The two children side by side: what each shows and who supplied it, the field agreements and
    the score (as stored when queued, and as the current model scores it now). Reading them is
    access to both children's records: audited, in the same transaction.

    When either child of the pair is shielded, the location of BOTH is withheld (the record held
    for review may be the same child at the same address): absent from what is returned, with the
    location's agreement level and every number that would say whether the addresses agree (the
    comparisons keep their other fields' agreement levels only, and the score is None), unless one
    of ``officer_roles`` is in ``shield_roles`` (the setting CONTACTGATE_REVIEW_SHIELD_ROLES; none
    by default). Withheld too: who supplied anything of the pair (organisation, kind, source record
    id), which places the child whatever the field. Either way the audit entry is marked as a read
    of a shielded child is (gateway.index.shielding)."""
    row = _entry(conn, review_id)
    now_held = {name: store.resolve(conn, child_id) or child_id
                for name, child_id in (("stored_as", row.child_id), ("candidate", row.candidate_child_id))}
    shielded = _any_shielded(conn, [row.child_id, row.candidate_child_id, *now_held.values()])
    shown_to_role = shielded and bool(set(officer_roles) & set(shield_roles))
    withheld = shielded and not shown_to_role
    _record(conn, trail, "review.show", officer, [row.child_id, row.candidate_child_id],
            f"review {review_id} shown" + (f" {shielding.audit_mark(shown_to_role)}" if shielded else ""))
    sides = {}
    for name, child_id in (("stored_as", row.child_id), ("candidate", row.candidate_child_id)):
        current = now_held[name]
        held = store.provenance(conn, current)
        sides[name] = {"child_id": child_id, "now_held_as": current, "record": held.pop("record"),
                       "provenance": held}
    # Scored as the gateway decides: on the demographics, identifiers judged apart.
    left, right = (linkage.person_from_record(sides[name]["record"]) for name in ("stored_as", "candidate"))
    comparisons = {"comparison": json.loads(row.comparison or "{}"),
                   "comparison_now": store.comparison_json(
                       store.demographic_comparison(left, right, store.scoring_model(conn)))}
    if withheld:
        for side in sides.values():
            side["record"] = shielding.record_without_location(side["record"])
            side["provenance"] = {
                "shown": {name: [shielding.anonymous(w) for w in who] if isinstance(who, list) else shielding.anonymous(who)
                          for name, who in shielding.provenance_without_location(side["provenance"]["shown"]).items()},
                "sources": [shielding.anonymous({**source, "record": shielding.record_without_location(source["record"])})
                            for source in side["provenance"]["sources"]]}
        comparisons = {name: shielding.comparison_without_location(c) for name, c in comparisons.items()}
    sender = {"org": row.org_code,
              "source_record_id": store.sent_source_id(conn, row.org_code, row.source_record_id) or row.source_record_id}
    return {"id": row.id, "status": row.status, **(shielding.anonymous(sender) if withheld else sender),
            "created_at": row.created_at.isoformat(), "decided_by": row.decided_by,
            "decided_at": row.decided_at.isoformat() if row.decided_at else None,
            "score": None if withheld else row.score, "model_version": row.model_version,
            "shielded": shielded, "location_withheld": withheld, **comparisons, **sides}


def _any_shielded(conn: Connection, child_ids: list[str]) -> bool:
    return conn.execute(select(children.c.child_id).where(
        children.c.child_id.in_(sorted(set(child_ids))), children.c.shielded.is_(True))).first() is not None


def link(conn: Connection, trail: audit.AuditTrail, review_id: int, officer: str, now: dt.datetime) -> int:
    """The record stored for review is the candidate child: merge it in (the candidate survives)."""
    row = _open(conn, review_id)
    merge_id = merge(conn, trail, row.candidate_child_id, row.child_id, officer, now, _audit=False)
    _decide(conn, review_id, "linked", officer, now)
    _record(conn, trail, "review.link", officer, [row.child_id, row.candidate_child_id],
            f"review {review_id}: {row.child_id} linked to {row.candidate_child_id} (merge {merge_id})")
    return merge_id


def distinct(conn: Connection, trail: audit.AuditTrail, review_id: int, officer: str, now: dt.datetime) -> None:
    """The pair are different children: recorded, and never linked or queued again."""
    row = _open(conn, review_id)
    low, high = sorted((store.resolve(conn, row.child_id) or row.child_id,
                        store.resolve(conn, row.candidate_child_id) or row.candidate_child_id))
    if not store.is_distinct(conn, low, high):
        conn.execute(distinct_pairs.insert().values(child_a=low, child_b=high, decided_by=officer, decided_at=now))
    _decide(conn, review_id, "distinct", officer, now)
    _record(conn, trail, "review.distinct", officer, [row.child_id, row.candidate_child_id],
            f"review {review_id}: {row.child_id} and {row.candidate_child_id} are different children")


def _open(conn: Connection, review_id: int):
    """The open entry, locked: two officers acting on one entry at once act one after the other."""
    row = _entry(conn, review_id, lock=True)
    if row.status != "open":
        raise ReviewError(f"review entry {review_id} is already {row.status}")
    return row


def _decide(conn: Connection, review_id: int, status: str, officer: str, now: dt.datetime) -> None:
    conn.execute(update(review_queue).where(review_queue.c.id == review_id).values(
        status=status, decided_by=officer, decided_at=now))


def _snapshot(conn: Connection, child_ids: list[str]) -> dict:
    def rows(table, column):
        return [dict(r._mapping) for r in conn.execute(select(table).where(column.in_(child_ids)))]

    def jsonable(row: dict) -> dict:
        return {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in row.items()}

    reviews = conn.execute(select(review_queue.c.id, review_queue.c.status, review_queue.c.decided_by,
                                  review_queue.c.decided_at).where(
        or_(review_queue.c.child_id.in_(child_ids), review_queue.c.candidate_child_id.in_(child_ids)))).all()
    return {
        "children": [jsonable(r) for r in rows(children, children.c.child_id)],
        "source_records": [jsonable(r) for r in rows(source_records, source_records.c.child_id)],
        "reviews": [jsonable(dict(r._mapping)) for r in reviews],
    }


def _lock_children(conn: Connection, *child_ids: str) -> None:
    """Row locks on the children, in one order: a push that links a record to one of them waits
    (and then follows the merge), and so does another officer's merge or unmerge of them."""
    for child_id in sorted(set(child_ids)):
        conn.execute(select(children.c.child_id).where(children.c.child_id == child_id).with_for_update()).first()


def merge(conn: Connection, trail: audit.AuditTrail, survivor: str, merged: str, officer: str,
          now: dt.datetime, _audit: bool = True) -> int:
    survivor, merged = _child(conn, survivor), _child(conn, merged)
    if survivor == merged:
        raise ReviewError("a child cannot be merged with itself")
    _lock_children(conn, survivor, merged)
    for child_id in (survivor, merged):
        if store.resolve(conn, child_id) != child_id:
            raise ReviewError(f"{child_id} was merged into {store.resolve(conn, child_id)}: work with that id")
    if store.is_distinct(conn, survivor, merged):
        raise ReviewError(f"{survivor} and {merged} were recorded as different children")
    snapshot = _snapshot(conn, [survivor, merged])
    # Ids merged into the merged child before now point at the survivor directly: every old id
    # resolves in one step, however long the history (unmerge points them back).
    snapshot["repointed"] = sorted(conn.execute(select(children.c.child_id)
                                                .where(children.c.merged_into == merged)).scalars())
    conn.execute(update(children).where(children.c.merged_into == merged).values(merged_into=survivor))
    shielded = any(c["shielded"] for c in snapshot["children"])  # shielding is never lost by merging
    conn.execute(update(source_records).where(source_records.c.child_id == merged).values(child_id=survivor))
    conn.execute(update(involvements).where(involvements.c.child_id == merged).values(child_id=survivor))
    conn.execute(blocking_keys.delete().where(blocking_keys.c.child_id == merged))
    conn.execute(update(children).where(children.c.child_id == merged).values(merged_into=survivor))
    conn.execute(update(children).where(children.c.child_id == survivor).values(shielded=shielded))
    writing._refresh_child(conn, survivor, now)
    # Pairs between the two are settled by the merge.
    conn.execute(update(review_queue).where(
        review_queue.c.status == "open",
        or_((review_queue.c.child_id == merged) & (review_queue.c.candidate_child_id == survivor),
            (review_queue.c.child_id == survivor) & (review_queue.c.candidate_child_id == merged)))
        .values(status="merged", decided_by=officer, decided_at=now))
    merge_id = conn.execute(merges.insert().values(
        survivor=survivor, merged=merged, officer=officer, at=now,
        snapshot=json.dumps(snapshot, sort_keys=True))).inserted_primary_key[0]
    if _audit:
        _record(conn, trail, "review.merge", officer, [survivor, merged],
                f"merge {merge_id}: {merged} merged into {survivor}")
    return merge_id


def unmerge(conn: Connection, trail: audit.AuditTrail, merge_id: int, officer: str, now: dt.datetime) -> None:
    row = conn.execute(select(merges).where(merges.c.id == merge_id)).first()
    if row is None:
        raise ReviewError(f"no merge {merge_id}")
    if row.undone_at is not None:
        raise ReviewError(f"merge {merge_id} was already undone by {row.undone_by}")
    survivor, merged = row.survivor, row.merged
    _lock_children(conn, survivor, merged)
    conn.execute(select(merges.c.id).where(merges.c.id == merge_id).with_for_update()).first()
    row = conn.execute(select(merges).where(merges.c.id == merge_id)).first()
    if row.undone_at is not None:
        raise ReviewError(f"merge {merge_id} was already undone by {row.undone_by}")
    if store.resolve(conn, survivor) != survivor:
        later = conn.execute(select(merges.c.id).where(merges.c.merged == survivor, merges.c.undone_at.is_(None))
                             ).scalar()
        raise ReviewError(f"{survivor} was merged again since (merge {later}): undo that first")
    snapshot = json.loads(row.snapshot)
    before = {c["child_id"]: c for c in snapshot["children"]}
    moved = [(s["org_code"], s["source_record_id"]) for s in snapshot["source_records"] if s["child_id"] == merged]
    for org_code, srid in moved:
        conn.execute(update(source_records).where(
            source_records.c.org_code == org_code, source_records.c.source_record_id == srid,
            source_records.c.child_id == survivor).values(child_id=merged))
        conn.execute(update(involvements).where(
            involvements.c.org_code == org_code, involvements.c.source_record_id == srid,
            involvements.c.child_id == survivor).values(child_id=merged))
    _rehome_later_records(conn, survivor, merged, snapshot)
    for child_id in snapshot.get("repointed", ()):
        conn.execute(update(children).where(children.c.child_id == child_id, children.c.merged_into == survivor)
                     .values(merged_into=merged))
    for child_id in (survivor, merged):
        _restore_child(conn, child_id, before[child_id], snapshot, now)
    # Entries the merge settled are open again; a decision an officer took since stands.
    for review in snapshot["reviews"]:
        conn.execute(update(review_queue).where(
            review_queue.c.id == review["id"], review_queue.c.status.in_(("merged", "linked")),
            review_queue.c.decided_at == row.at).values(
            status=review["status"], decided_by=review["decided_by"],
            decided_at=dt.datetime.fromisoformat(review["decided_at"]) if review["decided_at"] else None))
    conn.execute(update(merges).where(merges.c.id == merge_id).values(undone_by=officer, undone_at=now))
    _record(conn, trail, "review.unmerge", officer, [survivor, merged],
            f"merge {merge_id} undone: {merged} separated from {survivor} again")


def _rehome_later_records(conn: Connection, survivor: str, merged: str, snapshot: dict) -> None:
    """Records that joined the survivor while the merge stood (not in the snapshot) go to whichever
    of the two children they resemble more, with their involvements."""
    before = {(s["org_code"], s["source_record_id"]) for s in snapshot["source_records"]}
    sources = writing._sources_of(conn, [survivor, merged])
    later = [s for s in sources.get(survivor, ()) if (s.org_code, s.source_record_id) not in before]
    if not later:
        return
    model = store.scoring_model(conn)
    own = {child: [s for s in sources.get(child, ()) if (s.org_code, s.source_record_id) in before]
           for child in (survivor, merged)}
    for source in later:
        person = writing._person_of(source)
        best = {child: max((linkage.compare(person, writing._person_of(s), model).weight for s in own[child]),
                           default=float("-inf")) for child in (survivor, merged)}
        if best[merged] > best[survivor]:
            conn.execute(update(source_records).where(
                source_records.c.org_code == source.org_code,
                source_records.c.source_record_id == source.source_record_id).values(child_id=merged))
            conn.execute(update(involvements).where(
                involvements.c.org_code == source.org_code,
                involvements.c.source_record_id == source.source_record_id).values(child_id=merged))


def _restore_child(conn: Connection, child_id: str, before: dict, snapshot: dict, now: dt.datetime) -> None:
    """Exactly as it was if its sources are as they were; else derived again from its sources."""
    held_then = sorted((s["org_code"], s["source_record_id"], s["received_at"])
                       for s in snapshot["source_records"] if s["child_id"] == child_id)
    held_now = sorted((r.org_code, r.source_record_id, r.received_at.isoformat())
                      for r in conn.execute(select(source_records).where(source_records.c.child_id == child_id)))
    conn.execute(update(children).where(children.c.child_id == child_id).values(
        merged_into=before["merged_into"], shielded=before["shielded"]))
    writing._refresh_child(conn, child_id, now)  # its keys, from its own sources again
    # Derivation depends on the value conflicts settled for a lower source's value too: one settled
    # (or no longer in force) while the merge stood leaves the record as derived now.
    if held_then == held_now and _settled(conn, child_id, before.get("provenance")) == _settled(conn, child_id):
        conn.execute(update(children).where(children.c.child_id == child_id).values(
            record=before["record"], provenance=before["provenance"], family_name_norm=before["family_name_norm"],
            date_of_birth=dt.date.fromisoformat(before["date_of_birth"]),
            updated_at=dt.datetime.fromisoformat(before["updated_at"])))


def _settled(conn: Connection, child_id: str, sealed_provenance: str | None | bool = False) -> set:
    """The value conflicts whose settlement chose a value of the child's record: in the provenance
    given (as stored), or by default in the one stored now."""
    if sealed_provenance is False:
        sealed_provenance = conn.execute(select(children.c.provenance).where(children.c.child_id == child_id)).scalar()
    if not sealed_provenance:
        return set()
    opened = json.loads(sealed.vault_of(conn).open(sealed_provenance, sealed.child_context("provenance", child_id)))
    return {who.get("settled") for who in opened.values() if isinstance(who, dict) and who.get("settled")}


# ---- how a reviewer is shown a record (the CLI's `review show`, the console) -------------------------

def _identity_field(name):
    return lambda record: _plain((record.get("identity") or {}).get(name))


def _plain(value):
    if value in (None, [], ""):
        return "-"
    return " ".join(value) if isinstance(value, list) else value


LOCATION_WITHHELD = "withheld: a child of this pair is shielded"

# The fields a reviewer compares, as (label, how to read it from a stored record).
DISPLAY_FIELDS = [
    ("family name", _identity_field("family_name")),
    ("given names", _identity_field("given_names")),
    ("preferred name", _identity_field("preferred_name")),
    ("previous names", _identity_field("previous_names")),
    ("date of birth", _identity_field("date_of_birth")),
    ("gender", _identity_field("gender")),
    ("NHS number", _identity_field("nhs_number")),
    ("pupil number", _identity_field("pupil_number")),
    ("address", lambda r: (LOCATION_WITHHELD if r.get("location") == shielding.WITHHELD else
                           ", ".join([*(r.get("address") or {}).get("lines", []), (r.get("address") or {}).get("postcode", "")]) or "-")),
]
