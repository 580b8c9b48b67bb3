"""The value conflicts of the review queue, as a data-quality officer works them (`contactgate
review conflicts`, `review conflict ID`, `review settle ID --keep shown|submitted`; raised by
gateway.index.conflicts).

- ``kept`` (``--keep shown``): the value shown stands; the lower source's value stays its own and is
  not asked about again until it (or the value shown) changes.
- ``applied`` (``--keep submitted``): the lower source's value is shown from now on, as long as its
  source still states it and the owner still states the value it overruled; a new value from the
  owner replaces it, as any owner's new value does.

Reading a conflict's values is access to the child's record: audited, in the same transaction.
Settling is one transaction with its audit entry; a refusal (ReviewError) changes nothing, and the
command line and the console audit it. When the child is shielded, the location fields' conflicts
(address, carers, educational setting, GP practice) show neither values nor organisations and
cannot be settled, unless the officer holds one of CONTACTGATE_REVIEW_SHIELD_ROLES (as `review
show` withholds a shielded pair's location).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from gateway.audit import chain as audit
from gateway.db import children, source_records, value_conflicts
from gateway.index import conflicts, precedence, sealed, shielding, store, writing
from gateway.index.review import ROLE, ReviewError

LOCATION_FIELDS = (*shielding.LOCATION_FIELDS, "carers")  # a carer's phone, email and address place the child
KEEP = {"shown": conflicts.KEPT, "submitted": conflicts.APPLIED}


def _child_of(conn: Connection, org_code: str, source_record_id: str, fallback: str) -> str:
    """The child a source record sits on now (merges and unmerges move it), merges resolved."""
    found = conn.execute(select(source_records.c.child_id).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id == source_record_id)).scalar()
    child = found or fallback
    return store.resolve(conn, child) or child


def _now_held(conn: Connection, row) -> tuple[str, bool, bool]:
    """(the child the conflict's lower source record is held under now, shielded, archived).
    Shielded if that child or the child holding the owner's record is: a conflict is withheld by
    where its records are now, not by the child it was raised on."""
    current = _child_of(conn, row.org_code, row.source_record_id, row.child_id)
    owner = _child_of(conn, row.owner_org_code, row.owner_source_record_id, current)
    flags = {r.child_id: r for r in conn.execute(
        select(children.c.child_id, children.c.shielded, children.c.archived_at)
        .where(children.c.child_id.in_(sorted({current, owner}))))}
    mine = flags.get(current)
    return (current, any(bool(r.shielded) for r in flags.values()),
            bool(mine and mine.archived_at is not None))


def _withheld(field_: str, shielded: bool, officer_roles: Collection[str], shield_roles: Collection[str]) -> bool:
    return shielded and field_ in LOCATION_FIELDS and not set(officer_roles) & set(shield_roles)


def _anonymous(shielded: bool, officer_roles: Collection[str], shield_roles: Collection[str]) -> bool:
    """A shielded child's suppliers are named to shield roles only, on every field."""
    return shielded and not set(officer_roles) & set(shield_roles)


def _side(detail: dict, name: str, withheld: bool, with_value: bool, anonymous: bool = False) -> dict:
    side = dict(detail.get(name) or {})
    if withheld:
        return {"withheld": shielding.WITHHELD}
    if anonymous:  # a shielded child: who holds it (a GP's, a school's code) would place it
        side.update({key: shielding.WITHHELD for key in ("org", "kind", "source_record_id") if key in side})
    if not with_value:
        side.pop("value", None)
        side.pop("source_record_id", None)
    return side


def _entry(row, detail: dict, child: str, shielded: bool, withheld: bool, with_value: bool,
           anonymous: bool = False) -> dict:
    return {"id": row.id, "kind": "value_conflict", "status": row.status, "field": row.field,
            "child_id": child, "raised_on": row.child_id, "shielded": shielded, "location_withheld": withheld,
            "submitted": _side(detail, "submitted", withheld, with_value, anonymous),
            "shown": _side(detail, "shown", withheld, with_value, anonymous),
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
            "decided_by": row.decided_by, "decided_at": row.decided_at.isoformat() if row.decided_at else None}


def list_conflicts(conn: Connection, status: str | None = conflicts.OPEN, limit: int = 100, *,
                   officer_roles: Collection[str] = (), shield_roles: Collection[str] = frozenset()) -> list[dict]:
    """The value conflicts, oldest first: field, child, both suppliers and dates (no values). An
    archived child's are left out (and `show` refuses them), as `settle` refuses them."""
    query = select(value_conflicts)
    if status:
        query = query.where(value_conflicts.c.status == status)
    v = sealed.vault_of(conn)
    entries = []
    for row in conn.execute(query.order_by(value_conflicts.c.id).limit(limit)).all():
        child, shielded, archived = _now_held(conn, row)
        if archived:  # retention: an archived child is in no queue (`contactgate retention show`)
            continue
        withheld = _withheld(row.field, shielded, officer_roles, shield_roles)
        entries.append(_entry(row, conflicts.open_detail(v, row), child, shielded, withheld, with_value=False,
                              anonymous=_anonymous(shielded, officer_roles, shield_roles)))
    return entries


def _row(conn: Connection, conflict_id: int, lock: bool = False):
    query = select(value_conflicts).where(value_conflicts.c.id == conflict_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise ReviewError(f"no value conflict {conflict_id}")
    return row


def show(conn: Connection, trail: audit.AuditTrail, conflict_id: int, officer: str, *,
         officer_roles: Collection[str] = (), shield_roles: Collection[str] = frozenset()) -> dict:
    """Both values, who supplied each (their source record ids as sent) and when. Audited."""
    row = _row(conn, conflict_id)
    child, shielded, archived = _now_held(conn, row)
    if archived:
        raise ReviewError(f"child {child} is archived (retention): see `contactgate retention show`")
    withheld = _withheld(row.field, shielded, officer_roles, shield_roles)
    mark = f" {shielding.audit_mark(not withheld)}" if shielded else ""
    trail.append(conn, audit.Entry(operation="review.conflict.show", outcome="done", user_id=officer, role=ROLE,
                                   child_ids=sorted({row.child_id, child}),
                                   detail=f"value conflict {conflict_id} ({row.field}) shown{mark}"))
    detail = conflicts.open_detail(sealed.vault_of(conn), row)
    return _entry(row, detail, child, shielded, withheld, with_value=True,
                  anonymous=_anonymous(shielded, officer_roles, shield_roles))


def settle(conn: Connection, trail: audit.AuditTrail, conflict_id: int, keep: str, officer: str, now: dt.datetime, *,
           officer_roles: Collection[str] = (), shield_roles: Collection[str] = frozenset()) -> str:
    """Settle an open value conflict: ``keep`` ``shown`` (the owner's value stands) or ``submitted``
    (the lower source's value is shown). Returns the new status."""
    if keep not in KEEP:
        raise ReviewError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
    # The child's row first, then the conflict's: the order a push takes them in (no deadlock); a
    # child merged meanwhile is followed to its survivor, as a push follows it.
    child, _, _ = _now_held(conn, _row(conn, conflict_id))
    writing._lock_live_child(conn, child)
    row = _row(conn, conflict_id, lock=True)
    if row.status != conflicts.OPEN:
        raise ReviewError(f"value conflict {conflict_id} is already {row.status}")
    child, shielded, archived = _now_held(conn, row)
    if archived:
        raise ReviewError(f"child {child} is archived (retention): see `contactgate retention show`")
    if _withheld(row.field, shielded, officer_roles, shield_roles):
        raise ReviewError(f"value conflict {conflict_id}: the child is shielded and its {row.field} is withheld "
                          f"from your roles (CONTACTGATE_REVIEW_SHIELD_ROLES)")
    status = KEEP[keep]
    conn.execute(update(value_conflicts).where(value_conflicts.c.id == conflict_id).values(
        status=status, decided_by=officer, decided_at=now, updated_at=now))
    detail = conflicts.open_detail(sealed.vault_of(conn), row)
    if status == conflicts.APPLIED:
        writing._refresh_child(conn, child, now)
        shown = (writing.provenance(conn, child)["shown"].get(
            f"identity.{row.field}" if row.field in precedence.IDENTITY_FIELDS else row.field) or {})
        if shown.get("settled") != conflict_id:  # the source no longer states it, or the owner moved on
            raise ReviewError(f"value conflict {conflict_id}: the values changed since it was raised (the "
                              f"{row.field} is now stated otherwise): keep the value shown, or wait for the "
                              f"new question")
        what = f"the value from {row.org_code} applied over {row.owner_org_code}'s"
    else:
        what = f"the value shown, from {row.owner_org_code}, kept over {row.org_code}'s"
    trail.append(conn, audit.Entry(
        operation="review.settle", outcome="done", user_id=officer, role=ROLE, child_ids=sorted({row.child_id, child}),
        detail=f"value conflict {conflict_id} ({row.field}): {what} "
               f"(received {detail.get('submitted', {}).get('at')} and {detail.get('shown', {}).get('at')})"))
    return status


def display(entry: dict, side: str) -> str:
    """One side's value as a reviewer reads it (the console)."""
    value = (entry.get(side) or {}).get("value")
    if value in (None, "", [], {}):
        return "-"
    if entry["field"] == "address" or (isinstance(value, dict) and "postcode" in value):
        return ", ".join([*value.get("lines", []), *([value["town"]] if value.get("town") else []), value.get("postcode", "")])
    if entry["field"] == "carers":
        return "; ".join(" ".join(str(p) for p in (c.get("name"), f"({c.get('relationship')})", c.get("phone"),
                                                    c.get("email")) if p) for c in value)
    if isinstance(value, dict):
        return ", ".join(str(v) for v in value.values() if v)
    return " ".join(value) if isinstance(value, list) else str(value)
