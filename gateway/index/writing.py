"""The index's rows: a child's row with its shown record and provenance, each source record, the
blocking keys (blind indexes) a child is filed under, the involvements; and the same rows read back
(a child's source records, what the index shows and who supplied each value). Sealed and blinded
here (gateway.index.sealed), whoever writes them: one record at a time, a batch
(gateway.index.batches), migration 0005 (gateway.index.legacy) or the bulk loader below. Each
takes a Connection so that it runs inside the exchange's transaction, together with the audit
entry that records it.

Each source keeps its own record; what the index shows is derived by precedence
(gateway.index.precedence), with who supplied each value. An organisation restates its own
involvements and values only.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from gateway.db import blocking_keys, children, involvements, organisations, source_records
from gateway.index import conflicts, ids, linkage, precedence, retention, sealed
from gateway.index.model import ChildUpdate, Involvement, family_name_key
from gateway.index.precedence import Source, derive
from gateway.security import vault as vault_mod


MAX_MERGE_HOPS = 16  # an old id resolves through at most this many merges
_CHILD_BY_ID = select(children).where(children.c.child_id == bindparam("child_id"))
_CHILD_FOR_UPDATE = (select(children.c.child_id).where(children.c.child_id == bindparam("child_id"))
                     .with_for_update())
_DELETE_SOURCE_INVOLVEMENTS = delete(involvements).where(
    involvements.c.org_code == bindparam("o"), involvements.c.source_record_id == bindparam("s"))
_DELETE_UNASSIGNED_INVOLVEMENTS = delete(involvements).where(
    involvements.c.child_id == bindparam("c"), involvements.c.org_code == bindparam("o"),
    involvements.c.source_record_id.is_(None))


def _blinded_keys(v, keys) -> "_Keys":
    """The record's blocking keys as stored (blind indexes), and which of them are identifiers."""
    identifiers = {k for k in keys if k.startswith(linkage.IDENTIFIER_KEY_PREFIXES)}
    return _Keys(sealed.blind_keys(v, keys), frozenset(sealed.blind_keys(v, identifiers)))


class _Keys(frozenset):
    """Blinded blocking keys; ``identifiers``: those of NHS and pupil numbers."""

    def __new__(cls, keys, identifiers):
        made = super().__new__(cls, keys)
        made.identifiers = identifiers
        return made


def _create_child(conn: Connection, org_code: str, update_: ChildUpdate, keys: set[str], now: dt.datetime,
                  retention_schema: bool = True) -> str:
    """A new child whose one source is this record: its shown record is the record itself."""
    child_id = ids.new_child_id()
    text_ = _record_text(update_)
    v = sealed.vault_of(conn)
    stored_id = sealed.blind_source_id(v, org_code, update_.source_record_id)
    record, provenance = derive([Source(org_code, stored_id, None, now, text_)])
    conn.execute(children.insert().values(
        child_id=child_id, shielded=False, created_at=now, updated_at=now,
        **_shown_values(v, child_id, record, provenance),
        **({"archive_due": retention.archive_due(record)} if retention_schema else {})))
    _store_source(conn, org_code, update_, child_id, now, text_)
    _file_under(conn, child_id, keys, held=set())
    return child_id


def _shown_values(v, child_id: str, record: dict, provenance: dict) -> dict:
    """The columns of a child's shown record: sealed under the child's id. The clear columns of
    before 0007 (the family name's key, the birth date) are retired."""
    if isinstance(v, linkage_plain_type()):  # migration 0005, before anything was sealed
        identity = record["identity"]
        return dict(record=json.dumps(record, sort_keys=True), provenance=json.dumps(provenance, sort_keys=True),
                    family_name_norm=family_name_key(identity["family_name"]),
                    date_of_birth=dt.date.fromisoformat(identity["date_of_birth"]))
    return dict(record=v.seal(json.dumps(record, sort_keys=True), sealed.child_context("record", child_id)),
                provenance=v.seal(json.dumps(provenance, sort_keys=True), sealed.child_context("provenance", child_id)),
                family_name_norm="", date_of_birth=sealed.RETIRED_DATE)


def linkage_plain_type():
    from gateway.security.vault import Plain

    return Plain


