"""Value conflicts: a disagreement is a question, not an overwrite (issue 23, item 8).

When a source of a lower precedence tier (gateway.index.precedence) states a value of a field that
disagrees with the value shown, its value stays its own (in its source record, sealed), readers see
the owner's, and the disagreement is a row of ``value_conflicts`` for a data-quality officer to
settle (gateway.index.settling; `contactgate review conflicts`, the console's review queue). Each
row holds the field, the lower source, the supplier of the shown value, and both values with the
times the gateway received them (``detail``, sealed under the row's id).

Disagreements are looked for each time a child's shown record is derived again (a push by any of
its sources, a merge or unmerge, a settlement): an owner's new value replaces, as it always did, and
a lower source's standing value that now disagrees with it is asked about; one the owner comes to
agree with is withdrawn. Sent again unchanged, it is the
same open question (its dates refreshed); when either value changes, the open question is withdrawn
and a new one (a new id) is asked, so that a settlement only ever applies the values its officer
was shown; a value an officer kept the owner's against is not asked again until one of the
two changes; one that no longer disagrees withdraws its open question.

Rows are found by the lower source record, which a merge moves with its child: a settlement follows
the record wherever it is linked.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from gateway.db import value_conflicts
from gateway.index import sealed
from gateway.index.precedence import (
    FIELDS, IDENTITY_FIELDS, Choice, Rules, Source, canonical, disagrees, provenance_of, stating,
)

OPEN, KEPT, APPLIED, WITHDRAWN = "open", "kept", "applied", "withdrawn"
STATUSES = (OPEN, KEPT, APPLIED, WITHDRAWN)
_IN_CHUNK = 500


class Held(list):
    """The value conflicts of a child's source records (rows), each detail opened when first needed."""

    def __init__(self, v, rows):
        super().__init__(rows)
        self._v = v
        self._details: dict[int, dict] = {}

    def detail(self, row) -> dict:
        if row.id not in self._details:
            self._details[row.id] = open_detail(self._v, row)
        return self._details[row.id]

    def choices(self) -> tuple[Choice, ...]:
        """The settlements in force: each conflict settled for the lower source's value."""
        made = []
        for row in self:
            if row.status == APPLIED:
                detail = self.detail(row)
                made.append(Choice(row.id, row.field, row.org_code, row.source_record_id,
                                   canonical(row.field, detail["submitted"]["value"]),
                                   canonical(row.field, detail["shown"]["value"])))
        return tuple(sorted(made, key=lambda c: -c.conflict_id))  # the latest settlement first


    def held_back(self, sources: list[Source], rules: Rules) -> frozenset:
        """The lower values in question: (field, organisation, stored source record id, canonical
        value) for each open or kept conflict whose source still states the value it was asked about
        and whose owner's record is still one of the child's, of a better tier by the rules in force.
        gateway.index.precedence.derive never shows one unasked (its owner stopping to state the
        field does not let it through)."""
        by_key = {(s.org_code, s.source_record_id): s for s in sources}
        found = set()
        for row in self:
            if row.status not in (OPEN, KEPT):
                continue
            source = by_key.get((row.org_code, row.source_record_id))
            owner = by_key.get((row.owner_org_code, row.owner_source_record_id))
            if source is None or owner is None or owner is source:
                continue
            if rules.tier(row.field, owner.kind) >= rules.tier(row.field, source.kind):
                continue  # by the rules in force the lower source is not lower: nothing to hold back
            asked = canonical(row.field, self.detail(row).get("submitted", {}).get("value"))
            now_stated = [v for s, v in stating([source], row.field)]
            if now_stated and canonical(row.field, now_stated[0]) == asked:
                found.add((row.field, row.org_code, row.source_record_id, asked))
        return frozenset(found)


def open_detail(v, row) -> dict:
    if row.detail is None:
        return {}
    return json.loads(v.open(row.detail, sealed.conflict_context(row.id)))


def held_for(conn: Connection, sources: list[Source]) -> Held:
    """The value conflicts raised by any of ``sources`` (one indexed read)."""
    v = sealed.vault_of(conn)
    wanted = {(s.org_code, s.source_record_id) for s in sources}
    ids = sorted({srid for _, srid in wanted})
    rows = []
    for start in range(0, len(ids), _IN_CHUNK):
        rows.extend(r for r in conn.execute(select(value_conflicts).where(
            value_conflicts.c.source_record_id.in_(ids[start:start + _IN_CHUNK])))
            if (r.org_code, r.source_record_id) in wanted)
    return Held(v, sorted(rows, key=lambda r: r.id))


def _shown(record: dict, field_: str):
    return (record.get("identity") or {}).get(field_) if field_ in IDENTITY_FIELDS else record.get(field_)


def _key(field_: str) -> str:
    return f"identity.{field_}" if field_ in IDENTITY_FIELDS else field_


