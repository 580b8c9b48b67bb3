"""The embedded store: rate counters in the gateway's own database, so a single host needs no Redis."""

from __future__ import annotations

import functools
import random
import time

from sqlalchemy import delete, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import TextClause

from gateway.db import rate_counters

CLEAN_UP_PROBABILITY = 0.01  # amortised deletion of past windows


@functools.cache
def _count_upsert(keys: int) -> TextClause:
    """One statement that counts one event against each of ``keys`` keys (bound as k0, k1, ...) in
    window ``window`` and returns (key, count) of each. Plain SQL, the same for SQLite and PostgreSQL:
    SQLAlchemy cannot cache the compiled form of its upsert construct, and compiling it again for
    every message cost ten times the statement itself."""
    rows = ", ".join(f"(:k{i}, :window, 1)" for i in range(keys))
    return text(f'INSERT INTO {rate_counters.name} ("key", "window", "count") VALUES {rows} '
                f'ON CONFLICT ("key", "window") DO UPDATE SET "count" = {rate_counters.name}."count" + 1 '
                f'RETURNING "key", "count"')


class EmbeddedStore:
    """A database failure here is left to the pipeline, which answers Unavailable for any database
    step that fails or times out (the engine's own timeouts bound the wait).

    ``counts_in_transaction``: on SQLite every write transaction takes the database's one write
    lock, so a count in a transaction of its own would make each message queue for it twice. There
    the pipeline counts with ``hit_in`` inside the transaction that writes the message's audit entry
    (gateway.pipeline.authorisation). On PostgreSQL that would hold the organisation's counter row
    locked for the whole exchange, serialising all its messages, so the count stays apart (``hit``)."""

    def __init__(self, engine: Engine, clock=time.time):
        self._engine = engine
        self._clock = clock
        self.counts_in_transaction = engine.dialect.name == "sqlite"

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        with self._engine.begin() as conn:
            return self.hit_in(conn, keys, window_s)

    def hit_in(self, conn: Connection, keys: list[str], window_s: int) -> list[int]:
        """`hit`, in the caller's transaction: counted if, and when, it commits."""
        window = int(self._clock()) // window_s
        distinct = list(dict.fromkeys(keys))
        params = {f"k{i}": key for i, key in enumerate(distinct)}
        counts = dict(conn.execute(_count_upsert(len(distinct)), dict(params, window=window)).all())
        if random.random() < CLEAN_UP_PROBABILITY:
            conn.execute(delete(rate_counters).where(rate_counters.c.window < window))
        return [counts[key] for key in keys]