def _open_shown(v, row, column: str = "record") -> dict:
    value = getattr(row, column)
    if value is None:
        return {}
    return json.loads(v.open(value, sealed.child_context(column, row.child_id)))


def _record_text(update_: ChildUpdate) -> str:
    return json.dumps(update_.record(), sort_keys=True)


def _store_source(conn: Connection, org_code: str, update_: ChildUpdate, child_id: str, now: dt.datetime,
                  record: str | None = None, existing: bool = False) -> None:
    record = record or _record_text(update_)
    v = sealed.vault_of(conn)
    stored_id = sealed.blind_source_id(v, org_code, update_.source_record_id)
    if isinstance(v, linkage_plain_type()):
        token = record  # migration 0005: as before 0007
    else:
        token = sealed.seal_source(v, org_code, stored_id, update_.source_record_id, record)
    if existing:
        conn.execute(update(source_records).where(
            source_records.c.org_code == org_code,
            source_records.c.source_record_id == stored_id).values(record=token, received_at=now))
    else:
        conn.execute(source_records.insert().values(
            org_code=org_code, source_record_id=stored_id, child_id=child_id,
            record=token, received_at=now))
    _replace_involvements(conn, child_id, org_code, stored_id, update_.involvements)


_LIVE_CHILD = (select(children.c.merged_into).where(children.c.child_id == bindparam("child_id"))
               .with_for_update())


def _lock_live_child(conn: Connection, child_id: str) -> str:
    """Lock the child's row; if it was merged meanwhile, the survivor's instead (which is returned).
    A merge locks both rows, so a record is never stored on a child that has just been merged away."""
    for _ in range(MAX_MERGE_HOPS):
        merged_into = conn.execute(_LIVE_CHILD, {"child_id": child_id}).scalar_one()
        if merged_into is None:
            return child_id
        child_id = merged_into
    raise RuntimeError("merge chain too long")  # merges keep chains flat: not reached


def _refresh_child(conn: Connection, child_id: str, now: dt.datetime, retention_schema: bool = True, *,
                   arrived: frozenset[tuple[str, str]] = frozenset(), conflicts_schema: bool = True) -> int:
    """Derive what the index shows for the child from its source records, by the precedence in
    force and the value conflicts settled for a lower source's value, and file it under every key
    any of them gives. The child's row is locked first: a concurrent writer waits. Every source's
    disagreements with what is shown are value conflicts (gateway.index.conflicts); ``arrived``: the
    (organisation, stored source record id) just sent, whose open conflicts are counted.
    ``retention_schema=False``: only for migration 0005, which runs before the retention columns;
    ``conflicts_schema=False``: migrations before 0015 (no value_conflicts table yet). Returns how
    many value conflicts of ``arrived`` sources are open on the child."""
    conn.execute(_CHILD_FOR_UPDATE, {"child_id": child_id}).scalar_one()
    sources = _sources(conn, child_id)
    if not sources:  # every record moved to another child (merged): nothing to show under this id
        return 0
    rules = precedence.rules_of(conn)
    held = conflicts.held_for(conn, sources) if conflicts_schema and retention_schema else conflicts.Held(None, [])
    record, provenance = derive(sources, rules, held.choices(), held.held_back(sources, rules))
    v = sealed.vault_of(conn)
    conn.execute(update(children).where(children.c.child_id == child_id).values(
        updated_at=now, **_shown_values(v, child_id, record, provenance),
        **({"archive_due": retention.archive_due(record)} if retention_schema else {})))
    asked = 0
    if conflicts_schema and retention_schema:  # every source's disagreements, whoever sent (review 5)
        asked = conflicts.note(conn, child_id, sources, record, provenance, arrived, rules, held, now)
    if retention_schema and retention.is_archived(conn, child_id):  # ---- retention: filed under no key
        return asked
    wanted = set()
    for source in sources:
        wanted |= _keys_of(v, source)
    _file_under(conn, child_id, wanted)
    return asked


