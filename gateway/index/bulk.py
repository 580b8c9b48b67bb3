"""What a bulk load (`contactgate load`, gateway.bulk_load) does for a whole batch at once that a
push does child by child: the same reads and writes, each made once per batch instead of once per
child (``apply_updates(..., bulk=True)``).

- ``prefetch_sources``: the source records of every child a record of the batch may be compared
  with, read in a few IN (...) queries up front instead of one query per record (the batch keeps
  them exactly as it would have read them: nothing of the batch is written yet).
- ``refresh_children``: ``writing._refresh_child`` for every child the batch changed: the children
  locked in one order, their sources, value conflicts, archive flags and filed keys each read in
  one query per 500 children, their shown records written by one executemany and their new keys
  by another. Each child is derived, its conflicts noted and its keys filed exactly as
  ``_refresh_child`` does (tests/gateway/test_bulk_load.py loads the same records both ways).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from gateway.db import blocking_keys, children
from gateway.index import conflicts, precedence, retention, sealed
from gateway.index.precedence import derive
from gateway.index.writing import _keys_of, _shown_values, _sources_of

_IN_CHUNK = 500
_SHOWN = (update(children).where(children.c.child_id == bindparam("b_child_id")).values(
    updated_at=bindparam("b_updated_at"), record=bindparam("b_record"), provenance=bindparam("b_provenance"),
    family_name_norm=bindparam("b_family_name_norm"), date_of_birth=bindparam("b_date_of_birth"),
    archive_due=bindparam("b_archive_due")))


def _chunks(values: list, size: int = _IN_CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def prefetch_sources(batch, updates) -> None:
    """Read at once the sources of every child any record of ``batch`` ranks among its candidates in
    the index as read (``batch.hits``); ``batch.sources_of`` then finds them held."""
    wanted = set()
    for update_ in updates:
        wanted.update(batch.hits(batch.keys[id(update_)]).ranked)
    missing = sorted(c for c in wanted if c not in batch.sources)
    for chunk in _chunks(missing):
        found = _sources_of(batch.conn, chunk)
        for child_id in chunk:
            batch.sources[child_id] = found.get(child_id, [])


def refresh_children(conn: Connection, child_ids: list[str], now: dt.datetime, *,
                     arrived: frozenset[tuple[str, str]] = frozenset()) -> set[str]:
    """``writing._refresh_child`` of each of ``child_ids`` (retention and conflicts schemas in place);
    returns the children with a value conflict of an ``arrived`` source open."""
    ids = sorted(set(child_ids))
    if not ids:
        return set()
    v = sealed.vault_of(conn)
    sources: dict = {}
    archived: set[str] = set()
    for chunk in _chunks(ids):
        conn.execute(select(children.c.child_id).where(children.c.child_id.in_(chunk))
                     .order_by(children.c.child_id).with_for_update()).all()
        sources.update(_sources_of(conn, chunk))
        archived.update(conn.execute(select(children.c.child_id).where(
            children.c.child_id.in_(chunk), children.c.archived_at.is_not(None))).scalars())
    rules = precedence.rules_of(conn)
    every = [s for child_id in ids for s in sources.get(child_id, ())]
    held_all = conflicts.held_for(conn, every)
    rows_of: dict[tuple[str, str], list] = {}
    for row in held_all:
        rows_of.setdefault((row.org_code, row.source_record_id), []).append(row)
    shown, questioned, wanted = [], set(), {}
    for child_id in ids:
        own = sources.get(child_id)
        if not own:  # every record moved to another child (merged): nothing to show under this id
            continue
        held = conflicts.Held(v, sorted((r for s in own for r in rows_of.get((s.org_code, s.source_record_id), ())),
                                        key=lambda r: r.id))
        record, provenance = derive(own, rules, held.choices(), held.held_back(own, rules))
        shown.append({f"b_{k}": value for k, value in dict(
            child_id=child_id, updated_at=now, **_shown_values(v, child_id, record, provenance),
            archive_due=retention.archive_due(record)).items()})
        if conflicts.note(conn, child_id, own, record, provenance, arrived, rules, held, now):
            questioned.add(child_id)
        if child_id not in archived:  # ---- retention: an archived child is filed under no key
            keys = set()
            for source in own:
                keys |= _keys_of(v, source)
            wanted[child_id] = keys
    if shown:
        conn.execute(_SHOWN, shown)
    filed: dict[str, set[str]] = {child_id: set() for child_id in wanted}
    for chunk in _chunks(sorted(wanted)):
        for row in conn.execute(select(blocking_keys.c.key, blocking_keys.c.child_id)
                                .where(blocking_keys.c.child_id.in_(chunk))):
            filed[row.child_id].add(row.key)
    new_rows = []
    for child_id in sorted(wanted):
        held_keys, keys = filed[child_id], wanted[child_id]
        if held_keys - keys:
            conn.execute(delete(blocking_keys).where(blocking_keys.c.child_id == child_id,
                                                     blocking_keys.c.key.in_(sorted(held_keys - keys))))
        new_rows.extend({"key": k, "child_id": child_id} for k in sorted(keys - held_keys))
    if new_rows:
        conn.execute(insert(blocking_keys), new_rows)
    return questioned
