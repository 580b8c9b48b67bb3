"""The embedded store: rows in the gateway's own database, so a single host needs no Redis."""

from __future__ import annotations

import functools
import random
import time

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway.db import rate_counters, reader, replay_keys


_KEY_EXPIRY = select(replay_keys.c.expires_at).where(replay_keys.c.key == bindparam("key"))
_INSERT_KEY = replay_keys.insert()


@functools.cache
def _count_upsert(dialect: str):
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return (insert(rate_counters).values(key=bindparam("key"), window=bindparam("window"), count=1)
            .on_conflict_do_update(index_elements=[rate_counters.c.key, rate_counters.c.window],
                                   set_={"count": rate_counters.c.count + 1})
            .returning(rate_counters.c.count))


class EmbeddedStore:
    def __init__(self, engine: Engine, clock=time.time):
        self._engine = engine
        self._clock = clock

    def claim(self, key: str, ttl_s: int) -> bool:
        now = int(self._clock())
        try:
            with self._engine.begin() as conn:
                existing = conn.execute(_KEY_EXPIRY, {"key": key}).first()
                if existing is not None:
                    if existing.expires_at > now:
                        return False
                    conn.execute(delete(replay_keys).where(replay_keys.c.key == key))
                conn.execute(_INSERT_KEY, {"key": key, "expires_at": now + ttl_s, "response": None})
                if random.random() < 0.01:  # amortised clean-up of expired keys
                    conn.execute(delete(replay_keys).where(replay_keys.c.expires_at <= now))
            return True
        except IntegrityError:  # a concurrent claim won the race (PostgreSQL)
            return False

    def save_response(self, key: str, response: bytes, ttl_s: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(replay_keys).where(replay_keys.c.key == key)
                         .values(response=response, expires_at=int(self._clock()) + ttl_s))

    def get_response(self, key: str) -> bytes | None:
        with reader(self._engine).connect() as conn:
            row = conn.execute(select(replay_keys.c.response).where(
                replay_keys.c.key == key, replay_keys.c.expires_at > int(self._clock()))).first()
        return row.response if row else None

    def release(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(replay_keys).where(replay_keys.c.key == key))

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        window = int(self._clock()) // window_s
        with self._engine.begin() as conn:
            upsert = _count_upsert(conn.dialect.name)
            counts = [conn.execute(upsert, {"key": key, "window": window}).scalar_one() for key in keys]
            if random.random() < 0.01:  # amortised clean-up of past windows
                conn.execute(delete(rate_counters).where(rate_counters.c.window < window))
        return counts