def _file_under(conn: Connection, child_id: str, wanted: set[str], held: set[str] | None = None,
                remove: bool = True) -> None:
    """File the child under ``wanted`` keys; with ``remove``, under no others."""
    if held is None:
        held = set(conn.execute(select(blocking_keys.c.key).where(blocking_keys.c.child_id == child_id)).scalars())
    if remove and held - wanted:
        conn.execute(delete(blocking_keys).where(blocking_keys.c.child_id == child_id,
                                                 blocking_keys.c.key.in_(sorted(held - wanted))))
    if wanted - held:
        conn.execute(insert(blocking_keys), [{"key": k, "child_id": child_id} for k in sorted(wanted - held)])


def _replace_involvements(conn: Connection, child_id: str, org_code: str, srid: str,
                          new: tuple[Involvement, ...]) -> None:
    """A source record owns its own involvements: each update states its whole current set. No
    other organisation's, nor another record's of the same organisation, is touched."""
    conn.execute(_DELETE_SOURCE_INVOLVEMENTS, {"o": org_code, "s": srid})
    # Involvements from before 0005 whose source record is not known (the organisation had several
    # records of the child): each update then restated the organisation's whole set, so it still does.
    conn.execute(_DELETE_UNASSIGNED_INVOLVEMENTS, {"c": child_id, "o": org_code})
    if new:
        conn.execute(involvements.insert(), _involvement_rows(sealed.vault_of(conn), child_id, org_code, srid, new))


def _involvement_rows(v, child_id: str, org_code: str, srid: str, new: tuple[Involvement, ...]) -> list[dict]:
    if isinstance(v, linkage_plain_type()):  # migration 0005, before the sealed column
        people = [dict(practitioner_name=i.practitioner_name, phone=i.phone, email=i.email) for i in new]
    else:
        people = [dict(sealed=sealed.seal_involvement(v, org_code, srid, dict(
            practitioner_name=i.practitioner_name, phone=i.phone, email=i.email))) for i in new]
    return [dict(child_id=child_id, org_code=org_code, source_record_id=srid, service=i.service,
                 role=i.role, start=i.start, end=i.end, caf_assessment=i.caf_assessment,
                 lead_professional=i.lead_professional, **person)
            for i, person in zip(new, people)]


def _sources(conn: Connection, child_id: str) -> list[Source]:
    return _sources_of(conn, [child_id]).get(child_id, [])


def _sources_of(conn: Connection, child_ids: list[str]) -> dict[str, list[Source]]:
    if not child_ids:
        return {}
    found: dict[str, list[Source]] = {}
    v = sealed.vault_of(conn)
    query = (select(source_records.c.child_id, source_records.c.org_code, source_records.c.source_record_id,
                    source_records.c.record, source_records.c.received_at, organisations.c.kind)
             .select_from(source_records.outerjoin(organisations, organisations.c.code == source_records.c.org_code))
             .where(source_records.c.child_id.in_(child_ids)))
    for row in conn.execute(query):
        if row.record is not None:
            sent_id, record_text = sealed.open_source(v, row.org_code, row.source_record_id, row.record)
            found.setdefault(row.child_id, []).append(
                Source(row.org_code, row.source_record_id, row.kind, row.received_at, record_text, sent_id))
    return found


# Source records whose comparable form is kept: a batch's candidates recur within it (households,
# a child's other records). Each entry is a child's record (~2.5 KB with its form and keys): 20,000
# of them made each worker grow for hours under load, holding children's records (issue 24).
CACHED_SOURCES = 256


@functools.lru_cache(maxsize=CACHED_SOURCES)
def _person_and_keys(record_text: str) -> tuple[linkage.Person, frozenset[str]]:
    """A stored source record's comparable form and keys (pure functions of its JSON: cached, so a
    child's other records are not normalised again within a batch)."""
    person = linkage.person_from_record(json.loads(record_text))
    return person, frozenset(linkage.blocking_keys(person))


def _most_recent_first(source: Source):
    at = source.received_at
    return (-(at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at).timestamp(),
            source.org_code, source.source_record_id)


def _person_of(source: Source) -> linkage.Person:
    return _person_and_keys(source.text)[0]


def _keys_of(v, source: Source) -> frozenset[str]:
    """The source's blocking keys as stored (blind indexes)."""
    return frozenset(sealed.blind_keys(v, _person_and_keys(source.text)[1]))