def _side(source: Source, value) -> dict:
    return {"org": source.org_code, "kind": source.kind, "source_record_id": source.sent_id or source.source_record_id,
            "at": provenance_of(source)["at"], "value": value}


def note(conn: Connection, child_id: str, sources: list[Source], record: dict, provenance: dict,
         arrived: set[tuple[str, str]], rules: Rules, held: Held, now: dt.datetime) -> int:
    """After the child's shown record was derived again (a push, a merge or unmerge, a settlement):
    for each of its sources, raise or refresh a conflict on each field where it is of a lower tier
    than the value shown and disagrees with it; withdraw its open ones that no longer disagree (or
    whose source no longer sits on this child's record set as a lower one). Returns how many
    conflicts are open for the sources of ``arrived`` ((organisation, stored source record id) just
    sent) now. Each field's stating sources are found once, each source's rows by a dict: the cost
    is linear in the child's sources, whatever the batch."""
    v = sealed.vault_of(conn)
    by_source = {(s.org_code, s.source_record_id): s for s in sources}
    rows_of: dict[tuple[str, str], list] = {}
    for row in held:
        rows_of.setdefault((row.org_code, row.source_record_id), []).append(row)
    held_back = {(f, org, srid) for f, org, srid, _ in held.held_back(sources, rules)}
    still_open = 0
    for field_ in FIELDS:
        if not rules.tiers.get(field_):
            continue  # one tier: the most recent wins, nobody is lower
        found = stating(sources, field_)
        values = {id(s): value for s, value in found}
        supplier = provenance.get(_key(field_)) or {}
        owner = by_source.get((supplier.get("org"), supplier.get("source_record_id")))
        best = min((rules.tier(field_, s.kind) for s, _ in found), default=0)
        shown_value = _shown(record, field_)
        for key in sorted(by_source):
            source = by_source[key]
            own = values.get(id(source))
            rows = [r for r in rows_of.get(key, ()) if r.field == field_]
            open_rows = [r for r in rows if r.status == OPEN]
            lower = own is not None and owner is not None and owner is not source and \
                rules.tier(field_, source.kind) > best
            asker, differs = owner, lower and disagrees(field_, own, shown_value)
            if (field_, *key) in held_back and owner is not source:
                # A value in question stays in question when its owner stops stating the field (shown:
                # nothing, or another source's): asked again against what is shown now.
                asker = owner or _former_owner(rows, by_source)
                differs = owner is None or disagrees(field_, own, shown_value)
            if asker is None or not differs:
                for row in open_rows:
                    _set(conn, row.id, status=WITHDRAWN, decided_by=None, decided_at=now, updated_at=now)
                continue
            detail = {"field": field_, "submitted": _side(source, own), "shown": _side(asker, shown_value)}
            asked = (canonical(field_, own), canonical(field_, shown_value))
            same = [r for r in open_rows if _asked(held.detail(r)) == asked]
            for row in open_rows:  # a question whose values changed is another question (a new id)
                if row not in same:
                    _set(conn, row.id, status=WITHDRAWN, decided_by=None, decided_at=now, updated_at=now)
            if any(r.status == KEPT and _asked(held.detail(r)) == asked for r in rows):
                continue  # an officer kept the shown value against this very value
            if key in arrived:
                still_open += 1
            if same:  # the same values again: only the dates (and the asker's record) are news
                row = same[-1]
                if held.detail(row) != detail:
                    _set(conn, row.id, detail=v.seal(json.dumps(detail, sort_keys=True), sealed.conflict_context(row.id)),
                         owner_org_code=asker.org_code, owner_source_record_id=asker.source_record_id, updated_at=now)
                continue
            conflict_id = conn.execute(insert(value_conflicts).values(
                child_id=child_id, field=field_, org_code=source.org_code, source_record_id=source.source_record_id,
                owner_org_code=asker.org_code, owner_source_record_id=asker.source_record_id, status=OPEN,
                created_at=now, updated_at=now)).inserted_primary_key[0]
            _set(conn, conflict_id, detail=v.seal(json.dumps(detail, sort_keys=True), sealed.conflict_context(conflict_id)))
    return still_open


def _former_owner(rows, by_source: dict) -> Source | None:
    """The owner the latest of a source's conflicts on a field was asked against, if still on the child."""
    for row in sorted(rows, key=lambda r: r.id, reverse=True):
        found = by_source.get((row.owner_org_code, row.owner_source_record_id))
        if found is not None:
            return found
    return None


def _asked(detail: dict) -> tuple[str, str]:
    field_ = detail.get("field")
    return (canonical(field_, detail.get("submitted", {}).get("value")),
            canonical(field_, detail.get("shown", {}).get("value")))


def _set(conn: Connection, conflict_id: int, **values) -> None:
    conn.execute(update(value_conflicts).where(value_conflicts.c.id == conflict_id).values(**values))
