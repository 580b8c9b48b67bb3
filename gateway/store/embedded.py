"""The embedded store: rate counters in the gateway's own database, so a single host needs no Redis."""

from __future__ import annotations

import functools
import random
import time

from sqlalchemy import bindparam, delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from gateway.db import rate_counters


@functools.cache
def _count_upsert(dialect: str):
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return (insert(rate_counters).values(key=bindparam("key"), window=bindparam("window"), count=1)
            .on_conflict_do_update(index_elements=[rate_counters.c.key, rate_counters.c.window],
                                   set_={"count": rate_counters.c.count + 1})
            .returning(rate_counters.c.count))


class EmbeddedStore:
    """A database failure here is left to the pipeline, which answers Unavailable for any database
    step that fails or times out (the engine's own timeouts bound the wait)."""

    def __init__(self, engine: Engine, clock=time.time):
        self._engine = engine
        self._clock = clock

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        window = int(self._clock()) // window_s
        with self._engine.begin() as conn:
            upsert = _count_upsert(conn.dialect.name)
            counts = [conn.execute(upsert, {"key": key, "window": window}).scalar_one() for key in keys]
            if random.random() < 0.01:  # amortised clean-up of past windows
                conn.execute(delete(rate_counters).where(rate_counters.c.window < window))
        return counts