def provenance(conn: Connection, child_id: str) -> dict:
    """What the index shows for the child, who supplied each value, and every source's own record."""
    row = conn.execute(_CHILD_BY_ID, {"child_id": child_id}).first()
    v = sealed.vault_of(conn)
    sources = _sources(conn, child_id)
    sent = {(s.org_code, s.source_record_id): s.sent_id or s.source_record_id for s in sources}

    def supplier(entry: dict) -> dict:  # stored (blinded) source record ids shown as sent
        return {**entry, "source_record_id": sent.get((entry.get("org"), entry.get("source_record_id")),
                                                      entry.get("source_record_id"))}

    shown = {field: [supplier(e) for e in who] if isinstance(who, list) else supplier(who)
             for field, who in _open_shown(v, row, "provenance").items()}
    return {"record": _open_shown(v, row), "shown": shown,
            "sources": sorted(({"org": s.org_code, "source_record_id": sent[(s.org_code, s.source_record_id)],
                                "kind": s.kind, "received_at": s.received_at.isoformat(), "record": s.record}
                               for s in sources), key=lambda s: (s["org"], s["source_record_id"]))}


def sent_source_id(conn: Connection, org_code: str, stored_id: str) -> str | None:
    """The source record id as its organisation sent it (stored blinded), or None if not held."""
    row = conn.execute(select(source_records.c.record).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id == stored_id)).first()
    if row is None or row.record is None:
        return None
    return sealed.open_source(sealed.vault_of(conn), org_code, stored_id, row.record)[0]


# ---- Bulk loading (bench/index_scale.py, bench/linkage_scale.py --fill bulk) -------------------
# THE ONE PLACE rows are built outside the per-record path above. It must write exactly what
# apply_updates writes for children whose every record links to them (the shown record and
# provenance derived by precedence, every source record, every key, every involvement): whatever
# _create_child / _store_source / _refresh_child / _file_under / _replace_involvements come to do
# to a value before it is stored (encryption, blind indexes) must be done here too.
# tests/bench/test_index_scale.py checks that a child loaded here reads back exactly as the same
# records pushed through apply_updates.

BulkSource = tuple[str, "str | None", ChildUpdate]  # (organisation code, its kind, its record)


def bulk_rows(sources_per_child: list[list[BulkSource]], now: dt.datetime, v=None) -> dict[str, list[dict]]:
    """The rows of each table (by table name, in an order foreign keys allow) for new children, one
    per list of source records: no matching (the caller says which records are one child).
    Sealed and blinded with ``v`` (default: the process's vault), as _create_child and
    _refresh_child store them. Involvement ids are left to the database."""
    v = v or vault_mod.current()
    rows: dict[str, list[dict]] = {"children": [], "source_records": [], "blocking_keys": [], "involvements": []}
    for child_sources in sources_per_child:
        child_id = ids.new_child_id()
        sources, keys = [], set()
        for org_code, kind, update_ in child_sources:
            text_ = _record_text(update_)
            stored_id = sealed.blind_source_id(v, org_code, update_.source_record_id)
            sources.append(Source(org_code, stored_id, kind, now, text_))
            keys |= _blinded_keys(v, linkage.blocking_keys(linkage.person_from_update(update_)))
            rows["source_records"].append(dict(
                org_code=org_code, source_record_id=stored_id, child_id=child_id, received_at=now,
                record=sealed.seal_source(v, org_code, stored_id, update_.source_record_id, text_)))
            rows["involvements"].extend(
                dict(child_id=child_id, org_code=org_code, source_record_id=stored_id, service=i.service,
                     practitioner_name=None, role=i.role, phone=None, email=None, start=i.start, end=i.end,
                     caf_assessment=i.caf_assessment, lead_professional=i.lead_professional,
                     sealed=sealed.seal_involvement(v, org_code, stored_id, dict(
                         practitioner_name=i.practitioner_name, phone=i.phone, email=i.email)))
                for i in update_.involvements)
        record, provenance = derive(sources)
        rows["children"].append(dict(
            child_id=child_id, shielded=False, created_at=now, updated_at=now,
            archive_due=retention.archive_due(record), archived_at=None, archive_reason=None, purge_after=None,
            merged_into=None, nhs_number=None, pupil_number=None,
            **_shown_values(v, child_id, record, provenance)))
        rows["blocking_keys"].extend(dict(key=k, child_id=child_id) for k in sorted(keys))
    return rows
