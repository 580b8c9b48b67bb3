"""Index operations. Each takes a Connection so that it runs inside the exchange's transaction,
together with the audit entry that records it.

Lookups stay index lookups at national scale: by child id (primary key), by source record
(primary key), by NHS / pupil number (unique indexes), by normalised family name + date of birth
(composite index).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from gateway.db import children, involvements, review_queue, source_records
from gateway.index import ids
from gateway.index.model import (
    Candidate, ChildUpdate, ChildView, Contact, FindQuery, Identity, Involvement, UnreadableUpdate,
    UpdateResult,
    address_from_json, carer_from_json, family_name_key, identity_from_json, locality, nhs_number_is_valid,
    normalise_name, normalise_postcode, setting_from_json,
)

MAX_CANDIDATES = 10

_CHILD_BY_ID = select(children).where(children.c.child_id == bindparam("child_id"))
_RECORD_FOR_UPDATE = (select(children.c.record).where(children.c.child_id == bindparam("child_id"))
                      .with_for_update())
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :bucket)")
_INVOLVEMENTS_OF = (select(involvements).where(involvements.c.child_id == bindparam("child_id"))
                    .order_by(involvements.c.org_code, involvements.c.id))


def apply_updates(conn: Connection, org_code: str, updates: list[ChildUpdate | UnreadableUpdate],
                  now: dt.datetime) -> list[UpdateResult]:
    """Apply a batch inside the caller's transaction, one result per update in order. Each update
    runs in its own savepoint, so one record the database will not take is rejected alone instead
    of failing the batch; so is one the connector could not read (an UnreadableUpdate)."""
    _lock_identities(conn, org_code, [u for u in updates if isinstance(u, ChildUpdate)])
    results = []
    for update_ in updates:
        if isinstance(update_, UnreadableUpdate):
            results.append(UpdateResult(update_.source_record_id, "rejected", detail=update_.reason))
            continue
        try:
            with conn.begin_nested():
                results.append(_apply_update(conn, org_code, update_, now))
        except (IntegrityError, DataError):
            results.append(UpdateResult(update_.source_record_id, "rejected",
                                        detail="the record could not be stored as sent"))
    return results


LOCK_BUCKETS = 256  # bounds the advisory locks one batch takes, whatever its size
_LOCK_NAMESPACE = 0x4347  # "CG": the first key of pg_advisory_xact_lock(int, int)


def _lock_identities(conn: Connection, org_code: str, updates: list[ChildUpdate]) -> None:
    """Serialise concurrent batches that touch the same child (PostgreSQL; SQLite transactions
    already hold the write lock). Matching is check-then-insert, so two batches carrying the same
    new child must not interleave; two batches writing the same existing child must not lose each
    other's changes. Every key a batch could meet a child by (its source records, name + birth
    date, identifiers, and the children those already lead to) is hashed into one of
    LOCK_BUCKETS buckets, and the buckets are locked up front in one order: no deadlock among
    batches, and never more than LOCK_BUCKETS locks however large the batch."""
    if conn.dialect.name != "postgresql":
        return
    keys = set()
    for update_ in updates:
        identity = update_.identity
        keys.add(("source", org_code, update_.source_record_id))
        keys.add(("name", family_name_key(identity.family_name), str(identity.date_of_birth)))
        if identity.nhs_number:
            keys.add(("nhs", identity.nhs_number))
        if identity.pupil_number:
            keys.add(("pupil", identity.pupil_number))
    keys.update(("child", child_id) for child_id in _children_reached(conn, org_code, updates))
    buckets = sorted({int.from_bytes(hashlib.sha256(repr(k).encode()).digest()[:4], "big") % LOCK_BUCKETS
                      for k in keys})
    for bucket in buckets:
        conn.execute(_ADVISORY_LOCK, {"namespace": _LOCK_NAMESPACE, "bucket": bucket})


def _children_reached(conn: Connection, org_code: str, updates: list[ChildUpdate]) -> set[str]:
    """The existing children a batch will write: through its source links and identifiers."""
    srids = [u.source_record_id for u in updates]
    nhs = [u.identity.nhs_number for u in updates if u.identity.nhs_number]
    pupils = [u.identity.pupil_number for u in updates if u.identity.pupil_number]
    reached = set(conn.execute(select(source_records.c.child_id).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id.in_(srids))).scalars())
    if nhs:
        reached.update(conn.execute(select(children.c.child_id).where(children.c.nhs_number.in_(nhs))).scalars())
    if pupils:
        reached.update(conn.execute(select(children.c.child_id)
                                    .where(children.c.pupil_number.in_(pupils))).scalars())
    return reached


def _rejection(update_: ChildUpdate, today: dt.date) -> str | None:
    identity = update_.identity
    if identity.nhs_number and not nhs_number_is_valid(identity.nhs_number):
        return "NHS number fails its check digit"
    if identity.date_of_birth > today:
        return "date of birth is in the future"
    if not normalise_name(identity.family_name):
        return "family name has no letters"
    for involvement in update_.involvements:
        if involvement.end is not None and involvement.end < involvement.start:
            return "an involvement ends before it starts"
    return None


def _child_by_identifier(conn: Connection, update_: ChildUpdate) -> set[str]:
    found = set()
    identity = update_.identity
    if identity.nhs_number:
        found.update(conn.execute(select(children.c.child_id)
                                  .where(children.c.nhs_number == identity.nhs_number)).scalars())
    if identity.pupil_number:
        found.update(conn.execute(select(children.c.child_id)
                                  .where(children.c.pupil_number == identity.pupil_number)).scalars())
    return found


def _apply_update(conn: Connection, org_code: str, update_: ChildUpdate, now: dt.datetime) -> UpdateResult:
    srid = update_.source_record_id
    reason = _rejection(update_, now.date())
    if reason:
        return UpdateResult(srid, "rejected", detail=reason)
    linked = conn.execute(select(source_records.c.child_id).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id == srid)).scalar()
    by_identifier = _child_by_identifier(conn, update_)

    if linked is not None:
        if by_identifier - {linked}:
            return _hold_for_review(conn, org_code, update_, sorted(by_identifier - {linked})[0], now)
        if _identifiers_disagree(_held_identity(conn, linked), update_.identity):
            return _hold_for_review(conn, org_code, update_, linked, now)
        _write_child(conn, linked, update_, now)
        _replace_involvements(conn, linked, org_code, update_.involvements)
        return UpdateResult(srid, "updated", linked)

    if len(by_identifier) > 1:
        return _hold_for_review(conn, org_code, update_, sorted(by_identifier)[0], now)
    if by_identifier:
        child_id = by_identifier.pop()
        held = _held_identity(conn, child_id)
        if _identifiers_disagree(held, update_.identity) or not _same_person(held, update_.identity):
            # One identifier in common but the rest disagrees: a keying error or a different child.
            # Merging would overwrite one child with another; a person decides.
            return _hold_for_review(conn, org_code, update_, child_id, now)
        _link(conn, org_code, srid, child_id)
        _write_child(conn, child_id, update_, now)
        _replace_involvements(conn, child_id, org_code, update_.involvements)
        return UpdateResult(srid, "matched", child_id)

    possible = _possible_duplicate(conn, update_)
    if possible is not None:
        return _hold_for_review(conn, org_code, update_, possible, now)

    child_id = ids.new_child_id()
    _write_child(conn, child_id, update_, now, create=True)
    _link(conn, org_code, srid, child_id)
    _replace_involvements(conn, child_id, org_code, update_.involvements)
    return UpdateResult(srid, "created", child_id)


def _held_identity(conn: Connection, child_id: str) -> dict:
    return json.loads(conn.execute(_CHILD_BY_ID, {"child_id": child_id}).first().record)["identity"]


def _identifiers_disagree(held: dict, incoming: Identity) -> bool:
    return any(getattr(incoming, field) and held.get(field) and held[field] != getattr(incoming, field)
               for field in ("nhs_number", "pupil_number"))


def _same_person(held: dict, incoming: Identity) -> bool:
    """Birth date equal, a family name in common (current or previous), a given name in common."""
    if held["date_of_birth"] != incoming.date_of_birth.isoformat():
        return False
    held_families = {family_name_key(n) for n in (held["family_name"], *(held.get("previous_names") or ()))}
    incoming_families = {family_name_key(n) for n in (incoming.family_name, *incoming.previous_names)}
    held_given = {normalise_name(n) for n in (*held["given_names"], held.get("preferred_name") or "") if n}
    incoming_given = {normalise_name(n) for n in (*incoming.given_names, incoming.preferred_name or "") if n}
    return bool(held_families & incoming_families) and bool(held_given & incoming_given)


def _possible_duplicate(conn: Connection, update_: ChildUpdate) -> str | None:
    """A record with the same family name, first given name and birth date, and no identifier
    that tells them apart, is probably the same child: a person decides."""
    identity = update_.identity
    rows = conn.execute(select(children.c.child_id, children.c.record, children.c.nhs_number,
                               children.c.pupil_number).where(
        children.c.family_name_norm == family_name_key(identity.family_name),
        children.c.date_of_birth == identity.date_of_birth)).all()
    first_given = normalise_name(identity.given_names[0])
    for row in rows:
        record = json.loads(row.record)
        if normalise_name(record["identity"]["given_names"][0]) != first_given:
            continue
        if identity.nhs_number and row.nhs_number and row.nhs_number != identity.nhs_number:
            continue
        if identity.pupil_number and row.pupil_number and row.pupil_number != identity.pupil_number:
            continue
        return row.child_id
    return None


def _hold_for_review(conn: Connection, org_code: str, update_: ChildUpdate, candidate: str,
                     now: dt.datetime) -> UpdateResult:
    conn.execute(review_queue.insert().values(
        org_code=org_code, source_record_id=update_.source_record_id, candidate_child_id=candidate,
        submitted=json.dumps({"record": update_.record(), "involvements": [
            {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in vars(i).items()}
            for i in update_.involvements]}),
        created_at=now))
    return UpdateResult(update_.source_record_id, "review",
                        detail="possible duplicate of an existing record; held for review")


def _link(conn: Connection, org_code: str, srid: str, child_id: str) -> None:
    conn.execute(source_records.insert().values(org_code=org_code, source_record_id=srid, child_id=child_id))


def _merged_record(existing: dict, incoming: dict) -> dict:
    """What an update states replaces what was held; what it leaves out is kept. Sources differ in
    what they know (a school knows the pupil number, a GP the NHS number): a later update from one
    must not erase what another supplied."""
    merged = dict(existing)
    for key, value in incoming.items():
        if key == "identity":
            identity = dict(existing.get("identity") or {})
            for field, stated in value.items():
                if field == "previous_names":
                    identity[field] = list(dict.fromkeys([*(identity.get(field) or []), *stated]))
                elif field == "gender" and stated == "unknown" and identity.get(field):
                    continue  # "unknown" is the schema's way of not saying: keep what is known
                elif stated not in (None, [], ""):
                    identity[field] = stated
            merged["identity"] = identity
        elif value not in (None, [], ""):
            merged[key] = value
    return merged


def _write_child(conn: Connection, child_id: str, update_: ChildUpdate, now: dt.datetime,
                 create: bool = False) -> None:
    record = update_.record()
    if not create:  # read for update: a concurrent writer of this child waits, nothing is lost
        held = conn.execute(_RECORD_FOR_UPDATE, {"child_id": child_id}).scalar_one()
        record = _merged_record(json.loads(held), record)
    identity = record["identity"]
    values = dict(
        record=json.dumps(record, sort_keys=True),
        family_name_norm=family_name_key(identity["family_name"]),
        date_of_birth=update_.identity.date_of_birth,
        nhs_number=identity.get("nhs_number"),
        pupil_number=identity.get("pupil_number"),
        updated_at=now,
    )
    if create:
        conn.execute(children.insert().values(child_id=child_id, shielded=False, created_at=now, **values))
    else:
        conn.execute(update(children).where(children.c.child_id == child_id).values(**values))


def _replace_involvements(conn: Connection, child_id: str, org_code: str,
                          new: tuple[Involvement, ...]) -> None:
    """A source system owns its own involvements: each update states the whole current set."""
    conn.execute(delete(involvements).where(involvements.c.child_id == child_id,
                                            involvements.c.org_code == org_code))
    if new:
        conn.execute(involvements.insert(), [
            dict(child_id=child_id, org_code=org_code, service=i.service,
                 practitioner_name=i.practitioner_name, role=i.role, phone=i.phone, email=i.email,
                 start=i.start, end=i.end, caf_assessment=i.caf_assessment,
                 lead_professional=i.lead_professional)
            for i in new])


def find_children(conn: Connection, query: FindQuery) -> list[Candidate]:
    """Exact matching on an identifier, or on normalised family name + date of birth, narrowed by
    whatever else was given."""
    select_ = select(children.c.child_id, children.c.record, children.c.shielded)
    if query.nhs_number:
        select_ = select_.where(children.c.nhs_number == query.nhs_number)
    elif query.pupil_number:
        select_ = select_.where(children.c.pupil_number == query.pupil_number)
    else:
        select_ = select_.where(children.c.family_name_norm == family_name_key(query.family_name or ""),
                                children.c.date_of_birth == query.date_of_birth)
    candidates = []
    for row in conn.execute(select_.order_by(children.c.child_id).limit(200)):
        record = json.loads(row.record)
        identity = identity_from_json(record["identity"])
        address = address_from_json(record.get("address"))
        if query.family_name and normalise_name(identity.family_name) != normalise_name(query.family_name):
            continue
        if query.date_of_birth and identity.date_of_birth != query.date_of_birth:
            continue
        if query.given_name and normalise_name(query.given_name) not in {
                normalise_name(n) for n in (*identity.given_names, identity.preferred_name or "")}:
            continue
        if query.gender and identity.gender != query.gender:
            continue
        # A shielded child's location must not be confirmable by guessing: location criteria
        # neither narrow nor exclude a shielded record.
        if query.postcode and not row.shielded and (
                address is None or normalise_postcode(address.postcode) != normalise_postcode(query.postcode)):
            continue
        candidates.append(Candidate(
            child_id=row.child_id, family_name=identity.family_name, given_names=identity.given_names,
            date_of_birth=identity.date_of_birth, gender=identity.gender,
            locality=None if row.shielded else locality(address)))
        if len(candidates) == MAX_CANDIDATES:
            break
    return candidates


def get_child(conn: Connection, child_id: str, today: dt.date) -> ChildView | None:
    canonical = ids.normalise(child_id)
    if canonical is None:
        return None
    row = conn.execute(_CHILD_BY_ID, {"child_id": canonical}).first()
    if row is None:
        return None
    record = json.loads(row.record)
    contacts = []
    for inv in conn.execute(_INVOLVEMENTS_OF, {"child_id": canonical}):
        involvement = Involvement(
            service=inv.service, start=inv.start, caf_assessment=inv.caf_assessment,
            lead_professional=inv.lead_professional, practitioner_name=inv.practitioner_name,
            role=inv.role, phone=inv.phone, email=inv.email, end=inv.end)
        if involvement.is_current(today):
            contacts.append(Contact(inv.org_code, involvement))
    return ChildView(
        child_id=canonical, shielded=bool(row.shielded),
        identity=identity_from_json(record["identity"]),
        address=address_from_json(record.get("address")),
        carers=tuple(carer_from_json(c) for c in record.get("carers") or ()),
        educational_setting=setting_from_json(record.get("educational_setting")),
        gp_practice=setting_from_json(record.get("gp_practice")),
        contacts=tuple(contacts),
    )
